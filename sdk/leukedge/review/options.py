"""The review page's settings (:class:`ReviewOptions`), apart from the code that draws
and writes, so that ``leukedge report``'s options can read their defaults and help from it
without loading Pillow's drawing or Jinja2."""

from __future__ import annotations

from dataclasses import dataclass

from leukedge.lab.groups import GROUP_BY

__all__ = ["ReviewOptions"]


@dataclass(frozen=True)
class ReviewOptions:
    """What the review page holds and how its pictures are made.

    Attributes:
        group_by: what a slide is (``slide``: the image's folder name, or a group map;
            ``subject``: the C-NMC file name; ``folder``: the folder path), as
            ``leukedge classify --group-by``.
        overlays: write each field's overlay PNG (input size) into ``overlays/`` and show it
            as the thumbnail; without it the thumbnail is the plain field.
        locate: box the white cells found by :func:`leukedge.cells.locate.locate_cells` on the
            overlays.
        thumbnail_px: longest side of a gallery thumbnail, in pixels (192: four across a
            laptop screen, ~8 KB as JPEG).
        jpeg_quality: JPEG quality of the thumbnails (1–95; 70 keeps the text on the
            overlay readable).
    """

    group_by: str = "slide"
    overlays: bool = True
    locate: bool = True
    thumbnail_px: int = 192
    jpeg_quality: int = 70

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_BY:
            raise ValueError(f"unknown group_by {self.group_by!r}; choose one of {GROUP_BY}")
        if not 16 <= self.thumbnail_px <= 1024:
            raise ValueError(f"thumbnail_px must be in [16, 1024], got {self.thumbnail_px}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95], got {self.jpeg_quality}")

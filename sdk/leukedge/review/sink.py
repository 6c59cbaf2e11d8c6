"""Overlays and the review page written while ``leukedge classify`` runs
(``--overlay DIR``, ``--report DIR``), from each record and its result's heat map.

:class:`ReviewSink` receives every finished field in input order
(:attr:`leukedge.lab.pipeline.ClassifyJob.on_result`): it reads the field's image again
(:func:`~leukedge.review.page.read_field_again`: never a replaced one), lays the result's
heat map on it (``ClassifierOptions(explain=True)``; resized to the image when the decoder
returned a reduced size) and writes the overlay PNG at once, so no image or map is kept in
memory; the page (:class:`~leukedge.review.page.ReviewPage`, thumbnails only) is written by
:meth:`ReviewSink.close`, after the last field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leukedge.review.options import ReviewOptions
from leukedge.review.overlay import OverlayOptions, draw_overlay
from leukedge.review.page import (
    OVERLAY_NAME,
    ReviewPage,
    _write_png,
    overlay_name,
    read_field_again,
)

__all__ = ["ReviewSink", "fit_heatmap"]


def fit_heatmap(heatmap: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """``heatmap`` at ``shape[:2]`` (bilinear), or as it is when it already fits; ``None``
    stays ``None``."""
    if heatmap is None or heatmap.shape[:2] == tuple(shape[:2]):
        return heatmap
    import cv2

    return cv2.resize(heatmap, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)


@dataclass
class ReviewSink:
    """Overlays into ``overlay_dir`` and/or a review page into ``report_dir``, one field at
    a time.

    Args:
        overlay_dir: folder for ``NNNNN_<name>.png`` overlays (``None``: none); the caller
            checks beforehand that it may be written.
        report_dir: folder of the review page (``index.html`` and ``overlays/``), or
            ``None``.
        page: the :class:`~leukedge.review.page.ReviewPage` (with ``report_dir``).
        positive_label: the class whose probability the overlay writes.

    Attributes:
        failed: ``(path, problem)`` of every field whose image could not be read again.
    """

    overlay_dir: Path | None = None
    report_dir: Path | None = None
    metadata: Any = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    options: ReviewOptions = field(default_factory=ReviewOptions)
    model_sha256: str | None = None
    group_map: Any = None
    failed: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page = (
            ReviewPage(
                Path(self.report_dir),
                self.metadata,
                self.settings,
                options=self.options,
                model_sha256=self.model_sha256,
                group_map=self.group_map,
            )
            if self.report_dir is not None
            else None
        )
        positive = self.page.positive_label if self.page is not None else "ALL"
        self._overlay_options = OverlayOptions(positive_label=positive, locate=self.options.locate)
        self._count = 0
        self._written: set[str] = set()

    def add(self, record: Mapping[str, Any], result: Any = None) -> None:
        """One finished field: its overlay (and page card).

        Args:
            record: the field's record (:mod:`leukedge.lab.records`).
            result: its :class:`~leukedge.ClassificationResult` (``None`` for an input that
                failed); its ``heatmap`` is drawn when present.

        Raises:
            OSError: an overlay cannot be written (names the file).
        """
        self._count += 1
        if record.get("error") is None:
            rgb, problem = read_field_again(record, self.metadata)
            if problem is not None:
                self.failed.append((str(record.get("path")), problem))
        else:
            rgb, problem = None, str(record.get("error"))
        heatmap = None
        if rgb is not None and result is not None:
            heatmap = fit_heatmap(getattr(result, "heatmap", None), rgb.shape)
        if self.overlay_dir is not None and rgb is not None:
            picture = draw_overlay(rgb, record, heatmap=heatmap, options=self._overlay_options)
            name = overlay_name(self._count, record.get("path"))
            _write_png(picture, Path(self.overlay_dir) / name)
            self._written.add(name)
        if self.page is not None:
            self.page.add(record, rgb, unreadable=problem, heatmap=heatmap)

    def close(self) -> Path | None:
        """Write the review page (when there is one), and remove from ``overlay_dir`` the
        overlays of an earlier run that this one did not write (only files named
        ``NNNNN_<name>.png``; the caller allowed it with ``--overwrite``), so the folder holds
        one run's pictures.

        Returns:
            The page's path, else ``None``.

        Raises:
            OSError: the page cannot be written (names the file).
        """
        if self.overlay_dir is not None and Path(self.overlay_dir).is_dir():
            for path in Path(self.overlay_dir).iterdir():
                if OVERLAY_NAME.fullmatch(path.name) and path.name not in self._written:
                    path.unlink(missing_ok=True)
        return self.page.write() if self.page is not None else None

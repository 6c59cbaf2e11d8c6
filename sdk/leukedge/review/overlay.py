"""One field's result drawn onto the field: what the model saw, for a person to check.

:func:`draw_overlay` returns a copy of the field (same size, ``uint8`` RGB) showing

- the located white cells' boxes (:func:`leukedge.cells.locate.locate_cells` on request, or boxes
  the caller gives), each coloured by its call: a field model's call colours every box,
  unless per-cell calls are given (a cell model on a field);
- a heat map (where the model looked), when given, as a translucent layer whose opacity is
  the map's value: a pixel where the map is 0 is left exactly as it was;
- the status, label and p(ALL) written in a band across the top.

A result that is not a call is drawn so it cannot be mistaken for one: ``refer``,
``rejected`` and ``error`` get a black-and-white hatched border and a black banner
("REFER: uncertain", "REJECTED: out_of_domain", "ERROR: decode_error") and no call colour
anywhere: their boxes are white with a black outline, and the model's label is not written.

Colours are from Okabe & Ito's colour-universal-design palette (Okabe M., Ito K., "Color
Universal Design (CUD): how to make figures and presentations that are friendly to
colorblind people", 2008), which stays distinct under the common colour-vision
deficiencies: ALL vermillion, HEM blue; the heat map is viridis (van der Walt & Smith,
perceptually uniform and readable without colour vision). Text and shapes are drawn with
Pillow (``ImageDraw``; its scalable default font), the colour map with OpenCV.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from leukedge.lab.records import status_of

if TYPE_CHECKING:
    from leukedge.cells.locate import LocatedCell, LocateOptions
    from leukedge.classifier import ClassificationResult

__all__ = ["NEUTRAL", "PALETTE", "OverlayOptions", "draw_overlay", "overlay_caption"]

PALETTE: dict[str, tuple[int, int, int]] = {"ALL": (213, 94, 0), "HEM": (0, 114, 178)}
"""Call colour (RGB) per label: Okabe–Ito vermillion for ALL, blue for HEM. A label not
listed (a model with other classes) gets :data:`OTHER_CALLS` in turn."""

OTHER_CALLS: tuple[tuple[int, int, int], ...] = ((204, 121, 167), (0, 158, 115), (230, 159, 0))
"""Okabe–Ito reddish purple, bluish green and orange, for labels outside :data:`PALETTE`."""

NEUTRAL: tuple[tuple[int, int, int], tuple[int, int, int]] = ((0, 0, 0), (255, 255, 255))
"""Black and white: the only colours of a result that is not a call (hatched border,
banner, cell boxes)."""

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class OverlayOptions:
    """How :func:`draw_overlay` draws.

    Attributes:
        positive_label: the class whose probability is written (``p(ALL)``).
        heat_alpha: opacity of the heat map where it is 1 (0–1; a pixel's opacity is the
            map's value times this). 0.45 leaves the cells readable under the hottest part.
        locate: find the white cells with :func:`leukedge.cells.locate.locate_cells` when no
            ``cells`` are given.
        locate_options: :class:`~leukedge.cells.locate.LocateOptions` for that search (``None``:
            its defaults without masks, ``LocateOptions(masks=False)``: a box needs no
            mask, and GrabCut costs ~100 ms a cell; the red-cell size is estimated from
            the field).
    """

    positive_label: str = "ALL"
    heat_alpha: float = 0.45
    locate: bool = False
    locate_options: LocateOptions | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.heat_alpha <= 1.0:
            raise ValueError(f"heat_alpha must be in [0, 1], got {self.heat_alpha}")


def call_colour(label: str | None, labels: Sequence[str] = ()) -> tuple[int, int, int] | None:
    """The colour of a call ``label`` (:data:`PALETTE`, else :data:`OTHER_CALLS` by the
    label's place in ``labels``); ``None`` for no label."""
    if label is None:
        return None
    if label in PALETTE:
        return PALETTE[label]
    others = [x for x in labels if x not in PALETTE]
    index = others.index(label) if label in others else len(label)
    return OTHER_CALLS[index % len(OTHER_CALLS)]


def overlay_caption(record: Mapping[str, Any], positive_label: str = "ALL") -> str:
    """The text written on the overlay (and the review page's card title).

    ``"ALL  p(ALL) 0.97"`` for a call; ``"REFER: uncertain  p(ALL) 0.55"``;
    ``"REJECTED: out_of_domain"`` (no label, no probability: the model's opinion on a
    rejected field is never shown as a call); ``"ERROR: decode_error"``.
    """
    status = status_of(dict(record))
    p = (record.get("probabilities") or {}).get(positive_label)
    p_text = f"  p({positive_label}) {p:.2f}" if p is not None else ""
    if status == "ok":
        return f"{record.get('label')}{p_text}"
    reason = record.get("reason") or status
    if status == "refer":
        return f"REFER: {reason}{p_text}"
    return f"{status.upper()}: {reason}"


MIN_SIDE = 32
"""The shortest side an overlay is drawn at (pixels): smaller images are enlarged."""


def draw_overlay(
    rgb: np.ndarray,
    result: ClassificationResult | Mapping[str, Any],
    cells: Sequence[LocatedCell | Box] | None = None,
    heatmap: np.ndarray | None = None,
    cell_labels: Sequence[str | None] | None = None,
    options: OverlayOptions | None = None,
) -> np.ndarray:
    """Draw one field's result onto a copy of the field (see the module docstring).

    Args:
        rgb: the field, ``(H, W, 3)`` ``uint8`` RGB (what
            :func:`leukedge.engine.preprocess.load_rgb` returns). A side under
            :data:`MIN_SIDE` pixels (a 1×1 image, a 4000×15 strip: ``too_small`` for the
            model) is enlarged by a whole factor (nearest neighbour) until both sides reach
            it, so that the banner can be drawn; the picture is then that size.
        result: the field's :class:`~leukedge.classifier.ClassificationResult` or its record
            (a :mod:`leukedge.lab.records` dictionary: ``status``, ``reason``, ``label``,
            ``probabilities``).
        cells: the white cells to box: :class:`~leukedge.cells.locate.LocatedCell` objects or
            ``(x0, y0, x1, y1)`` boxes in pixels of ``rgb`` (``x1``, ``y1`` exclusive).
            ``None``: located with :func:`~leukedge.cells.locate.locate_cells` when
            ``options.locate``, else none drawn.
        heatmap: where the model looked, ``(H, W)`` float in [0, 1] at ``rgb``'s size
            (``None``: none drawn).
        cell_labels: one call per cell (a label, or ``None`` for a cell without a call),
            parallel to the cells; ``None``: every box takes the field's call colour. Not
            used when the field is ``rejected`` or ``error`` (no cell of it is a call).
        options: :class:`OverlayOptions` (defaults when ``None``).

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB, a new array (``rgb`` is not changed); larger for an
        image with a side under :data:`MIN_SIDE`.

    Raises:
        ValueError: ``rgb`` is not ``(H, W, 3)`` ``uint8`` with both sides ≥ 1; ``heatmap``
            is not ``(H, W)``, not finite or outside [0, 1]; ``cell_labels`` does not have
            one entry per cell.
        TypeError: ``result`` is neither a result nor a mapping.
    """
    options = options or OverlayOptions()
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3):
        raise ValueError(f"rgb must be an (H, W, 3) uint8 array, got {_describe(rgb)}")
    height, width, channels = rgb.shape
    if channels != 3 or min(height, width) < 1:
        raise ValueError(f"rgb must be (H, W, 3) with H, W >= 1, got shape {rgb.shape}")
    if min(height, width) < MIN_SIDE:  # too small to draw on: enlarged (nearest), cells too
        factor = -(-MIN_SIDE // min(height, width))
        big = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
        if heatmap is not None:
            heatmap = np.repeat(np.repeat(np.asarray(heatmap), factor, axis=0), factor, axis=1)
        if cells is not None:
            cells = [tuple(int(v) * factor for v in _box(c)) for c in cells]
        return draw_overlay(big, result, cells, heatmap, cell_labels, options)
    record = _as_record(result)
    status = status_of(record)
    is_call = status == "ok"
    field_colour = call_colour(record.get("label"), _labels(record)) if is_call else None

    out = rgb.copy()
    if heatmap is not None:
        out = _blend_heatmap(out, heatmap, options.heat_alpha)

    note = None
    if cells is None and options.locate:
        cells, note = _locate(rgb, options)
    boxes = [_box(c) for c in cells or []]
    if cell_labels is not None and len(cell_labels) != len(boxes):
        raise ValueError(f"cell_labels has {len(cell_labels)} entries for {len(boxes)} cells")
    if note is None and (cells is not None or options.locate):
        note = f"{len(boxes)} white cell{'s' if len(boxes) != 1 else ''}"

    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    short = min(height, width)
    line = max(2, round(short / 150))
    for i, box in enumerate(boxes):
        if status in ("rejected", "error"):
            colour = None
        elif cell_labels is not None:
            colour = call_colour(cell_labels[i], _labels(record))
        else:
            colour = field_colour
        _draw_box(draw, box, colour, line)

    border = max(4, round(short * 0.03))
    out = np.asarray(image).copy()
    if is_call:
        _solid_border(out, max(2, border // 2), field_colour or NEUTRAL[1])
    else:
        _hatched_border(out, border)
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    band = max(14, round(short * 0.09))
    caption = overlay_caption(record, options.positive_label)
    fill = field_colour if is_call and field_colour else NEUTRAL[0]
    draw.rectangle((0, 0, width - 1, band - 1), fill=fill)
    _text(draw, (max(4, border), band // 2), caption, band, width - 2 * max(4, border))
    if note:
        size = max(12, round(band * 0.75))
        font = _font(round(size * 0.7))
        left, bottom = max(4, border) + 2, height - max(4, border) - 2
        x0, y0, x1, y1 = draw.textbbox((left, bottom), note, font=font, anchor="ls")
        draw.rectangle((x0 - 3, y0 - 3, x1 + 3, y1 + 3), fill=NEUTRAL[0])
        draw.text((left, bottom), note, font=font, fill=NEUTRAL[1], anchor="ls")
    return np.asarray(image).copy()


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _as_record(result: Any) -> dict[str, Any]:
    if isinstance(result, Mapping):
        return dict(result)
    to_dict = getattr(result, "to_dict", None)
    if to_dict is None:
        raise TypeError(
            f"result must be a ClassificationResult or a record dictionary, got "
            f"{type(result).__name__}"
        )
    return to_dict()


def _labels(record: Mapping[str, Any]) -> list[str]:
    return list(record.get("probabilities") or record.get("model_probabilities") or {})


def _locate(rgb: np.ndarray, options: OverlayOptions) -> tuple[list[Any], str | None]:
    """The located cells, or none and a note when the field cannot be searched."""
    from leukedge.cells.locate import LocateError, LocateOptions, locate_cells

    try:
        return locate_cells(rgb, options.locate_options or LocateOptions(masks=False)), None
    except LocateError:
        return [], "white cells: not located"


def _box(cell: Any) -> Box:
    box = getattr(cell, "box", cell)
    x0, y0, x1, y1 = (int(v) for v in box)
    return x0, y0, x1, y1


def _blend_heatmap(rgb: np.ndarray, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    import cv2

    heat = np.asarray(heatmap)
    if heat.shape != rgb.shape[:2]:
        raise ValueError(
            f"heatmap must be (H, W) = {rgb.shape[:2]} (the input's size), got {heat.shape}"
        )
    heat = heat.astype(np.float32)
    if not np.all(np.isfinite(heat)) or heat.min() < 0.0 or heat.max() > 1.0:
        raise ValueError("heatmap values must be finite and in [0, 1]")
    colours = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    colours = colours[..., ::-1].astype(np.float32)  # BGR → RGB
    weight = (heat * alpha)[..., None]
    blended = rgb.astype(np.float32) * (1.0 - weight) + colours * weight
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def _draw_box(draw: ImageDraw.ImageDraw, box: Box, colour, line: int) -> None:
    x0, y0, x1, y1 = box
    if colour is not None:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=line)
        return
    # Not a call: white box inside a black one, no call colour.
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=NEUTRAL[0], width=line + 2)
    draw.rectangle((x0 + 1, y0 + 1, x1 - 2, y1 - 2), outline=NEUTRAL[1], width=line)


def _border_mask(height: int, width: int, thickness: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[:thickness], mask[-thickness:] = True, True
    mask[:, :thickness], mask[:, -thickness:] = True, True
    return mask


def _solid_border(out: np.ndarray, thickness: int, colour) -> None:
    out[_border_mask(*out.shape[:2], thickness)] = colour


def _hatched_border(out: np.ndarray, thickness: int) -> None:
    """Black and white diagonal stripes, ``thickness`` px wide, around the field."""
    height, width = out.shape[:2]
    y, x = np.mgrid[:height, :width]
    stripe = max(3, thickness // 2)
    white = ((x + y) // stripe) % 2 == 1
    mask = _border_mask(height, width, thickness)
    out[mask & white] = NEUTRAL[1]
    out[mask & ~white] = NEUTRAL[0]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(8, size))


def _text(draw: ImageDraw.ImageDraw, origin, text: str, band: int, max_width: int) -> None:
    """``text`` in white, left-aligned and centred on ``origin``'s row, shrunk to fit."""
    size = round(band * 0.7)
    font = _font(size)
    while size > 8 and draw.textlength(text, font=font) > max_width:
        size -= 1
        font = _font(size)
    draw.text(origin, text, font=font, fill=NEUTRAL[1], anchor="lm")

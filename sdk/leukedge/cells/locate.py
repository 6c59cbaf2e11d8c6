"""Locate white cells (leukocytes) in a stained smear field, without deep learning.

A white cell's nucleus takes up the basic stain (haematoxylin, methylene blue, Giemsa's
azure): in RGB it is the one structure whose blue channel stands well above its green one,
while red cells, platelets' pale surround and the background do not. The search runs at a
scale where a red cell is about :attr:`LocateOptions.work_diameter_px` pixels across (the
red cell, ~7.5 µm, is the slide's own ruler; its diameter is estimated with
:func:`leukedge.checks.scale.estimate_red_cell_diameter` when not given), so every size below is
in red-cell diameters and the same settings hold at any magnification:

1. stain map ``max(B − G, 0)``, Gaussian-smoothed; Otsu's threshold (Otsu, IEEE SMC 1979),
   never below :attr:`~LocateOptions.min_stain`, splits nuclei from the rest;
2. a morphological closing of :attr:`~LocateOptions.closing` red-cell diameters joins the
   lobes of one segmented nucleus (neutrophils); an opening of 3 px drops specks;
3. components smaller than :attr:`~LocateOptions.min_nucleus_area` red-cell areas are
   dropped (platelets, stain debris, fragments); cells cut by the field's border are flagged
   and, on request, dropped;
4. the box is the nucleus' box grown by :attr:`~LocateOptions.box_margin` of its size on
   each side (the cytoplasm);
5. on request, the cell's mask (nucleus and cytoplasm) is segmented inside a window around
   the nucleus with GrabCut (Rother, Kolmogorov & Blake, SIGGRAPH 2004), seeded with the
   nucleus as sure foreground and everything beyond twice the nucleus' radius as sure
   background.

Measured on BCCD (364 fields, 640×480, WBC boxes) and on the ``wbc-normal`` masks with
``tools/locate_study.py``; figures in the README ("Locating white cells"). Touching cells
whose nuclei merge after the closing come out as one box; that is the locator's main error
left (the study's contact sheet shows each one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "LocateError",
    "LocateOptions",
    "LocatedCell",
    "cell_crop",
    "locate_cells",
    "red_cell_diameter",
]


class LocateError(ValueError):
    """The field cannot be searched (wrong array type or shape, no scale to work at)."""


@dataclass(frozen=True)
class LocateOptions:
    """How :func:`locate_cells` searches a field. Sizes are in red-cell diameters.

    Attributes:
        red_cell_diameter_px: red-cell diameter in pixels of the field given, or ``None`` to
            estimate it from the field (:func:`leukedge.checks.scale.estimate_red_cell_diameter`;
            a field with too few red cells then raises :class:`LocateError`).
        work_diameter_px: red-cell diameter in pixels at which the search runs (the field is
            resized to it; 25 px keeps a 640×480 BCCD field near 160×120, fast, while a
            nucleus is still ~10 px across).
        closing: diameter of the closing that joins a nucleus' lobes (0.25 red cells).
        min_nucleus_area: smallest nucleus kept, in red-cell areas (diameter²; 0.35: a
            platelet is ~0.1 and a small lymphocyte's nucleus ~0.5).
        box_margin: the box is the nucleus box grown by this fraction of its width and
            height on each side (the cytoplasm; 0.15).
        min_stain: the lowest ``B − G`` (0–255) a nucleus pixel may have, whatever Otsu's
            threshold: a field of red cells only has no nuclei to split off (its red cells
            reach ~10; Otsu's threshold on BCCD and Taleqani fields is 15–80).
        drop_border_cells: drop cells whose nucleus touches the field's border.
        masks: segment each cell's mask (GrabCut, ~100 ms a BCCD cell); without it the mask is
            the grown nucleus region.

    The defaults were chosen on the even-numbered BCCD fields and checked on the odd ones
    (``tools/locate_study.py``).
    """

    red_cell_diameter_px: float | None = None
    work_diameter_px: float = 25.0
    closing: float = 0.25
    min_nucleus_area: float = 0.35
    box_margin: float = 0.15
    min_stain: int = 20
    drop_border_cells: bool = False
    masks: bool = True

    def __post_init__(self) -> None:
        if self.red_cell_diameter_px is not None and not self.red_cell_diameter_px > 0:
            raise ValueError(f"red_cell_diameter_px must be > 0, got {self.red_cell_diameter_px}")
        for name in ("work_diameter_px", "closing", "min_nucleus_area"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.box_margin < 0:
            raise ValueError(f"box_margin must be ≥ 0, got {self.box_margin}")


@dataclass(frozen=True)
class LocatedCell:
    """One white cell found in a field.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in pixels of the field given, ``x1``/``y1`` exclusive.
        mask_box: ``(x0, y0, x1, y1)`` of ``mask`` in the field: the mask's own extent
            (the cytoplasm can reach past ``box``, which is sized to match how people draw
            boxes); equal to ``box`` without :attr:`LocateOptions.masks`.
        mask: ``(y1 − y0, x1 − x0)`` ``bool`` array over ``mask_box``: the cell (nucleus and
            cytoplasm), or only the nucleus without :attr:`LocateOptions.masks`.
        nucleus_area: the nucleus' area in pixels of the field given.
        touches_border: the nucleus touches the field's border (the cell may be cut).
        red_cell_diameter_px: the field's red-cell diameter in pixels (given or estimated):
            the scale the cell was found at, and the unit of :func:`cell_crop`'s
            ``diameters``.
    """

    box: tuple[int, int, int, int]
    mask_box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)
    nucleus_area: int
    touches_border: bool
    red_cell_diameter_px: float


def _check_field(rgb: np.ndarray) -> None:
    if (
        not isinstance(rgb, np.ndarray)
        or rgb.dtype != np.uint8
        or rgb.ndim != 3
        or rgb.shape[2] != 3
    ):
        raise LocateError(
            f"expected an (H, W, 3) uint8 RGB field, got {getattr(rgb, 'shape', type(rgb))} "
            f"{getattr(rgb, 'dtype', '')}"
        )
    if min(rgb.shape[:2]) < 16:
        raise LocateError(f"field too small to search: {rgb.shape[1]}×{rgb.shape[0]} px")


def red_cell_diameter(rgb: np.ndarray, options: LocateOptions) -> float:
    """The field's red-cell diameter in pixels: ``options.red_cell_diameter_px`` when given,
    else estimated (:func:`leukedge.checks.scale.estimate_red_cell_diameter`) on a copy whose
    shorter side is 224 px, where the estimator works best (red cells of 10–60 px).

    Raises:
        LocateError: the size must be estimated and cannot be (too few red cells).
    """
    if options.red_cell_diameter_px is not None:
        return float(options.red_cell_diameter_px)
    from leukedge.checks.scale import estimate_red_cell_diameter

    factor = min(1.0, 224.0 / min(rgb.shape[:2]))
    small = rgb if factor == 1.0 else _resize(rgb, factor)
    size = estimate_red_cell_diameter(small)
    if size is None:
        raise LocateError(
            "too few red cells to measure the magnification; give "
            "LocateOptions(red_cell_diameter_px=...)"
        )
    return size.diameter_px / factor


def _resize(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def _grabcut(window: np.ndarray, nucleus: np.ndarray) -> np.ndarray:
    """Cell mask (``bool``) in ``window`` (``uint8`` RGB) from its nucleus (``bool``), by
    GrabCut seeded as the module's docstring says (step 5)."""
    radius = max(1.0, float(np.sqrt(nucleus.sum() / np.pi)))
    far = cv2.distanceTransform((~nucleus).astype(np.uint8), cv2.DIST_L2, 3)
    seeds = np.full(nucleus.shape, cv2.GC_PR_BGD, np.uint8)
    seeds[far < 1.2 * radius] = cv2.GC_PR_FGD
    seeds[far > 2.0 * radius] = cv2.GC_BGD
    seeds[[0, -1], :] = cv2.GC_BGD
    seeds[:, [0, -1]] = cv2.GC_BGD
    seeds[nucleus] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(window, seeds, None, bgd, fgd, 3, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a degenerate colour model (a flat window): keep the nucleus
        return nucleus
    cell = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.uint8)
    cell = cv2.morphologyEx(cell, cv2.MORPH_OPEN, _disc(5))
    return _largest_filled(cell) | nucleus


def _disc(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _largest_filled(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a ``uint8`` 0/1 mask, holes filled, as ``bool``."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(mask)
    if contours:
        cv2.drawContours(out, [max(contours, key=cv2.contourArea)], -1, 1, -1)
    return out.astype(bool)


def _segment(
    rgb: np.ndarray,
    region: np.ndarray,
    stain_threshold: float,
    factor: float,
    options: LocateOptions,
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], np.ndarray]:
    """Box, mask box and mask of one cell in the field's pixels (steps 4–5).

    ``region`` is the cell's closed nucleus component at the working scale (``bool``, the
    working field's shape); ``factor`` = working size / field size. The box is the nucleus'
    box grown by the margin; the mask is the GrabCut cell (``options.masks``) in a box of its
    own, or else the nucleus component inside the box.
    """
    ys, xs = np.nonzero(region)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    bounds = (x0, y0, x1, y1)
    box = _grown(
        bounds, options.box_margin * (x1 - x0), options.box_margin * (y1 - y0), factor, rgb
    )
    if not options.masks:
        return box, box, _nucleus_in_box(region, bounds, box, factor)
    # A window reaching REACH nucleus sizes beyond the nucleus on every side, at a scale where a
    # red cell is MASK_DIAMETER_PX across (never above the field's resolution).
    reach = REACH * max(x1 - x0, y1 - y0)
    win = _grown(bounds, reach, reach, factor, rgb)
    cell = _window_mask(rgb, win, region, stain_threshold, factor, options)
    ys, xs = np.nonzero(cell)
    if not len(xs):
        return box, box, _nucleus_in_box(region, bounds, box, factor)
    mask_box = (
        win[0] + int(xs.min()),
        win[1] + int(ys.min()),
        win[0] + int(xs.max()) + 1,
        win[1] + int(ys.max()) + 1,
    )
    mask = cell[
        mask_box[1] - win[1] : mask_box[3] - win[1], mask_box[0] - win[0] : mask_box[2] - win[0]
    ]
    return box, mask_box, mask


def _nucleus_in_box(region, bounds, box, factor) -> np.ndarray:
    """The working-scale nucleus component ``region`` inside its ``bounds`` (x0, y0, x1, y1),
    brought to the field's pixels inside ``box`` (``bool``, the box's shape)."""
    x0, y0, x1, y1 = bounds
    out = np.zeros((box[3] - box[1], box[2] - box[0]), np.uint8)
    nx0, ny0 = int(round(x0 / factor)) - box[0], int(round(y0 / factor)) - box[1]
    nw = min(out.shape[1] - nx0, max(1, int(round((x1 - x0) / factor))))
    nh = min(out.shape[0] - ny0, max(1, int(round((y1 - y0) / factor))))
    inside = region[y0:y1, x0:x1].astype(np.uint8)
    out[ny0 : ny0 + nh, nx0 : nx0 + nw] = cv2.resize(
        inside, (nw, nh), interpolation=cv2.INTER_NEAREST
    )
    return out.astype(bool)


def _window_mask(
    rgb: np.ndarray,
    win: tuple[int, int, int, int],
    region: np.ndarray,
    stain_threshold: float,
    factor: float,
    options: LocateOptions,
) -> np.ndarray:
    """GrabCut cell mask (``bool``, the window's size in field pixels) of the nucleus
    component ``region`` (working scale) inside the field window ``win``."""
    scale = min(1.0, MASK_DIAMETER_PX * factor / options.work_diameter_px)
    window = rgb[win[1] : win[3], win[0] : win[2]]
    window = np.ascontiguousarray(_resize(window, scale) if scale < 1.0 else window)
    wh, ww = window.shape[:2]
    stain = cv2.GaussianBlur(cv2.subtract(window[..., 2], window[..., 1]), (3, 3), 0)
    # The component brought to the window (window pixel u is working pixel
    # win0·factor + u·factor/scale); its closing fills the gaps between lobes.
    affine = np.array(
        [[factor / scale, 0, win[0] * factor], [0, factor / scale, win[1] * factor]], np.float32
    )
    inside = cv2.warpAffine(
        region.astype(np.uint8), affine, (ww, wh), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    ).astype(bool)
    nucleus = inside & (stain > stain_threshold)
    cell = _grabcut(window, nucleus if nucleus.any() else inside)
    if scale < 1.0:
        size = (win[2] - win[0], win[3] - win[1])
        cell = cv2.resize(cell.astype(np.uint8), size, interpolation=cv2.INTER_LINEAR) > 0
    return cell


REACH = 0.75
"""GrabCut's window reaches this many nucleus sizes beyond the nucleus on every side
(cytoplasm is at most ~0.5 of a nucleus size wide in the ``wbc-normal`` masks)."""

MASK_DIAMETER_PX = 40.0
"""Red-cell diameter in pixels at which GrabCut segments a cell's mask (at most the field's
own resolution): 40 px gives a Dice 0.01–0.03 under 50 px on the ``wbc-normal`` masks at
half GrabCut's cost (which grows with the window's pixels)."""


def _grown(
    bounds: tuple[int, int, int, int], dx: float, dy: float, factor: float, rgb: np.ndarray
) -> tuple[int, int, int, int]:
    """Working-scale ``bounds`` (x0, y0, x1, y1) grown by ``dx``, ``dy`` on each side, in the
    field's pixels (÷ ``factor``), clipped to the field ``rgb`` and rounded outwards."""
    x0, y0, x1, y1 = bounds
    height, width = rgb.shape[:2]
    return (
        max(0, int(np.floor((x0 - dx) / factor))),
        max(0, int(np.floor((y0 - dy) / factor))),
        min(width, int(np.ceil((x1 + dx) / factor))),
        min(height, int(np.ceil((y1 + dy) / factor))),
    )


def locate_cells(rgb: np.ndarray, options: LocateOptions | None = None) -> list[LocatedCell]:
    """Find the white cells in a stained smear field.

    Args:
        rgb: the field, ``(H, W, 3)`` ``uint8`` RGB, at least 16×16.
        options: :class:`LocateOptions` (defaults when ``None``).

    Returns:
        The cells, ordered top to bottom then left to right by box; an empty list when the
        field holds none (a field of red cells only is not an error).

    Raises:
        LocateError: ``rgb`` is not an RGB ``uint8`` field, or its red-cell size must be
            estimated and cannot be (too few red cells).
    """
    options = options or LocateOptions()
    _check_field(rgb)
    diameter = red_cell_diameter(rgb, options)
    factor = options.work_diameter_px / diameter
    small = _resize(rgb, factor) if abs(factor - 1.0) > 1e-3 else rgb
    stain = cv2.GaussianBlur(cv2.subtract(small[..., 2], small[..., 1]), (3, 3), 0)
    otsu, _ = cv2.threshold(stain, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = max(otsu, float(options.min_stain))
    _, nuclei = cv2.threshold(stain, threshold, 255, cv2.THRESH_BINARY)
    nuclei = cv2.morphologyEx(nuclei, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    nuclei = cv2.morphologyEx(
        nuclei,
        cv2.MORPH_CLOSE,
        _disc(max(3, int(round(options.closing * options.work_diameter_px)) | 1)),
    )
    n, labels, stats, _ = cv2.connectedComponentsWithStats(nuclei, connectivity=8)
    min_area = options.min_nucleus_area * options.work_diameter_px**2
    sh, sw = nuclei.shape
    cells = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue
        touches = x == 0 or y == 0 or x + w >= sw or y + h >= sh
        if touches and options.drop_border_cells:
            continue
        box, mask_box, mask = _segment(rgb, labels == i, threshold, factor, options)
        cells.append(
            LocatedCell(box, mask_box, mask, int(round(area / factor**2)), touches, diameter)
        )
    cells.sort(key=lambda c: (c.box[1], c.box[0]))
    return cells


def cell_crop(
    rgb: np.ndarray, cell: LocatedCell, size: int, diameters: float | None = None
) -> np.ndarray:
    """The cell on a black background, centred in a square, as a cell model expects.

    C-NMC's cells (the paper's data) are segmented cells on black; a cell model trained on
    them wants the same input here.

    Args:
        rgb: the field the cell was found in, ``(H, W, 3)`` ``uint8`` RGB.
        cell: a :class:`LocatedCell` of that field.
        size: side of the crop in pixels (> 0).
        diameters: side of the square cut from the field, in red-cell diameters
            (``cell.red_cell_diameter_px`` each), so that cells come out at the
            magnification a cell model was trained at; ``None``: the cell's box, padded to
            a square with a 10 % margin, fills the crop.

    Returns:
        ``(size, size, 3)`` ``uint8`` RGB: the cell's pixels inside its mask, black
        elsewhere (also where the square reaches past the field's border).

    Raises:
        ValueError: ``size`` or ``diameters`` not > 0.
    """
    if size <= 0 or (diameters is not None and not diameters > 0):
        raise ValueError(f"size and diameters must be > 0, got {size}, {diameters}")
    x0, y0, x1, y1 = cell.mask_box
    side = (
        diameters * cell.red_cell_diameter_px
        if diameters is not None
        else 1.1 * max(x1 - x0, y1 - y0)
    )
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    masked = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    masked[cell.mask] = rgb[y0:y1, x0:x1][cell.mask]
    # Map the square [cx ± side/2] onto [0, size): one affine warp, black outside.
    s = size / side
    affine = np.array([[s, 0, (x0 - cx) * s + size / 2.0], [0, s, (y0 - cy) * s + size / 2.0]])
    return cv2.warpAffine(
        masked,
        affine,
        (size, size),
        flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )

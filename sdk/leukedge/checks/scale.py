"""Magnification from the red cells, and segmented cells on black (OpenCV + NumPy only).

A red cell is about 7.5 µm across in every blood smear (:data:`RED_CELL_DIAMETER_UM`), so
its diameter in pixels is the slide's own ruler: a field photographed at another
magnification, or with a camera whose field of view differs, shows red cells of another
size. :func:`estimate_red_cell_diameter` measures it on the image **as the model sees it**
(already resized to the model's input): the model's filters see those pixels, so that is
the size the model was trained at. A 448×448 photograph of a Taleqani-like field at twice
the resolution shrinks to the training size and is fine; a 640×480 field shrinks by 2.9×
horizontally and 2.1× vertically, and what matters is what is left after that.

How (scale-space blob size; Lindeberg, "Feature detection with automatic scale
selection", IJCV 30, 1998): the cells are separated from the bright background by a
three-class Otsu threshold of the darkness (255 − grey; classes background / red cells /
nuclei), the darkness is rescaled so that background is 0 and a typical red cell 1
(nuclei clip at 1, so a dark nucleus weighs no more than a pale red cell), enclosed holes
of the cell mask (central pallor) are raised to 0.75; on that image at half resolution the
mean squared negative part of the scale-normalised Laplacian of Gaussian, σ²∇²G, is
computed at :data:`SIGMAS`; its peak over σ (interpolated in log σ) is the dominant blob
size, mostly the red cells as they are the most numerous objects. A linear calibration,
fitted on fields of drawn discs of known diameter (tests), turns the peak σ into a
diameter. Cost: :data:`COST_NOTE`.

A segmented cell on black (C-NMC style) is recognised by :func:`black_background`: the
fraction of the image that is near-black and connected to the border, and the number of
objects in the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

RED_CELL_DIAMETER_UM = 7.5
"""Diameter of a normal red cell, micrometres (normocyte, about 6.2–8.2 µm)."""

SIGMAS = tuple(float(s) for s in np.geomspace(0.75, 24.0, 16))
"""Scales σ (pixels at half the input resolution) of the Laplacian of Gaussian."""

_CALIBRATION = (1.076, 3.42)
"""``(a, b)``: the peak σ gives ``2·2√2·σ = a·d + b`` for drawn discs of diameter ``d``
(least squares over 8–60 px discs covering 10–30 % of a 224² field; the +3.4 px come from
the 3×3 smoothing before the threshold and the half resolution)."""

MIN_CELL_AREA_FRACTION = 0.02
"""Below this fraction of the image covered by cells, no estimate (``None``)."""

MIN_CELLS = 2.0
"""Below this many cell areas (covered area / area of a disc of the estimated diameter),
no estimate (``None``): one or two objects are no ruler."""

BLACK_LEVEL = 30
"""A pixel is near-black when all three channels are ≤ this value (0–255)."""

MIN_OBJECT_FRACTION = 0.005
"""An object (a non-black region) counts when it covers at least this fraction of the image."""

COST_NOTE = "3.6 ms per 224×224 image on one core, 8 ms on a loaded one (README, Statuses)"


@dataclass(frozen=True)
class RedCellSize:
    """Red-cell size estimated on one image.

    Attributes:
        diameter_px: diameter of a typical red cell in pixels **of the image given**
            (the model's input when called by the runtime).
        cells: how many cell-sized objects the covered area holds (covered area / area of
            a disc of ``diameter_px``): a rough count, for confidence.
        peak_ratio: energy at the peak scale over the mean energy of all scales (≥ 1;
            a sharp size peak is well above 1).
    """

    diameter_px: float
    cells: float
    peak_ratio: float


def _otsu3(values: np.ndarray) -> tuple[int, int]:
    """Two thresholds ``(low, high)`` of a three-class Otsu split of ``uint8`` values
    (classes ``≤ low``, ``(low, high]``, ``> high``): maximal between-class variance."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    levels = np.arange(256)
    w = np.cumsum(p)
    m = np.cumsum(p * levels)
    # Thresholds below the lowest value or at/above the highest leave a class empty: only
    # the levels in between are tried (the same argmax, in the same order, at less cost).
    present = np.flatnonzero(hist)
    span = np.arange(present[0], max(present[0] + 1, present[-1]))
    a, b = span[:, None], span[None, :]
    w0, w1, w2 = w[a], w[b] - w[a], 1.0 - w[b]
    m0, m1, m2 = m[a], m[b] - m[a], m[-1] - m[b]
    valid = (a < b) & (w0 > 1e-12) & (w1 > 1e-12) & (w2 > 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(valid, m0**2 / w0 + m1**2 / w1 + m2**2 / w2, -1.0)
    i, j = divmod(int(np.argmax(score)), len(span))
    if score[i, j] < 0:  # fewer than three levels: no split
        return int(present[0]), int(present[-1])
    return int(span[i]), int(span[j])


def _enclosed_holes(mask: np.ndarray) -> np.ndarray:
    """Pixels outside ``mask`` (``uint8`` 0/255) not connected to the image border."""
    outside = cv2.bitwise_not(mask)
    count, labels = cv2.connectedComponents(outside, connectivity=4)
    enclosed = np.ones(count, dtype=bool)
    enclosed[0] = False  # the mask itself
    enclosed[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = False
    return enclosed[labels]


def estimate_red_cell_diameter(rgb: np.ndarray) -> RedCellSize | None:
    """Typical red-cell diameter in pixels of ``rgb`` (see the module's docstring).

    Args:
        rgb: ``(H, W, 3)`` ``uint8`` RGB, H and W ≥ 16; the runtime passes the image
            resized to the model's input, so the diameter is in the model's pixels.

    Returns:
        :class:`RedCellSize`, or ``None`` when there are too few cells to measure (less
        than :data:`MIN_CELL_AREA_FRACTION` of the image covered or of it left as
        background, fewer than
        :data:`MIN_CELLS` cell areas, or the size peak at the edge of :data:`SIGMAS`:
        cells smaller than ~6 px or larger than ~140 px). Good to about ±15 % on drawn
        discs of 8–60 px; smear fields spread more (README, Statuses).

    Raises:
        ValueError: ``rgb`` is not ``(H, W, 3)`` ``uint8`` of at least 16×16.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 16:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image ≥ 16², got {rgb.shape} {rgb.dtype}"
        )
    darkness = cv2.GaussianBlur(255 - cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (3, 3), 0)
    low, high = _otsu3(darkness)
    cells = darkness > low
    if not MIN_CELL_AREA_FRACTION <= cells.mean() <= 1.0 - MIN_CELL_AREA_FRACTION:
        return None  # too few cells, or no background to tell them from
    background = float(np.median(darkness[~cells]))
    middle = darkness[cells & (darkness <= high)]
    red = float(np.median(middle)) if middle.size else float(high)
    soft = np.clip((darkness.astype(np.float32) - background) / max(red - background, 1.0), 0, 1)
    mask = cv2.morphologyEx(cells.astype(np.uint8) * 255, cv2.MORPH_CLOSE, np.ones((3, 3)))
    holes = _enclosed_holes(mask)
    soft[holes] = np.maximum(soft[holes], 0.75)
    half = cv2.resize(soft, (soft.shape[1] // 2, soft.shape[0] // 2), interpolation=cv2.INTER_AREA)
    energy = np.empty(len(SIGMAS))
    for i, sigma in enumerate(SIGMAS):
        log = cv2.Laplacian(cv2.GaussianBlur(half, (0, 0), sigma), cv2.CV_32F) * sigma**2
        energy[i] = float(np.mean(np.minimum(log, 0.0) ** 2))
    k = int(np.argmax(energy))
    if not 0 < k < len(SIGMAS) - 1 or energy[k] <= 0:
        return None
    e0, e1, e2 = np.log(energy[k - 1 : k + 2] + 1e-20)
    curvature = e0 - 2 * e1 + e2
    offset = 0.5 * (e0 - e2) / curvature if curvature < 0 else 0.0
    log_step = math.log(SIGMAS[1] / SIGMAS[0])
    sigma = math.exp(math.log(SIGMAS[k]) + offset * log_step)
    a, b = _CALIBRATION
    diameter = (2.0 * 2.0 * math.sqrt(2.0) * sigma - b) / a
    if diameter <= 0:
        return None
    count = float(cells.sum()) / (math.pi * diameter**2 / 4.0)
    if count < MIN_CELLS:
        return None
    return RedCellSize(
        diameter_px=diameter, cells=count, peak_ratio=float(energy[k] / energy.mean())
    )


def black_background(rgb: np.ndarray) -> tuple[float, int]:
    """How much of the image is a black surround, and how many objects lie on it.

    Args:
        rgb: ``(H, W, 3)`` ``uint8`` RGB.

    Returns:
        ``(fraction, objects)``: the fraction (0–1) of pixels that are near-black (all
        channels ≤ :data:`BLACK_LEVEL`) and connected to the image border, and the number
        of connected regions of the other pixels covering at least
        :data:`MIN_OBJECT_FRACTION` of the image. A C-NMC cell: ~0.5–0.9 and 1.
    """
    black = cv2.inRange(rgb, (0, 0, 0), (BLACK_LEVEL,) * 3)
    n, labels = cv2.connectedComponents(black, connectivity=4)
    if n <= 1:
        return 0.0, 1
    touches = np.zeros(n, dtype=bool)
    touches[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    touches[0] = False  # not near-black
    surround = touches[labels]
    fraction = float(surround.mean())
    if fraction == 0.0:
        return 0.0, 1
    rest = (~surround).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(rest, connectivity=8)
    big = stats[1:, cv2.CC_STAT_AREA] >= MIN_OBJECT_FRACTION * rest.size
    return fraction, int(big.sum())


DEFAULT_RANGE_QUANTILE = 0.02
"""Training quantiles the red-cell range starts from (2 % / 98 %). The Taleqani fields have a
tail of ~2 % very dense fields where touching cells merge into larger blobs (estimates up
to ~3× the median); a range wide enough for all of them would hold most BCCD fields
(README, Statuses: ``tools/scale_study.py`` prints the trade-off)."""

DEFAULT_RANGE_MARGIN = 0.10
"""Relative widening of that range on each side (×/÷ 1.10)."""


def fit_diameter_range(
    diameters: Sequence[float | None],
    quantile: float = DEFAULT_RANGE_QUANTILE,
    margin: float = DEFAULT_RANGE_MARGIN,
) -> list[float] | None:
    """The accepted red-cell diameter range from the training images' estimates.

    ``[Q(quantile) / (1 + margin), Q(1 − quantile) · (1 + margin)]`` over the images that
    gave an estimate: a magnification is a factor, so the margin is one too.

    Args:
        diameters: :func:`estimate_red_cell_diameter` ``.diameter_px`` of each training
            image at the model's input size (``None`` and NaN entries are skipped).
        quantile: in (0, 0.5).
        margin: ≥ 0.

    Returns:
        ``[low, high]`` in pixels of the model's input, or ``None`` when fewer than 20
        images gave an estimate (a model of segmented cells, say): no scale check.

    Raises:
        ValueError: ``quantile`` or ``margin`` out of range.
    """
    if not 0.0 < quantile < 0.5 or margin < 0.0:
        raise ValueError(f"quantile must be in (0, 0.5) and margin ≥ 0, got {quantile}, {margin}")
    values = np.array([d for d in diameters if d is not None and math.isfinite(d)], dtype=float)
    if values.size < 20:
        return None
    low, high = np.quantile(values, [quantile, 1.0 - quantile])
    return [float(low / (1.0 + margin)), float(high * (1.0 + margin))]

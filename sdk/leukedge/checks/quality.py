"""Input quality checks: is this image fit to be classified at all? (before the model)

Cheap image statistics, measured on the RGB image **at the model's input size** (what the
model sees), are compared with thresholds that the converter derives from the *training*
images and stores in the model's metadata (:class:`QualityThresholds`). One function
measures (:func:`image_statistics`, used by the runtime and by the converter alike), one
derives thresholds from the training images' statistics (:func:`derive_thresholds`), one
checks (:func:`check_quality`). Nothing here runs the model; each statistic costs
microseconds at 224×224 (OpenCV; all together about 0.25 ms), except the red-cell diameter
(:mod:`leukedge.checks.scale`, a few ms), measured only when asked.

==================  =========================================================================
reason              failed when (statistic, threshold field)
==================  =========================================================================
``too_small``       the decoded image's shorter side < ``min_side`` pixels (default: half the
                    model's input side): the model would see an upsampled blur
``blank``           grey-level standard deviation < ``blank_std_max``: (nearly) uniform
``segmented_cell``  the image is one object on a black surround (a segmented cell, C-NMC
                    style): the near-black border-connected fraction >
                    ``black_background_max`` and 1–2 objects on it (:mod:`leukedge.checks.scale`)
``scale``           the red cells' diameter at the model's input lies outside
                    ``red_cell_diameter_range``: another magnification (:mod:`~.scale`)
``underexposed``    mean grey level < ``dark_mean_min``
``saturated``       fraction of pixels clipped to white (all three channels ≥ 250) >
                    ``saturated_fraction_max``: over-exposed
``out_of_focus``    variance of the Laplacian of the grey image < ``focus_min`` (Pech-Pacheco
                    et al., "Diatom autofocusing in brightfield microscopy: a comparative
                    study", ICPR 2000)
``not_stained``     colourfulness < ``stain_min`` (Hasler & Süsstrunk, "Measuring
                    colourfulness in natural images", SPIE 5007, 2003): greyscale or
                    colourless where the model expects stained smears
==================  =========================================================================

``segmented_cell`` and ``scale`` run before the exposure and focus checks: a cell on black
is dark on average and a field at another magnification looks blurred, and those reasons
would send a technician to the lamp or the focus knob for nothing. Both are off in models
whose metadata lacks their threshold (converted before them); they are then not listed as
``unchecked`` either (the model's other checks are complete without them).

Grey is OpenCV's ``COLOR_RGB2GRAY`` (ITU-R BT.601 luma), values 0–255.

Why "all channels ≥ 250" for ``saturated``: stained smear fields have a bright background;
in the Taleqani training fields a median 49 % (up to 94 %) of pixels have *some* channel
≥ 250, so that count cannot tell over-exposure from a normal field, while pixels clipped in
all three channels are 3 % (median) to 43 % (max) of a field and reach 87 % when the
exposure is raised 1.5×.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from leukedge.checks.scale import black_background, estimate_red_cell_diameter, fit_diameter_range

QUALITY_REASONS = (
    "too_small",
    "blank",
    "segmented_cell",
    "scale",
    "underexposed",
    "saturated",
    "out_of_focus",
    "not_stained",
)
"""Reasons a quality check can give, in the order the checks run (the first failure is the
result's ``reason``)."""

SATURATION_LEVEL = 250
"""A pixel counts as clipped to white when all three channels are ≥ this value (0–255)."""

DEFAULT_QUANTILE = 0.001
"""Training quantile that :func:`derive_thresholds` starts from (0.1 % / 99.9 %)."""

DEFAULT_MARGIN = 0.5
"""Fraction of the way from that training quantile towards the worst possible value at
which the threshold sits (0.5: half-way; for lower bounds, the quantile × 0.5)."""

GENERIC_BLANK_STD_MAX = 2.0
"""Built-in ``blank`` threshold for models without quality metadata: a grey-level standard
deviation under 2 of 256 levels is a uniform surface plus sensor noise, never a specimen."""


@dataclass(frozen=True)
class QualityStatistics:
    """Statistics of one image, measured at the model's input size (except the size).

    Attributes:
        height, width: size of the decoded image before resizing, pixels.
        grey_mean: mean grey level, 0–255.
        grey_std: standard deviation of the grey level, 0–255 units.
        saturated_fraction: fraction of pixels with all channels ≥ :data:`SATURATION_LEVEL`,
            0–1.
        laplacian_variance: variance of the 3×3 Laplacian of the grey image (grey levels²).
        colourfulness: Hasler–Süsstrunk colourfulness M of the image area-averaged to half
            size (0 for grey images; ~13–68 on the Taleqani training fields).
        red_cell_diameter: typical red-cell diameter in pixels of the model's input
            (:func:`leukedge.checks.scale.estimate_red_cell_diameter`); ``None`` when too few
            red cells were found or when not measured (``red_cells=False``).
        red_cell_count: about how many cell-sized objects that estimate rests on (0 when
            ``None``).
        black_background_fraction: fraction (0–1) of near-black pixels connected to the
            border (:func:`leukedge.checks.scale.black_background`).
        black_background_objects: objects on that black surround.
    """

    height: int
    width: int
    grey_mean: float
    grey_std: float
    saturated_fraction: float
    laplacian_variance: float
    colourfulness: float
    red_cell_diameter: float | None = None
    red_cell_count: float = 0.0
    black_background_fraction: float = 0.0
    black_background_objects: int = 0

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready dictionary (floats rounded to 6 significant digits)."""
        return {
            k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in asdict(self).items()
        }


def image_statistics(
    rgb: np.ndarray, source_size: tuple[int, int] | None = None, red_cells: bool = True
) -> QualityStatistics:
    """Measure the quality statistics of one image.

    Args:
        rgb: ``(H, W, 3)`` ``uint8`` RGB, **already resized to the model's input** (the
            statistics describe what the model sees; thresholds are derived the same way).
        source_size: ``(height, width)`` of the image as decoded, before resizing; default
            ``rgb``'s own size.
        red_cells: estimate the red-cell diameter (a few ms at 224²); the runtime passes
            ``False`` for models without a red-cell range.

    Returns:
        :class:`QualityStatistics`.

    Raises:
        ValueError: ``rgb`` is not ``(H, W, 3)`` ``uint8``.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    height, width = source_size or rgb.shape[:2]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    mean, std = cv2.meanStdDev(grey)
    laplacian = cv2.Laplacian(grey, cv2.CV_32F)
    _, lap_std = cv2.meanStdDev(laplacian)
    saturated = cv2.inRange(rgb, (SATURATION_LEVEL,) * 3, (255,) * 3)
    # Colourfulness is a global statistic: measured on the image area-averaged to half
    # size it changes by < 1 % and costs a quarter.
    half = (max(1, rgb.shape[1] // 2), max(1, rgb.shape[0] // 2))
    channels = cv2.resize(rgb, half, interpolation=cv2.INTER_AREA).astype(np.float32)
    rg = channels[..., 0] - channels[..., 1]
    yb = 0.5 * (channels[..., 0] + channels[..., 1]) - channels[..., 2]
    rg_mean, rg_std = cv2.meanStdDev(rg)
    yb_mean, yb_std = cv2.meanStdDev(yb)
    colourfulness = math.hypot(rg_std.item(), yb_std.item()) + 0.3 * math.hypot(
        rg_mean.item(), yb_mean.item()
    )
    red = estimate_red_cell_diameter(rgb) if red_cells and min(rgb.shape[:2]) >= 16 else None
    black_fraction, objects = black_background(rgb)
    return QualityStatistics(
        height=int(height),
        width=int(width),
        grey_mean=mean.item(),
        grey_std=std.item(),
        saturated_fraction=cv2.countNonZero(saturated) / float(grey.size),
        laplacian_variance=lap_std.item() ** 2,
        colourfulness=colourfulness,
        red_cell_diameter=None if red is None else red.diameter_px,
        red_cell_count=0.0 if red is None else red.cells,
        black_background_fraction=black_fraction,
        black_background_objects=objects,
    )


@dataclass
class QualityThresholds:
    """Thresholds of the quality checks; ``None`` switches a check off.

    Attributes:
        min_side: shorter side of the decoded image, pixels, below which ``too_small``.
        blank_std_max: grey standard deviation below which ``blank``.
        dark_mean_min: mean grey level below which ``underexposed``.
        saturated_fraction_max: fraction of white-clipped pixels above which ``saturated``.
        focus_min: variance of the Laplacian below which ``out_of_focus``.
        stain_min: colourfulness below which ``not_stained``.
        red_cell_diameter_range: ``[low, high]``, pixels of the model's input: a measured
            red-cell diameter outside it is ``scale`` (fitted on the training images by
            :func:`leukedge.checks.scale.fit_diameter_range`; ``None``: no scale check).
        black_background_max: near-black border-connected fraction above which an image
            with 1–2 objects is ``segmented_cell`` (``None``: no check).
        source: how the values were obtained, in words (e.g. ``"training split, n=1913"``).
        quantile: training quantile the derived values start from (``None`` if set by hand).
        margin: how far beyond that quantile they sit (see :func:`derive_thresholds`).
    """

    min_side: int | None = None
    blank_std_max: float | None = None
    dark_mean_min: float | None = None
    saturated_fraction_max: float | None = None
    focus_min: float | None = None
    stain_min: float | None = None
    red_cell_diameter_range: list[float] | None = None
    black_background_max: float | None = None
    source: str = "set by hand"
    quantile: float | None = None
    margin: float | None = None

    @classmethod
    def generic(cls, input_side: int) -> QualityThresholds:
        """Built-in thresholds for a model without quality metadata.

        Only the checks that hold for any microscope image whatever the training data:
        ``too_small`` (half the input side) and ``blank`` (grey std < 2). Exposure, focus and
        stain depend on the camera, magnification and stain the model was trained on, so
        they are not guessed: they stay off and the result lists them as unchecked.
        """
        return cls(
            min_side=max(1, input_side // 2),
            blank_std_max=GENERIC_BLANK_STD_MAX,
            source="built-in default",
        )

    @classmethod
    def from_dict(cls, data: dict) -> QualityThresholds:
        """Inverse of :func:`dataclasses.asdict` (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def unchecked(self) -> list[str]:
        """Reasons whose check is off (threshold ``None``), in check order; ``scale`` and
        ``segmented_cell`` are never listed (see the module's docstring)."""
        return [reason for reason, attr in _CHECKS if getattr(self, attr) is None]


_CHECKS = (
    ("too_small", "min_side"),
    ("blank", "blank_std_max"),
    ("underexposed", "dark_mean_min"),
    ("saturated", "saturated_fraction_max"),
    ("out_of_focus", "focus_min"),
    ("not_stained", "stain_min"),
)


@dataclass(frozen=True)
class QualityFailure:
    """One failed check: ``reason`` (one of :data:`QUALITY_REASONS`) and a sentence."""

    reason: str
    message: str


def _origin(thresholds: QualityThresholds, lower: bool) -> str:
    if thresholds.quantile is None or thresholds.margin is None:
        return thresholds.source
    q = 100 * (thresholds.quantile if lower else 1 - thresholds.quantile)
    towards = "0" if lower else "1"
    return f"training images' {q:g} % quantile, {thresholds.margin:g} of the way to {towards}"


def check_quality(stats: QualityStatistics, thresholds: QualityThresholds) -> list[QualityFailure]:
    """Every failed check, in :data:`QUALITY_REASONS` order (empty list: the image is fine).

    Args:
        stats: from :func:`image_statistics`.
        thresholds: the model's :class:`QualityThresholds`.

    Returns:
        :class:`QualityFailure` list; the first is the result's ``reason``.
    """
    t, failures = thresholds, []
    side = min(stats.height, stats.width)
    if t.min_side is not None and side < t.min_side:
        failures.append(
            QualityFailure(
                "too_small",
                f"too small: {stats.width}x{stats.height} pixels, shorter side {side} < "
                f"{t.min_side} (half the model's input side)",
            )
        )
    if t.blank_std_max is not None and stats.grey_std < t.blank_std_max:
        failures.append(
            QualityFailure(
                "blank",
                f"blank: grey-level standard deviation {stats.grey_std:.3g} < "
                f"{t.blank_std_max:.3g} ({_origin(t, True)})",
            )
        )
    if (
        t.black_background_max is not None
        and stats.black_background_fraction > t.black_background_max
        and 1 <= stats.black_background_objects <= 2
    ):
        failures.append(
            QualityFailure(
                "segmented_cell",
                f"a segmented cell on black ({100 * stats.black_background_fraction:.0f} % "
                "black surround): this model expects whole smear fields as photographed "
                "through the microscope, not a cell cut out onto black",
            )
        )
    diameter = stats.red_cell_diameter
    if t.red_cell_diameter_range is not None and diameter is not None and math.isfinite(diameter):
        low, high = t.red_cell_diameter_range
        if not low <= diameter <= high:
            failures.append(
                QualityFailure(
                    "scale",
                    f"red cells {stats.red_cell_diameter:.0f} px across (at the model's "
                    f"input size); this model was trained at {low:.0f}–{high:.0f} px: "
                    "another magnification",
                )
            )
    if t.dark_mean_min is not None and stats.grey_mean < t.dark_mean_min:
        failures.append(
            QualityFailure(
                "underexposed",
                f"underexposed: mean grey level {stats.grey_mean:.3g} < {t.dark_mean_min:.3g} "
                f"({_origin(t, True)})",
            )
        )
    if t.saturated_fraction_max is not None and stats.saturated_fraction > t.saturated_fraction_max:
        failures.append(
            QualityFailure(
                "saturated",
                f"over-exposed: {100 * stats.saturated_fraction:.1f} % of pixels clipped to "
                f"white > {100 * t.saturated_fraction_max:.1f} % ({_origin(t, False)})",
            )
        )
    if t.focus_min is not None and stats.laplacian_variance < t.focus_min:
        failures.append(
            QualityFailure(
                "out_of_focus",
                f"out of focus: variance of the Laplacian {stats.laplacian_variance:.3g} < "
                f"{t.focus_min:.3g} ({_origin(t, True)})",
            )
        )
    if t.stain_min is not None and stats.colourfulness < t.stain_min:
        failures.append(
            QualityFailure(
                "not_stained",
                f"no stain colour: colourfulness {stats.colourfulness:.3g} < {t.stain_min:.3g} "
                f"({_origin(t, True)})",
            )
        )
    return failures


def derive_thresholds(
    statistics: Sequence[QualityStatistics],
    input_side: int,
    quantile: float = DEFAULT_QUANTILE,
    margin: float = DEFAULT_MARGIN,
    source: str = "training split",
) -> QualityThresholds:
    """Thresholds from the statistics of the training images.

    A lower bound sits ``margin`` of the way from the training images' ``quantile`` down to
    0 (``q · (1 − margin)``: with the defaults, half the 0.1 % quantile); the upper bound on
    the clipped fraction sits ``margin`` of the way from the ``1 − quantile`` quantile up to
    1 (``q + margin · (1 − q)``), and so does ``black_background_max`` (from the black
    surround fraction). The red-cell range is :func:`leukedge.checks.scale.fit_diameter_range`
    of the training images' diameters (its own quantile and margin: a factor). So no
    training image fails a check by construction
    unless it lies in the outermost ``quantile``, and an image fails only when it is
    clearly worse than nearly every training image. ``min_side`` is half the input side.

    Args:
        statistics: :func:`image_statistics` of the training images (at the input size).
        input_side: the model's (shorter) input side, pixels.
        quantile: in (0, 0.5); 0.001 by default.
        margin: in [0, 1); 0.5 by default.
        source: what the images were, for the record (``n=…`` is appended).

    Returns:
        :class:`QualityThresholds` with every check on.

    Raises:
        ValueError: no statistics, or ``quantile`` / ``margin`` out of range.
    """
    if not statistics:
        raise ValueError("cannot derive quality thresholds from zero images")
    if not 0.0 < quantile < 0.5 or not 0.0 <= margin < 1.0:
        raise ValueError(
            f"quantile must be in (0, 0.5) and margin in [0, 1), got {quantile}, {margin}"
        )

    def low(attr: str) -> float:
        values = np.array([getattr(s, attr) for s in statistics], dtype=np.float64)
        return float(np.quantile(values, quantile) * (1.0 - margin))

    clipped = np.array([s.saturated_fraction for s in statistics], dtype=np.float64)
    high = float(np.quantile(clipped, 1.0 - quantile))
    black = np.array([s.black_background_fraction for s in statistics], dtype=np.float64)
    black_high = float(np.quantile(black, 1.0 - quantile))
    return QualityThresholds(
        min_side=max(1, input_side // 2),
        blank_std_max=low("grey_std"),
        dark_mean_min=low("grey_mean"),
        saturated_fraction_max=high + margin * (1.0 - high),
        focus_min=low("laplacian_variance"),
        stain_min=low("colourfulness"),
        red_cell_diameter_range=fit_diameter_range([s.red_cell_diameter for s in statistics]),
        black_background_max=black_high + margin * (1.0 - black_high),
        source=f"{source}, n={len(statistics)}",
        quantile=quantile,
        margin=margin,
    )

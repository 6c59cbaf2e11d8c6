"""A cell model on a smear field: locate the white cells, call each, and call the field.

A *cell model* (metadata ``input.kind == "cell"``) was trained on single segmented white
cells on black (C-NMC style); shown a whole field it would see a picture unlike anything it
was trained on. :func:`classify_field` brings the field to it the way its training images
were made:

1. :func:`leukedge.cells.locate.locate_cells` finds the white cells by their nuclear stain
   (threshold on ``B − G``, morphology, GrabCut masks; see that module);
2. :func:`leukedge.cells.locate.cell_crop` cuts each one out onto black, centred, at the
   model's input size (the cell's box filling the crop with a 10 % margin, or a fixed
   number of red-cell diameters across: :attr:`FieldOptions.crop_diameters`);
3. each crop goes through the classifier as any image does, so **the cell model's own checks
   apply per cell** (its quality thresholds, fitted on its training cells; its
   out-of-domain check; its operating point and refer band) and each cell gets its status;
4. the field: the cells found, the positive (ALL) count among the ``ok`` cell calls, that
   fraction with its Wilson 95 % score interval (Wilson, *J. Am. Stat. Assoc.* 22:209–212,
   1927; :func:`leukedge.checks.decision.wilson_interval`, the one the slide summaries use),
   and the field's status: ``ok`` with a call when the interval lies wholly on one side of
   :attr:`FieldOptions.fraction` (as a slide's call, :class:`leukedge.lab.groups.GroupRule`),
   ``refer`` (reason ``uncertain``) when it does not (also when no cell call is ``ok``),
   ``rejected`` with reason ``no_white_cells`` when the locator finds no white cell (a clear
   answer, not an error) or ``no_red_cells`` when the field has too few red cells to
   measure its magnification and none was given (:attr:`LocateOptions.red_cell_diameter_px
   <leukedge.cells.locate.LocateOptions.red_cell_diameter_px>`).

Why the cell model's crops are not refused as ``segmented_cell``: that check (and
``scale``) runs only when the model's metadata carries its threshold, fitted on the model's
own training images (:func:`leukedge.checks.quality.derive_thresholds`): a cell model's
training cells sit on black, so their ``black_background_max`` lies above what a crop shows
(tests/test_cell_on_field.py builds such a model and checks it).

``leukedge classify --locate auto|always|never`` uses :func:`classify_input`: ``auto``
locates when the model is a cell model and the image looks like a field
(:func:`looks_like_field`). This module knows the classifier only by what it calls
(``classify``, ``metadata``, ``input_size``, ``options``, ``pixel_budget``): the cells room
stands below the classifier (``tests/test_layering.py``).

Near 500 lines: the options, the per-cell and per-field results and the one function that
makes them belong together (each result's fields are the record's); locating is
:mod:`leukedge.cells.locate`, the interval :func:`leukedge.checks.decision.wilson_interval`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leukedge.cells.locate import LocateError, LocateOptions, cell_crop, locate_cells
from leukedge.checks.decision import wilson_interval
from leukedge.checks.scale import black_background

__all__ = [
    "FIELD_REASONS",
    "LOCATE_MODES",
    "CellCall",
    "FieldOptions",
    "FieldResult",
    "classify_field",
    "classify_input",
    "locates",
    "looks_like_field",
]

LOCATE_MODES = ("auto", "always", "never")
"""``--locate``: ``auto`` (a cell model on an image that looks like a field), ``always``,
``never`` (the whole image to the model, as before)."""

FIELD_REASONS = ("no_white_cells", "no_red_cells")
"""Reasons only a field classified cell by cell can have (status ``rejected``): the locator
found no white cell; the field has too few red cells to measure its magnification."""

SEGMENTED_BLACK_FRACTION = 0.3
""":func:`looks_like_field`: an image with more than this fraction of black surround
(:func:`leukedge.checks.scale.black_background`) and one or two objects on it is a segmented
cell, not a field (C-NMC cells: 0.5–0.9; a smear field: 0)."""


@dataclass(frozen=True)
class FieldOptions:
    """How a field is classified with a cell model.

    Attributes:
        locate: :class:`~leukedge.cells.locate.LocateOptions` (red-cell size, masks, border
            cells, …).
        crop_diameters: side of each cell's crop in red-cell diameters, so that every cell
            reaches the model at one magnification; ``None`` (default): the cell's box,
            squared with a 10 % margin, fills the crop (C-NMC's cells fill their images).
            See :func:`~leukedge.cells.locate.cell_crop`.
        fraction: the field is called positive (ALL) when the Wilson interval of the ALL
            fraction among ok cell calls lies wholly above this, the other class when wholly
            below, ``refer`` otherwise (0.5: a majority with 95 % confidence; as
            :class:`leukedge.lab.groups.GroupRule`). In (0, 1).

    Raises:
        ValueError: ``crop_diameters`` not > 0, or ``fraction`` outside (0, 1).
    """

    locate: LocateOptions = field(default_factory=LocateOptions)
    crop_diameters: float | None = None
    fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.crop_diameters is not None and not self.crop_diameters > 0:
            raise ValueError(f"crop_diameters must be > 0, got {self.crop_diameters}")
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}")


@dataclass
class CellCall:
    """One located white cell and the cell model's answer on its crop.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in pixels of the field given (``x1``/``y1`` exclusive).
        touches_border: the cell's nucleus touches the field's border (it may be cut).
        result: the :class:`~leukedge.classifier.ClassificationResult` of the cell's crop
            (its ``status``, ``reason``, ``label``, ``probabilities``, …).
    """

    box: tuple[int, int, int, int]
    touches_border: bool
    result: Any

    @property
    def status(self) -> str:
        """The cell's status (``ok``, ``refer``, ``rejected``)."""
        return self.result.status

    @property
    def label(self) -> str | None:
        """The cell's call, only when ``status == "ok"``."""
        return self.result.label

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``box`` (list of 4 ints), ``touches_border``, ``status``,
        ``reason``, ``label``, ``probabilities``, ``score``, ``model_label``,
        ``message``."""
        r = self.result
        return {
            "box": [int(v) for v in self.box],
            "touches_border": bool(self.touches_border),
            "status": r.status,
            "reason": r.reason,
            "label": r.label,
            "probabilities": r.probabilities,
            "score": r.score,
            "model_label": r.model_label,
            "message": r.message,
        }


@dataclass
class FieldResult:
    """A field classified cell by cell with a cell model.

    Attributes:
        cells: one :class:`CellCall` per located white cell, top to bottom then left to
            right.
        positive_label: the class counted (``"ALL"``); ``other_label`` the other one.
        cells_ok: cells whose call is ``ok`` (refer and rejected cells are not counted).
        positive: ``ok`` cells called ``positive_label``, 0 ≤ positive ≤ cells_ok.
        fraction: ``positive / cells_ok`` in [0, 1]; ``None`` without ok cells.
        ci_low, ci_high: Wilson 95 % interval of ``fraction`` ((0, 1) without ok cells).
        status: ``ok`` (``label`` is the field's call), ``refer`` (reason ``uncertain``)
            or ``rejected`` (reason in :data:`FIELD_REASONS`); see the module docstring.
        reason: ``None`` when ``ok``.
        message: one sentence with the counts and the interval.
        label: the field's call, only when ``ok``.
        red_cell_diameter_px: the red-cell diameter the cells were found at, pixels of the
            field (``None`` when it could not be measured).
        model_name, model_version: the cell model's.
        source: the file path, when the input was a file.
    """

    cells: list[CellCall]
    positive_label: str
    other_label: str
    cells_ok: int
    positive: int
    fraction: float | None
    ci_low: float
    ci_high: float
    status: str
    reason: str | None
    message: str
    label: str | None
    red_cell_diameter_px: float | None
    model_name: str
    model_version: str
    source: str | None = None

    @property
    def cells_found(self) -> int:
        """White cells the locator found."""
        return len(self.cells)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the keys of :meth:`ClassificationResult.to_dict
        <leukedge.classifier.ClassificationResult.to_dict>` (the field's status, reason,
        message and call; no probabilities of its own), then ``cells`` (:meth:`CellCall.to_dict`
        each), ``cells_found``, ``cells_ok``, ``n_<positive>``, ``fraction_<positive>``,
        ``ci_low``, ``ci_high`` and ``red_cell_diameter_px``."""
        pos = self.positive_label
        return {
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "label": self.label,
            "probabilities": None,
            "score": None,
            "model_label": None,
            "model_probabilities": None,
            "ood_distance": None,
            "quality": None,
            "failed_checks": [] if self.reason is None else [self.reason],
            "unchecked": [],
            "model": self.model_name,
            "model_version": self.model_version,
            "source": self.source,
            "timestamp_ms": None,
            "cells": [cell.to_dict() for cell in self.cells],
            **dict(
                zip(
                    field_columns(pos),
                    [
                        self.cells_found,
                        self.cells_ok,
                        self.positive,
                        self.fraction,
                        self.ci_low,
                        self.ci_high,
                    ],
                    strict=True,
                )
            ),
            "red_cell_diameter_px": self.red_cell_diameter_px,
        }


def field_columns(positive_label: str) -> list[str]:
    """The field aggregates' record keys and CSV columns: ``cells_found``, ``cells_ok``,
    ``n_<positive>``, ``fraction_<positive>``, ``ci_low``, ``ci_high``."""
    return [
        "cells_found",
        "cells_ok",
        f"n_{positive_label}",
        f"fraction_{positive_label}",
        "ci_low",
        "ci_high",
    ]


def _two_labels(classifier: Any) -> tuple[str, str]:
    meta = classifier.metadata
    positive = meta.decision.positive_label if meta.decision else meta.positive_label
    labels = list(meta.labels)
    if len(labels) != 2 or positive not in labels:
        raise ValueError(
            f"a field's call needs a two-class cell model with a positive class; the model "
            f"has {labels} (positive {positive!r})"
        )
    return positive, labels[1 - labels.index(positive)]


def _field_call(
    cells: list[CellCall], positive: str, other: str, options: FieldOptions
) -> tuple[str, str | None, str | None, int, int, str]:
    """``(status, reason, label, ok, positive count, message)`` from the cells' calls."""
    ok = [c for c in cells if c.status == "ok"]
    k = sum(c.label == positive for c in ok)
    low, high = wilson_interval(k, len(ok))
    counts = f"{len(cells)} white cell{'s' if len(cells) != 1 else ''}, {len(ok)} called"
    if ok:
        counts += f", {k} {positive} ({k / len(ok):.2f}, 95 % interval {low:.2f}–{high:.2f})"
    if low > options.fraction:
        return "ok", None, positive, len(ok), k, f"{positive}: {counts}"
    if high < options.fraction:
        return "ok", None, other, len(ok), k, f"{other}: {counts}"
    why = "no cell call" if not ok else f"the interval is not clear of {options.fraction:g}"
    return "refer", "uncertain", None, len(ok), k, f"uncertain: {counts}; {why}"


def classify_field(
    classifier: Any,
    image: Any,
    options: FieldOptions | None = None,
    *,
    pixel_format: str | None = None,
) -> FieldResult:
    """Classify a smear field cell by cell with a cell model (the module's steps 1–4).

    Args:
        classifier: an ``IMAGE``-mode :class:`~leukedge.classifier.Classifier` of a
            two-class model (any input kind: this function does not look at it, so a field
            model can be tried on cells too; :func:`classify_input` chooses).
        image: the field: a path, a ``PIL.Image`` or a ``uint8`` array ``(H, W, 3)`` RGB
            (or as ``pixel_format`` says), at its full resolution (not resized to the
            model's input; the cells are cut from it).
        options: :class:`FieldOptions` (defaults when ``None``).
        pixel_format: an array's channel order, as in
            :meth:`~leukedge.classifier.Classifier.classify`.

    Returns:
        :class:`FieldResult`; a field without white cells is ``rejected`` with reason
        ``no_white_cells`` (not an error).

    Raises:
        FileNotFoundError, leukedge.engine.preprocess.ImageDecodeError: unreadable input or
            larger than the classifier's ``max_pixels``.
        ValueError: not a two-class model, or a wrong running mode.
    """
    options = options or FieldOptions()
    source = None if isinstance(image, np.ndarray) or hasattr(image, "getpixel") else str(image)
    with _claim(classifier) as reserve:
        rgb = _load_full(classifier, image, pixel_format, reserve)
        return _classify_rgb(classifier, rgb, options, source)


def _claim(classifier: Any):
    budget = getattr(classifier, "pixel_budget", None)
    return budget.claim() if budget is not None else contextlib.nullcontext()


def _load_full(classifier: Any, image: Any, pixel_format: str | None, reserve) -> np.ndarray:
    from leukedge.engine.preprocess import load_rgb

    return load_rgb(
        image,
        pixel_format=pixel_format,
        max_pixels=classifier.options.max_pixels,
        reserve=reserve,
    )


def _rejected_field(
    reason: str, message: str, diameter: float | None, common: dict[str, Any]
) -> FieldResult:
    """A field refused before any cell is called (no scale, no white cell)."""
    return FieldResult(
        cells=[],
        cells_ok=0,
        positive=0,
        fraction=None,
        ci_low=0.0,
        ci_high=1.0,
        status="rejected",
        reason=reason,
        message=message,
        label=None,
        red_cell_diameter_px=diameter,
        **common,
    )


def _classify_rgb(
    classifier: Any, rgb: np.ndarray, options: FieldOptions, source: str | None
) -> FieldResult:
    positive, other = _two_labels(classifier)
    meta = classifier.metadata
    common = {
        "positive_label": positive,
        "other_label": other,
        "model_name": meta.name,
        "model_version": meta.version,
        "source": source,
    }
    try:
        located = locate_cells(rgb, options.locate)
    except LocateError as exc:
        return _rejected_field(
            "no_red_cells", f"no scale to locate white cells at: {exc}", None, common
        )
    side = max(classifier.input_size)
    cells = [
        CellCall(
            cell.box,
            cell.touches_border,
            classifier.classify(cell_crop(rgb, cell, side, options.crop_diameters)),
        )
        for cell in located
    ]
    diameter = located[0].red_cell_diameter_px if located else None
    if not cells:
        return _rejected_field(
            "no_white_cells",
            "no white cell found in the field: nothing for a cell model to call",
            diameter,
            common,
        )
    status, reason, label, ok, k, message = _field_call(cells, positive, other, options)
    low, high = wilson_interval(k, ok)
    return FieldResult(
        cells=cells,
        cells_ok=ok,
        positive=k,
        fraction=k / ok if ok else None,
        ci_low=low,
        ci_high=high,
        status=status,
        reason=reason,
        message=message,
        label=label,
        red_cell_diameter_px=diameter,
        **common,
    )


def looks_like_field(rgb: np.ndarray, input_size: tuple[int, int]) -> bool:
    """Whether an image looks like a smear field rather than one segmented cell.

    Args:
        rgb: ``(H, W, 3)`` ``uint8`` RGB at its decoded size.
        input_size: the model's ``(height, width)``.

    Returns:
        ``True`` when the image is larger than the model's input on some side and is not a
        cell on a black surround (more than :data:`SEGMENTED_BLACK_FRACTION` black border
        with one or two objects, :func:`leukedge.checks.scale.black_background`, measured
        at the model's input size).
    """
    height, width = rgb.shape[:2]
    if height <= input_size[0] and width <= input_size[1]:
        return False
    from leukedge.engine.preprocess import resize_rgb

    fraction, objects = black_background(resize_rgb(rgb, input_size))
    return not (fraction > SEGMENTED_BLACK_FRACTION and 1 <= objects <= 2)


def locates(classifier: Any, mode: str) -> bool:
    """Whether :func:`classify_input` with ``mode`` may locate cells for this classifier's
    model (``always``; ``auto`` for a cell model), so a CSV gets the field columns.

    Raises:
        ValueError: ``mode`` not in :data:`LOCATE_MODES`.
    """
    if mode not in LOCATE_MODES:
        raise ValueError(f"locate must be one of {LOCATE_MODES}, got {mode!r}")
    return mode == "always" or (mode == "auto" and classifier.metadata.input.kind == "cell")


def classify_input(
    classifier: Any,
    image: Any,
    locate: str = "auto",
    options: FieldOptions | None = None,
) -> Any:
    """One input as ``leukedge classify --locate`` treats it.

    ``never`` (or ``auto`` with a field model): ``classifier.classify(image)``, exactly as
    without this option. ``always``: :func:`classify_field`. ``auto`` with a cell model:
    :func:`classify_field` when the decoded image :func:`looks_like_field`, else
    ``classifier.classify(image)`` (a segmented cell, read again from its source so that its
    result is the one ``never`` gives).

    Args:
        classifier: an ``IMAGE``-mode classifier.
        image: a path, ``PIL.Image`` or RGB ``uint8`` array.
        locate: one of :data:`LOCATE_MODES`.
        options: :class:`FieldOptions` for the located fields.

    Returns:
        A :class:`~leukedge.classifier.ClassificationResult` or a :class:`FieldResult`
        (both have ``status``, ``reason``, ``label`` and ``to_dict()``).

    Raises:
        As :meth:`~leukedge.classifier.Classifier.classify` and :func:`classify_field`;
        ValueError: an unknown ``locate``.
    """
    if not locates(classifier, locate):
        return classifier.classify(image)
    options = options or FieldOptions()
    source = None if isinstance(image, np.ndarray) or hasattr(image, "getpixel") else str(image)
    with _claim(classifier) as reserve:
        rgb = _load_full(classifier, image, None, reserve)
        if locate == "always" or looks_like_field(rgb, classifier.input_size):
            return _classify_rgb(classifier, rgb, options, source)
    return classifier.classify(image)

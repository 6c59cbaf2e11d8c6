"""The accuracy-delta gate: a converted model must give the float model's answers.

The float Keras model and each ``.tflite`` are run on the same labelled held-out images
(the validation split of the run; the test split stays untouched). Predictions are keyed by
file path and joined to labels by name (:func:`leukedge.evaluation.metrics.evaluate`). The gate
fails when a precision loses more than ``max_delta`` percentage points of accuracy or when
its predicted labels agree with the float model's on fewer than ``min_agreement`` of images.

Both bounds are needed: a broken quantization can keep the accuracy of a model that always
answers the majority class, but not its agreement with the float model.

Labels are not enough either: int8 calibrated on uniform noise can keep the float model's
labels on every validation field while its probabilities drift (the issue that added this
bound measured a mean |Δp| of 0.11 against 0.009 with proper calibration; on the gate
test's 64-px probe, noise in [128, 255] keeps 100 % agreement and raises the ECE by 0.037),
and the probabilities are what the operating point, the refer band and the reported
confidence rest on. So the gate also bounds the **mean absolute probability difference** to
the float model and the **increase in expected calibration error** (ECE, Guo et al. 2017)
over the float model's (temperature applied to both, as at run time).

The ``.tflite`` side runs through :class:`leukedge.engine.interpreter.TFLiteEngine`, the
very code the SDK uses, with images decoded and resized by :mod:`leukedge.engine.preprocess`
(:func:`leukedge.evaluation.predict.infer_tflite`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from leukedge.checks.calibration import apply_temperature
from leukedge.errors import LeukedgeError
from leukedge.evaluation.metrics import evaluate, expected_calibration_error, join_by_name
from leukedge.evaluation.resolution import (
    DEFAULT_MAX_DELTA_PP,
    DEFAULT_MIN_AGREEMENT,
    image_pp,
    images_allowed,
)


@dataclass
class GateConfig:
    """Bounds of the gate.

    Attributes:
        max_delta: largest allowed accuracy loss, float minus quantized, in percentage points
            (1.0).
        min_agreement: smallest allowed fraction of images where the quantized model predicts
            the float model's label (0.98).
        max_mean_abs_prob_diff: largest allowed mean |Δp| against the float model, over all
            images and classes (0.05). Measured with proper int8 calibration: 0.012–0.020
            on probes and trained proposed-lite heads at 64 and 224 px, 0.017 on the
            default model; the issue's uniform-noise case: 0.11.
        max_ece_increase: largest allowed ECE of the quantized model minus that of the float
            model, both with the model's temperature (0.02). Measured with proper
            calibration: −0.014 to +0.002; noise calibrations: up to +0.037.
    """

    max_delta: float = DEFAULT_MAX_DELTA_PP
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_mean_abs_prob_diff: float = 0.05
    max_ece_increase: float = 0.02


class GateFailedError(LeukedgeError, RuntimeError):
    """A precision failed the gate; ``report`` holds the figures of every precision (the
    ``conversion.json`` written before raising). A ``RuntimeError``, as before
    :class:`LeukedgeError`."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


def compare(
    reference: Mapping[str, Sequence[float]],
    candidate: Mapping[str, Sequence[float]],
    truth: Mapping[str, str],
    labels: Sequence[str],
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Figures of ``candidate`` against labels and against the float ``reference``.

    All three mappings are keyed by file path and joined by name.

    Args:
        reference, candidate: ``{path: probabilities}`` as the models output them.
        truth: ``{path: label}``.
        labels: class names in probability order.
        temperature: the model's calibration temperature, applied to both before the ECE
            (:func:`leukedge.checks.calibration.apply_temperature`).

    Returns:
        ``accuracy``, ``weighted_f1``, ``recall`` (per class), ``delta_pp`` (reference
        accuracy minus candidate accuracy, percentage points; positive = loss),
        ``agreement`` (fraction of equal predicted labels), ``max_abs_prob_diff`` and
        ``mean_abs_prob_diff`` (over all images and classes), ``ece`` and ``reference_ece``
        (calibrated), ``ece_increase`` (candidate minus reference), ``n``, and
        ``resolution_pp``, the gate's resolution: one image of those ``n`` in percentage
        points (``100 / n``).
    """
    ref_metrics = evaluate(reference, truth, labels)
    cand_metrics = evaluate(candidate, truth, labels)
    paths, y_true, ref = join_by_name(reference, truth, labels)
    _, _, cand = join_by_name(candidate, truth, labels)
    diff = np.abs(ref - cand)
    ece = expected_calibration_error(y_true, apply_temperature(cand, temperature))
    reference_ece = expected_calibration_error(y_true, apply_temperature(ref, temperature))
    return {
        "n": len(paths),
        "resolution_pp": image_pp(len(paths)),
        "accuracy": cand_metrics["accuracy"],
        "weighted_f1": cand_metrics["weighted_f1"],
        "recall": {k: v["recall"] for k, v in cand_metrics["per_class"].items()},
        "delta_pp": 100.0 * (ref_metrics["accuracy"] - cand_metrics["accuracy"]),
        "agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))),
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
        "ece": ece,
        "reference_ece": reference_ece,
        "ece_increase": ece - reference_ece,
    }


def check(figures: Mapping[str, Any], config: GateConfig) -> list[str]:
    """Reasons why ``figures`` (from :func:`compare`) fail the gate.

    Returns:
        One sentence per bound that ``figures`` break (accuracy delta in percentage points,
        agreement in %, mean |Δp|, ECE increase); empty when the gate passes.
    """
    n = figures.get("n")
    step = f" (one image = {image_pp(n):.2f} pp of {n})" if n else ""
    reasons = []
    if figures["delta_pp"] > config.max_delta:
        reasons.append(f"accuracy delta {figures['delta_pp']:.2f} pp > {config.max_delta} pp{step}")
    if figures["agreement"] < config.min_agreement:
        reasons.append(
            f"agreement {100 * figures['agreement']:.2f} % < {100 * config.min_agreement:.2f} %"
            + step
        )
    if figures["mean_abs_prob_diff"] > config.max_mean_abs_prob_diff:
        reasons.append(
            f"mean |dp| {figures['mean_abs_prob_diff']:.4f} > {config.max_mean_abs_prob_diff}"
        )
    if figures["ece_increase"] > config.max_ece_increase:
        reasons.append(
            f"ECE {figures['ece']:.4f} exceeds the float model's {figures['reference_ece']:.4f} "
            f"by {figures['ece_increase']:.4f} > {config.max_ece_increase}"
        )
    return reasons


def resolution(n: int, config: GateConfig) -> str:
    """The gate's resolution on ``n`` held-out images, in words: what one image is, and
    how many images each label bound allows."""
    return (
        f"gate resolution: one image = {image_pp(n):.2f} pp of {n} held-out images; the "
        f"{config.max_delta:g} pp accuracy bound allows {images_allowed(config.max_delta / 100, n)}"
        f" lost calls, the {100 * config.min_agreement:g} % agreement bound "
        f"{images_allowed(1 - config.min_agreement, n)} changed calls"
    )


def below_resolution(figures: Mapping[str, Any], config: GateConfig) -> bool:
    """``True`` when a gate failure is one image's worth that the split cannot resolve:
    only the label bounds fail, and each by exactly one image (so that bound allows no
    image at all on this split: one image is coarser than it).

    Such a failure is as likely to come from a CPU's rounding on one borderline image as
    from the conversion; keeping tensors in float (``--auto-keep-float``) may not change it.
    """
    n = figures.get("n") or 0
    if not n:
        return False
    drift = (
        figures["mean_abs_prob_diff"] > config.max_mean_abs_prob_diff
        or figures["ece_increase"] > config.max_ece_increase
    )
    accuracy = figures["delta_pp"] > config.max_delta
    agreement = figures["agreement"] < config.min_agreement
    if drift or not (accuracy or agreement):
        return False
    one = image_pp(n) + 1e-9
    return (not accuracy or figures["delta_pp"] <= one) and (
        not agreement or 100 * (1 - figures["agreement"]) <= one
    )


def format_table(reference: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table: float reference first, then one row per precision."""
    head = (
        f"{'model':<10}{'accuracy':>10}{'wF1':>8}{'delta pp':>10}{'agree %':>9}"
        f"{'max|dp|':>9}{'mean|dp|':>10}{'ECE':>8}  gate"
    )
    lines = [
        head,
        "-" * len(head),
        f"{'keras':<10}{reference['accuracy']:>10.4f}{reference['weighted_f1']:>8.4f}"
        f"{'':>10}{'':>9}{'':>9}{'':>10}{reference.get('ece', float('nan')):>8.4f}  reference",
    ]
    for name, f in rows.items():
        if "error" in f:
            lines.append(f"{name:<10}{'conversion failed':>54}  FAIL: {f['error'][:60]}")
            continue
        verdict = "FAIL: " + "; ".join(f["gate_failures"]) if f["gate_failures"] else "pass"
        lines.append(
            f"{name:<10}{f['accuracy']:>10.4f}{f['weighted_f1']:>8.4f}{f['delta_pp']:>10.2f}"
            f"{100 * f['agreement']:>9.2f}{f['max_abs_prob_diff']:>9.4f}"
            f"{f['mean_abs_prob_diff']:>10.4f}{f['ece']:>8.4f}  {verdict}"
        )
    return "\n".join(lines)

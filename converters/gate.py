"""The accuracy-delta gate: a converted model must give the float model's answers.

The float Keras model and each ``.tflite`` are run on the same labelled held-out images
(the validation split of the run; the test split stays untouched). Predictions are keyed by
file path and joined to labels by name (:func:`leukedge.training.metrics.evaluate`). The gate
fails when a precision loses more than ``max_delta`` percentage points of accuracy or when
its predicted labels agree with the float model's on fewer than ``min_agreement`` of images.

Both bounds are needed: a broken quantization can keep the accuracy of a model that always
answers the majority class, but not its agreement with the float model.

The ``.tflite`` side runs through :class:`leukedge.runtime.TFLiteEngine`, the very code the
SDK uses, with images decoded and resized by :mod:`leukedge.preprocess`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from leukedge.preprocess import load_and_resize
from leukedge.runtime import TFLiteEngine


@dataclass
class GateConfig:
    """Bounds of the gate.

    Attributes:
        max_delta: largest allowed accuracy loss, float minus quantized, in percentage points
            (1.0).
        min_agreement: smallest allowed fraction of images where the quantized model predicts
            the float model's label (0.98).
    """

    max_delta: float = 1.0
    min_agreement: float = 0.98


class GateFailedError(RuntimeError):
    """A precision failed the gate; ``report`` holds the figures of every precision."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


def predict_tflite(
    model: bytes | str, paths: Sequence[str], num_threads: int | None = None
) -> dict[str, list[float]]:
    """``{path: probabilities}`` of a ``.tflite`` on image files (SDK preprocessing)."""
    engine = TFLiteEngine(model, num_threads=num_threads)
    return {
        p: engine.run(load_and_resize(p, engine.input_size)).astype(float).tolist() for p in paths
    }


def compare(
    reference: Mapping[str, Sequence[float]],
    candidate: Mapping[str, Sequence[float]],
    truth: Mapping[str, str],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Figures of ``candidate`` against labels and against the float ``reference``.

    All three mappings are keyed by file path and joined by name.

    Returns:
        ``accuracy``, ``weighted_f1``, ``recall`` (per class), ``delta_pp`` (reference
        accuracy minus candidate accuracy, percentage points; positive = loss),
        ``agreement`` (fraction of equal predicted labels), ``max_abs_prob_diff`` and
        ``mean_abs_prob_diff`` (over all images and classes), ``n``.
    """
    from leukedge.training.metrics import evaluate, join_by_name

    ref_metrics = evaluate(reference, truth, labels)
    cand_metrics = evaluate(candidate, truth, labels)
    paths, _, ref = join_by_name(reference, truth, labels)
    _, _, cand = join_by_name(candidate, truth, labels)
    diff = np.abs(ref - cand)
    return {
        "n": len(paths),
        "accuracy": cand_metrics["accuracy"],
        "weighted_f1": cand_metrics["weighted_f1"],
        "recall": {k: v["recall"] for k, v in cand_metrics["per_class"].items()},
        "delta_pp": 100.0 * (ref_metrics["accuracy"] - cand_metrics["accuracy"]),
        "agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))),
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
    }


def check(figures: Mapping[str, Any], config: GateConfig) -> list[str]:
    """Reasons why ``figures`` (from :func:`compare`) fail the gate; empty when it passes."""
    reasons = []
    if figures["delta_pp"] > config.max_delta:
        reasons.append(f"accuracy delta {figures['delta_pp']:.2f} pp > {config.max_delta} pp")
    if figures["agreement"] < config.min_agreement:
        reasons.append(
            f"agreement {100 * figures['agreement']:.2f} % < {100 * config.min_agreement:.2f} %"
        )
    return reasons


def format_table(reference: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table: float reference first, then one row per precision."""
    head = (
        f"{'model':<10}{'accuracy':>10}{'wF1':>8}{'delta pp':>10}{'agree %':>9}"
        f"{'max|dp|':>9}{'mean|dp|':>10}  gate"
    )
    lines = [
        head,
        "-" * len(head),
        f"{'keras':<10}{reference['accuracy']:>10.4f}{reference['weighted_f1']:>8.4f}"
        f"{'':>10}{'':>9}{'':>9}{'':>10}  reference",
    ]
    for name, f in rows.items():
        if "error" in f:
            lines.append(f"{name:<10}{'conversion failed':>46}  FAIL: {f['error'][:60]}")
            continue
        verdict = "FAIL: " + "; ".join(f["gate_failures"]) if f["gate_failures"] else "pass"
        lines.append(
            f"{name:<10}{f['accuracy']:>10.4f}{f['weighted_f1']:>8.4f}{f['delta_pp']:>10.2f}"
            f"{100 * f['agreement']:>9.2f}{f['max_abs_prob_diff']:>9.4f}"
            f"{f['mean_abs_prob_diff']:>10.4f}  {verdict}"
        )
    return "\n".join(lines)

"""Temperature scaling: one scalar that makes the softmax probabilities honest.

Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017, section 4.2: divide the
logits by a temperature ``T > 0`` fitted on the validation split by minimising the negative
log-likelihood. The arg-max (hence accuracy) never changes; the confidence does. The fitted
``T`` is stored with the run (``calibration.json``), carried into the ``.tflite`` metadata by
the converter, and applied by :class:`leukedge.Classifier`.
"""

from __future__ import annotations

import numpy as np

from leukedge.checks.calibration import apply_temperature

__all__ = ["apply_temperature", "calibrate_run", "fit_temperature", "negative_log_likelihood"]


def negative_log_likelihood(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean ``-log p[true class]`` (nats)."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0))))


def fit_temperature(
    y_true: np.ndarray, probs: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The ``T`` in ``bounds`` minimising validation NLL (bounded scalar search on log T).

    Args:
        y_true: int class indices ``(n,)``.
        probs: validation probabilities ``(n, k)`` of the uncalibrated model.

    Returns:
        Temperature, > 0 (> 1 softens over-confident models).

    Raises:
        ValueError: empty input.
    """
    if len(y_true) == 0:
        raise ValueError("cannot fit a temperature on an empty validation split")
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(y_true, apply_temperature(probs, np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
    )
    return float(np.exp(result.x))


def calibrate_run(run_dir, split: str = "val") -> dict[str, float]:
    """Fit ``T`` on a run's ``predictions_<split>.csv``; write and return ``calibration.json``.

    Returns:
        ``{"temperature", "split", "n", "nll_before", "nll_after", "ece_before", "ece_after"}``.
    """
    import csv
    import json
    from pathlib import Path

    from leukedge.evaluation.metrics import expected_calibration_error

    run_dir = Path(run_dir)
    with open(run_dir / f"predictions_{split}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = [k[2:] for k in rows[0] if k.startswith("p_")]
    y = np.array([labels.index(r["label"]) for r in rows])
    p = np.array([[float(r[f"p_{lb}"]) for lb in labels] for r in rows])
    t = fit_temperature(y, p)
    q = apply_temperature(p, t)
    result = {
        "temperature": t,
        "split": split,
        "n": len(rows),
        "nll_before": negative_log_likelihood(y, p),
        "nll_after": negative_log_likelihood(y, q),
        "ece_before": expected_calibration_error(y, p),
        "ece_after": expected_calibration_error(y, q),
    }
    (run_dir / "calibration.json").write_text(json.dumps(result, indent=2))
    return result

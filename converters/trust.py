"""What a converted model needs to stand behind its answers, fitted at conversion time.

Three parts go into the ``.tflite``'s metadata (:mod:`leukedge.engine.metadata`, schema 2), each
from the run's own splits, never the test split:

1. **quality thresholds** (:class:`~leukedge.checks.quality.QualityThresholds`): the runtime's own
   :func:`~leukedge.checks.quality.image_statistics` on every **train** image at the model's input
   size, turned into thresholds by :func:`~leukedge.checks.quality.derive_thresholds` (with the
   red-cell diameter range of the ``scale`` check and the ``segmented_cell`` threshold);
2. **out-of-domain model** (:class:`~leukedge.checks.ood.OODSpec`): class means and shrunk shared
   covariance of the **train** images' embeddings, *as this very file computes them* (the
   int8 file's own embedding output, read through the SDK's engine), and a threshold at
   which ≥ 97 % of the **val** images pass;
3. **operating point and refer band** (:class:`~leukedge.checks.decision.DecisionSpec`): on the
   **val** images' probabilities from this file, with the model's temperature applied (as
   the runtime will), for a target ALL sensitivity and a coverage.

Everything runs on the SDK's runtime (:func:`leukedge.evaluation.predict.infer_tflite`), so the
thresholds are in exactly the units the runtime compares against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from leukedge.checks.calibration import apply_temperature
from leukedge.checks.decision import (
    DEFAULT_COVERAGE,
    DEFAULT_TARGET_SENSITIVITY,
    DecisionSpec,
    fit_decision,
)
from leukedge.checks.ood import (
    DEFAULT_ACCEPT_QUANTILE,
    DEFAULT_RANK,
    DEFAULT_SHRINKAGE,
    OODSpec,
    fit_mahalanobis,
    set_threshold,
)
from leukedge.checks.quality import (
    DEFAULT_MARGIN,
    DEFAULT_QUANTILE,
    QualityThresholds,
    derive_thresholds,
    image_statistics,
)
from leukedge.engine.preprocess import load_rgb, resize_rgb


@dataclass
class TrustConfig:
    """Settings of the fitted checks (saved in ``conversion.json``).

    Attributes:
        quality_quantile, quality_margin: see :func:`~leukedge.checks.quality.derive_thresholds`.
        ood_rank: eigenpairs of the covariance stored (64: tools/ood_study.py measured the
            same refusal rates as the full 1,280-d matrix at 5 % of its size).
        ood_shrinkage: α of the shrunk covariance (0.1).
        ood_accept_quantile: fraction of val images within the threshold (0.97).
        target_sensitivity: val sensitivity for the positive class the threshold must
            reach (0.98).
        coverage: fraction of val images that must still get a call with the band (0.95).
        max_train_images: cap on train images embedded for the OOD fit (``None``: all).
    """

    quality_quantile: float = DEFAULT_QUANTILE
    quality_margin: float = DEFAULT_MARGIN
    ood_rank: int = DEFAULT_RANK
    ood_shrinkage: float = DEFAULT_SHRINKAGE
    ood_accept_quantile: float = DEFAULT_ACCEPT_QUANTILE
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    coverage: float = DEFAULT_COVERAGE
    max_train_images: int | None = None


def derive_quality(
    paths: Sequence[str], size: tuple[int, int], config: TrustConfig
) -> QualityThresholds:
    """Quality thresholds from the training images (decoded and resized as at run time).

    Raises:
        ValueError: no paths.
    """
    stats = []
    for path in paths:
        rgb = load_rgb(path)
        stats.append(image_statistics(resize_rgb(rgb, size), rgb.shape[:2]))
    return derive_thresholds(
        stats,
        input_side=min(size),
        quantile=config.quality_quantile,
        margin=config.quality_margin,
        source="training split",
    )


def fit_ood(
    train_embeddings: np.ndarray,
    train_labels: Sequence[str],
    val_embeddings: np.ndarray,
    labels: Sequence[str],
    embedding_output: str | None,
    config: TrustConfig,
) -> OODSpec:
    """Mahalanobis model on the train embeddings, threshold on the val embeddings.

    Raises:
        ValueError: a class without train images, or no val images.
    """
    y = np.array([list(labels).index(label) for label in train_labels])
    spec = fit_mahalanobis(
        train_embeddings, y, labels, shrinkage=config.ood_shrinkage, rank=config.ood_rank
    )
    spec = set_threshold(spec, val_embeddings, quantile=config.ood_accept_quantile, split="val")
    spec.embedding_output = embedding_output
    spec.fitted_on = "train"
    return spec


def fit_operating_point(
    val_probabilities: np.ndarray,
    val_labels: Sequence[str],
    labels: Sequence[str],
    positive_label: str,
    temperature: float,
    precision: str,
    config: TrustConfig,
    source: str = "validation split",
) -> DecisionSpec | None:
    """Threshold and refer band on calibrated probabilities: the val outputs of this file,
    or (``source``) the out-of-fold outputs of a blocked cross-validation.

    Returns:
        The spec; ``None`` when the model does not have two classes including
        ``positive_label`` (the runtime then takes the arg-max).
    """
    if len(labels) != 2 or positive_label not in labels:
        return None
    calibrated = apply_temperature(np.asarray(val_probabilities, dtype=np.float64), temperature)
    p_positive = calibrated[:, list(labels).index(positive_label)]
    truth = np.array([label == positive_label for label in val_labels])
    return fit_decision(
        p_positive,
        truth,
        positive_label=positive_label,
        target_sensitivity=config.target_sensitivity,
        coverage=config.coverage,
        source=f"{source}, {precision} probabilities with temperature {temperature:.3f}",
    )


def summary(ood: OODSpec | None, decision: DecisionSpec | None) -> dict[str, Any]:
    """The figures ``conversion.json`` and the console show for one file."""
    out: dict[str, Any] = {}
    if ood is not None:
        out["ood"] = {
            "threshold": ood.threshold,
            "rank": ood.rank,
            "embedding_dim": ood.embedding_dim,
            "n_fit": ood.n_fit,
            "val_accepted": ood.validation.get("accepted"),
        }
    if decision is not None:
        out["decision"] = {
            "threshold": decision.threshold,
            "refer_band": decision.refer_band,
            **{f"val_{k}": v for k, v in decision.validation["operating_point"].items()},
        }
    return out

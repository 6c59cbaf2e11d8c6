"""Classification metrics, computed from predictions joined to labels **by file name**.

The source paper's confusion matrix (752/339/361/148) is at chance level, the signature of
predictions misaligned with labels (a shuffled generator read in position order). Here every
metric function takes ``{path: probabilities}`` and ``{path: label}`` and joins them by key;
the order in which predictions were produced cannot change a figure.

Weighted F1 is the C-NMC 2019 challenge metric. Sensitivity and specificity are for the
positive class ``ALL``. Counting and averaging are scikit-learn's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

HEADLINE = (
    "n",
    "accuracy",
    "weighted_f1",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "roc_auc",
    "confusion_matrix",
)
"""The figures quoted in summaries and model cards, in this order."""


def headline(metrics: Mapping[str, Any], extra: Sequence[str] = ()) -> dict[str, Any]:
    """The :data:`HEADLINE` figures (plus ``extra`` keys) of a metrics dictionary."""
    return {k: metrics.get(k) for k in (*HEADLINE, *extra)}


def join_by_name(
    probabilities: Mapping[str, Sequence[float]],
    truth: Mapping[str, str],
    labels: Sequence[str],
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Align predictions with labels by file name.

    Args:
        probabilities: ``{path: probabilities}``, each of length ``len(labels)``.
        truth: ``{path: label}``.
        labels: class names in probability order.

    Returns:
        ``(paths, y_true, probs)``: sorted paths, int class indices ``(n,)`` and float64
        probabilities ``(n, n_classes)``, row ``i`` belonging to ``paths[i]``.

    Raises:
        ValueError: a labelled file has no prediction or vice versa, or a label is unknown.
    """
    missing = sorted(set(truth) - set(probabilities))
    extra = sorted(set(probabilities) - set(truth))
    if missing or extra:
        raise ValueError(
            f"predictions and labels do not match by file name: {len(missing)} labelled files "
            f"without prediction (e.g. {missing[:3]}), {len(extra)} predictions without label "
            f"(e.g. {extra[:3]})"
        )
    paths = sorted(truth)
    unknown = {truth[p] for p in paths} - set(labels)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among the classes {list(labels)}")
    y_true = np.array([list(labels).index(truth[p]) for p in paths], dtype=np.int64)
    probs = np.array([np.asarray(probabilities[p], dtype=np.float64) for p in paths])
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probabilities must have shape (n, {len(labels)}), got {probs.shape}")
    return paths, y_true, probs


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE: mean |accuracy − confidence| over equal-width confidence bins, weighted by count.

    Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017, eq. 3. Range [0, 1].
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], positive: str = "ALL"
) -> dict[str, Any]:
    """All image-level figures for aligned arrays (see :func:`join_by_name`).

    Args:
        y_true: int class indices ``(n,)``.
        probs: probabilities ``(n, n_classes)``; the prediction is the arg-max.
        labels: class names.
        positive: the class whose sensitivity/specificity/ROC-AUC is reported.

    Returns:
        Dictionary with ``n``, ``accuracy``, ``balanced_accuracy``, ``weighted_f1``,
        ``macro_f1``, ``per_class`` (``{label: {precision, recall, f1, support}}``),
        ``confusion_matrix`` (rows = true, columns = predicted, in ``labels`` order),
        ``sensitivity``, ``specificity``, ``roc_auc`` (``None`` if one class is absent) and
        ``ece``. All rates are fractions in [0, 1].
    """
    from sklearn import metrics as skm

    y_pred = probs.argmax(axis=1)
    idx = list(range(len(labels)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=idx, zero_division=0
    )
    cm = skm.confusion_matrix(y_true, y_pred, labels=idx)
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(np.mean([recall[i] for i in idx if support[i] > 0])),
        "weighted_f1": float(
            skm.f1_score(y_true, y_pred, labels=idx, average="weighted", zero_division=0)
        ),
        "macro_f1": float(
            skm.f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)
        ),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
        "labels": list(labels),
        "ece": expected_calibration_error(y_true, probs),
    }
    if positive in labels:
        p = list(labels).index(positive)
        is_pos = y_true == p
        out["positive_label"] = positive
        out["sensitivity"] = float(recall[p])
        negatives = ~is_pos
        out["specificity"] = float((y_pred[negatives] != p).mean()) if negatives.any() else None
        out["roc_auc"] = (
            float(skm.roc_auc_score(is_pos, probs[:, p]))
            if 0 < is_pos.sum() < len(is_pos)
            else None
        )
    return out


def subject_metrics(
    paths: Sequence[str],
    subjects: Mapping[str, str | None],
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    positive: str = "ALL",
) -> dict[str, dict[str, Any]]:
    """Per-subject results: cells, fraction called ``positive``, majority call, true label.

    Args:
        paths: file paths aligned with ``y_true`` / ``probs``.
        subjects: ``{path: subject}``; files without a subject are skipped.

    Returns:
        ``{subject: {"cells", "fraction_positive", "majority", "label", "correct"}}``.
    """
    p = list(labels).index(positive)
    y_pred = probs.argmax(axis=1)
    grouped: dict[str, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        subject = subjects.get(path)
        if subject:
            grouped[subject].append(i)
    out = {}
    for subject, rows in sorted(grouped.items()):
        frac = float(np.mean(y_pred[rows] == p))
        majority = positive if frac >= 0.5 else next(lb for lb in labels if lb != positive)
        truth = labels[int(y_true[rows[0]])]
        out[subject] = {
            "cells": len(rows),
            "fraction_positive": frac,
            "majority": majority,
            "label": truth,
            "correct": majority == truth,
        }
    return out


def evaluate(
    probabilities: Mapping[str, Sequence[float]],
    truth: Mapping[str, str],
    labels: Sequence[str],
    subjects: Mapping[str, str | None] | None = None,
    positive: str = "ALL",
) -> dict[str, Any]:
    """Join by file name, then :func:`classification_metrics` (+ ``subjects`` when given).

    Raises:
        ValueError: as :func:`join_by_name`.
    """
    paths, y_true, probs = join_by_name(probabilities, truth, labels)
    out = classification_metrics(y_true, probs, labels, positive)
    if subjects and any(subjects.get(p) for p in paths):
        out["subjects"] = subject_metrics(paths, subjects, y_true, probs, labels, positive)
    return out

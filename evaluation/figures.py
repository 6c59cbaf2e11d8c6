"""Figures of a run as PNG (matplotlib, Agg backend): curves, confusion matrix, ROC, reliability.

Every figure is drawn from files the run wrote (``history.csv``, ``predictions_<split>.csv``),
so anyone can redraw it with ``leukedge train figures RUN``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out: str | os.PathLike) -> Path:
    """Lay out, write ``fig`` to ``out`` as PNG at 120 dpi, close it; ``out`` as a Path."""
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def plot_history(history_csv: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Training and validation accuracy and loss per epoch (paper, Fig. 6/7 style).

    Args:
        history_csv: a run's ``history.csv`` (columns ``epoch``, ``accuracy``, ``loss``,
            ``val_accuracy``, ``val_loss``…).
        out: PNG path to write.

    Returns:
        ``out`` as a ``Path``.
    """
    plt = _pyplot()
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("accuracy", "loss"), strict=True):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            if rows and prefix + key in rows[0]:
                ax.plot(
                    epochs,
                    [float(r[prefix + key]) for r in rows],
                    style,
                    label="validation" if prefix else "training",
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(plt, fig, out)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], out: str | os.PathLike, title: str = ""
) -> Path:
    """Confusion matrix with counts (rows = true class, columns = predicted)."""
    plt = _pyplot()
    cm = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(plt, fig, out)


def plot_roc(
    y_positive: np.ndarray, score: np.ndarray, out: str | os.PathLike, positive: str = "ALL"
) -> Path:
    """ROC curve of ``score`` (probability of ``positive``) against binary truth."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(y_positive, score)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y_positive, score):.3f}")
    ax.plot([0, 1], [0, 1], "k--", alpha=0.4)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel(f"sensitivity ({positive})")
    ax.legend(loc="lower right")
    return _save(plt, fig, out)


def plot_reliability(
    y_true: np.ndarray, probs: np.ndarray, out: str | os.PathLike, bins: int = 10
) -> Path:
    """Reliability diagram: accuracy against confidence in equal-width bins."""
    plt = _pyplot()
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    centres, accuracy = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            centres.append(confidence[inside].mean())
            accuracy.append(correct[inside].mean())
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", alpha=0.4, label="perfect calibration")
    ax.plot(centres, accuracy, "-o", label="model")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left")
    return _save(plt, fig, out)


def run_figures(
    run_dir: str | os.PathLike,
    split: str = "val",
    labels: Sequence[str] = ("ALL", "HEM"),
    positive: str = "ALL",
) -> list[Path]:
    """Draw every figure a run's files allow; returns the PNG paths written."""
    run_dir = Path(run_dir)
    written = []
    if (run_dir / "history.csv").is_file():
        written.append(plot_history(run_dir / "history.csv", run_dir / "curves.png"))
    predictions = run_dir / f"predictions_{split}.csv"
    if predictions.is_file():
        with open(predictions, newline="") as handle:
            rows = list(csv.DictReader(handle))
        y = np.array([list(labels).index(r["label"]) for r in rows])
        p = np.array([[float(r[f"p_{lb}"]) for lb in labels] for r in rows])
        from sklearn.metrics import confusion_matrix

        cm = confusion_matrix(y, p.argmax(1), labels=list(range(len(labels))))
        written.append(
            plot_confusion_matrix(
                cm, labels, run_dir / f"confusion_{split}.png", title=f"{split} (n={len(rows)})"
            )
        )
        pos = list(labels).index(positive)
        if 0 < (y == pos).sum() < len(y):
            written.append(plot_roc(y == pos, p[:, pos], run_dir / f"roc_{split}.png", positive))
        written.append(plot_reliability(y, p, run_dir / f"reliability_{split}.png"))
    return written

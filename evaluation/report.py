"""Human-readable results: ``report.md`` for one run, the paper-style table for several.

The comparison follows the source paper's Tables II/IV (train and validation accuracy,
precision/recall/F1 per class) and adds weighted F1, balanced accuracy and the split sizes,
so a reader can tell a held-out figure from a training one.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def metrics_markdown(metrics: dict[str, Any], title: str) -> str:
    """Markdown for one metrics dictionary (:func:`leukedge.evaluation.metrics.evaluate`)."""
    labels = metrics["labels"]
    lines = [f"# {title}", "", f"Images: {metrics['n']}", "", "| metric | value |", "|---|---|"]
    for key in (
        "accuracy",
        "balanced_accuracy",
        "weighted_f1",
        "macro_f1",
        "sensitivity",
        "specificity",
        "roc_auc",
        "ece",
    ):
        if key in metrics:
            value = metrics[key]
            lines.append(f"| {key} | {'—' if value is None else f'{value:.4f}'} |")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label in labels:
        c = metrics["per_class"][label]
        lines.append(
            f"| {label} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | "
            f"{c['support']} |"
        )
    lines += [
        "",
        "Confusion matrix (rows = true, columns = predicted):",
        "",
        "| | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for label, row in zip(labels, metrics["confusion_matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    if metrics.get("subjects"):
        lines += [
            "",
            "Subjects:",
            "",
            "| subject | cells | called ALL | majority | label |",
            "|---|---|---|---|---|",
        ]
        for subject, s in metrics["subjects"].items():
            lines.append(
                f"| {subject} | {s['cells']} | {s['fraction_positive']:.2f} | "
                f"{s['majority']} | {s['label']} |"
            )
    return "\n".join(lines) + "\n"


def _train_accuracy(run: Path, best_epoch: int | None) -> float | None:
    history = run / "history.csv"
    if not history.is_file() or not best_epoch:
        return None
    with open(history, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return float(rows[best_epoch - 1]["accuracy"]) if len(rows) >= best_epoch else None


def compare_runs(runs: list[str | os.PathLike], split: str = "val") -> list[dict[str, Any]]:
    """One row per run: architecture, training accuracy at the kept epoch, and ``split``
    figures read from ``metrics_<split>.json``.

    Raises:
        FileNotFoundError: a run lacks ``metrics_<split>.json``.
    """
    rows = []
    for run in map(Path, runs):
        path = run / f"metrics_{split}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (evaluate that split first)")
        m = json.loads(path.read_text())
        config = (
            json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
        )
        row = {
            "run": run.name,
            "arch": config.get("arch", "?"),
            "weights": config.get("weights"),
            "n": m["n"],
            "train_accuracy": _train_accuracy(run, m.get("best_epoch")),
            "accuracy": m["accuracy"],
            "balanced_accuracy": m.get("balanced_accuracy"),
            "weighted_f1": m["weighted_f1"],
        }
        for label, c in m["per_class"].items():
            for k in ("precision", "recall", "f1"):
                row[f"{label}_{k}"] = c[k]
        rows.append(row)
    return rows


def comparison_markdown(rows: list[dict[str, Any]], split: str) -> str:
    """The paper-style table (percentages) for :func:`compare_runs` rows."""
    labels = sorted(
        {k.rsplit("_", 1)[0] for r in rows for k in r if k.endswith("_f1") and k != "weighted_f1"}
    )
    head = ["run", "arch", "train acc", f"{split} acc", "balanced acc", "weighted F1"]
    head += [f"{lb} {k}" for lb in labels for k in ("P", "R", "F1")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["run"],
            r["arch"],
            _pct(r["train_accuracy"]),
            _pct(r["accuracy"]),
            _pct(r["balanced_accuracy"]),
            _pct(r["weighted_f1"]),
        ]
        cells += [_pct(r.get(f"{lb}_{k}")) for lb in labels for k in ("precision", "recall", "f1")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

"""Blocked cross-validation: folds that stand in for new patients, and their figures.

One held-out block of about three benign patients cannot rank two recipes (issue 18): v2's
single validation block said specificity 0.89, later patients gave 0.54. Here every image
is scored exactly once by a model that never trained on its block, and every threshold a
block is scored at was fixed before that block was looked at.

**Folds** (:func:`blocked_folds`):

- by **subject** where every file name carries one (C-NMC): whole subjects are dealt into
  ``k`` folds per label (:func:`leukedge.evaluation.data.subject_folds`), so no subject is
  split;
- else by **contiguous blocks of file numbers**: each group (a class folder: Taleqani's
  ``Benign``, ``Early``, ``Pre``, ``Pro``) sorted by file number is cut into ``k``
  contiguous blocks of near-equal size, and fold ``j`` is block ``j`` of every group.
  File numbers follow acquisition, so a block is a few patients, and block ``k − 1`` is the
  latest.

**Schemes** (:func:`kfold_plan`, :func:`forward_plan`): ``kfold`` fits on every fold but
``j`` and scores ``j``; ``forward`` fits on the blocks before ``j`` and scores ``j`` (drift
grows with file number, so this is the closest stand-in for the next patients).

**Thresholds fixed in advance** (:func:`fold_thresholds` in
:mod:`leukedge.training.crossval`): for a ``kfold`` fold, the temperature, the operating
point (sensitivity ≥ 0.98) and the refer band are fitted on the out-of-fold outputs of the
other folds; for a ``forward`` block ``j``, on an inner leave-one-block-out over the blocks
before ``j`` (:func:`forward_plan`), so nothing from ``j`` on shapes its figures.

**Outputs** are joined to labels by file name (:func:`join_by_file_name`), never by
position: a missing, extra or doubled name is an error.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from leukedge.evaluation.data import LABELS, DatasetError, Sample, file_number, subject_folds
from leukedge.evaluation.metrics import join_by_name

FoldStrategy = Literal["auto", "blocks", "subject"]
"""How :func:`blocked_folds` cuts: by subject, by file-number blocks, or ``auto`` (subject
where every sample has one)."""


@dataclass(frozen=True)
class FoldPlan:
    """One fit-and-score step.

    Attributes:
        scheme: ``kfold`` or ``forward``.
        fold: the fold scored.
        train: the folds fitted on (never ``fold``).
        calibrate: the folds whose out-of-scheme outputs fix the thresholds of ``fold``.
    """

    scheme: str
    fold: int
    train: tuple[int, ...]
    calibrate: tuple[int, ...]


def blocked_folds(
    samples: Sequence[Sample], k: int = 5, strategy: FoldStrategy = "auto", seed: int = 0
) -> list[list[Sample]]:
    """Cut a dataset into ``k`` folds by subject or by contiguous file-number blocks.

    Args:
        samples: the dataset (:func:`~leukedge.evaluation.data.load_dataset`).
        k: number of folds, ≥ 2 (the issue asks for ≥ 5).
        strategy: ``blocks``, ``subject`` or ``auto`` (subject when every sample has one).
        seed: subject shuffling seed (subject strategy only; blocks are deterministic).

    Returns:
        ``k`` lists of samples, each sorted by path; together they hold every sample once.
        Blocks: fold ``j`` is the ``j``-th of ``k`` contiguous, near-equal blocks (sizes
        differ by at most one) of every group sorted by ``(file number, name)``.

    Raises:
        ValueError: ``k < 2`` or an unknown strategy.
        DatasetError: a group with fewer than ``k`` images (a fold would miss it); subject
            strategy without subjects; a subject with two labels; two samples with the same
            file name (outputs are joined by name).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    _check_unique_names(samples)
    if strategy == "auto":
        strategy = "subject" if samples and all(s.subject for s in samples) else "blocks"
    if strategy == "subject":
        for s in samples:
            if not s.subject:
                raise DatasetError(f"{s.path}: no subject ID; use blocks")
        labels: dict[str, set[str]] = defaultdict(set)
        for s in samples:
            labels[str(s.subject)].add(s.label)
        for subject, found in labels.items():
            if len(found) > 1:
                raise DatasetError(f"subject {subject} has images of several labels: {found}")
        folds = subject_folds(samples, k, seed)
    elif strategy == "blocks":
        groups: dict[str, list[Sample]] = defaultdict(list)
        for s in samples:
            groups[s.group or s.label].append(s)
        folds = [[] for _ in range(k)]
        for group in sorted(groups):
            items = sorted(groups[group], key=lambda s: (file_number(s.path), s.path.name))
            if len(items) < k:
                raise DatasetError(f"group {group!r} has {len(items)} images, fewer than k={k}")
            for j, block in enumerate(np.array_split(np.arange(len(items)), k)):
                folds[j] += [items[i] for i in block]
    else:
        raise ValueError(f"unknown fold strategy {strategy!r}; choose auto, blocks, subject")
    return [sorted(fold, key=lambda s: str(s.path)) for fold in folds]


def _check_unique_names(samples: Sequence[Sample]) -> None:
    seen: dict[str, Path] = {}
    for s in samples:
        name = Path(s.path).name
        if name in seen:
            raise DatasetError(
                f"{s.path} and {seen[name]} share the file name {name!r}; outputs are joined "
                "to labels by file name"
            )
        seen[name] = Path(s.path)


def fold_index(folds: Sequence[Sequence[Sample]]) -> dict[str, int]:
    """``{file name: fold}``.

    Raises:
        DatasetError: a file name in two folds.
    """
    out: dict[str, int] = {}
    for j, fold in enumerate(folds):
        for s in fold:
            name = Path(s.path).name
            if name in out:
                raise DatasetError(f"{name} is in folds {out[name]} and {j}")
            out[name] = j
    return out


def kfold_plan(k: int) -> list[FoldPlan]:
    """Fit on every fold but ``j``, score ``j``; thresholds from the other folds' outputs."""
    return [
        FoldPlan(
            "kfold", j, tuple(i for i in range(k) if i != j), tuple(i for i in range(k) if i != j)
        )
        for j in range(k)
    ]


def forward_plan(k: int) -> list[FoldPlan]:
    """Fit on blocks ``0 … j−1``, score block ``j`` (``j ≥ 1``). The thresholds of block
    ``j`` come from an inner leave-one-block-out over blocks ``0 … j−1`` (each of them
    scored by a model fitted on the others), so neither block ``j`` nor any later block
    shapes them; ``j = 1`` has one earlier block, no inner split, and so only its AUC
    (``calibrate`` empty)."""
    return [
        FoldPlan("forward", j, tuple(range(j)), tuple(range(j)) if j >= 2 else ())
        for j in range(1, k)
    ]


# ------------------------------------------------------------------------ outputs by name

OOF_COLUMNS = (
    "name",
    "path",
    "label",
    "fold",
    "scheme",
    "p_all",
    "p_all_calibrated",
    "call",
    "status",
)
"""Columns of ``oof_<scheme>.csv`` (one row per image scored)."""


def join_by_file_name(
    outputs: Mapping[str, float], truth: Mapping[str, str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Join outputs to labels by file name.

    Args:
        outputs: ``{file name: p(ALL)}``.
        truth: ``{file name: label}``.

    Returns:
        ``(names sorted, is_all bool (n,), p (n,) float64)``.

    Raises:
        ValueError: as :func:`leukedge.evaluation.metrics.join_by_name` (a name with an
            output but no label or the reverse, or a label other than ALL/HEM).
    """
    names, y_true, probs = join_by_name(
        {name: (p, 1.0 - p) for name, p in outputs.items()}, truth, LABELS
    )
    return names, y_true == LABELS.index("ALL"), probs[:, LABELS.index("ALL")]


def write_csv(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Write ``rows`` as CSV with ``columns``, atomically (a ``.partial`` file renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _fmt(row.get(c, "")) for c in columns})
    os.replace(tmp, path)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_oof(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``{file name: row}`` of an ``oof_<scheme>.csv``.

    Raises:
        ValueError: a file name twice.
    """
    out: dict[str, dict[str, str]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["name"] in out:
                raise ValueError(f"{path}: {row['name']} scored twice")
            out[row["name"]] = row
    return out


# ------------------------------------------------------------------------ figures


def roc_auc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when a class is absent."""
    pos, neg = score[is_positive], score[~is_positive]
    if not len(pos) or not len(neg):
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def binary_ece(is_positive: np.ndarray, p_positive: np.ndarray, bins: int = 15) -> float:
    """ECE of the two-class probabilities ``(p, 1 − p)`` (as
    :func:`leukedge.evaluation.metrics.expected_calibration_error`, Guo et al. 2017)."""
    from leukedge.evaluation.metrics import expected_calibration_error

    probs = np.stack([p_positive, 1.0 - p_positive], axis=1)
    return expected_calibration_error((~is_positive).astype(int), probs, bins)


def fold_figures(
    is_all: np.ndarray,
    p_calibrated: np.ndarray,
    threshold: float | None,
    band: Sequence[float] | None,
    out_of_domain: np.ndarray | None = None,
    perturbed: Mapping[str, tuple[np.ndarray, np.ndarray | None]] | None = None,
) -> dict[str, float]:
    """The figures of one scored fold at thresholds fixed before it was scored.

    Args:
        is_all: ``(n,)`` truth, ALL = True.
        p_calibrated: ``(n,)`` p(ALL), temperature applied.
        threshold: the operating point (``None``: only AUC and ECE are reported).
        band: the refer band ``(low, high)`` or ``None``.
        out_of_domain: ``(n,)`` bool, refused as out of domain (or ``None``: not checked).
        perturbed: ``{perturbation: (p_calibrated (n,), out_of_domain (n,) or None)}`` of
            the same images, same order.

    Returns:
        ``n``, ``n_all``, ``n_hem``, ``auc``, ``ece`` and, with a threshold:
        ``threshold``, ``sensitivity``, ``specificity`` (the call alone, every image),
        ``refer_rate``, ``ood_rate``, ``refusal_rate`` (referred or out of domain),
        ``coverage``, ``coverage_all``, ``coverage_hem``, ``hem_called_all_ok`` (benign
        fields called ALL with status ok, fraction of benign), ``all_called_hem_ok``, and
        per perturbation ``flip_<name>`` (fraction of calls that change) and
        ``extra_refusal_<name>`` (refusal rate under it minus the clean one).
    """
    is_all = np.asarray(is_all, dtype=bool)
    p = np.asarray(p_calibrated, dtype=np.float64)
    out: dict[str, float] = {
        "n": int(len(p)),
        "n_all": int(is_all.sum()),
        "n_hem": int((~is_all).sum()),
        "auc": roc_auc(is_all, p),
        "ece": binary_ece(is_all, p),
    }
    if threshold is None:
        return out

    def refused(prob: np.ndarray, ood: np.ndarray | None) -> np.ndarray:
        refer = np.zeros(len(prob), bool) if band is None else (prob >= band[0]) & (prob < band[1])
        return refer | (np.zeros(len(prob), bool) if ood is None else np.asarray(ood, bool))

    call = p >= threshold
    refer = np.zeros(len(p), bool) if band is None else (p >= band[0]) & (p < band[1])
    ood = np.zeros(len(p), bool) if out_of_domain is None else np.asarray(out_of_domain, bool)
    refusal = refer | ood
    ok = ~refusal

    def rate(hit: np.ndarray, among: np.ndarray) -> float:
        return float(hit[among].mean()) if among.any() else float("nan")

    out |= {
        "threshold": float(threshold),
        "sensitivity": rate(call, is_all),
        "specificity": rate(~call, ~is_all),
        "refer_rate": float(refer.mean()),
        "ood_rate": float(ood.mean()) if out_of_domain is not None else float("nan"),
        "refusal_rate": float(refusal.mean()),
        "coverage": float(ok.mean()),
        "coverage_all": rate(ok, is_all),
        "coverage_hem": rate(ok, ~is_all),
        "hem_called_all_ok": rate(call & ok, ~is_all),
        "all_called_hem_ok": rate(~call & ok, is_all),
    }
    for name, (p_view, ood_view) in (perturbed or {}).items():
        p_view = np.asarray(p_view, dtype=np.float64)
        out[f"flip_{name}"] = float(((p_view >= threshold) != call).mean())
        out[f"extra_refusal_{name}"] = float(refused(p_view, ood_view).mean() - refusal.mean())
    return out


WORSE_IS_HIGHER = (
    "ece",
    "refer_rate",
    "ood_rate",
    "refusal_rate",
    "hem_called_all_ok",
    "all_called_hem_ok",
)
"""Figures whose worst fold is the highest (``flip_*`` and ``extra_refusal_*`` too); for the
others the worst fold is the lowest."""


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and worst fold of every numeric figure over ``rows`` (NaNs left out).

    Returns:
        ``{"mean": {figure: value}, "worst": {figure: value}}``; the worst is the
        maximum for :data:`WORSE_IS_HIGHER`, ``flip_*`` and ``extra_refusal_*``, else the
        minimum.
    """
    keys = [
        k
        for k in dict.fromkeys(key for r in rows for key in r)
        if k not in ("fold", "n", "n_all", "n_hem")
        and all(isinstance(r.get(k, math.nan), int | float) for r in rows)
    ]
    mean, worst = {}, {}
    for key in keys:
        values = np.array([r.get(key, math.nan) for r in rows], dtype=np.float64)
        values = values[~np.isnan(values)]
        if not len(values):
            continue
        higher = key in WORSE_IS_HIGHER or key.startswith(("flip_", "extra_refusal_"))
        mean[key] = float(values.mean())
        worst[key] = float(values.max() if higher else values.min())
    return {"mean": mean, "worst": worst}


TABLE_COLUMNS = (
    ("sensitivity", "sens."),
    ("specificity", "spec."),
    ("auc", "AUC"),
    ("ece", "ECE"),
    ("refusal_rate", "refused"),
    ("hem_called_all_ok", "HEM→ALL ok"),
    ("coverage_hem", "cov. HEM"),
    ("threshold", "threshold"),
)
"""``(figure, heading)`` of the Markdown table's columns (flip rates are added after)."""


def markdown_table(
    rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Mapping[str, float]]
) -> str:
    """A Markdown table: one row per fold, then the mean and the worst fold."""
    flips = sorted({k for r in rows for k in r if k.startswith("flip_")})
    columns = [*TABLE_COLUMNS, *((f, f.removeprefix("flip_")) for f in flips)]
    head = "| fold | n (ALL/HEM) | " + " | ".join(h for _, h in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return f"{value:.3f}"

    for r in rows:
        lines.append(
            f"| {r['fold']} | {r['n']} ({r['n_all']}/{r['n_hem']}) | "
            + " | ".join(cell(r.get(key)) for key, _ in columns)
            + " |"
        )
    for which in ("mean", "worst"):
        lines.append(
            f"| **{which}** | | "
            + " | ".join(cell(summary[which].get(key)) for key, _ in columns)
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_table(
    out: str | os.PathLike,
    stem: str,
    rows: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``<stem>.csv``, ``<stem>.md`` and ``<stem>.json`` (rows, mean, worst) in ``out``.

    Returns:
        The JSON's dictionary.
    """
    out = Path(out)
    summary = summarise(rows)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(out / f"{stem}.csv", rows, columns)
    write_text(out / f"{stem}.md", markdown_table(rows, summary))
    data = {"folds": list(rows), **summary, **(extra or {})}
    write_text(out / f"{stem}.json", json.dumps(data, indent=2, default=float))
    return data

"""Datasets and splits: C-NMC 2019 single cells, Taleqani smear fields, any labelled folder/CSV.

Honest evaluation starts here (brief, "Honest evaluation"): splits are by **subject** (the
``UID_<id>`` / ``UID_H<id>`` prefix of C-NMC file names) where subjects are known, by
**contiguous blocks of file numbers** per class where they are not (Taleqani; see
``shared/data/README.md``), never by random image; every sample keeps its file path, so
predictions are joined to labels by path, never by position.

Labels are the strings ``"ALL"`` (leukemic blast) and ``"HEM"`` (normal); class index order is
:data:`LABELS` everywhere (model outputs, metrics, the ``.tflite`` metadata).
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukedge.errors import LeukedgeError
from leukedge.lab.inputs import IMAGE_SUFFIXES
from leukedge.lab.subjects import parse_subject


class DatasetError(LeukedgeError, ValueError):
    """The images or their labels cannot make an honest dataset or split (no images, a
    listed file missing, a subject with two labels or in two splits); names the file or
    subject. A ``ValueError``, as before it existed."""


LABELS: tuple[str, ...] = ("ALL", "HEM")
"""Class names in output order: index 0 = ALL (positive class), 1 = HEM."""

_NUMBER_RE = re.compile(r"(\d+)(?=\D*$)")

TALEQANI_CLASSES = {"Benign": "HEM", "Early": "ALL", "Pre": "ALL", "Pro": "ALL"}
"""Taleqani folder → binary label (hematogones are benign B precursors)."""

CNMC_CLASSES = {"all": "ALL", "hem": "HEM"}
"""C-NMC folder → label."""


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    Attributes:
        path: image file.
        label: ``"ALL"`` or ``"HEM"`` (or any name for other tasks).
        subject: patient / subject ID (``"1"``, ``"H3"``) or ``None`` when unknown.
        group: the source folder (Taleqani subtype, C-NMC fold…), used for block splits.
    """

    path: Path
    label: str
    subject: str | None = None
    group: str = ""


def file_number(path: str | os.PathLike) -> int:
    """The last integer in a file's stem (``WBC-Malignant-Pre-012.jpg`` → 12), or -1."""
    match = _NUMBER_RE.search(Path(path).stem)
    return int(match.group(1)) if match else -1


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _require_dir(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    return root


def load_folder_per_class(
    root: str | os.PathLike, class_map: dict[str, str] | None = None
) -> list[Sample]:
    """Any ``root/<class>/*.{bmp,jpg,png,…}`` tree.

    Args:
        root: the folder holding one sub-folder per class.
        class_map: sub-folder name → label; default: the folder name itself. Sub-folders
            not in the map are ignored.

    Returns:
        Samples sorted by path; subject parsed from C-NMC-style names where present.

    Raises:
        FileNotFoundError: ``root`` is missing.
        ValueError: no images found.
    """
    root = _require_dir(root)
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = (class_map or {}).get(folder.name, None if class_map else folder.name)
        if label is None:
            continue
        samples += [Sample(p, label, parse_subject(p), folder.name) for p in _images(folder)]
    if not samples:
        raise DatasetError(f"{root}: no images in class sub-folders")
    return samples


def load_taleqani(root: str | os.PathLike) -> list[Sample]:
    """The Taleqani B-ALL smear fields: ``Benign`` → HEM, ``Early``/``Pre``/``Pro`` → ALL."""
    return load_folder_per_class(root, TALEQANI_CLASSES)


def load_cnmc(root: str | os.PathLike) -> list[Sample]:
    """C-NMC 2019 training layout: ``root/{all,hem}`` or ``root/fold_*/{all,hem}``.

    The sample's ``group`` is the fold name (``fold_0``…) or ``""``; ``subject`` comes from
    the file name (:func:`parse_subject`).

    Raises:
        ValueError: a file name without a subject (the split would not be by subject).
    """
    root = _require_dir(root)
    folds = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("fold"))
    samples = []
    for fold in folds or [root]:
        for sample in load_folder_per_class(fold, CNMC_CLASSES):
            if sample.subject is None:
                raise DatasetError(f"{sample.path}: C-NMC file name without a UID_<subject> prefix")
            samples.append(
                Sample(sample.path, sample.label, sample.subject, fold.name if folds else "")
            )
    return samples


def load_cnmc_prelim(root: str | os.PathLike, labels_csv: str | os.PathLike) -> list[Sample]:
    """C-NMC preliminary-test layout: numbered ``N.bmp`` files plus the released label CSV.

    The CSV columns are ``Patient_ID`` (original ``UID_…`` name, which gives the subject),
    ``new_names`` (``N.bmp``) and ``labels`` (1 = ALL, 0 = HEM). Rows whose image is absent are
    skipped; images without a row are ignored.

    Raises:
        ValueError: the CSV lacks a column, or no listed image exists.
    """
    root = _require_dir(root)
    samples = []
    with open(labels_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"Patient_ID", "new_names", "labels"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{labels_csv}: missing columns {sorted(missing)}")
        for row in reader:
            path = root / row["new_names"]
            if path.is_file():
                label = "ALL" if int(row["labels"]) == 1 else "HEM"
                samples.append(Sample(path, label, parse_subject(row["Patient_ID"]), "prelim"))
    if not samples:
        raise DatasetError(f"{root}: none of the images listed in {labels_csv} exist")
    return samples


def load_csv(csv_path: str | os.PathLike) -> list[Sample]:
    """A CSV of ``path,label[,subject]`` (header required; relative paths from the CSV's folder).

    Raises:
        ValueError: missing ``path``/``label`` columns, or a listed file does not exist.
    """
    csv_path = Path(csv_path)
    samples = []
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"path", "label"} <= set(reader.fieldnames or []):
            raise DatasetError(f"{csv_path}: needs the columns path,label[,subject]")
        for line, row in enumerate(reader, start=2):
            path = Path(row["path"])
            path = path if path.is_absolute() else csv_path.parent / path
            if not path.is_file():
                raise DatasetError(f"{csv_path}:{line}: {path} does not exist")
            subject = row.get("subject") or parse_subject(path)
            samples.append(Sample(path, row["label"], subject, ""))
    return samples


def load_dataset(source: str | os.PathLike, kind: str = "auto") -> list[Sample]:
    """Load a dataset by kind: ``taleqani``, ``cnmc``, ``folder``, ``csv`` or ``auto``.

    ``auto`` picks ``csv`` for a ``.csv`` file, ``taleqani`` when the folder holds
    ``Benign``, ``cnmc`` when it holds ``all``/``hem`` or ``fold_*``, else ``folder``.
    """
    source = Path(source)
    if kind == "auto":
        if source.suffix.lower() == ".csv":
            kind = "csv"
        elif (source / "Benign").is_dir():
            kind = "taleqani"
        elif (source / "all").is_dir() or any(source.glob("fold_*")):
            kind = "cnmc"
        else:
            kind = "folder"
    loaders = {
        "taleqani": load_taleqani,
        "cnmc": load_cnmc,
        "folder": load_folder_per_class,
        "csv": load_csv,
    }
    if kind not in loaders:
        raise ValueError(f"unknown dataset kind {kind!r}; choose auto, {', '.join(loaders)}")
    return loaders[kind](source)


# --------------------------------------------------------------------------------- splits

SPLITS = ("train", "val", "test")


def split_by_blocks(
    samples: Sequence[Sample], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> dict[str, list[Sample]]:
    """Contiguous blocks of file numbers per group: first 70 % train, next 15 % val, last test.

    For data without subject IDs whose file numbers follow acquisition order (Taleqani):
    near-identical neighbouring fields of one patient mostly fall in the same block, so the
    held-out blocks leak far less than a random image split would.

    Args:
        samples: the dataset.
        fractions: train, validation, test fractions (sum 1).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted by path.
    """
    _check_fractions(fractions)
    by_group: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_group[s.group or s.label].append(s)
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    for group in sorted(by_group):
        items = sorted(by_group[group], key=lambda s: (file_number(s.path), s.path.name))
        n = len(items)
        n_train = round(n * fractions[0])
        n_val = round(n * (fractions[0] + fractions[1])) - n_train
        out["train"] += items[:n_train]
        out["val"] += items[n_train : n_train + n_val]
        out["test"] += items[n_train + n_val :]
    return {k: sorted(v, key=lambda s: str(s.path)) for k, v in out.items()}


def group_by_subject(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    """``{subject: samples}``.

    Raises:
        ValueError: a sample has no subject (split such data by blocks instead).
    """
    subjects: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.subject is None:
            raise DatasetError(f"{s.path}: no subject ID; split by blocks instead")
        subjects[s.subject].append(s)
    return dict(subjects)


def split_by_subject(
    samples: Sequence[Sample],
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, list[Sample]]:
    """Subject-disjoint train/val/test split, stratified by each subject's label.

    Subjects (not images) are shuffled with ``seed`` within each label and dealt out so that
    each split gets about its fraction of the *images* of that label. Every image of a
    subject lands in the same split.

    Raises:
        ValueError: a sample has no subject (use :func:`split_by_blocks`), or a subject has
            images of two labels.
    """
    _check_fractions(fractions)
    subjects = group_by_subject(samples)
    rng = np.random.default_rng(seed)
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    by_label: dict[str, list[str]] = defaultdict(list)
    for subject, items in sorted(subjects.items()):
        labels = {s.label for s in items}
        if len(labels) != 1:
            raise DatasetError(f"subject {subject} has images of several labels: {labels}")
        by_label[labels.pop()].append(subject)
    for _label, names in sorted(by_label.items()):
        names = list(rng.permutation(names))
        total = sum(len(subjects[n]) for n in names)
        cut_train, cut_val = fractions[0] * total, (fractions[0] + fractions[1]) * total
        seen = 0
        for name in names:
            # Assign by the running image count's midpoint, so small subjects fill gaps.
            mid = seen + len(subjects[name]) / 2
            split = "train" if mid < cut_train else "val" if mid < cut_val else "test"
            out[split] += subjects[name]
            seen += len(subjects[name])
    return {k: sorted(v, key=lambda s: str(s.path)) for k, v in out.items()}


def subject_folds(samples: Sequence[Sample], k: int = 3, seed: int = 0) -> list[list[Sample]]:
    """``k`` subject-disjoint folds for cross-validation (label-stratified by subject).

    Raises:
        ValueError: a sample has no subject.
    """
    subjects = group_by_subject(samples)
    rng = np.random.default_rng(seed)
    folds: list[list[Sample]] = [[] for _ in range(k)]
    names = sorted(subjects, key=lambda n: (subjects[n][0].label, n))
    for label in sorted({subjects[n][0].label for n in names}):
        group = [n for n in names if subjects[n][0].label == label]
        for name in rng.permutation(group):
            smallest = min(range(k), key=lambda i: len(folds[i]))
            folds[smallest] += subjects[str(name)]
    return folds


def make_split(
    samples: Sequence[Sample],
    strategy: str = "auto",
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    folds: int = 5,
    fold: int = 0,
) -> dict[str, list[Sample]]:
    """Split by ``"subject"`` (:func:`split_by_subject`), ``"blocks"`` (:func:`split_by_blocks`),
    ``"kfold"`` (cross-validation by subject: of :func:`subject_folds` ``folds`` folds, fold
    ``fold`` is the test split, the next one validation, the rest training) or ``"auto"``
    (subject when every sample has one, else blocks).

    Raises:
        ValueError: unknown strategy; subject or k-fold split without subjects; ``fold``
            out of range.
    """
    if strategy == "kfold":
        if folds < 3 or not 0 <= fold < folds:
            raise ValueError(f"k-fold needs folds >= 3 and 0 <= fold < folds, got {fold}/{folds}")
        parts = subject_folds(samples, folds, seed)
        val = (fold + 1) % folds
        train = [s for i, part in enumerate(parts) if i not in (fold, val) for s in part]
        return {
            k: sorted(v, key=lambda s: str(s.path))
            for k, v in (("train", train), ("val", parts[val]), ("test", parts[fold]))
        }
    if strategy == "auto":
        strategy = "subject" if all(s.subject for s in samples) else "blocks"
    if strategy == "subject":
        return split_by_subject(samples, fractions, seed)
    if strategy == "blocks":
        return split_by_blocks(samples, fractions)
    raise ValueError(f"unknown split strategy {strategy!r}; choose auto, subject, blocks, kfold")


def check_no_subject_leak(splits: dict[str, Sequence[Sample]]) -> None:
    """Raise ``ValueError`` naming the subjects that appear in more than one split."""
    where: dict[str, set[str]] = defaultdict(set)
    for split, items in splits.items():
        for s in items:
            if s.subject is not None:
                where[s.subject].add(split)
    leaked = {subject: sorted(names) for subject, names in where.items() if len(names) > 1}
    if leaked:
        raise DatasetError(f"subjects in several splits: {leaked}")


def write_split(path: str | os.PathLike, splits: dict[str, Sequence[Sample]]) -> None:
    """Write ``path,label,subject,group,split`` rows (the run's record of who is where)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "subject", "group", "split"])
        for split, items in splits.items():
            for s in items:
                writer.writerow([str(s.path), s.label, s.subject or "", s.group, split])


def read_split(path: str | os.PathLike) -> dict[str, list[Sample]]:
    """Read a file written by :func:`write_split`."""
    out: dict[str, list[Sample]] = defaultdict(list)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            out[row["split"]].append(
                Sample(Path(row["path"]), row["label"], row["subject"] or None, row["group"])
            )
    return dict(out)


def samples_from(source: str | os.PathLike, split_name: str) -> list[Sample]:
    """The samples of ``source``: a run's ``split.csv`` (its ``split_name`` split; a
    ``split.csv`` is recognised by its ``split`` column), or any dataset
    :func:`load_dataset` reads (folder or CSV of ``path,label[,subject]``), whole.

    Raises:
        ValueError: a ``split.csv`` without that split, or a dataset error.
        FileNotFoundError: no such folder.
    """
    path = Path(source)
    if path.suffix.lower() == ".csv" and path.is_file():
        with open(path, newline="") as handle:
            columns = next(csv.reader(handle), [])
        if "split" in columns:
            splits = read_split(path)
            if split_name not in splits:
                raise DatasetError(f"{source}: no {split_name!r} split in it")
            return splits[split_name]
    return load_dataset(source)


def stratified_subset(samples: Sequence[Sample], size: int, seed: int) -> list[Sample]:
    """Up to about ``size`` samples, drawn per class in proportion to the class counts.

    Each class gives ``max(1, round(size · n_class / n))`` samples (so a rare class is never
    dropped, and the total may exceed ``size`` by the rounding), drawn without replacement
    by ``numpy.random.default_rng(seed)``, classes in sorted order, each class's samples in
    their original order. Used for the int8 calibration images and the OOD fit's cap.

    Raises:
        ValueError: ``size`` is not positive.
    """
    if size <= 0:
        raise ValueError(f"representative dataset size must be positive, got {size}")
    if len(samples) <= size:
        return list(samples)
    rng = np.random.default_rng(seed)
    by_label = defaultdict(list)
    for s in samples:
        by_label[s.label].append(s)
    chosen = []
    for label in sorted(by_label):
        items = by_label[label]
        k = max(1, round(size * len(items) / len(samples)))
        chosen += [
            items[i] for i in sorted(rng.choice(len(items), min(k, len(items)), replace=False))
        ]
    return chosen


def class_counts(samples: Iterable[Sample]) -> dict[str, int]:
    """``{label: count}`` in :data:`LABELS` order first."""
    counts = Counter(s.label for s in samples)
    return {k: counts[k] for k in sorted(counts, key=lambda x: (x not in LABELS, x))}


def balanced_class_weights(samples: Sequence[Sample], labels: Sequence[str]) -> dict[int, float]:
    """Class weights ``n / (k · n_c)`` (scikit-learn's "balanced"), keyed by class index."""
    counts = Counter(s.label for s in samples)
    n, k = len(samples), len(labels)
    return {i: n / (k * counts[label]) for i, label in enumerate(labels) if counts[label]}


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(
            f"split fractions must be three non-negative numbers summing to 1: {fractions}"
        )

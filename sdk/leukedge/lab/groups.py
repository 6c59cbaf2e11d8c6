"""Per-slide (per-subject, per-folder) summaries of many image calls, with a group call.

A technician's unit is the slide (or the patient), not the field: ``leukedge classify
--group-by slide|subject|folder`` gathers the records of each group and reports

- ``n`` images, and how many of them have each status (``ok``, ``refer``, ``rejected``,
  ``error``);
- the fraction of **ok calls** that are the positive class (ALL), with its **Wilson 95 %
  score interval** (Wilson E. B., "Probable inference, the law of succession, and statistical
  inference", *J. Am. Stat. Assoc.* 22:209–212, 1927; recommended over the normal
  approximation for small n and fractions near 0 or 1 by Brown, Cai & DasGupta, *Statistical
  Science* 16:101–133, 2001; :func:`leukedge.checks.decision.wilson_interval`, also
  behind a field's call from its cells, :mod:`leukedge.cells.field`);
- the mean probability of ALL over the images with probabilities (ok and refer; a rejected
  image's model opinion is left out, as it is never a call);
- a **group call** (:class:`GroupRule`): ALL or HEM only when the interval lies wholly on
  one side of one half, so the majority of usable fields is that class with 95 %
  confidence; ``refer`` otherwise (too few usable images, too many unusable ones, or an
  interval that straddles one half). It is the field-level majority vote that
  :mod:`leukedge.training` reports per subject, made cautious.

Images whose group is unknown (a file name without a subject: ``(none)``; an image a
``--group-map`` does not list: ``(unmapped)``) are summarised in one row of their own with
**no group call**: they are not one slide or patient. ``leukedge classify`` warns how many
there are before classifying, and refuses the grouping when no image has a group.

Group keys (:func:`group_key`): ``subject`` from the C-NMC file name
(:func:`leukedge.lab.subjects.parse_subject`), ``slide`` = the image's folder name (or a
``path,group`` CSV mapping, :class:`GroupMap`), ``folder`` = the image's folder path.
"""

from __future__ import annotations

import csv
import enum
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The interval lives with the call (a field's call from its cells uses it too); imported
# here, where groups have always found it.
from leukedge.checks.decision import Z_95, wilson_interval  # noqa: F401
from leukedge.lab.records import STATUSES, status_of
from leukedge.lab.subjects import parse_subject


class GroupBy(str, enum.Enum):
    """What images are grouped by (see :func:`group_key`)."""

    SLIDE = "slide"
    SUBJECT = "subject"
    FOLDER = "folder"


GROUP_BY: tuple[str, ...] = tuple(g.value for g in GroupBy)

NO_GROUP = "(none)"
"""Group of an image whose key is unknown (a file name without a C-NMC subject)."""

UNMAPPED = "(unmapped)"
"""Group of an image that a ``--group-map`` CSV does not list."""

UNKNOWN_GROUPS = (NO_GROUP, UNMAPPED)
"""Keys that gather images whose group is unknown: not one slide or subject, so they get a
summary row but never a group call (``call`` is :data:`NO_CALL`)."""

NO_CALL = ""
"""``call`` of an :data:`UNKNOWN_GROUPS` row (empty in the CSV, ``-`` in the table)."""


@dataclass(frozen=True)
class GroupRule:
    """How a group's call is made from its images.

    Attributes:
        fraction: the call is the positive class when the Wilson interval of its fraction
            among ok calls lies wholly above this, the other class when wholly below
            (default ½: a majority with 95 % confidence; it needs ≥ 4 unanimous fields).
        max_unusable: refer when more than this fraction of the group's images are not ok
            (refer, rejected or error): the usable fields may not represent the slide.
    """

    fraction: float = 0.5
    max_unusable: float = 0.5


@dataclass
class GroupSummary:
    """Statistics of one group (see the module docstring).

    Attributes:
        group: the key.
        n: images.
        counts: ``{status: images}`` for every status in :data:`~leukedge.lab.records.STATUSES`.
        positive: ok calls of the positive class (``positive_label``).
        fraction: ``positive / counts["ok"]`` (``None`` without ok calls).
        ci_low, ci_high: Wilson 95 % interval of ``fraction`` (0, 1 without ok calls).
        mean_probability: mean p(positive) over images with probabilities (``None`` if none).
        call: the positive label, the other label, ``"refer"``, or :data:`NO_CALL` for the
            images whose group is unknown (:data:`UNKNOWN_GROUPS`).
        call_reason: why (one short phrase).
    """

    group: str
    positive_label: str
    n: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    positive: int = 0
    fraction: float | None = None
    ci_low: float = 0.0
    ci_high: float = 1.0
    mean_probability: float | None = None
    call: str = "refer"
    call_reason: str = ""

    def as_row(self) -> dict[str, Any]:
        """CSV row (:func:`summary_columns` order)."""
        label = self.positive_label
        return {
            "group": self.group,
            "n": self.n,
            **{f"n_{status}": self.counts.get(status, 0) for status in self.counts},
            f"n_{label}": self.positive,
            f"fraction_{label}": _num(self.fraction),
            "ci_low": _num(self.ci_low),
            "ci_high": _num(self.ci_high),
            f"mean_p_{label}": _num(self.mean_probability),
            "call": self.call,
            "call_reason": self.call_reason,
        }


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def summary_columns(positive_label: str) -> list[str]:
    """Header of the group CSV."""
    label = positive_label
    return [
        "group",
        "n",
        *[f"n_{status}" for status in STATUSES],
        f"n_{label}",
        f"fraction_{label}",
        "ci_low",
        "ci_high",
        f"mean_p_{label}",
        "call",
        "call_reason",
    ]


def ungrouped(
    paths: Iterable[str | os.PathLike], by: str, mapping: GroupMap | None = None
) -> list[str]:
    """The paths whose group is unknown (:data:`UNKNOWN_GROUPS`): with ``by="subject"``,
    file names without a C-NMC subject; with a ``mapping``, images it does not list. Known
    from the paths alone, so the CLI warns (some) or refuses (all) before classifying.

    Raises:
        ValueError: unknown ``by``.
    """
    return [str(p) for p in paths if group_key(p, by, mapping) in UNKNOWN_GROUPS]


def summarise(
    group: str,
    records: Sequence[dict[str, Any]],
    labels: Sequence[str],
    positive_label: str = "ALL",
    rule: GroupRule | None = None,
) -> GroupSummary:
    """Statistics and call of one group's records.

    Args:
        group: the group's key.
        records: the group's records (:mod:`leukedge.lab.records`); ``status`` read with
            :func:`~leukedge.lab.records.status_of`, ``label`` and ``probabilities`` with
            ``.get()``.
        labels: the model's class names (two for a group call; with more, the call is the
            positive label or ``refer``).
        positive_label: the class whose fraction is reported.
        rule: :class:`GroupRule` (default thresholds).
    """
    rule = rule or GroupRule()
    summary = GroupSummary(group=group, positive_label=positive_label, n=len(records))
    probabilities = []
    for record in records:
        status = status_of(record)
        summary.counts[status] = summary.counts.get(status, 0) + 1
        if status == "ok" and record.get("label") == positive_label:
            summary.positive += 1
        probs = record.get("probabilities")
        if probs and positive_label in probs:  # ok and refer only: rejected have none
            probabilities.append(float(probs[positive_label]))
    ok = summary.counts["ok"]
    if ok:
        summary.fraction = summary.positive / ok
    summary.ci_low, summary.ci_high = wilson_interval(summary.positive, ok)
    if probabilities:
        summary.mean_probability = sum(probabilities) / len(probabilities)
    if group in UNKNOWN_GROUPS:
        summary.call, summary.call_reason = NO_CALL, _UNKNOWN_REASONS[group]
    else:
        summary.call, summary.call_reason = _call(summary, labels, positive_label, rule)
    return summary


_UNKNOWN_REASONS = {
    NO_GROUP: "no group call: images without a subject (or folder) in their path, not one group",
    UNMAPPED: "no group call: images the --group-map does not list, not one slide",
}


def _call(
    s: GroupSummary, labels: Sequence[str], positive: str, rule: GroupRule
) -> tuple[str, str]:
    ok = s.counts["ok"]
    if ok == 0:
        return "refer", "no ok calls"
    unusable = s.n - ok
    if unusable / s.n > rule.max_unusable:
        return "refer", f"{unusable} of {s.n} images not ok (> {rule.max_unusable:g})"
    if s.ci_low > rule.fraction:
        return positive, f"{positive} fraction > {rule.fraction:g} with 95 % confidence"
    others = [label for label in labels if label != positive]
    if s.ci_high < rule.fraction and len(others) == 1:
        return others[0], f"{positive} fraction < {rule.fraction:g} with 95 % confidence"
    return "refer", f"95 % interval includes {rule.fraction:g}"


class GroupMap:
    """Image → group from a CSV file with a ``path`` column and a ``group`` (or ``slide``,
    ``subject``) column, as a lab's spreadsheet of which field belongs to which slide.

    Relative paths in the file are taken relative to the CSV's own folder; an entry that is
    a bare file name (no folder) matches any image of that name.

    Raises:
        OSError: the file cannot be read.
        ValueError: the columns are missing.
    """

    GROUP_COLUMNS = ("group", "slide", "subject")

    def __init__(self, csv_path: str | os.PathLike):
        csv_path = Path(csv_path)
        self.by_path: dict[str, str] = {}
        self.by_name: dict[str, str] = {}
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            column = next((c for c in self.GROUP_COLUMNS if c in fields), None)
            if "path" not in fields or column is None:
                raise ValueError(
                    f"{csv_path}: needs a 'path' column and one of {list(self.GROUP_COLUMNS)}; "
                    f"found {reader.fieldnames}"
                )
            original = dict(zip(fields, reader.fieldnames or [], strict=True))
            for row in reader:
                path = (row.get(original["path"]) or "").strip()
                group = (row.get(original[column]) or "").strip()
                if not path:
                    continue
                if os.sep not in path and "/" not in path:
                    self.by_name[path] = group
                else:
                    self.by_path[_key(csv_path.parent / path)] = group

    def get(self, path: str | os.PathLike) -> str | None:
        """The group of ``path``, or ``None`` if the file does not list it."""
        group = self.by_path.get(_key(path))
        return group if group is not None else self.by_name.get(Path(path).name)


def _key(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.abspath(path))


def group_key(path: str | os.PathLike, by: str, mapping: GroupMap | None = None) -> str:
    """The group of one image.

    Args:
        path: the image file.
        by: ``"subject"`` (C-NMC file name; :data:`NO_GROUP` when it has none),
            ``"slide"`` (the folder's name, e.g. ``slide_12``, or ``mapping``'s group;
            :data:`UNMAPPED` when the mapping lacks the image) or ``"folder"`` (the folder
            path as given, e.g. ``2026-05-01/slide_12``).
        mapping: a :class:`GroupMap` (only for ``"slide"``).

    Raises:
        ValueError: unknown ``by``.
    """
    if by == "subject":
        return parse_subject(path) or NO_GROUP
    if by == "slide":
        if mapping is not None:
            group = mapping.get(path)
            return group if group else UNMAPPED
        return Path(path).parent.name or NO_GROUP
    if by == "folder":
        return str(Path(path).parent)
    raise ValueError(f"unknown group key {by!r}; choose one of {list(GROUP_BY)}")


class GroupCollector:
    """Collects records into groups as they arrive; :meth:`summaries` at the end.

    Keeps only what the statistics need per record (status, label, p(positive)), so 40,000
    records cost little memory.
    """

    def __init__(
        self,
        by: str,
        labels: Sequence[str],
        positive_label: str,
        mapping: GroupMap | None = None,
        rule: GroupRule | None = None,
    ):
        if by not in GROUP_BY:
            raise ValueError(f"unknown group key {by!r}; choose one of {list(GROUP_BY)}")
        self.by, self.mapping, self.rule = by, mapping, rule
        self.labels, self.positive_label = list(labels), positive_label
        self._groups: dict[str, list[dict[str, Any]]] = {}

    def add(self, record: dict[str, Any]) -> None:
        """Add one record (its ``path`` decides the group)."""
        key = group_key(record["path"], self.by, self.mapping)
        probs = record.get("probabilities") or {}
        slim = {
            "status": status_of(record),
            "label": record.get("label"),
            "probabilities": (
                {self.positive_label: probs[self.positive_label]}
                if self.positive_label in probs
                else None
            ),
        }
        self._groups.setdefault(key, []).append(slim)

    def summaries(self) -> list[GroupSummary]:
        """One :class:`GroupSummary` per group, sorted by group key."""
        return [
            summarise(key, self._groups[key], self.labels, self.positive_label, self.rule)
            for key in sorted(self._groups)
        ]


def summarise_all(
    records: Iterable[dict[str, Any]],
    by: str,
    labels: Sequence[str],
    positive_label: str = "ALL",
    mapping: GroupMap | None = None,
    rule: GroupRule | None = None,
) -> list[GroupSummary]:
    """:class:`GroupSummary` per group of ``records`` (sorted by key)."""
    collector = GroupCollector(by, labels, positive_label, mapping, rule)
    for record in records:
        collector.add(record)
    return collector.summaries()

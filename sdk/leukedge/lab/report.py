"""What ``leukedge classify`` shows on the terminal: results table, group table, progress
bar and the summary line. ``rich`` is imported only when something is drawn, so a
``--json`` run never loads it.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from leukedge.lab.records import STATUSES, status_of

PROGRESS_MIN_IMAGES = 8
"""A progress bar is drawn (on a terminal) only for more images than this."""


@dataclass
class Totals:
    """Counts of a run, for the summary line and the exit code.

    Attributes:
        planned: inputs the run set out to classify.
        done: records produced.
        statuses: ``{status: records}``.
        labels: ``{label: ok records}``.
        elapsed_s: wall time of the classification, seconds (model loading excluded).
        stopped_by: the signal that stopped the run early, or ``None``.
    """

    planned: int
    done: int = 0
    statuses: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    stopped_by: int | None = None
    _start: float = field(default_factory=time.perf_counter, repr=False)

    def add(self, record: dict[str, Any]) -> None:
        """Count one record."""
        status = status_of(record)
        self.done += 1
        self.statuses[status] += 1
        if status == "ok" and record.get("label"):
            self.labels[record["label"]] += 1
        self.elapsed_s = time.perf_counter() - self._start

    @property
    def failed(self) -> int:
        """Records with status ``error``."""
        return self.statuses["error"]


def summary_line(totals: Totals, labels: Sequence[str], skipped: str = "") -> str:
    """``"1000 images in 11.2 s (89.3/s): ALL 812, HEM 180; ok 992, error 8"`` plus what was
    skipped and whether the run was stopped early."""
    rate = totals.done / totals.elapsed_s if totals.elapsed_s > 0 else 0.0
    calls = ", ".join(f"{label} {totals.labels[label]}" for label in labels)
    statuses = ", ".join(
        f"{s} {totals.statuses[s]}" for s in STATUSES if s == "ok" or totals.statuses[s]
    )
    line = (
        f"{totals.done} image{'' if totals.done == 1 else 's'} in {totals.elapsed_s:.1f} s "
        f"({rate:.1f}/s): {calls}; {statuses}"
    )
    if skipped:
        line += f"; skipped {skipped}"
    if totals.stopped_by is not None:
        line += f"; stopped early, {totals.planned - totals.done} not classified"
    return line


def record_line(record: dict[str, Any], positive_label: str) -> str:
    """One line per record for ``leukedge watch``: ``"<path>  ALL  p(ALL) 0.972"`` for a
    call, ``"<path>  refer (uncertain: …)  p(ALL) 0.512"`` or ``"<path>  rejected (blank)"``
    (the status once, with its reason) otherwise, or ``"<path>  error  <message>"``."""
    if record.get("error"):
        return f"{record['path']}  error  {record['error']}"
    probs = record.get("probabilities") or {}
    p = probs.get(positive_label)
    status = status_of(record)
    if status == "ok" and record.get("label"):
        line = f"{record['path']}  {record['label']}"
    else:
        line = f"{record['path']}  {status}"
        if record.get("reason"):
            line += f" ({record['reason']})"
    if p is not None:
        line += f"  p({positive_label}) {p:.3f}"
    return line


class _NoProgress:
    def advance(self) -> None:
        pass


@contextmanager
def progress_bar(total: int, enabled: bool, stream: TextIO | None = None) -> Iterator[Any]:
    """A ``rich`` progress bar on ``stream`` (default standard error) when ``enabled``;
    yields an object with ``advance()``."""
    if not enabled:
        yield _NoProgress()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("classifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream or sys.stderr),
    )
    task = progress.add_task("classifying", total=total)

    class _Bar:
        def advance(self) -> None:
            progress.advance(task)

    with progress:
        yield _Bar()


def operating_point(classifier: Any) -> str:
    """One line: the call rule, refer band and out-of-domain check in force."""
    threshold = getattr(classifier, "decision_threshold", None)
    if threshold is None:
        rule = "call: the most probable class"
    else:
        labels = classifier.labels
        meta = classifier.metadata
        positive = meta.decision.positive_label if meta.decision else meta.positive_label
        positive = positive if positive in labels else labels[0]
        rule = f"call {positive} when p({positive}) >= {threshold:.3f}"
        if classifier.refer_band is not None:
            low, high = classifier.refer_band
            rule += f"; refer when {low:.3f} <= p < {high:.3f}"
    ood = (
        "out-of-domain check unavailable"
        if getattr(classifier, "ood_threshold", None) is None
        else f"out of domain when distance > {classifier.ood_threshold:.4g}"
    )
    return f"{rule}; {ood}"


STATUS_STYLES = {"ok": None, "refer": "yellow", "rejected": "magenta", "error": "red"}
"""Row colour per status in the results table."""


def print_results_table(rows: Sequence[dict[str, Any]], classifier: Any) -> None:
    """One row per record: image, status, call, p(label) per class (the model's own, in
    brackets, for a rejected image: never a call), reason and a note; the operating point
    as the caption."""
    from rich.console import Console
    from rich.table import Table

    metadata, labels = classifier.metadata, classifier.labels
    table = Table(
        title=f"{metadata.name} {metadata.version} ({metadata.precision})",
        caption=operating_point(classifier),
    )
    table.add_column("image", no_wrap=True)
    table.add_column("status")
    table.add_column("call")
    for label in labels:
        table.add_column(f"p({label})", justify="right")
    table.add_column("reason")
    table.add_column("note", overflow="fold")
    for r in rows:
        status = status_of(r)
        if r.get("probabilities") is not None:
            cells = [f"{r['probabilities'][lb]:.3f}" for lb in labels]
        elif r.get("model_probabilities") is not None:  # rejected: the model's, not a call
            cells = [f"({r['model_probabilities'][lb]:.3f})" for lb in labels]
        else:
            cells = ["-"] * len(labels)
        note = "" if status == "ok" else (r.get("error") or r.get("message") or "")
        if "cells" in r:  # a field called cell by cell: its counts, whatever the status
            note = r.get("message") or ""
        elif status == "rejected":
            note += f" [model said {r.get('model_label')}; not a call]"
        table.add_row(
            r["path"],
            status,
            r.get("label") or "-",
            *cells,
            r.get("reason") or "",
            note,
            style=STATUS_STYLES.get(status),
        )
    # Never fold a path: widen the table to the longest one (rich assumes 80 columns when
    # output is piped).
    longest = max((len(r["path"]) for r in rows), default=0)
    notes = max(
        (len(r.get("message") or "") for r in rows if status_of(r) != "ok" or "cells" in r),
        default=0,
    )
    Console(width=max(100, longest + 12 * len(labels) + min(notes, 80) + 40)).print(table)


def print_group_table(summaries: Sequence[Any], by: str, stream: TextIO | None = None) -> None:
    """One row per :class:`~leukedge.lab.groups.GroupSummary`."""
    from rich.console import Console
    from rich.table import Table

    if not summaries:
        return
    label = summaries[0].positive_label
    table = Table(title=f"per {by}")
    table.add_column(by, no_wrap=True)
    table.add_column("images", justify="right")
    for status in STATUSES:
        table.add_column(status, justify="right")
    table.add_column(f"{label} fraction [95% CI]", justify="right")
    table.add_column(f"mean p({label})", justify="right")
    table.add_column("call")
    table.add_column("why", overflow="fold")
    for s in summaries:
        fraction = (
            "-" if s.fraction is None else f"{s.fraction:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}]"
        )
        mean = "-" if s.mean_probability is None else f"{s.mean_probability:.3f}"
        table.add_row(
            s.group,
            str(s.n),
            *[str(s.counts.get(status, 0)) for status in STATUSES],
            fraction,
            mean,
            s.call or "-",
            s.call_reason,
        )
    stream = stream or sys.stdout
    longest = max(len(s.group) for s in summaries)
    width = None if stream.isatty() else max(120, longest + 130)  # piped: never fold a row
    Console(file=stream, width=width).print(table)

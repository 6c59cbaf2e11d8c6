"""``leukedge classify`` on many files: inputs → parallel classification → records →
outputs (stdout JSON Lines, CSV, JSONL), group statistics and totals, in one pass.

Data flows one way: :mod:`leukedge.lab.inputs` (paths) → :mod:`leukedge.lab.batch` (results in input
order) → :mod:`leukedge.lab.records` (one dict per input) → every writer of
:mod:`leukedge.lab.outputs`, the :class:`~leukedge.lab.groups.GroupCollector` and the
:class:`~leukedge.lab.report.Totals`. Ctrl+C or SIGTERM (:mod:`leukedge.lab.stopping`) ends the
loop after the record in hand; the output files are then closed as on success, so they
hold every finished record.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from leukedge.cells.field import FieldOptions, classify_input, locates
from leukedge.lab.batch import classify_paths
from leukedge.lab.records import ModelInfo, error_record, result_record
from leukedge.lab.report import Totals, progress_bar
from leukedge.lab.stopping import StopRequest

if TYPE_CHECKING:
    from leukedge.classifier import Classifier
    from leukedge.lab.groups import GroupCollector
    from leukedge.lab.outputs import RecordWriter


@dataclass
class ClassifyJob:
    """One ``leukedge classify`` run.

    Attributes:
        paths: images, in the order results are wanted.
        writers: where every record goes (:mod:`leukedge.lab.outputs`); closed at the end,
            also after a stop.
        workers: classification threads (``None``: :func:`leukedge.lab.batch.default_workers`).
        progress: draw a progress bar on standard error.
        groups: a :class:`~leukedge.lab.groups.GroupCollector`, or ``None``.
        keep_records: keep every record in memory (for the terminal table).
        on_record: called with each record after it is written (e.g. tests, GUIs).
        on_result: called with each record and its
            :class:`~leukedge.ClassificationResult` (``None`` for an input that failed),
            after ``on_record``: what needs more than the record, such as the heat map
            (``leukedge classify --overlay/--report``: :class:`leukedge.review.sink.ReviewSink`).
        locate: ``--locate``: ``never`` (default: the whole image to the model), ``auto``
            or ``always`` (:func:`leukedge.cells.field.classify_input`: a cell model's
            record of a field holds its cells and the field's counts).
        field_options: :class:`~leukedge.cells.field.FieldOptions` for located fields.
    """

    paths: Sequence[str | os.PathLike]
    writers: list[RecordWriter] = field(default_factory=list)
    workers: int | None = None
    progress: bool = False
    groups: GroupCollector | None = None
    keep_records: bool = False
    on_record: Callable[[dict[str, Any]], None] | None = None
    on_result: Callable[[dict[str, Any], Any], None] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    locate: str = "never"
    field_options: FieldOptions | None = None


def run_classify(
    classifier: Classifier, job: ClassifyJob, stop: StopRequest | None = None
) -> Totals:
    """Classify ``job.paths`` and send each record to ``job``'s writers, in input order.

    Args:
        classifier: an ``IMAGE``-mode classifier.
        job: :class:`ClassifyJob`.
        stop: checked after every record; the caller installs it for signals
            (:meth:`StopRequest.installed`). ``None``: run to the end.

    Returns:
        :class:`~leukedge.lab.report.Totals` (``stopped_by`` set when stopped early).
    """
    model = ModelInfo.of(classifier)
    totals = Totals(planned=len(job.paths))
    classify = None
    if locates(classifier, job.locate):
        classify = functools.partial(
            classify_input, classifier, locate=job.locate, options=job.field_options
        )
    outcomes = classify_paths(classifier, job.paths, workers=job.workers, classify=classify)
    try:
        with contextlib.closing(outcomes), progress_bar(len(job.paths), job.progress) as bar:
            for outcome in outcomes:
                if outcome.error is None:
                    record = result_record(outcome.path, outcome.result, model)
                else:
                    record = error_record(outcome.path, outcome.error, model)
                for writer in job.writers:
                    writer.write(record)
                if job.groups is not None:
                    job.groups.add(record)
                if job.keep_records:
                    job.records.append(record)
                if job.on_record is not None:
                    job.on_record(record)
                if job.on_result is not None:
                    job.on_result(record, outcome.result if outcome.error is None else None)
                totals.add(record)
                bar.advance()
                if stop:
                    totals.stopped_by = stop.signum
                    break
    finally:
        _close_all(job.writers)
    return totals


def _close_all(writers: Sequence[RecordWriter]) -> None:
    """Close every writer, even when one fails (the first failure is raised after)."""
    first: BaseException | None = None
    for writer in writers:
        try:
            writer.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            first = first or exc
    if first is not None:
        raise first

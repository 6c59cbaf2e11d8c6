"""Result files that are never half-written: CSV and JSON Lines, written atomically.

Each output file is written to a temporary file in the target's own folder
(``.<name>.<random>.partial``; same file system, so the final :func:`os.replace` is atomic on
POSIX and Windows), one complete line per record, handed to the operating system with each
record (unbuffered). On completion **and** on interruption (Ctrl+C, SIGTERM, an exception)
the temporary file is synced and renamed onto the target, so the target holds every record
finished so far and never a partial line (also after a write that failed, e.g. on a full
disk: the file is cut back to the records before it); a ``kill -9`` leaves the target as it
was (absent or the previous run's) plus the ``.partial`` file. The file gets the mode a
plain ``open()`` would give it (``0o666`` minus the user's umask), not
:func:`tempfile.mkstemp`'s ``0o600``.

CSV columns (:func:`csv_columns`): ``path, status, label, reason``, one ``p_<label>`` per
class, ``score, message, model_label``, one ``model_p_<label>`` per class,
``ood_distance``, one ``quality_<statistic>`` per quality statistic, ``failed_checks,
error, model, model_version, model_sha256, weights_sha256``; with ``--locate`` and a cell
model, the field aggregates after those (:class:`CsvWriter`). JSON Lines hold each record
whole (:mod:`leukedge.lab.records`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO

from leukedge.cells.field import field_columns as _field_columns
from leukedge.checks.quality import QualityStatistics
from leukedge.lab.records import ModelInfo


def current_umask() -> int:
    """The process's umask (read by setting and restoring it; call from one thread)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicTextFile:
    """A text file written under a temporary name and renamed onto ``target`` at the end.

    Args:
        target: the file to create or replace; its folder is created if missing. A
            symbolic link is written through (its target is replaced, the link stays).
        mode: permission bits of the final file; default ``0o666 & ~umask``.

    Use as a context manager, or call :meth:`commit` / :meth:`discard` yourself. Leaving the
    ``with`` block commits, whether it ends normally or by an exception (what was written
    is kept).

    Raises:
        OSError: the folder cannot be created or written.
    """

    def __init__(self, target: str | os.PathLike, mode: int | None = None):
        self.target = Path(os.path.realpath(target))
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=self.target.parent, prefix=f".{self.target.name}.", suffix=".partial"
        )
        self.temp_path = Path(tmp)
        try:
            if hasattr(os, "fchmod"):  # POSIX (Windows: the folder's ACL applies)
                os.fchmod(fd, 0o666 & ~current_umask() if mode is None else mode)
            # Unbuffered: each write() reaches the operating system whole or fails, and
            # nothing is left in a buffer to fail again at close.
            self._file: BinaryIO = open(fd, "wb", buffering=0)  # noqa: SIM115
        except BaseException:
            os.close(fd)
            self.temp_path.unlink(missing_ok=True)
            raise
        self.closed = False
        self.size = 0  # bytes of the whole writes so far

    @property
    def handle(self) -> AtomicTextFile:
        """A text stream onto the file (``write(str)``, ``flush()``), e.g. for
        :class:`csv.writer`: the file itself."""
        return self

    def flush(self) -> None:
        """Nothing to do: every :meth:`write` reaches the operating system at once."""

    def write(self, text: str) -> None:
        """Write ``text`` (whole lines, UTF-8) to the operating system.

        A write that fails (a full disk, a file-size limit, a share gone) leaves nothing
        of ``text`` behind: the file is cut back to the whole writes before it, so a later
        :meth:`commit` still gives the target every complete line.

        Raises:
            OSError: it cannot be written; ``filename`` is the target.
        """
        data = memoryview(text.encode("utf-8"))
        try:
            written = 0
            while written < len(data):  # a short write (a limit reached) comes back here
                written += self._file.write(data[written:])
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self.size)
                os.lseek(self._file.fileno(), self.size, os.SEEK_SET)
            raise self._naming_target(exc) from exc
        self.size += len(data)

    def commit(self) -> None:
        """Sync the data to disk and rename the temporary file onto the target.

        Raises:
            OSError: as :meth:`write`; the temporary file is then left in place.
        """
        if self.closed:
            return
        self.closed = True
        try:
            try:
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
            os.replace(self.temp_path, self.target)
        except OSError as exc:
            raise self._naming_target(exc) from exc
        _sync_folder(self.target.parent)

    def _naming_target(self, exc: OSError) -> OSError:
        """``exc`` with the target as its ``filename`` (a failed write names none)."""
        return OSError(exc.errno, exc.strerror or str(exc), str(self.target))

    def discard(self) -> None:
        """Close and delete the temporary file; the target stays as it was."""
        if self.closed:
            return
        self.closed = True
        self._file.close()
        self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicTextFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.commit()


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RecordWriter(Protocol):
    """Where records go: one :meth:`write` per record, :meth:`close` at the end (also after
    an interruption: what was written is kept)."""

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def jsonl_line(record: dict[str, Any]) -> str:
    """One record as one JSON Lines line (with its ``\\n``); non-ASCII kept as UTF-8."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


class JsonLinesWriter:
    """Records as JSON Lines into an :class:`AtomicTextFile`."""

    def __init__(self, target: str | os.PathLike):
        self.file = AtomicTextFile(target)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(jsonl_line(record))

    def close(self) -> None:
        self.file.commit()

    def discard(self) -> None:
        """Drop what was written; the target stays as it was."""
        self.file.discard()


class JsonLinesStream:
    """Records as JSON Lines on a stream (standard output), flushed per record."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(jsonl_line(record))
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()

    def discard(self) -> None:
        """Nothing to undo on a stream."""


PER_LABEL_COLUMNS = {"probabilities": "p_", "model_probabilities": "model_p_"}
"""Record fields holding ``{label: value}``, spread over one CSV column per label."""

QUALITY_KEYS = tuple(f.name for f in fields(QualityStatistics))
PER_KEY_COLUMNS = {"quality": ("quality_", QUALITY_KEYS)}
"""Record fields holding a dictionary with fixed keys, one CSV column per key."""

CSV_FIELDS = (
    "path",
    "status",
    "label",
    "reason",
    "probabilities",
    "score",
    "message",
    "model_label",
    "model_probabilities",
    "ood_distance",
    "quality",
    "failed_checks",
    "error",
    "model",
    "model_version",
    "model_sha256",
    "weights_sha256",
)
"""Record fields in CSV column order (per-label and per-key fields expand in place; lists
are joined with ``;``)."""


def _expand(name: str, labels: Sequence[str]) -> list[tuple[str, str | None]]:
    """``[(column, key in the field's dictionary or None)]`` for one record field."""
    if name in PER_LABEL_COLUMNS:
        return [(f"{PER_LABEL_COLUMNS[name]}{label}", label) for label in labels]
    if name in PER_KEY_COLUMNS:
        prefix, keys = PER_KEY_COLUMNS[name]
        return [(f"{prefix}{key}", key) for key in keys]
    return [(name, None)]


def csv_columns(labels: Sequence[str]) -> list[str]:
    """CSV header for a model with ``labels``: :data:`CSV_FIELDS` with each per-label field
    expanded to ``<prefix><label>`` columns (``p_ALL, p_HEM``) and ``quality`` to
    ``quality_<statistic>`` columns."""
    return [column for name in CSV_FIELDS for column, _ in _expand(name, labels)]


PROBABILITY_FIELDS = frozenset({"probabilities", "model_probabilities", "score"})
"""Record fields holding probabilities: rounded in CSV rows to the model's resolution
(:func:`leukedge.lab.records.probability_decimals`)."""


def csv_row(
    record: dict[str, Any], labels: Sequence[str], decimals: int | None = None
) -> dict[str, Any]:
    """One record as a CSV row (``None`` → empty cell; lists joined with ``;``).

    Probabilities (:data:`PROBABILITY_FIELDS`) are rounded to ``decimals`` (``None``: in
    full): an int8 model's output moves in steps of 1/256, so its 16-digit floats would
    show precision it does not have. Other numbers are written in full.
    """
    row: dict[str, Any] = {}
    for name in CSV_FIELDS:
        value = record.get(name)
        rounded = decimals is not None and name in PROBABILITY_FIELDS
        for column, key in _expand(name, labels):
            cell = value if key is None else (value or {}).get(key)
            if isinstance(cell, list | tuple):
                cell = ";".join(map(str, cell))
            elif rounded and isinstance(cell, float):
                cell = f"{cell:.{decimals}f}"
            row[column] = "" if cell is None else cell
    return row


class CsvWriter:
    """Records as CSV rows (header :func:`csv_columns`; probabilities rounded to
    ``model.probability_decimals``) into an :class:`AtomicTextFile`.

    With ``field_columns`` (``leukedge classify --locate`` with a cell model), the field
    aggregates follow as columns (:func:`leukedge.cells.field.field_columns`:
    ``cells_found, cells_ok, n_<positive>, fraction_<positive>, ci_low, ci_high``), empty
    for an image classified whole; each cell's call is in the JSON Lines only.
    """

    def __init__(self, target: str | os.PathLike, model: ModelInfo, field_columns: bool = False):
        self.labels = model.labels
        self.decimals = model.probability_decimals
        self.field_columns = _field_columns(model.positive_label) if field_columns else []
        self.columns = csv_columns(self.labels) + self.field_columns
        self.file = AtomicTextFile(target)
        self._buffer = io.StringIO()
        self._csv = csv.DictWriter(self._buffer, fieldnames=self.columns)
        self._csv.writeheader()
        self._emit()

    def _emit(self) -> None:
        self.file.write(self._buffer.getvalue())  # one whole line (or header) at a time
        self._buffer.seek(0)
        self._buffer.truncate()

    def write(self, record: dict[str, Any]) -> None:
        row = csv_row(record, self.labels, self.decimals)
        for column in self.field_columns:
            value = record.get(column)
            row[column] = "" if value is None else value
        self._csv.writerow(row)
        self._emit()

    def close(self) -> None:
        self.file.commit()

    def discard(self) -> None:
        """Drop what was written; the target stays as it was."""
        self.file.discard()


def write_rows_atomically(
    target: str | os.PathLike, columns: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    """A whole CSV (header ``columns``, then ``rows``) written atomically (group summaries):
    all of it, or, when it cannot be written (:class:`OSError` naming ``target``), nothing
    (the target stays as it was)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    handle = AtomicTextFile(target)
    try:
        handle.write(buffer.getvalue())
    except BaseException:
        handle.discard()
        raise
    handle.commit()

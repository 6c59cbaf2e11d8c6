"""``leukedge watch DIR --jsonl OUT``: classify every image a camera program saves into DIR.

- **New files** are noticed through the operating system's file events (inotify on Linux,
  FSEvents on macOS, ReadDirectoryChangesW on Windows) with the ``watchdog`` library; on
  network shares, which deliver no events, ``poll=True`` (``--poll``) scans instead
  (``watchdog``'s ``PollingObserver``).
- **Completely written** means: size and modification time unchanged for ``settle_ms``
  **and** the file decodes. A file that is stable but does not decode yet (a camera that
  pauses mid-write) is tried again after each further ``settle_ms``, and recorded as an
  error only when it has not changed for ``give_up_s``.
- **One record per image**, appended to the JSON Lines file and synced to disk before the
  next image (:mod:`leukedge.lab.records`), whatever its outcome: a bad file gets an ``error``
  record and watching goes on.
- **Restart without duplicates or gaps**: the JSONL itself is the state. At start, the
  paths it already holds are skipped, a last line cut short by a crash is removed, and
  every image already in DIR but not in the file is classified (oldest first) before new
  ones. The observer starts *before* that scan, so a file saved meanwhile is not missed.
- **Stops cleanly** on Ctrl+C or SIGTERM (:mod:`leukedge.lab.stopping`): the image in hand is
  finished and recorded, then the file is closed.

Hidden files (``.name``, as camera programs use while writing) and non-image files
(:data:`leukedge.lab.inputs.IMAGE_SUFFIXES`) are ignored; a file renamed into DIR counts from
the rename. Paths are recorded as ``DIR/relative/path`` with DIR as given, and recognised
again by their absolute path: restart with the same DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leukedge.errors import LeukedgeWarning
from leukedge.lab.inputs import is_hidden, is_image_name
from leukedge.lab.outputs import jsonl_line
from leukedge.lab.records import ModelInfo, error_record, result_record

if TYPE_CHECKING:
    from leukedge.classifier import Classifier
    from leukedge.lab.stopping import StopRequest


@dataclass
class WatchOptions:
    """Settings of :class:`Watcher`.

    Attributes:
        folder: the folder the camera program saves into.
        jsonl: the JSON Lines file records are appended to (created if missing).
        settle_ms: size and modification time must stay unchanged this long, milliseconds,
            before a file is read (500 ms: longer than the gap between writes of a camera
            program saving a few-MB image, short enough to keep up with one image a second).
        give_up_s: a file unchanged this long that still does not decode is recorded as
            an error, seconds.
        poll_s: how often pending files are checked, seconds.
        recursive: also watch sub-folders.
        poll: scan the folder instead of relying on file events (network shares).
    """

    folder: Path
    jsonl: Path
    settle_ms: int = 500
    give_up_s: float = 30.0
    poll_s: float = 0.1
    recursive: bool = True
    poll: bool = False


@dataclass
class _Pending:
    path: Path
    size: int
    mtime_ns: int
    changed: float  # monotonic time of the last size/mtime change
    tried: float = 0.0  # monotonic time of the last failed decode attempt


def _key(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.abspath(path))


def load_recorded(jsonl: Path) -> set[str]:
    """Absolute paths already recorded in ``jsonl`` (empty if it does not exist).

    A last line without its newline (a crash mid-write) is cut off the file, with a
    :class:`~leukedge.errors.LeukedgeWarning`; lines that are not JSON records are skipped
    with a warning and left in place.
    """
    if not jsonl.exists():
        return set()
    data = jsonl.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        warnings.warn(
            f"{jsonl}: removed an incomplete last line ({len(data) - keep} bytes) left by an "
            "interrupted run",
            LeukedgeWarning,
            stacklevel=2,
        )
        with open(jsonl, "r+b") as handle:
            handle.truncate(keep)
        data = data[:keep]
    recorded = set()
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            path = json.loads(line)["path"]
        except (ValueError, KeyError, TypeError):
            warnings.warn(
                f"{jsonl}:{number}: not a leukedge record; skipped", LeukedgeWarning, stacklevel=2
            )
            continue
        recorded.add(_key(path))
    return recorded


class Watcher:
    """Classifies the images that appear in ``options.folder``; see the module docstring.

    Args:
        classifier: an ``IMAGE``-mode classifier.
        options: :class:`WatchOptions`.
        on_record: called with each record after it is written (the CLI prints a line).

    Raises:
        NotADirectoryError: ``options.folder`` is not a folder.
        OSError: the JSONL file cannot be read or written.
    """

    def __init__(
        self,
        classifier: Classifier,
        options: WatchOptions,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ):
        if not options.folder.is_dir():
            raise NotADirectoryError(f"{options.folder}: not a folder")
        self.classifier = classifier
        self.options = options
        self.on_record = on_record
        self.model = ModelInfo.of(classifier)
        self.root = Path(os.path.abspath(options.folder))
        self.recorded = load_recorded(options.jsonl)
        self.pending: dict[str, _Pending] = {}
        self.events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.count = 0

    def _wanted(self, path: str | os.PathLike) -> Path | None:
        """``path`` as ``folder/relative`` (``folder`` as given) if it is an image to
        classify, else ``None``."""
        try:
            relative = Path(os.path.abspath(path)).relative_to(self.root)
        except ValueError:
            return None
        if not relative.parts or any(is_hidden(part) for part in relative.parts):
            return None
        if not self.options.recursive and len(relative.parts) > 1:
            return None
        if not is_image_name(relative.name) or _key(path) in self.recorded:
            return None
        return self.options.folder / relative

    def _note(self, seen: str | os.PathLike) -> None:
        """A file event or scan saw ``seen``: start tracking it."""
        key = _key(seen)
        if key in self.pending:
            return
        path = self._wanted(seen)
        if path is None:
            return
        try:
            st = path.stat()
        except OSError:
            return  # gone again (a temporary file renamed away)
        self.pending[key] = _Pending(path, st.st_size, st.st_mtime_ns, time.monotonic())

    def _scan(self) -> None:
        """Every image already in the folder and not yet recorded, oldest first."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.options.folder):
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
            if not self.options.recursive:
                dirnames[:] = []
            for name in filenames:
                path = self._wanted(Path(dirpath, name))
                if path is not None:
                    try:
                        found.append((path.stat().st_mtime_ns, str(path), path))
                    except OSError:
                        continue
        for _, _, path in sorted(found):
            self._note(path)

    def _start_observer(self) -> Any:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        events = self.events

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.is_directory:
                    return
                for path in (event.src_path, getattr(event, "dest_path", "")):
                    if path:
                        events.put(os.fsdecode(path))

        observer = PollingObserver(timeout=1.0) if self.options.poll else Observer()
        observer.schedule(Handler(), str(self.options.folder), recursive=self.options.recursive)
        observer.start()
        return observer

    def _due(self, now: float) -> list[_Pending]:
        """Pending files whose size and mtime have been stable for ``settle_ms``."""
        settle = self.options.settle_ms / 1000
        due = []
        for key, item in list(self.pending.items()):
            try:
                st = item.path.stat()
            except OSError:
                del self.pending[key]  # deleted or renamed away before it settled
                continue
            if (st.st_size, st.st_mtime_ns) != (item.size, item.mtime_ns):
                item.size, item.mtime_ns, item.changed = st.st_size, st.st_mtime_ns, now
            elif now - max(item.changed, item.tried) >= settle:
                due.append(item)
        return sorted(due, key=lambda item: (item.changed, str(item.path)))

    def _classify(self, item: _Pending, now: float) -> dict[str, Any] | None:
        """The record for a settled file, or ``None`` to try again later."""
        from leukedge.engine.preprocess import ImageDecodeError

        try:
            result = self.classifier.classify(item.path)
        except ImageDecodeError as exc:
            not_yet = getattr(exc, "reason", "decode_error") == "decode_error"  # not too_large
            if not_yet and now - item.changed < self.options.give_up_s:
                item.tried = now  # maybe still being written: wait another settle period
                return None
            return error_record(item.path, exc, self.model)
        except FileNotFoundError:
            self.pending.pop(_key(item.path), None)
            return None
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the watch
            return error_record(item.path, exc, self.model)
        return result_record(item.path, result, self.model)

    def _append(self, out: Any, record: dict[str, Any]) -> None:
        """Write one record (``out``: the JSONL opened unbuffered for appending) and sync it
        to disk; a record that cannot be written whole is cut off again, so the file keeps
        only complete lines.

        Raises:
            OSError: it cannot be written (disk full, a share gone); ``filename`` is the
                JSONL file.
        """
        data = memoryview(jsonl_line(record).encode("utf-8"))
        try:
            before = os.fstat(out.fileno()).st_size
            written = 0
            while written < len(data):  # a short write (a limit reached) comes back here
                written += out.write(data[written:])
            os.fsync(out.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.ftruncate(out.fileno(), before)
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.options.jsonl)) from exc

    def run(self, stop: StopRequest) -> int:
        """Watch until ``stop`` is requested; returns the number of records written.

        Raises:
            OSError: a record cannot be written (``filename`` is the JSONL file); the
                records before it are on disk, and the image is classified again after a
                restart.
        """
        observer = self._start_observer()
        try:
            self._scan()
            with open(self.options.jsonl, "ab", buffering=0) as out:
                while not stop:
                    while True:
                        try:
                            self._note(self.events.get_nowait())
                        except queue.Empty:
                            break
                    now = time.monotonic()
                    for item in self._due(now):
                        record = self._classify(item, now)
                        if record is None:
                            continue
                        self._append(out, record)
                        key = _key(item.path)
                        self.recorded.add(key)
                        self.pending.pop(key, None)
                        self.count += 1
                        if self.on_record is not None:
                            self.on_record(record)
                        if stop:
                            break
                    stop.event.wait(self.options.poll_s)
        finally:
            observer.stop()
            observer.join()
        return self.count

"""A pool of TFLite interpreters over one model, lent to threads one call at a time.

One LiteRT interpreter runs one image at a time. A program that classifies from several
threads (a folder pipeline, a server) gets parallel inference from several interpreters,
while decoding and resizing run in the calling threads outside any lock. The pool creates
interpreters lazily, only when every existing one is busy, up to ``size``; a caller that
finds all ``size`` busy waits for the first to come back. A single-threaded program
therefore only ever has one.

Measured on this project's 2-core x86 machine (README, "Threads"): with 4 threads, two
1-thread interpreters beat one interpreter behind a lock, whether that one runs 1 or 2
threads (two 1-thread interpreters in parallel waste no time synchronising inside an
operator); four interpreters were no faster than two. Each extra interpreter costs about
9 MB. Hence :func:`default_pool_size`: cores divided by threads per interpreter.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from leukedge.engine.interpreter import TFLiteEngine


def default_pool_size(num_threads: int | None) -> int:
    """Interpreters that keep the CPU busy without oversubscribing it:
    ``max(1, cores // threads per interpreter)`` (``None`` threads counts as 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // (num_threads or 1))


class EnginePool:
    """Up to ``size`` :class:`~leukedge.engine.interpreter.TFLiteEngine` copies of ``first``.

    Args:
        first: an engine already built (it checked the model); the others are its
            :meth:`~leukedge.engine.interpreter.TFLiteEngine.clone`.
        size: most interpreters ever created (≥ 1; 1 behaves as a lock).

    Thread-safe: any thread may call :meth:`run` or :meth:`engine`.
    """

    def __init__(self, first: TFLiteEngine, size: int):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = size
        self._first = first  # clone() reads only its immutable model bytes and settings
        self._idle = [first]
        self._created = 1
        self._available = threading.Condition()

    @property
    def created(self) -> int:
        """Interpreters created so far (1 … :attr:`size`)."""
        return self._created

    @contextmanager
    def engine(self) -> Iterator[TFLiteEngine]:
        """Borrow an idle engine for the ``with`` block (waits while all are busy)."""
        engine = self._acquire()
        try:
            yield engine
        finally:
            self._release(engine)

    def run(self, rgb: np.ndarray) -> np.ndarray:
        """:meth:`TFLiteEngine.run <leukedge.engine.interpreter.TFLiteEngine.run>` on an idle
        engine.

        Borrows without the context manager of :meth:`engine`, as the methods below: these
        are on every image's path, where a generator-based ``with`` costs tens of
        microseconds.
        """
        engine = self._acquire()
        try:
            return engine.run(rgb)
        finally:
            self._release(engine)

    def run_with_embedding(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`TFLiteEngine.run_with_embedding
        <leukedge.engine.interpreter.TFLiteEngine.run_with_embedding>` on an idle engine."""
        engine = self._acquire()
        try:
            return engine.run_with_embedding(rgb)
        finally:
            self._release(engine)

    def probabilities_with_embedding(
        self, rgb: np.ndarray
    ) -> tuple[list[float], np.ndarray | None]:
        """:meth:`TFLiteEngine.probabilities_with_embedding
        <leukedge.engine.interpreter.TFLiteEngine.probabilities_with_embedding>` on an idle
        engine (the :class:`~leukedge.Classifier`'s path)."""
        engine = self._acquire()
        try:
            return engine.probabilities_with_embedding(rgb)
        finally:
            self._release(engine)

    def run_with_cam(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """:meth:`TFLiteEngine.run_with_cam
        <leukedge.engine.interpreter.TFLiteEngine.run_with_cam>` on an idle engine."""
        engine = self._acquire()
        try:
            return engine.run_with_cam(rgb)
        finally:
            self._release(engine)

    def _acquire(self) -> TFLiteEngine:
        with self._available:
            while not self._idle and self._created >= self.size:
                self._available.wait()
            if self._idle:
                return self._idle.pop()  # the last used: warm caches
            self._created += 1
        try:  # building an interpreter takes tens of ms: not under the pool's lock
            return self._first.clone()
        except BaseException:
            with self._available:
                self._created -= 1
                self._available.notify()
            raise

    def _release(self, engine: TFLiteEngine) -> None:
        with self._available:
            self._idle.append(engine)
            self._available.notify()

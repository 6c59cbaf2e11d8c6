"""Classify many files in parallel, results in input order, memory flat.

A folder of smear fields is classified by ``workers`` threads sharing one
:class:`~leukedge.Classifier`: each thread decodes and resizes its image (Pillow releases
the GIL while decoding) and then runs it on one of the classifier's interpreters
(:class:`~leukedge.engine.pool.EnginePool`; LiteRT releases the GIL during ``invoke``), so
decoding of one image overlaps inference of another on every core. At most
``max_pending`` images are in flight, so memory does not grow with the number of files
(40,000 paths cost a list of paths, not 40,000 decoded images), and results are yielded
strictly in input order, each as soon as it and every earlier one are done.

Default workers (:func:`default_workers`): one more than the classifier's interpreters, so
an interpreter never waits for a decode. Measured on this project's 2-core machine (README,
"Folders"): see :data:`EXTRA_WORKERS`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from leukedge.classifier import ClassificationResult, Classifier

T = TypeVar("T")
R = TypeVar("R")

EXTRA_WORKERS = 1
"""Worker threads beyond the number of interpreters (decode of the next image overlaps the
current inference). Chosen by measurement on the 2-core build machine (README, "Folders")."""

PENDING_PER_WORKER = 4
"""Images in flight per worker: enough that a slow image does not stall the others, small
enough that memory stays flat (each pending item holds at most one decoded image)."""


def default_workers(interpreters: int) -> int:
    """Worker threads for ``interpreters`` interpreters: ``interpreters +``
    :data:`EXTRA_WORKERS` (≥ 1)."""
    return max(1, interpreters + EXTRA_WORKERS)


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    max_pending: int | None = None,
) -> Iterator[tuple[T, Future[R]]]:
    """``fn`` over ``items`` on ``workers`` threads; ``(item, done future)`` in input order.

    Args:
        fn: called once per item, in a worker thread.
        items: consumed lazily, at most ``max_pending`` ahead of what was yielded.
        workers: threads (≥ 1).
        max_pending: most items submitted but not yet yielded (default
            ``PENDING_PER_WORKER * workers``).

    Yields:
        ``(item, future)`` with the future finished: ``future.result()`` returns ``fn``'s
        value or raises its exception.

    Closing the generator early (``break``, an exception in the consumer, Ctrl+C) cancels
    the items not yet started and waits for the running ones (one image each), so no
    thread outlives it.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    limit = max_pending or PENDING_PER_WORKER * workers
    if limit < 1:
        raise ValueError(f"max_pending must be >= 1, got {max_pending}")
    pending: deque[tuple[T, Future[R]]] = deque()
    executor = ThreadPoolExecutor(workers, thread_name_prefix="leukedge-batch")
    try:
        for item in items:
            pending.append((item, executor.submit(fn, item)))
            if len(pending) >= limit:
                item, future = pending.popleft()
                future.exception()  # wait; exceptions stay in the future
                yield item, future
        while pending:
            item, future = pending.popleft()
            future.exception()
            yield item, future
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class Outcome:
    """One input's outcome: the ``result``, or the ``error`` that stopped it."""

    path: os.PathLike | str
    result: ClassificationResult | None
    error: Exception | None


def classify_paths(
    classifier: Classifier,
    paths: Iterable[os.PathLike | str],
    *,
    workers: int | None = None,
    max_pending: int | None = None,
    classify: Callable[[os.PathLike | str], object] | None = None,
) -> Iterator[Outcome]:
    """Classify image files in parallel; one :class:`Outcome` per path, in input order.

    Args:
        classifier: an ``IMAGE``-mode classifier (shared by the workers).
        paths: image files; consumed lazily.
        workers: threads decoding and classifying; default :func:`default_workers` of the
            classifier's interpreter pool size.
        max_pending: see :func:`ordered_map`.
        classify: what each path goes through (a result with ``to_dict()``); default
            ``classifier.classify`` (``--locate``: :func:`leukedge.cells.field.classify_input`).

    Yields:
        :class:`Outcome`; a file that cannot be read has ``error`` set (e.g.
        ``FileNotFoundError``, :class:`~leukedge.engine.preprocess.ImageDecodeError`) and the
        others go on.
    """
    workers = workers or default_workers(classifier.max_interpreters)
    for path, future in ordered_map(
        classify or classifier.classify, paths, workers=workers, max_pending=max_pending
    ):
        error = future.exception()
        if error is not None and not isinstance(error, Exception):
            raise error  # KeyboardInterrupt, SystemExit: not a per-file failure
        yield Outcome(path, None if error else future.result(), error)

"""Wall-clock times of the named steps of a long job, logged as each ends.

As Ultralytics' exporter logs "export success … s": training and conversion time their
steps with :class:`StepTimes`, log each time as it ends, and write the table into the files
they produce (``conversion.json``'s ``timings_s``, a run's ``metrics_val.json``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager


class StepTimes:
    """Seconds per named step; a step run twice adds up.

    Args:
        logger: where each step's time is logged (``INFO``); ``None``: not logged.
    """

    def __init__(self, logger: logging.Logger | None = None):
        self.seconds: dict[str, float] = {}
        self._log = logger

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as step ``name`` (recorded even when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 3)
            if self._log is not None:
                self._log.info("%s: %.1f s", name, elapsed)

    def as_dict(self) -> dict[str, float]:
        """``{step: seconds}`` in the order the steps first ran (rounded to 1 ms)."""
        return dict(self.seconds)

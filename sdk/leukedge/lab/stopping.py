"""Stop cleanly on Ctrl+C (SIGINT) or SIGTERM: finish the current item, keep what was done.

Long-running commands (``classify`` on a folder, ``watch``, ``camera``) install
:class:`StopRequest` for their main loop. The first signal only sets a flag, which the loop
checks between items, so no record is ever cut in half and every output file is closed
properly; a second signal raises :class:`KeyboardInterrupt` at once (for a user who does not
want to wait). The exit code after a stop is ``128 + signal number`` (130 for Ctrl+C, 143
for SIGTERM), as shells report it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A flag set by SIGINT/SIGTERM while :meth:`installed` is active.

    Attributes:
        signum: the signal that asked to stop, or ``None``.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.event = threading.Event()

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """``128 + signum`` after a stop; 0 otherwise."""
        return 128 + self.signum if self.signum else 0

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask to stop (what the signal handler does; also usable from code)."""
        if self.signum is None:
            self.signum = signum
        self.event.set()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # asked twice: stop now
        self.request(signum)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle SIGINT and SIGTERM for the ``with`` block (main thread only; elsewhere
        the handlers stay as they are), then restore the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

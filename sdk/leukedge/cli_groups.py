"""A Typer group with a default command: ``leukedge train --data X`` runs ``train run``.

``leukedge train`` and ``leukedge convert`` each have one main action and a few helpers
(``train evaluate``, ``convert import-weights``). When the first argument is not the name of
a sub-command, the group's default command is invoked with all the arguments.
"""

from __future__ import annotations

from typer.core import TyperGroup


class DefaultCommandGroup(TyperGroup):
    """``TyperGroup`` that dispatches to :attr:`default_command` when no sub-command is named."""

    default_command = "run"

    def parse_args(self, ctx, args):  # noqa: D102 - click API
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

"""The ``leukedge`` command line: the app, which wires one module per command.

- :mod:`~leukedge.cli.classify`: ``leukedge classify`` (a new option to classify goes there)
- :mod:`~leukedge.cli.watch`, :mod:`~leukedge.cli.camera`: ``leukedge watch`` / ``camera``
- :mod:`~leukedge.cli.info`: ``leukedge info``
- :mod:`~leukedge.cli.bench`: ``leukedge bench``
- :mod:`~leukedge.cli.common`: options several commands share, loading the classifier
- ``leukedge train …`` and ``leukedge convert …``: :mod:`leukedge.training.cli` and
  :mod:`leukedge.converters.cli` (built with :mod:`leukedge.cli_kit`), which import
  Keras/TensorFlow inside their command functions, so ``leukedge classify`` never loads them.

A new command is a module here with its options and its command function, registered
below. Each command module only wires options to the library: the work lives in
:mod:`leukedge.lab`, :mod:`leukedge.engine` and :mod:`leukedge.bench`, and the formatting
beside the output it formats. ``rich``'s progress bar, ``watchdog`` and OpenCV are imported
by the commands that use them.

May import: everything in leukedge; nothing imports the CLI back
(``tests/test_layering.py``).

Exit codes: 0 success; 1 at least one input failed (the others are still reported), a
check failed, or an output could not be written mid-run (the run stops; what was written is
kept); 2 bad usage (an output that cannot be written, or would replace earlier results
without ``--overwrite``, is found before any work), or a model that cannot be loaded;
128 + signal (130 Ctrl+C, 143 SIGTERM) when ``classify`` was stopped before the end (what
was done is kept).
"""

from __future__ import annotations

from typing import Annotated

import typer

from leukedge import __version__
from leukedge.cli import bench, camera, classify, info, report, watch

app = typer.Typer(
    name="leukedge",
    help="Find leukemic blasts (ALL vs HEM) in microscope images, on the CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"leukedge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """leukedge: ALL (leukemic blast) vs HEM (normal) on single cells and smear fields."""


app.command()(classify.classify)
app.command()(watch.watch)
app.command()(camera.camera)
app.command()(info.info)
app.command()(bench.bench)
app.command()(report.report)


def _register_heavy_groups() -> None:
    from leukedge.converters.cli import app as convert_app
    from leukedge.training.cli import app as train_app

    app.add_typer(train_app, name="train")
    app.add_typer(convert_app, name="convert")


_register_heavy_groups()


def _format_warnings() -> None:
    """Print leukedge's own warnings (:class:`~leukedge.errors.LeukedgeWarning`) as one
    ``warning: …`` line, without source file and line number; every other warning keeps
    Python's format. Decided by the warning's category, not by where its file lives."""
    import warnings

    from leukedge.errors import LeukedgeWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LeukedgeWarning):
            typer.echo(f"warning: {message}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main() -> None:
    """Console-script entry point (warnings formatted by :func:`_format_warnings`)."""
    _format_warnings()
    app()

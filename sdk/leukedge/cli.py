"""The ``leukedge`` command line.

``leukedge classify``, ``info`` and ``bench`` use the light runtime only. ``leukedge train …``
and ``leukedge convert …`` live in :mod:`leukedge.training.cli` and
:mod:`leukedge.converters.cli`, which import Keras/TensorFlow inside their command functions,
so ``leukedge classify`` never loads them.

Exit codes: 0 success; 1 at least one input failed (the others are still reported) or a
check failed; 2 bad usage, or a model that cannot be loaded.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from leukedge import __version__

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


def _load_classifier(model: Path | None, threads: int | None, labels: str | None):
    from leukedge.classifier import Classifier, ClassifierOptions
    from leukedge.errors import LeukedgeError

    options = ClassifierOptions(
        model_path=model, num_threads=threads, labels=labels.split(",") if labels else None
    )
    try:
        return Classifier.create_from_options(options)
    except (LeukedgeError, OSError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: cannot load model: {exc}", err=True)
        raise typer.Exit(2) from exc


def _per_file_error(path: Path, exc: Exception) -> str:
    """``"<path>: <problem>"`` for one input that failed. The problem is taken from the
    error's attributes (``ImageDecodeError.problem``, ``OSError.strerror``), never by
    searching its message for the path."""
    from leukedge.preprocess import ImageDecodeError

    if isinstance(exc, ImageDecodeError):
        problem = exc.problem
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        problem = exc.strerror
    else:
        problem = str(exc) or type(exc).__name__
    return f"{path}: {problem}"


@app.command()
def classify(
    paths: Annotated[list[Path], typer.Argument(help="Image files (BMP, JPEG, PNG, TIFF…).")],
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="A .tflite model; default: the embedded model."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per input per line (JSON Lines).")
    ] = False,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Interpreter CPU threads.")
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(help="Comma-separated class names, for a model without leukedge metadata."),
    ] = None,
) -> None:
    """Classify images as ALL (leukemic blast) or HEM (normal).

    Every input gets a row (or a JSON line with keys path, label, probabilities, score,
    model, error); an unreadable file gets an error and the rest go on. Exit code 1 if any
    input failed.
    """
    classifier = _load_classifier(model, threads, labels)
    failed = 0
    rows = []
    for path in paths:
        record = {
            "path": str(path),
            "label": None,
            "probabilities": None,
            "score": None,
            "model": classifier.metadata.name,
            "error": None,
        }
        try:
            result = classifier.classify(path)
            record |= {
                "label": result.label,
                "probabilities": result.probabilities,
                "score": result.score,
            }
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            record["error"] = _per_file_error(path, exc)
            failed += 1
        if as_json:
            typer.echo(json.dumps(record))
            sys.stdout.flush()
        else:
            rows.append(record)
    if not as_json:
        _print_table(rows, classifier.labels, classifier.metadata)
    if failed:
        typer.echo(f"{failed} of {len(paths)} inputs failed", err=True)
        raise typer.Exit(1)


def _print_table(rows, labels, metadata) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{metadata.name} ({metadata.precision}, leukedge {metadata.version})")
    table.add_column("image", no_wrap=True)
    table.add_column("call")
    for label in labels:
        table.add_column(f"p({label})", justify="right")
    if any(r["error"] for r in rows):
        table.add_column("error", style="red", overflow="fold")
    for r in rows:
        if r["error"]:
            table.add_row(r["path"], "-", *["-"] * len(labels), r["error"])
        else:
            cells = [f"{r['probabilities'][lb]:.3f}" for lb in labels]
            extra = [""] if any(x["error"] for x in rows) else []
            table.add_row(r["path"], r["label"], *cells, *extra)
    # Never fold a path: widen the table to the longest one (rich assumes 80 columns when
    # output is piped).
    longest = max((len(r["path"]) for r in rows), default=0)
    errors = max((len(r["error"] or "") for r in rows), default=0)
    Console(width=max(80, longest + 12 * len(labels) + min(errors, 80) + 24)).print(table)


@app.command()
def info(
    model: Annotated[
        Path | None, typer.Argument(help="A .tflite model; default: the embedded model.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Print a model's metadata, model card, tensor details and operators."""
    from leukedge.classifier import default_model_path
    from leukedge.errors import LeukedgeError
    from leukedge.metadata import read_metadata
    from leukedge.runtime import TFLiteEngine

    path = model or default_model_path()
    try:
        engine = TFLiteEngine(path)
        metadata = read_metadata(engine.model_content)
    except (OSError, LeukedgeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    from dataclasses import asdict

    out = {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "metadata": asdict(metadata) if metadata else None,
        **engine.details(),
    }
    if metadata is None:
        typer.echo(
            f"warning: {path} carries no leukedge metadata; pass --labels to classify", err=True
        )
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for tensor in ("input", "output"):
        t = out[tensor]
        typer.echo(
            f"{tensor:<7} {t['name']}: {t['dtype']} {t['shape']}, scale {t['scale']:g}, "
            f"zero point {t['zero_point']}"
        )
    typer.echo(f"size    {out['size_bytes'] / 1e6:.2f} MB; runtime {out['runtime']}")
    typer.echo(f"ops     {', '.join(out['operators'])}")
    if metadata is not None:
        typer.echo(
            f"model   {metadata.name} ({metadata.precision}), leukedge {metadata.version}, "
            f"labels {metadata.labels}, input {metadata.input.kind} "
            f"{metadata.input.height}x{metadata.input.width} RGB 0-255, "
            f"temperature {metadata.temperature:.3f}"
        )
        typer.echo(
            "card    " + json.dumps(metadata.model_card, indent=2).replace("\n", "\n        ")
        )


@app.command()
def bench(
    model: Annotated[
        Path | None, typer.Argument(help="A .tflite model; default: the embedded model.")
    ] = None,
    threads: Annotated[
        list[int], typer.Option("--threads", help="Thread counts to measure (repeatable).")
    ] = [1, 2],  # noqa: B006
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per setting.")] = 50,
) -> None:
    """Single-image latency (median and p90, ms) per thread count: a benchmark, not a test."""
    import numpy as np

    from leukedge.classifier import default_model_path
    from leukedge.errors import LeukedgeError
    from leukedge.runtime import TFLiteEngine

    path = model or default_model_path()
    if any(n < 1 for n in threads):
        typer.echo(f"error: --threads must be >= 1, got {threads}", err=True)
        raise typer.Exit(2)
    try:
        engines = {n: TFLiteEngine(path, num_threads=n) for n in threads}
    except (LeukedgeError, OSError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: cannot load model: {exc}", err=True)
        raise typer.Exit(2) from exc
    rng = np.random.default_rng(0)
    results = {"path": str(path), "size_bytes": path.stat().st_size, "latency_ms": {}}
    for n, engine in engines.items():
        image = rng.integers(0, 256, (*engine.input_size, 3), dtype=np.uint8)
        for _ in range(5):
            engine.run(image)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            engine.run(image)
            times.append(1000 * (time.perf_counter() - start))
        results["latency_ms"][n] = {
            "median": float(np.median(times)),
            "p90": float(np.percentile(times, 90)),
        }
    typer.echo(json.dumps(results, indent=2))


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


if __name__ == "__main__":
    main()

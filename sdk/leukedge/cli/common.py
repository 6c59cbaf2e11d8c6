"""What the commands share: the options several take (one declaration each: the same name,
help and bounds everywhere), loading the classifier, ``--refer-band`` and usage errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from leukedge.classifier import ClassifierOptions
from leukedge.cli_kit.options import attribute_docs


def usage_error(message: str) -> NoReturn:
    """Print ``error: message`` and exit with code 2 (raises :class:`typer.Exit`)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def output_failed(exc: OSError, consequence: str) -> None:
    """Print ``error: cannot write FILE: problem; consequence`` and exit with code 1."""
    where = exc.filename or "an output"
    typer.echo(f"error: cannot write {where}: {exc.strerror or exc}; {consequence}", err=True)
    raise typer.Exit(1) from exc


def parse_band(text: str | None) -> tuple[float, float] | None:
    """``"LOW,HIGH"`` → ``(low, high)``; ``"off"`` → ``(0, 0)`` (an empty band: none);
    ``None`` → the model's band."""
    if text is None:
        return None
    if text.strip().lower() == "off":
        return (0.0, 0.0)
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        usage_error(f"--refer-band: expected LOW,HIGH (e.g. 0.2,0.6) or 'off', got {text!r}")
    if not 0.0 <= low <= high <= 1.0:
        usage_error(f"--refer-band {text}: LOW,HIGH must satisfy 0 <= LOW <= HIGH <= 1")
    return low, high


def load_classifier(
    model: Path | None,
    threads: int | None,
    labels: str | None,
    threshold: float | None = None,
    refer_band: tuple[float, float] | None = None,
    allow_failed_gate: bool = False,
    max_pixels: int | None = ClassifierOptions.max_pixels,
    explain: bool = False,
):
    from leukedge.checks.decision import OperatingPointError
    from leukedge.classifier import Classifier
    from leukedge.engine.preprocess import (
        leave_the_pixel_cap_to_leukedge,
        return_large_decodes_to_the_system,
    )
    from leukedge.errors import LeukedgeError

    return_large_decodes_to_the_system()  # this process decodes: large images go back
    if max_pixels is not None:  # --max-pixels decides, from the header, with our wording
        leave_the_pixel_cap_to_leukedge()
    options = ClassifierOptions(
        model_path=model,
        num_threads=threads,
        labels=labels.split(",") if labels else None,
        decision_threshold=threshold,
        refer_band=refer_band,
        allow_failed_gate=allow_failed_gate,
        max_pixels=max_pixels,
        explain=explain,
    )
    try:
        classifier = Classifier.create_from_options(options)
    except OperatingPointError as exc:
        given = [
            name for name, v in (("--threshold", threshold), ("--refer-band", refer_band)) if v
        ]
        if not given:  # the model's own operating point is broken
            typer.echo(f"error: cannot load model: {exc}", err=True)
            raise typer.Exit(2) from exc
        whose = "" if threshold is not None else " (the model's operating point: see leukedge info)"
        usage_error(f"{' and '.join(given)}: {exc}{whose}")
    except (LeukedgeError, OSError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: cannot load model: {exc}", err=True)
        raise typer.Exit(2) from exc
    return classifier


# Options that several commands share: one declaration each (the same name, help and
# bounds everywhere).
ModelOption = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="A .tflite model; default: the embedded model."),
]
ThreadsOption = Annotated[
    int | None, typer.Option("--threads", min=1, help="CPU threads per interpreter.")
]
LabelsOption = Annotated[
    str | None,
    typer.Option(
        "--labels", help="Comma-separated class names, for a model without leukedge metadata."
    ),
]
ThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        help="Call ALL when its probability is >= this (default: the model's operating "
        "point; see `leukedge info`). Without --refer-band, no refer band is used.",
    ),
]
AllowFailedGateOption = Annotated[
    bool,
    typer.Option(
        "--allow-failed-gate",
        help="Use a model whose card says it FAILED its conversion's accuracy gate (refused "
        "by default); a warning on stderr says so at every run.",
    ),
]
MaxPixelsOption = Annotated[
    int,
    typer.Option("--max-pixels", min=1, help=attribute_docs(ClassifierOptions)["max_pixels"]),
]
OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace output files that exist (default: refuse, so earlier results are "
        "never replaced by mistake).",
    ),
]
ReferBandOption = Annotated[
    str | None,
    typer.Option(
        "--refer-band",
        help="LOW,HIGH: p(ALL) in [LOW, HIGH) gets status 'refer' (no call); must contain "
        "the threshold. 'off': no band. Default: the model's band.",
    ),
]
GroupMapOption = Annotated[
    Path | None,
    typer.Option(
        "--group-map",
        metavar="CSV",
        exists=True,
        dir_okay=False,
        help="CSV with columns path,group naming each image's slide (implies --group-by slide).",
    ),
]

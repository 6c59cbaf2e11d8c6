"""``leukedge watch``: classify each new image saved into a folder (:mod:`leukedge.lab.watch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leukedge.classifier import ClassifierOptions
from leukedge.cli.common import (
    AllowFailedGateOption,
    LabelsOption,
    MaxPixelsOption,
    ModelOption,
    ReferBandOption,
    ThreadsOption,
    ThresholdOption,
    load_classifier,
    output_failed,
    parse_band,
    usage_error,
)
from leukedge.lab.watch import WatchOptions


def watch(
    folder: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="Folder a camera program saves images into."
        ),
    ],
    jsonl: Annotated[
        Path,
        typer.Option(
            "--jsonl", metavar="FILE", help="JSON Lines file to append one record per image to."
        ),
    ],
    model: ModelOption = None,
    settle_ms: Annotated[
        int,
        typer.Option(
            min=0, help="A file is read once its size and time are unchanged this long (ms)."
        ),
    ] = WatchOptions.settle_ms,
    give_up_s: Annotated[
        float,
        typer.Option(
            min=0, help="A file unchanged this long that still does not decode is an error (s)."
        ),
    ] = WatchOptions.give_up_s,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="Also watch sub-folders.")
    ] = WatchOptions.recursive,
    poll: Annotated[
        bool,
        typer.Option("--poll", help="Scan instead of file events (network shares: SMB, NFS)."),
    ] = WatchOptions.poll,
    threads: ThreadsOption = None,
    max_pixels: MaxPixelsOption = ClassifierOptions.max_pixels,
    labels: LabelsOption = None,
    threshold: ThresholdOption = None,
    refer_band: ReferBandOption = None,
    allow_failed_gate: AllowFailedGateOption = False,
) -> None:
    """Classify each new image saved into FOLDER; append one record per image to --jsonl.

    Waits until a file is completely written (size and time stable, and it decodes).
    Images already in FOLDER and not yet in the JSONL are classified first, so a restart
    leaves neither duplicates nor gaps. A bad file gets an error record; watching goes on.
    Ctrl+C or SIGTERM stops cleanly (exit 0).
    """
    from leukedge.lab.inputs import check_is_a_record_file, check_output_paths
    from leukedge.lab.records import ModelInfo
    from leukedge.lab.report import record_line
    from leukedge.lab.stopping import StopRequest
    from leukedge.lab.watch import Watcher

    try:
        check_output_paths({"--jsonl": jsonl}, existing="append")
        check_is_a_record_file(jsonl)
    except ValueError as exc:
        usage_error(str(exc))
    classifier = load_classifier(
        model,
        threads,
        labels,
        threshold,
        parse_band(refer_band),
        allow_failed_gate=allow_failed_gate,
        max_pixels=max_pixels,
    )
    positive = ModelInfo.of(classifier).positive_label
    options = WatchOptions(
        folder=folder,
        jsonl=jsonl,
        settle_ms=settle_ms,
        give_up_s=give_up_s,
        recursive=recursive,
        poll=poll,
    )

    def show(record: dict) -> None:
        typer.echo(record_line(record, positive))

    try:
        watcher = Watcher(classifier, options, on_record=show)
    except OSError as exc:
        usage_error(f"cannot use {exc.filename or jsonl}: {exc.strerror or exc}")
    typer.echo(
        f"watching {folder} -> {jsonl} ({len(watcher.recorded)} images already recorded); "
        "Ctrl+C to stop",
        err=True,
    )
    stop = StopRequest()
    try:
        with stop.installed():
            count = watcher.run(stop)
    except OSError as exc:
        output_failed(
            exc,
            f"stopped after {watcher.count} records in this run (the image in hand is "
            "classified again after a restart)",
        )
    typer.echo(f"stopped; {count} images recorded in this run", err=True)

"""The ``leukedge`` command line.

``leukedge classify``, ``watch``, ``camera``, ``info`` and ``bench`` use the light runtime
only; their work lives in modules with one job each (:mod:`leukedge.inputs`,
:mod:`leukedge.batch`, :mod:`leukedge.records`, :mod:`leukedge.outputs`,
:mod:`leukedge.groups`, :mod:`leukedge.pipeline`, :mod:`leukedge.report`,
:mod:`leukedge.watch`, :mod:`leukedge.camera`); this module only wires options to them.
``rich``'s progress bar, ``watchdog`` and OpenCV are imported by the commands that use them.
``leukedge train …`` and ``leukedge convert …`` live in :mod:`leukedge.training.cli` and
:mod:`leukedge.converters.cli`, which import Keras/TensorFlow inside their command functions,
so ``leukedge classify`` never loads them.

Exit codes: 0 success; 1 at least one input failed (the others are still reported), a
check failed, or an output could not be written mid-run (the run stops; what was written is
kept); 2 bad usage (an output that cannot be written, or would replace earlier results
without ``--overwrite``, is found before any work), or a model that cannot be loaded;
128 + signal (130 Ctrl+C, 143 SIGTERM) when ``classify`` was stopped before the end (what
was done is kept).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from leukedge import __version__
from leukedge.camera import CameraOptions
from leukedge.classifier import ClassifierOptions
from leukedge.cli_options import attribute_docs
from leukedge.cli_report import report
from leukedge.groups import GroupBy
from leukedge.watch import WatchOptions

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


def _parse_band(text: str | None) -> tuple[float, float] | None:
    """``"LOW,HIGH"`` → ``(low, high)``; ``"off"`` → ``(0, 0)`` (an empty band: none);
    ``None`` → the model's band."""
    if text is None:
        return None
    if text.strip().lower() == "off":
        return (0.0, 0.0)
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        _usage_error(f"--refer-band: expected LOW,HIGH (e.g. 0.2,0.6) or 'off', got {text!r}")
    if not 0.0 <= low <= high <= 1.0:
        _usage_error(f"--refer-band {text}: LOW,HIGH must satisfy 0 <= LOW <= HIGH <= 1")
    return low, high


def _load_classifier(
    model: Path | None,
    threads: int | None,
    labels: str | None,
    threshold: float | None = None,
    refer_band: tuple[float, float] | None = None,
    allow_failed_gate: bool = False,
    max_pixels: int | None = ClassifierOptions.max_pixels,
):
    from leukedge.classifier import Classifier
    from leukedge.decision import OperatingPointError
    from leukedge.errors import LeukedgeError
    from leukedge.preprocess import (
        leave_the_pixel_cap_to_leukedge,
        return_large_decodes_to_the_system,
    )

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
        _usage_error(f"{' and '.join(given)}: {exc}{whose}")
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


@app.command()
def classify(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Image files (BMP, JPEG, PNG, TIFF…) and folders (walked recursively).",
            show_default=False,
        ),
    ] = None,
    files_from: Annotated[
        str | None,
        typer.Option(
            "--files-from",
            metavar="LIST",
            help="Read more paths from LIST, one per line ('-' = standard input).",
        ),
    ] = None,
    model: ModelOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Stream one JSON object per input to stdout.")
    ] = False,
    csv_out: Annotated[
        Path | None,
        typer.Option("--csv", metavar="FILE", help="Write every record to a CSV (atomically)."),
    ] = None,
    jsonl_out: Annotated[
        Path | None,
        typer.Option("--jsonl", metavar="FILE", help="Write every record as JSON Lines."),
    ] = None,
    group_by: Annotated[
        GroupBy | None,
        typer.Option(
            "--group-by",
            help="Summarise per slide (image folder name, or --group-map), subject (C-NMC "
            "file name) or folder (folder path).",
        ),
    ] = None,
    group_map: Annotated[
        Path | None,
        typer.Option(
            "--group-map",
            metavar="CSV",
            exists=True,
            dir_okay=False,
            help="CSV with columns path,group naming each image's slide (implies "
            "--group-by slide).",
        ),
    ] = None,
    group_csv: Annotated[
        Path | None,
        typer.Option("--group-csv", metavar="FILE", help="Write the per-group summary CSV."),
    ] = None,
    overwrite: OverwriteOption = False,
    threads: ThreadsOption = None,
    max_pixels: MaxPixelsOption = ClassifierOptions.max_pixels,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help="Images classified at once; default: interpreters + 1."
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar on stderr; default: on a terminal, for more than a few images.",
            show_default=False,
        ),
    ] = None,
    labels: LabelsOption = None,
    threshold: ThresholdOption = None,
    refer_band: ReferBandOption = None,
    allow_failed_gate: AllowFailedGateOption = False,
) -> None:
    """Classify images as ALL (leukemic blast) or HEM (normal), with a status per image.

    Status: ok (a call), refer (uncertain: a person should look), rejected (failed a quality
    check or out of domain; the model's opinion is shown apart, never as the call), error
    (could not be read). Every input gets a record (the result's to_dict() plus path,
    model_sha256 and error), in input order: a table, JSON Lines on stdout (--json), and/or
    files (--csv, --jsonl). Ctrl+C keeps what was done. Every output is checked before any
    image is read; an existing file is replaced only with --overwrite. Exit code 0: every
    input processed (refer and rejected are answers); 1: some input errored, or an output
    could not be written mid-run; 2: bad usage (an output that cannot be written or would
    replace a file without --overwrite) or a model that cannot be loaded; 130/143: stopped
    by Ctrl+C/SIGTERM.
    """
    from leukedge.inputs import check_output_paths, collect_inputs

    by = group_by.value if group_by is not None else None
    if group_map is not None:
        if by not in (None, "slide"):
            _usage_error(f"--group-map names slides; it does not go with --group-by {by}")
        by = "slide"
    if group_csv is not None and by is None:
        _usage_error("--group-csv needs --group-by")
    if not paths and files_from is None:
        _usage_error("give image files or folders, or --files-from LIST")
    band = _parse_band(refer_band)
    try:
        inputs = collect_inputs(paths or [], files_from)
    except OSError as exc:
        _usage_error(f"cannot read --files-from {files_from}: {exc.strerror or exc}")
    if inputs.skipped.unreadable:
        for problem in inputs.skipped.unreadable:
            typer.echo(f"warning: cannot list {problem}", err=True)
    if not inputs.paths:
        skipped = inputs.skipped.describe()
        _usage_error("no images to classify" + (f" (skipped {skipped})" if skipped else ""))
    read_too = [p for p in (files_from, group_map) if p is not None and str(p) != "-"]
    try:
        check_output_paths(
            {"--csv": csv_out, "--jsonl": jsonl_out, "--group-csv": group_csv},
            [*inputs.paths, *read_too],
            existing="replace" if overwrite else "refuse",
        )
    except ValueError as exc:
        _usage_error(str(exc))
    classifier = _load_classifier(
        model,
        threads,
        labels,
        threshold,
        band,
        allow_failed_gate=allow_failed_gate,
        max_pixels=max_pixels,
    )
    _run_classify(
        classifier,
        inputs,
        as_json,
        csv_out,
        jsonl_out,
        by,
        group_map,
        group_csv,
        workers,
        progress,
    )


def _check_groups(paths, by: str, mapping) -> None:
    """Before any work: refuse a grouping that no image has (exit 2); warn how many images
    have no group (they get a row without a group call)."""
    from leukedge.groups import NO_GROUP, UNMAPPED, ungrouped

    missing = len(ungrouped(paths, by, mapping))
    if not missing:
        return
    if mapping is not None:
        what, key = "are not listed in --group-map", UNMAPPED
        advice = "check the paths in the --group-map CSV"
    elif by == "subject":
        what, key = "have no C-NMC subject in their file name (UID_<subject>_...)", NO_GROUP
        advice = "use --group-by slide or folder, or a --group-map CSV"
    else:
        what, key = "have no folder name", NO_GROUP
        advice = "name them with their folder (slide_12/f.jpg), or use a --group-map CSV"
    if missing == len(paths):
        _usage_error(
            f"--group-by {by}: none of the {missing} images has a group: all {what}; {advice}"
        )
    typer.echo(
        f"warning: {missing} of {len(paths)} images {what}: they are summarised as "
        f"{key!r} with no group call",
        err=True,
    )


def _usage_error(message: str) -> NoReturn:
    """Print ``error: message`` and exit with code 2 (raises :class:`typer.Exit`)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _output_failed(exc: OSError, consequence: str) -> None:
    """Print ``error: cannot write FILE: problem; consequence`` and exit with code 1."""
    where = exc.filename or "an output"
    typer.echo(f"error: cannot write {where}: {exc.strerror or exc}; {consequence}", err=True)
    raise typer.Exit(1) from exc


def _run_classify(
    classifier, inputs, as_json, csv_out, jsonl_out, by, group_map, group_csv, workers, progress
) -> None:
    from leukedge.groups import GroupCollector, GroupMap
    from leukedge.outputs import CsvWriter, JsonLinesStream, JsonLinesWriter
    from leukedge.pipeline import ClassifyJob, run_classify
    from leukedge.records import ModelInfo
    from leukedge.report import (
        PROGRESS_MIN_IMAGES,
        print_group_table,
        print_results_table,
        summary_line,
    )
    from leukedge.stopping import StopRequest

    info = ModelInfo.of(classifier)
    groups = None
    if by is not None:
        try:
            mapping = GroupMap(group_map) if group_map is not None else None
        except (OSError, ValueError) as exc:
            _usage_error(str(exc))
        groups = GroupCollector(by, info.labels, info.positive_label, mapping)
        _check_groups(inputs.paths, by, mapping)
    writers = []
    try:
        if as_json:
            writers.append(JsonLinesStream(sys.stdout))
        if jsonl_out is not None:
            writers.append(JsonLinesWriter(jsonl_out))
        if csv_out is not None:
            writers.append(CsvWriter(csv_out, info))
    except OSError as exc:
        for writer in writers:
            writer.discard()  # the targets stay as they were
        _usage_error(f"cannot write {exc.filename}: {exc.strerror or exc}")
    if progress is None:
        progress = sys.stderr.isatty() and len(inputs.paths) > PROGRESS_MIN_IMAGES
    job = ClassifyJob(
        inputs.paths,
        writers,
        workers=workers,
        progress=bool(progress) and not as_json,
        groups=groups,
        keep_records=not (as_json or csv_out or jsonl_out),
    )
    stop = StopRequest()
    try:
        with stop.installed():
            totals = run_classify(classifier, job, stop)
    except KeyboardInterrupt:  # a second Ctrl+C: files were closed on the way out
        typer.echo("stopped", err=True)
        raise typer.Exit(130) from None
    except OSError as exc:  # an output failed mid-run (checked writable at the start)
        _output_failed(exc, "the run was stopped; the records before it were kept")
    if job.keep_records:
        print_results_table(job.records, classifier)
    if groups is not None and totals.stopped_by is not None:
        typer.echo(
            "group summary not written: the run was stopped before every image was classified",
            err=True,
        )
    elif groups is not None:
        summaries = groups.summaries()
        print_group_table(summaries, by, sys.stderr if as_json else sys.stdout)
        if group_csv is not None:
            from leukedge.groups import summary_columns
            from leukedge.outputs import write_rows_atomically

            try:
                write_rows_atomically(
                    group_csv,
                    summary_columns(info.positive_label),
                    [s.as_row() for s in summaries],
                )
            except OSError as exc:
                _output_failed(exc, "the group summary above was not saved")
    if totals.planned > 1 or inputs.skipped.describe():  # one named file: its row says it all
        typer.echo(summary_line(totals, info.labels, inputs.skipped.describe()), err=True)
    if totals.stopped_by is not None:
        raise typer.Exit(128 + totals.stopped_by)
    if totals.failed:
        typer.echo(f"{totals.failed} of {totals.done} inputs failed", err=True)
        raise typer.Exit(1)


@app.command()
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
    from leukedge.inputs import check_is_a_record_file, check_output_paths
    from leukedge.records import ModelInfo
    from leukedge.report import record_line
    from leukedge.stopping import StopRequest
    from leukedge.watch import Watcher

    try:
        check_output_paths({"--jsonl": jsonl}, existing="append")
        check_is_a_record_file(jsonl)
    except ValueError as exc:
        _usage_error(str(exc))
    classifier = _load_classifier(
        model,
        threads,
        labels,
        threshold,
        _parse_band(refer_band),
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
        _usage_error(f"cannot use {exc.filename or jsonl}: {exc.strerror or exc}")
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
        _output_failed(
            exc,
            f"stopped after {watcher.count} records in this run (the image in hand is "
            "classified again after a restart)",
        )
    typer.echo(f"stopped; {count} images recorded in this run", err=True)


@app.command()
def camera(
    device: Annotated[
        int, typer.Option("--device", min=0, help="OpenCV camera index (/dev/videoN).")
    ] = CameraOptions.device,
    video: Annotated[
        Path | None,
        typer.Option(
            "--video", exists=True, dir_okay=False, help="Play a video file instead of a camera."
        ),
    ] = None,
    headless: Annotated[
        bool, typer.Option("--headless", help="Print results instead of a preview window.")
    ] = CameraOptions.headless,
    snapshot: Annotated[
        Path | None,
        typer.Option(
            "--snapshot", metavar="DIR", help="Save each classified frame (PNG + JSON) here."
        ),
    ] = None,
    frames: Annotated[
        int | None, typer.Option("--frames", min=1, help="Stop after N captured frames.")
    ] = None,
    model: ModelOption = None,
    threads: ThreadsOption = None,
    allow_failed_gate: AllowFailedGateOption = False,
) -> None:
    """Live calls from a camera (or a video file, at its frame rate) with OpenCV.

    Frames arriving while the previous one is classified are dropped, so the preview never
    lags. q or Esc in the preview, Ctrl+C or SIGTERM stop. Exit code 1 if the camera or
    video cannot be opened or a snapshot cannot be saved (the run stops); 2 if the model
    cannot be loaded or the --snapshot folder cannot be written (checked first).
    """
    from leukedge.camera import CameraError, quiet_opencv_log, run_camera
    from leukedge.errors import LeukedgeError
    from leukedge.inputs import check_output_folder
    from leukedge.stopping import StopRequest

    try:
        check_output_folder("--snapshot", snapshot)
    except ValueError as exc:
        _usage_error(str(exc))
    quiet_opencv_log()  # a camera that cannot be opened is our one error line, not three
    options = CameraOptions(
        device=device, video=video, headless=headless, snapshot=snapshot, frames=frames
    )
    stop = StopRequest()
    try:
        with stop.installed():
            stats = run_camera(
                options,
                ClassifierOptions(
                    model_path=model, num_threads=threads, allow_failed_gate=allow_failed_gate
                ),
                stop,
                emit=lambda line: typer.echo(line),
            )
    except CameraError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except (LeukedgeError, OSError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: cannot load model: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"{stats.captured} frames captured, {stats.classified} classified, "
        f"{stats.dropped} dropped while busy, {stats.errors} failed",
        err=True,
    )
    if stats.snapshot_error is not None:
        typer.echo(
            f"error: snapshot not saved: {stats.snapshot_error}; the run was stopped "
            f"({stats.snapshots} snapshots saved before)",
            err=True,
        )
        raise typer.Exit(1)
    if stats.captured == 0 and not stop:
        where = f"video {video}" if video is not None else f"camera {device}"
        typer.echo(f"error: no frame could be read from {where}", err=True)
        raise typer.Exit(1)


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
    from leukedge.metadata import gate_failure, read_metadata
    from leukedge.runtime import TFLiteEngine

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
    for line in _info_lines(out, metadata, engine):
        typer.echo(line)


def _tensor_text(t: dict) -> str:
    """``uint8 [1, 2], scale 0.00390625, zero point 0`` (float: no scale)."""
    text = f"{t['dtype']} {t['shape']}"
    if t["scale"]:
        text += f", scale {t['scale']:g}, zero point {t['zero_point']}"
    return text


def _info_lines(out: dict, metadata, engine) -> list[str]:
    """``leukedge info``'s readable summary: what the model is, what it was checked
    against, the settings it applies and what a person needs to trust it (the model card's
    key figures); ``--json`` prints everything, the card in full."""
    lines = []
    if metadata is not None:
        lines.append(
            f"model      {metadata.name} ({metadata.precision}), version {metadata.version}"
        )
    lines.append(
        f"file       {out['path']} ({out['size_bytes'] / 1e6:.2f} MB), runtime {out['runtime']}"
    )
    if metadata is not None:
        i = metadata.input
        lines.append(
            f"labels     {', '.join(metadata.labels)} (positive class: "
            f"{metadata.decision.positive_label if metadata.decision else metadata.positive_label})"
        )
        lines.append(
            f"input      {i.kind} image, resized whole ({i.resize}) to {i.height}x{i.width} "
            f"{i.color} 0-255"
        )
    lines.append(f"  tensor   {out['input']['name']}: {_tensor_text(out['input'])}")
    lines.append(f"output     {out['output']['name']}: {_tensor_text(out['output'])}")
    if out["embedding"] is not None:
        e = out["embedding"]
        lines.append(f"embedding  {e['name']}: {_tensor_text(e)}")
    if metadata is None:
        lines.append(f"operators  {', '.join(out['operators'])}")
        return lines
    card = metadata.model_card or {}
    lines.extend(_gate_lines(metadata))
    lines.extend(_card_lines(card))
    lines.append(f"temperature {metadata.temperature:.3f} (applied to the probabilities)")
    lines.append(_checks_line(metadata, engine))
    lines.extend(_trust_lines(metadata, engine))
    lines.append(f"operators  {', '.join(out['operators'])}")
    lines.append("(leukedge info --json: every tensor detail and the whole model card)")
    return lines


def _checks_line(metadata, engine) -> str:
    """Which of the checks a result goes through the model carries (fitted at conversion)
    and which fall back (generic quality thresholds) or are off."""
    quality = "fitted" if metadata.quality is not None else "generic (not fitted)"
    ood = "on" if metadata.ood is not None and engine.embedding_dim is not None else "OFF"
    decision = "fitted" if metadata.decision is not None else "none (arg-max)"
    return (
        f"checks     quality thresholds {quality}; out of domain {ood}; operating point {decision}"
    )


def _gate_lines(metadata) -> list[str]:
    """The accuracy-delta gate's result from the model card: one line of figures (whatever
    the card holds of them), and for a model that failed it, what leukedge does with it.
    The verdict is :func:`leukedge.metadata.gate_failure`'s, the rule the SDK loads by."""
    from leukedge.metadata import gate_failure

    g = (metadata.model_card or {}).get("gate")
    if not isinstance(g, dict):
        what = "no gate record" if g is None else f"an unreadable gate record ({g!r:.40})"
        return [f"gate       not checked (the model card holds {what})"]
    failed = gate_failure(metadata) is not None
    verdict = "FAILED" if failed else "passed" if g.get("passed") is True else "no verdict"

    def figure(key: str, spec: str, scale: float = 1.0) -> str:
        value = g.get(key)
        return format(scale * value, spec) if isinstance(value, int | float) else "?"

    line = f"gate       {verdict} on the {g.get('eval_split', '?')} split (n={g.get('n', '?')})"
    if "accuracy" in g:
        line += (
            f": accuracy {figure('accuracy', '.3f')} vs float {figure('float_accuracy', '.3f')} "
            f"({figure('delta_pp', '.2f')} pp lost), label agreement "
            f"{figure('agreement', '.1f', 100)} %, "
            f"mean |dp| {figure('mean_abs_prob_diff', '.3f')}, "
            f"ECE {figure('ece', '.3f')} (float {figure('float_ece', '.3f')})"
        )
    lines = [line]
    if failed:
        broken = "; ".join(str(f) for f in g.get("failures") or [])
        lines.append(
            "           refused by leukedge unless --allow-failed-gate"
            + (f" (failed: {broken})" if broken else "")
        )
    return lines


def _metric_text(m: dict) -> str:
    parts = [f"n={m['n']}: accuracy {m['accuracy']:.3f}, weighted F1 {m['weighted_f1']:.3f}"]
    for key, name in (
        ("sensitivity", "sensitivity"),
        ("specificity", "specificity"),
        ("roc_auc", "ROC AUC"),
    ):
        if m.get(key) is not None:
            parts.append(f"{name} {m[key]:.3f}")
    if m.get("confusion_matrix") is not None:
        parts.append(f"confusion {m['confusion_matrix']}")
    return ", ".join(parts)


def _card_lines(card: dict) -> list[str]:
    """The model card's key figures: training, validation (float), test, robustness."""
    lines = []
    if card.get("architecture"):
        training = card.get("training") or {}
        where = card.get("training_data")
        if isinstance(where, dict):  # {"dataset": NAME, "path": relative to it}
            name, rel = where.get("dataset", "?"), where.get("path", "")
            where = name if rel in ("", ".", name) else f"{name}/{rel}"
        created = str(card.get("created", ""))[:10]
        lines.append(
            f"trained    {card['architecture']}, {training.get('image_size', '?')} px, "
            f"weights {training.get('weights', '?')}"
            + (f", on {where}" if where else "")
            + (f", {created}" if created else "")
        )
    counts = (card.get("split") or {}).get("counts")
    if counts:
        lines.append(
            "split      "
            + "; ".join(
                f"{name} " + ", ".join(f"{n} {label}" for label, n in c.items())
                for name, c in counts.items()
            )
        )
    if card.get("validation_metrics_float"):
        lines.append(f"validation {_metric_text(card['validation_metrics_float'])} (float model)")
    if card.get("test_metrics"):
        lines.append(f"test       {_metric_text(card['test_metrics'])}")
    else:
        lines.append("test       not evaluated (leukedge train evaluate --update-card)")
    robustness = card.get("test_robustness")
    if robustness:
        lines.append(
            "robustness calls changed by "
            + ", ".join(f"{name} {100 * r['flip_rate']:.1f} %" for name, r in robustness.items())
        )
    return lines


def _figures(f: dict) -> str:
    return (
        f"n={f['n']}: sensitivity {f['sensitivity']:.3f}, specificity {f['specificity']:.3f}, "
        f"coverage {f['coverage']:.3f}, accuracy of calls {f['ok_accuracy']:.3f}"
    )


def _trust_lines(metadata, engine) -> list[str]:
    """``leukedge info``'s lines on the operating point, refer band, out-of-domain check and
    quality thresholds, with the validation figures behind them."""
    from leukedge.quality import QualityThresholds

    lines = []
    d = metadata.decision
    positive = d.positive_label if d else metadata.positive_label
    if d is None:
        lines.append(
            f"call       {positive} when p({positive}) >= 0.5 (the arg-max; the model carries no "
            "operating point); no refer band"
        )
    else:
        op, argmax = d.validation.get("operating_point"), d.validation.get("argmax")
        lines.append(
            f"call       {positive} when p({positive}) >= {d.threshold:.4f}: operating point for "
            f"sensitivity >= {d.target_sensitivity} on {d.source}"
        )
        if d.refer_band:
            lines.append(
                f"refer      {d.refer_band[0]:.4f} <= p({positive}) < {d.refer_band[1]:.4f}: best "
                f"accuracy of calls at coverage >= {d.coverage_target}"
            )
        else:
            lines.append("refer      no band")
        if op:
            lines.append(f"           validation, this operating point: {_figures(op)}")
        if argmax:
            lines.append(f"           validation, arg-max (0.5, no band): {_figures(argmax)}")
    o = metadata.ood
    if o is None or engine.embedding_dim is None:
        why = "no embedding output" if engine.embedding_dim is None else "no out-of-domain data"
        lines.append(
            f"ood        unavailable ({why}): inputs unlike the training data go undetected"
        )
    else:
        accepted = o.validation.get("accepted")
        output = o.embedding_output or "output"
        lines.append(
            f"ood        {o.method}, {o.embedding_dim}-d embedding ({output}), "
            f"rank {o.rank}, shrinkage {o.shrinkage}: out of domain when distance > "
            f"{o.threshold:.4g}; fitted on {o.fitted_on} (n={o.n_fit}), threshold on "
            f"{o.threshold_split} (n={o.n_threshold}, "
            + (f"{100 * accepted:.1f} % within)" if accepted is not None else "")
        )
    q = metadata.quality or QualityThresholds.generic(min(engine.input_size))
    checks = [
        ("too_small", q.min_side, "shorter side < {} px"),
        ("blank", q.blank_std_max, "grey std < {:.3g}"),
        ("segmented_cell", q.black_background_max, "black surround > {:.2f}, 1-2 objects"),
        ("scale", q.red_cell_diameter_range, "red cells outside {0[0]:.1f}-{0[1]:.1f} px"),
        ("underexposed", q.dark_mean_min, "mean grey < {:.3g}"),
        ("saturated", q.saturated_fraction_max, "clipped fraction > {:.3g}"),
        ("out_of_focus", q.focus_min, "Laplacian variance < {:.3g}"),
        ("not_stained", q.stain_min, "colourfulness < {:.3g}"),
    ]
    text = "; ".join(f"{r}: {fmt.format(v)}" for r, v, fmt in checks if v is not None)
    lines.append(f"quality    {text} ({q.source})")
    if q.unchecked():
        lines.append(f"           unchecked: {', '.join(q.unchecked())}")
    return lines


@app.command()
def bench(
    model: Annotated[
        Path | None, typer.Argument(help="A .tflite model; default: the embedded model.")
    ] = None,
    threads: Annotated[
        list[int], typer.Option("--threads", help="Thread counts to measure (repeatable).")
    ] = [1, 2],  # noqa: B006
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per setting.")] = 50,
    sdk: Annotated[
        bool,
        typer.Option(
            "--sdk",
            help="Also measure the SDK at 1 thread: classify() on a 224x224 array and on a "
            "2592x1944 camera JPEG against a bare invoke, peak RSS, and the cold start of "
            "`leukedge classify one.jpg`.",
        ),
    ] = False,
    profile_ops: Annotated[
        bool,
        typer.Option(
            "--profile-ops",
            help="Per-operator latency of MODEL, with and without XNNPACK, and which "
            "operators XNNPACK leaves to LiteRT's builtin kernels.",
        ),
    ] = False,
    compare: Annotated[
        Path | None,
        typer.Option(
            "--compare",
            help="A trained .keras: compare Keras, LiteRT, ONNX Runtime and OpenVINO on it "
            "(speed, memory and validation accuracy); needs the 'train' extra, and the "
            "'compare' extra for ONNX Runtime and OpenVINO.",
        ),
    ] = None,
    split_file: Annotated[
        Path | None,
        typer.Option(help="--compare: the run's split.csv (default: beside the .keras)."),
    ] = None,
    engine: Annotated[
        list[str] | None,
        typer.Option("--engine", help="--compare: engines to run (repeatable; default all)."),
    ] = None,
    max_val: Annotated[
        int | None, typer.Option(min=1, help="--compare: at most this many validation images.")
    ] = None,
    calibration_size: Annotated[
        int, typer.Option(min=1, help="--compare: int8 calibration images (train split).")
    ] = 200,
    reuse_models: Annotated[
        bool,
        typer.Option(help="--compare: reuse model files of an earlier run of the same .keras."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the results here: a JSON file, or with --compare a folder "
            "(default bench-compare/)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the figures as JSON instead of a table.")
    ] = False,
    allow_failed_gate: AllowFailedGateOption = False,
) -> None:
    """Latency of a .tflite per thread count (median and p90, ms): a benchmark, not a test.

    --sdk adds the SDK's own costs, --profile-ops a per-operator profile, and
    --compare RUN/model.keras the side-by-side comparison of engines.
    """
    if any(n < 1 for n in threads):
        typer.echo(f"error: --threads must be >= 1, got {threads}", err=True)
        raise typer.Exit(2)
    _check_bench_out(out, folder=compare is not None)
    if compare is not None:
        _bench_compare(
            compare, split_file, engine, threads, runs, max_val, calibration_size, reuse_models, out
        )
        return
    import numpy as np

    from leukedge.classifier import default_model_path
    from leukedge.errors import LeukedgeError
    from leukedge.metadata import check_gate, read_metadata
    from leukedge.runtime import TFLiteEngine

    path = model or default_model_path()
    try:
        engines = {n: TFLiteEngine(path, num_threads=n) for n in threads}
        first = next(iter(engines.values()))
        allowed = check_gate(read_metadata(first.model_content), first.origin, allow_failed_gate)
    except (LeukedgeError, OSError, ValueError, RuntimeError) as exc:
        typer.echo(f"error: cannot load model: {exc}", err=True)
        raise typer.Exit(2) from exc
    if allowed is not None:
        typer.echo(f"warning: {allowed}", err=True)
    rng = np.random.default_rng(0)
    if profile_ops:
        _bench_profile_ops(engines[min(threads)], rng, out)
        return
    from leukedge.bench import environment, time_calls

    results = {"path": str(path), "size_bytes": path.stat().st_size, "latency_ms": {}}
    for n, engine in engines.items():
        image = rng.integers(0, 256, (*engine.input_size, 3), dtype=np.uint8)
        stats = time_calls(lambda engine=engine, image=image: engine.run(image), runs)
        results["latency_ms"][n] = {
            "median": stats["p50_ms"],
            "p90": stats["p90_ms"],
            "cpu_median": stats["cpu_p50_ms"],
        }
    if sdk:
        from leukedge.bench import example_image, sdk_measurements

        with example_image() as image:
            results["sdk"] = sdk_measurements(model, image, allow_failed_gate=allow_failed_gate)
    results["environment"] = environment()
    text = json.dumps(results, indent=2)
    if out is not None:
        out.write_text(text)
    if as_json:
        typer.echo(text)
    else:
        from leukedge.bench import print_report

        print_report(results)


def _check_bench_out(out: Path | None, folder: bool) -> None:
    """``--out`` (a file, or with ``--compare`` a folder) checked before measuring."""
    from leukedge.inputs import check_output_folder, check_output_paths

    try:
        if folder:
            check_output_folder("--out", out)
        else:
            check_output_paths({"--out": out})
    except ValueError as exc:
        _usage_error(str(exc))


def _bench_profile_ops(engine, rng, out: Path | None) -> None:
    import numpy as np

    from leukedge.op_profile import as_dicts, profile_ops, summarize

    image = rng.integers(0, 256, (*engine.input_size, 3), dtype=np.uint8)
    timings = profile_ops(engine.model_content, image, threads=engine.num_threads or 1)
    typer.echo(
        f"{'operator':<20}{'dtypes':<34}{'XNNPACK':<9}{'count':>6}{'ms':>9}{'builtin ms':>12}"
    )
    for r in summarize(timings):
        typer.echo(
            f"{r['op']:<20}{r['dtypes']:<34}{'yes' if r['xnnpack'] else 'NO':<9}"
            f"{r['count']:>6}{r['ms_default']:>9.3f}{r['ms_builtin']:>12.3f}"
        )
    outside = [t for t in timings if not t.xnnpack]
    typer.echo(
        f"sum of {len(timings)} operators alone: {sum(t.ms_default for t in timings):.2f} ms; "
        f"outside XNNPACK: {len(outside)} operators, "
        f"{sum(t.ms_default for t in outside):.2f} ms"
    )
    if out is not None:
        out.write_text(json.dumps({"operators": as_dicts(timings)}, indent=1))


def _bench_compare(
    keras_model, split_file, engines, threads, runs, max_val, calibration_size, reuse, out
) -> None:
    from leukedge.cli_groups import attach_log_handler

    try:
        from leukedge.converters.compare import CompareConfig, run_compare
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    attach_log_handler()  # run_compare reports its progress through logging
    config = CompareConfig(
        model=str(keras_model),
        out=str(out or "bench-compare"),
        split_file=str(split_file) if split_file else None,
        engines=engines or None,
        threads=threads,
        runs=runs,
        max_val=max_val,
        calibration_size=calibration_size,
        reuse_models=reuse,
    )
    try:
        run_compare(config)
    except ModuleNotFoundError as exc:
        if exc.name in ("tensorflow", "keras", "sklearn", "matplotlib"):
            from leukedge.errors import install_hint

            typer.echo(
                f"error: leukedge bench --compare needs the 'train' extra ({exc.name} is not "
                f"installed): {install_hint('train')}",
                err=True,
            )
            raise typer.Exit(2) from exc
        raise
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"wrote {config.out}/compare.md, compare.json, latency_vs_accuracy.png")


app.command()(report)


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

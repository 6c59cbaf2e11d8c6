"""``leukedge classify``: images, folders and lists in; a record per image out; the groups'
calls. The work is :mod:`leukedge.lab` (inputs, pipeline, outputs, groups, report); this
module holds the command's options and wires them to it. A new option to classify goes
here (and, when the library needs it, into :class:`~leukedge.ClassifierOptions` or the
lab module that does the work)."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer

from leukedge.cells.field import LOCATE_MODES
from leukedge.classifier import ClassifierOptions
from leukedge.cli.common import (
    AllowFailedGateOption,
    GroupMapOption,
    LabelsOption,
    MaxPixelsOption,
    ModelOption,
    OverwriteOption,
    ReferBandOption,
    ThreadsOption,
    ThresholdOption,
    load_classifier,
    output_failed,
    parse_band,
    usage_error,
)
from leukedge.lab.groups import GroupBy

Locate = enum.Enum("Locate", {mode.upper(): mode for mode in LOCATE_MODES}, type=str)
"""``--locate``'s choices: :data:`leukedge.cells.field.LOCATE_MODES`."""


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
    group_map: GroupMapOption = None,
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
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Make a heat map of each call (where the model found its evidence) and draw "
            "it on --overlay / --report pictures. Measured: not yet a faithful map (README, "
            "'Heat maps').",
        ),
    ] = False,
    overlay: Annotated[
        Path | None,
        typer.Option(
            "--overlay",
            metavar="DIR",
            help="Write each field as a PNG of its size with the call and status drawn on it "
            "(and its heat map, with --explain).",
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="DIR",
            help="Write the slide review page (DIR/index.html, one offline HTML file) and "
            "its overlays.",
        ),
    ] = None,
    locate: Annotated[
        Locate,
        typer.Option(
            "--locate",
            help="Locate the white cells and classify each with a cell model: auto (a cell "
            "model on an image that looks like a field), always, never (the whole image).",
        ),
    ] = Locate("auto"),
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
    from leukedge.lab.inputs import check_output_paths, collect_inputs

    by = group_by.value if group_by is not None else None
    if group_map is not None:
        if by not in (None, "slide"):
            usage_error(f"--group-map names slides; it does not go with --group-by {by}")
        by = "slide"
    if group_csv is not None and by is None:
        usage_error("--group-csv needs --group-by")
    if not paths and files_from is None:
        usage_error("give image files or folders, or --files-from LIST")
    band = parse_band(refer_band)
    try:
        inputs = collect_inputs(paths or [], files_from)
    except OSError as exc:
        usage_error(f"cannot read --files-from {files_from}: {exc.strerror or exc}")
    if inputs.skipped.unreadable:
        for problem in inputs.skipped.unreadable:
            typer.echo(f"warning: cannot list {problem}", err=True)
    if not inputs.paths:
        skipped = inputs.skipped.describe()
        usage_error("no images to classify" + (f" (skipped {skipped})" if skipped else ""))
    read_too = [p for p in (files_from, group_map) if p is not None and str(p) != "-"]
    try:
        check_output_paths(
            {"--csv": csv_out, "--jsonl": jsonl_out, "--group-csv": group_csv},
            [*inputs.paths, *read_too],
            existing="replace" if overwrite else "refuse",
        )
    except ValueError as exc:
        usage_error(str(exc))
    _check_visual_outputs(overlay, report, [*inputs.paths, *read_too], overwrite, paths or [])
    classifier = load_classifier(
        model,
        threads,
        labels,
        threshold,
        band,
        allow_failed_gate=allow_failed_gate,
        max_pixels=max_pixels,
        explain=explain,
    )
    if locate.value == "always" and classifier.metadata.input.kind != "cell":
        usage_error(
            f"--locate always: this model classifies whole images (input kind "
            f"{classifier.metadata.input.kind!r}); locating white cells needs a cell model "
            "(input kind 'cell'): its calls on cut-out cells would mean nothing"
        )
    sink = _review_sink(classifier, overlay, report, by, group_map, inputs, threshold, band)
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
        sink,
        locate.value,
    )


def _check_visual_outputs(overlay, report, inputs, overwrite: bool, folders=()) -> None:
    """Before any image is read: the --overlay folder and the --report folder may be
    written, lie outside every folder being classified (or the next run would classify
    the overlays), and hold no earlier overlays or page unless --overwrite (exit 2)."""
    from leukedge.cli.report import check_report_folder
    from leukedge.lab.inputs import check_output_folder

    for option, target in (("--overlay", overlay), ("--report", report)):
        if target is None:
            continue
        where = Path(target).resolve()
        for folder in (Path(f) for f in folders):
            if folder.is_dir() and (where == folder.resolve() or folder.resolve() in where.parents):
                usage_error(
                    f"{option} {target}: inside {folder}, which is being classified: the next "
                    "run would classify the pictures as fields; choose a folder outside it"
                )

    if overlay is not None:
        try:
            check_output_folder("--overlay", overlay)
        except ValueError as exc:
            usage_error(str(exc))
        if not overwrite and any(overlay.glob("[0-9][0-9][0-9][0-9][0-9]_*.png")):
            usage_error(
                f"--overlay {overlay}: holds an earlier run's overlays; give --overwrite to "
                "replace them, or another folder"
            )
    if report is not None:
        check_report_folder(report, inputs, overwrite, option="--report")


def _review_sink(classifier, overlay, report, by, group_map, inputs, threshold, band):
    """The :class:`~leukedge.review.sink.ReviewSink` of --overlay / --report, or ``None``."""
    if overlay is None and report is None:
        return None
    from datetime import datetime, timezone

    from leukedge.lab.groups import GroupMap
    from leukedge.review.options import ReviewOptions
    from leukedge.review.sink import ReviewSink

    settings = {
        "inputs": len(inputs.paths),
        "model": str(classifier.options.model_path or "embedded default model"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if threshold is not None or band is not None:
        settings["operating point"] = f"--threshold {threshold} --refer-band {band}"
    return ReviewSink(
        overlay_dir=overlay,
        report_dir=report,
        metadata=classifier.metadata,
        settings=settings,
        options=ReviewOptions(group_by=by or "slide"),
        model_sha256=classifier.model_sha256,
        group_map=GroupMap(group_map) if group_map is not None else None,
    )


def _check_groups(paths, by: str, mapping) -> None:
    """Before any work: refuse a grouping that no image has (exit 2); warn how many images
    have no group (they get a row without a group call)."""
    from leukedge.lab.groups import NO_GROUP, UNMAPPED, ungrouped

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
        usage_error(
            f"--group-by {by}: none of the {missing} images has a group: all {what}; {advice}"
        )
    typer.echo(
        f"warning: {missing} of {len(paths)} images {what}: they are summarised as "
        f"{key!r} with no group call",
        err=True,
    )


def _run_classify(
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
    sink=None,
    locate="never",
) -> None:
    from leukedge.cells.field import locates
    from leukedge.lab.groups import GroupCollector, GroupMap
    from leukedge.lab.outputs import CsvWriter, JsonLinesStream, JsonLinesWriter
    from leukedge.lab.pipeline import ClassifyJob, run_classify
    from leukedge.lab.records import ModelInfo
    from leukedge.lab.report import (
        PROGRESS_MIN_IMAGES,
        print_group_table,
        print_results_table,
        summary_line,
    )
    from leukedge.lab.stopping import StopRequest

    info = ModelInfo.of(classifier)
    groups = None
    if by is not None:
        try:
            mapping = GroupMap(group_map) if group_map is not None else None
        except (OSError, ValueError) as exc:
            usage_error(str(exc))
        groups = GroupCollector(by, info.labels, info.positive_label, mapping)
        _check_groups(inputs.paths, by, mapping)
    writers = []
    try:
        if as_json:
            writers.append(JsonLinesStream(sys.stdout))
        if jsonl_out is not None:
            writers.append(JsonLinesWriter(jsonl_out))
        if csv_out is not None:
            writers.append(CsvWriter(csv_out, info, field_columns=locates(classifier, locate)))
    except OSError as exc:
        for writer in writers:
            writer.discard()  # the targets stay as they were
        usage_error(f"cannot write {exc.filename}: {exc.strerror or exc}")
    if progress is None:
        progress = sys.stderr.isatty() and len(inputs.paths) > PROGRESS_MIN_IMAGES
    job = ClassifyJob(
        inputs.paths,
        writers,
        workers=workers,
        progress=bool(progress) and not as_json,
        groups=groups,
        keep_records=not (as_json or csv_out or jsonl_out),
        on_result=None if sink is None else sink.add,
        locate=locate,
    )
    stop = StopRequest()
    try:
        with stop.installed():
            totals = run_classify(classifier, job, stop)
    except KeyboardInterrupt:  # a second Ctrl+C: files were closed on the way out
        typer.echo("stopped", err=True)
        raise typer.Exit(130) from None
    except OSError as exc:  # an output failed mid-run (checked writable at the start)
        output_failed(exc, "the run was stopped; the records before it were kept")
    if sink is not None:
        for _, problem in sink.failed:
            typer.echo(f"error: {problem}", err=True)
        if totals.stopped_by is not None and sink.report_dir is not None:
            # As the group summary: a page of part of each slide would read as the slides'.
            typer.echo(
                "review page not written: the run was stopped before every image was "
                "classified (the overlays of the finished fields are kept)",
                err=True,
            )
        else:
            try:
                page = sink.close()
            except OSError as exc:
                output_failed(exc, "the review page was not written")
            if page is not None:
                typer.echo(f"review page: {page}", err=True)
            if sink.overlay_dir is not None:
                typer.echo(f"overlays: {sink.overlay_dir}", err=True)
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
            from leukedge.lab.groups import summary_columns
            from leukedge.lab.outputs import write_rows_atomically

            try:
                write_rows_atomically(
                    group_csv,
                    summary_columns(info.positive_label),
                    [s.as_row() for s in summaries],
                )
            except OSError as exc:
                output_failed(exc, "the group summary above was not saved")
    if totals.planned > 1 or inputs.skipped.describe():  # one named file: its row says it all
        typer.echo(summary_line(totals, info.labels, inputs.skipped.describe()), err=True)
    if totals.stopped_by is not None:
        raise typer.Exit(128 + totals.stopped_by)
    if totals.failed:
        typer.echo(f"{totals.failed} of {totals.done} inputs failed", err=True)
        raise typer.Exit(1)

"""``leukedge report RESULTS.jsonl --out DIR``: the slide review page of a finished run.

Reads the JSON Lines that ``leukedge classify --jsonl`` (or ``--json > FILE``) wrote, reads
each field's image again from the path its record names, and writes ``DIR/index.html`` and
``DIR/overlays/`` with :func:`leukedge.review.write_review_page`. The options and the
command only; the work is in :mod:`leukedge.review`.

Exit codes: 0 every field's image was read; 1 some could not be read (each named on
standard error; their cards are marked and the page is still written) or an output failed
mid-run; 2 bad usage (a results file that is not JSON Lines or holds no record, an output
folder that cannot be written or holds an earlier page without ``--overwrite``, a model
whose metadata cannot be read), found before any image is read.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from leukedge.cli.common import GroupMapOption
from leukedge.cli_kit.options import attribute_docs
from leukedge.lab.groups import GroupBy
from leukedge.review.options import ReviewOptions

_HELP = attribute_docs(ReviewOptions)


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def report(
    results: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="JSON Lines written by `leukedge classify --jsonl FILE` (or --json > FILE).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Folder for index.html and overlays/ (created).",
            show_default=False,
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="The .tflite whose card figures and thresholds the page shows; default: the "
            "embedded model. The page warns when the records name another model file.",
        ),
    ] = None,
    overlays: Annotated[
        bool, typer.Option("--overlays/--no-overlays", help=_HELP["overlays"])
    ] = ReviewOptions.overlays,
    locate: Annotated[
        bool, typer.Option("--locate/--no-locate", help=_HELP["locate"])
    ] = ReviewOptions.locate,
    group_by: Annotated[GroupBy, typer.Option("--group-by", help=_HELP["group_by"])] = GroupBy(
        ReviewOptions.group_by
    ),
    group_map: GroupMapOption = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace the page and overlays of an earlier report in DIR (default: refuse).",
        ),
    ] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar on stderr; default: on a terminal, for more than a few fields.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a slide review page (one offline HTML file) and an overlay per field.

    The page holds, per slide, the group call with its Wilson 95 % interval and the counts
    by status and reason; a gallery of the fields (overlay thumbnails, sortable by p(ALL),
    filterable by status, reason and slide); the refused fields; the model's card figures,
    thresholds and the run's settings. Each record's image is read from the path it names
    (as given, else relative to RESULTS' folder). Exit code 0: every image read; 1: some
    could not be read (named on stderr, marked on the page); 2: bad usage.
    """
    from leukedge.lab.groups import GroupMap

    by = group_by.value
    if group_map is not None and by != "slide":
        _usage_error(f"--group-map names slides; it does not go with --group-by {by}")
    records = _read_records(results)
    check_report_folder(out, [results], overwrite)
    metadata, sha256, model_path = _read_model(model)
    mapping = None
    if group_map is not None:
        try:
            mapping = GroupMap(group_map)
        except (OSError, ValueError) as exc:
            _usage_error(str(exc))
    options = ReviewOptions(group_by=by, overlays=overlays, locate=locate)
    stamp = datetime.fromtimestamp(results.stat().st_mtime, timezone.utc)
    settings: dict[str, Any] = {
        "results": str(results),
        "results written": stamp.isoformat(timespec="seconds"),
        "fields": len(records),
        "model file (card shown)": str(model_path),
        "group by": by + (f" (map {group_map})" if group_map else ""),
        "overlays": "on" if overlays else "off",
        "white cells located": "on" if locate and overlays else "off",
    }
    if sha256 and any(r.get("model_sha256") not in (None, sha256) for r in records):
        typer.echo(
            f"warning: the records name another model file than {model_path}; the page shows "
            "its card and thresholds and says so (give the run's model with --model)",
            err=True,
        )
    _run(records, out, metadata, settings, options, sha256, mapping, results, progress)


def _read_records(results: Path) -> list[dict[str, Any]]:
    """Every record of the JSON Lines file (blank lines skipped); exit 2 on a bad line."""
    records = []
    try:
        with open(results, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    _usage_error(f"{results}:{number}: not a JSON line ({exc.msg})")
                if not isinstance(record, dict) or "path" not in record:
                    _usage_error(
                        f"{results}:{number}: not a leukedge record (a JSON object with a "
                        "'path'); give the file `leukedge classify --jsonl` wrote"
                    )
                records.append(record)
    except (OSError, UnicodeDecodeError) as exc:
        _usage_error(f"cannot read {results}: {getattr(exc, 'strerror', None) or exc}")
    if not records:
        _usage_error(f"{results}: holds no record")
    return records


def check_report_folder(
    out: Path, read: Sequence[Path | str], overwrite: bool, option: str = "--out"
) -> None:
    """Before any work: ``out`` must be a folder we may write, none of the files ``read``,
    without an earlier report in it unless ``--overwrite`` (exit 2 naming ``option``;
    ``leukedge report --out`` and ``leukedge classify --report``)."""
    from leukedge.lab.inputs import check_output_folder, check_output_paths
    from leukedge.review.page import OVERLAY_FOLDER, PAGE_NAME

    try:
        check_output_folder(option, out)
        check_output_paths(
            {option: out / PAGE_NAME},
            list(read),
            existing="replace" if overwrite else "refuse",
        )
        overlays = out / OVERLAY_FOLDER
        if overlays.exists() and not overlays.is_dir():
            raise ValueError(f"{option} {out}: {overlays} is a file, not a folder")
        if not overwrite and overlays.is_dir() and any(overlays.iterdir()):
            raise ValueError(
                f"{option} {out}: {overlays} holds an earlier report's overlays; refusing to "
                "replace them. Give --overwrite to replace them, or another folder"
            )
    except ValueError as exc:
        _usage_error(str(exc))


def _read_model(model: Path | None):
    """``(metadata or None, sha256, path)`` of ``--model`` (default: the embedded model)."""
    import hashlib

    from leukedge.classifier import default_model_path
    from leukedge.engine.metadata import read_metadata
    from leukedge.errors import LeukedgeError

    path = model or default_model_path()
    try:
        content = Path(path).read_bytes()
        metadata = read_metadata(content)
    except (OSError, LeukedgeError) as exc:
        _usage_error(f"cannot read model {path}: {getattr(exc, 'strerror', None) or exc}")
    if metadata is None:
        typer.echo(f"warning: {path} carries no leukedge metadata: no card is shown", err=True)
    return metadata, hashlib.sha256(content).hexdigest(), path


def _run(records, out, metadata, settings, options, sha256, mapping, results, progress) -> None:
    from leukedge.lab.report import PROGRESS_MIN_IMAGES
    from leukedge.review.page import load_field, write_review_page

    if progress is None:
        progress = sys.stderr.isatty() and len(records) > PROGRESS_MIN_IMAGES
    base = results.parent

    def load(record):
        return load_field(record, base)

    with _Progress(len(records), bool(progress)) as advance:

        def on_field(record, problem):
            if problem is not None:
                typer.echo(f"error: {problem}", err=True)
            advance()

        try:
            page, failed = write_review_page(
                records,
                out,
                metadata,
                settings,
                options=options,
                model_sha256=sha256,
                group_map=mapping,
                load_image=load,
                on_field=on_field,
            )
        except OSError as exc:
            where = exc.filename or "an output"
            typer.echo(
                f"error: cannot write {where}: {exc.strerror or exc}; no page written", err=True
            )
            raise typer.Exit(1) from exc
    drawn = len(records) - len(failed) if options.overlays else 0
    typer.echo(f"wrote {page} ({len(records)} fields, {drawn} overlays)")
    if failed:
        typer.echo(
            f"{len(failed)} of {len(records)} field images could not be read (marked on the page)",
            err=True,
        )
        raise typer.Exit(1)


class _Progress:
    """A ``rich`` progress bar ("reviewing", n of N) on standard error when enabled; the
    context value is its ``advance()``."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.bar = total, enabled, None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(
            TextColumn("reviewing"),
            BarColumn(),
            MofNCompleteColumn(),
            console=Console(file=sys.stderr),
        )
        task = self.bar.add_task("reviewing", total=self.total)
        self.bar.start()
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

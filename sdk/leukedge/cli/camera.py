"""``leukedge camera``: live calls from a camera or a video file (:mod:`leukedge.lab.camera`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leukedge.classifier import ClassifierOptions
from leukedge.cli.common import AllowFailedGateOption, ModelOption, ThreadsOption, usage_error
from leukedge.lab.camera import CameraOptions


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
    from leukedge.errors import LeukedgeError
    from leukedge.lab.camera import CameraError, quiet_opencv_log, run_camera
    from leukedge.lab.inputs import check_output_folder
    from leukedge.lab.stopping import StopRequest

    try:
        check_output_folder("--snapshot", snapshot)
    except ValueError as exc:
        usage_error(str(exc))
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
                draw=draw_review_overlay,
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


def draw_review_overlay(frame, record, positive_label: str) -> None:
    """The preview's picture: the same overlay as ``classify --overlay``
    (:func:`leukedge.review.overlay.draw_overlay`: call colour, status banner, hatched border
    for refer / rejected / error) on the centre square the model sees, drawn into ``frame``
    (BGR, in place); the cells are not located per frame, to keep the preview fluid. Before
    the first result: :func:`leukedge.lab.camera.draw_overlay`'s text."""
    import numpy as np

    from leukedge.engine.preprocess import centre_square
    from leukedge.lab.camera import draw_overlay as draw_text
    from leukedge.review.overlay import OverlayOptions, draw_overlay

    if record is None:
        draw_text(frame, record, positive_label)
        return
    x0, y0, side = centre_square(frame)
    square = np.ascontiguousarray(frame[y0 : y0 + side, x0 : x0 + side, ::-1])
    options = OverlayOptions(positive_label=positive_label, locate=False)
    frame[y0 : y0 + side, x0 : x0 + side] = draw_overlay(square, record, options=options)[..., ::-1]

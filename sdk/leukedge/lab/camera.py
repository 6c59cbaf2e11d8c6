"""``leukedge camera``: live calls from a microscope camera (or a video file) with OpenCV.

Frames come from :class:`cv2.VideoCapture` (a device index, ``/dev/videoN`` on Linux, or a
video file, played at its own frame rate like a camera); each frame's centre square
(:func:`leukedge.engine.preprocess.crop_centre_square`, the one framing policy of every live
frame, also in ``examples/raspberry_pi_camera.py``; outlined on the preview) goes to a
``LIVE_STREAM`` :class:`~leukedge.Classifier` with ``pixel_format="BGR"`` (OpenCV's channel
order). The classifier drops frames that arrive while it is busy, so the preview never
lags; each result is drawn on the preview (label, status, p) with :func:`cv2.putText`, or
printed one line per result with ``headless``. ``snapshot`` saves the classified square of
every classified frame as a PNG (lossless, so classifying the file again gives the same
result) with a JSON sidecar holding its record (:mod:`leukedge.lab.records`).

OpenCV is imported only here, when the command runs. ``opencv-python-headless`` (the
project's dependency) has no windows: without a GUI build the preview falls back to
headless with a warning.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leukedge.engine.preprocess import centre_square, crop_centre_square
from leukedge.errors import LeukedgeError, LeukedgeWarning
from leukedge.lab.records import ModelInfo, error_record, result_record

if TYPE_CHECKING:
    from leukedge.classifier import ClassificationResult, ClassifierOptions
    from leukedge.lab.stopping import StopRequest

WINDOW = "leukedge"
"""Title of the preview window."""

COLOURS_BGR = {"ALL": (40, 40, 230), "HEM": (60, 180, 60), None: (0, 165, 255)}
"""Overlay colour per call (BGR): ALL red, HEM green, anything else (refer, rejected,
error) orange."""


class CameraError(LeukedgeError, RuntimeError):
    """The camera or video cannot be opened or read."""


@dataclass
class CameraOptions:
    """Settings of :func:`run_camera`.

    Attributes:
        device: OpenCV camera index (``/dev/videoN``); used when ``video`` is ``None``.
        video: a video file to play instead of a camera (at its frame rate).
        headless: print results instead of showing a preview window.
        snapshot: folder where every classified frame is saved (PNG + JSON), or ``None``.
        frames: stop after this many captured frames (``None``: until the end of the video,
            q/Esc in the preview, Ctrl+C or SIGTERM).
        realtime: pace a video file at its frame rate (``False``: as fast as it decodes).
    """

    device: int = 0
    video: Path | None = None
    headless: bool = False
    snapshot: Path | None = None
    frames: int | None = None
    realtime: bool = True


@dataclass
class CameraStats:
    """What a camera run did: frames ``captured``, ``classified`` (results delivered),
    ``dropped`` (arrived while busy), ``errors`` (frames that failed), ``records``,
    ``snapshots`` saved, and ``snapshot_error``: why a snapshot could not be saved (the
    run then stopped: a snapshot asked for and lost is an error), else ``None``."""

    captured: int = 0
    classified: int = 0
    dropped: int = 0
    errors: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    snapshots: int = 0
    snapshot_error: str | None = None


def quiet_opencv_log() -> None:
    """Keep OpenCV's own ``[ WARN:…] global cap_v4l.cpp …`` lines off standard error (a
    missing camera gets two before leukedge's ``error: cannot open camera N``): its log level
    becomes ``ERROR``, unless the user set ``OPENCV_LOG_LEVEL``. Process-wide, so the SDK
    leaves it to programs: ``leukedge camera`` calls it."""
    import cv2

    if "OPENCV_LOG_LEVEL" in os.environ:
        return
    # cv2.utils.logging is absent from some wheels (4.10.0.84, the lowest supported:
    # tools/check_platforms.py --deps lowest); cv2.setLogLevel is in all. Those older wheels
    # also log a missing camera at ERROR (the obsensor backend's "Camera index out of
    # range"), so there the level is FATAL (1; 2 is ERROR).
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(1)


def open_capture(options: CameraOptions) -> Any:
    """An opened :class:`cv2.VideoCapture`.

    Raises:
        CameraError: it cannot be opened.
    """
    import cv2

    source = str(options.video) if options.video is not None else options.device
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        what = f"video {options.video}" if options.video is not None else f"camera {source}"
        raise CameraError(f"cannot open {what} with OpenCV")
    return capture


def has_gui() -> bool:
    """``True`` if this OpenCV build can open windows (``opencv-python-headless`` cannot)."""
    import cv2

    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        return False
    return True


def result_text(record: dict[str, Any], positive_label: str) -> str:
    """``"ALL  p(ALL) 0.97  ok"``, ``"refer (uncertain)  p(ALL) 0.55"`` or ``"error: …"``,
    for the overlay and the headless lines."""
    if record.get("error"):
        return f"error: {record['error']}"
    status = record.get("status") or "ok"
    p = (record.get("probabilities") or {}).get(positive_label)
    p_text = f"  p({positive_label}) {p:.2f}" if p is not None else ""
    if record.get("label"):
        return f"{record['label']}{p_text}  {status}"
    reason = f" ({record['reason']})" if record.get("reason") else ""
    return f"{status}{reason}{p_text}"


def draw_overlay(frame: np.ndarray, record: dict[str, Any] | None, positive_label: str) -> None:
    """Write the latest result onto ``frame`` (BGR, in place) with :func:`cv2.putText`."""
    import cv2

    text = "waiting for the first result" if record is None else result_text(record, positive_label)
    colour = COLOURS_BGR.get(record.get("label") if record else None, COLOURS_BGR[None])
    scale = max(0.5, frame.shape[1] / 900)
    thickness = max(1, round(scale * 2))
    origin = (10, int(30 * scale) + 5)
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2)
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness)


def save_snapshot(
    folder: Path, frame_bgr: np.ndarray, record: dict[str, Any], run: str = ""
) -> Path:
    """Save ``frame_bgr`` as ``<run>frame_<timestamp>.png`` and its record as ``….json``;
    the record's ``path`` becomes the PNG's path. ``run`` (e.g. the run's start time) keeps
    a later run's frames, whose timestamps start again from 0, from replacing this run's.
    Returns the PNG path."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{run}frame_{int(record.get('timestamp_ms') or 0):010d}.png"
    if not cv2.imwrite(str(png), frame_bgr):
        raise CameraError(f"{png}: could not write the snapshot")
    record["path"] = str(png)
    png.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return png


def run_camera(
    options: CameraOptions,
    classifier_options: ClassifierOptions,
    stop: StopRequest,
    emit: Callable[[str], None] = print,
    draw: Callable[[np.ndarray, dict[str, Any] | None, str], None] | None = None,
) -> CameraStats:
    """Capture, classify and show (or print) until the video ends, ``options.frames``
    frames were captured, q/Esc is pressed in the preview, or ``stop`` is requested.

    Args:
        options: :class:`CameraOptions`.
        classifier_options: model settings; running mode and callback are set here.
        stop: checked every frame.
        emit: where headless result lines go.
        draw: draws the latest record onto a preview frame (BGR, in place):
            ``draw(frame, record or None, positive_label)``; default :func:`draw_overlay`
            (text only). ``leukedge camera`` passes the review overlay
            (:func:`leukedge.review.overlay.draw_overlay`, the same picture as
            ``classify --overlay``), which this room may not import.

    Returns:
        :class:`CameraStats`; a snapshot that cannot be saved stops the run, with
        ``snapshot_error`` set.

    Raises:
        CameraError: the camera or video cannot be opened.
        leukedge.LeukedgeError, OSError: the model cannot be loaded.
    """
    import cv2

    from leukedge.classifier import Classifier, RunningMode

    stats = CameraStats()
    latest: dict[str, Any] = {}
    lock = threading.Lock()
    model: ModelInfo | None = None
    run_name = time.strftime("%Y%m%d-%H%M%S_")  # snapshots of this run

    def on_result(
        result: ClassificationResult | None,
        frame: np.ndarray,
        timestamp_ms: int,
        error: Exception | None,
    ) -> None:
        assert model is not None
        if result is not None:
            record = result_record(None, result, model)
        else:
            record = error_record(f"frame at {timestamp_ms} ms", error, model)
            record["timestamp_ms"] = timestamp_ms
        if options.snapshot is not None and stats.snapshot_error is None:
            try:
                save_snapshot(options.snapshot, frame, record, run_name)
                stats.snapshots += 1
            except (OSError, CameraError) as exc:
                stats.snapshot_error = str(exc)  # ends the capture loop
        with lock:
            stats.classified += 1
            stats.errors += result is None
            stats.records.append(record)
            latest["record"] = record
        if headless:
            emit(f"{timestamp_ms:>9} ms  {result_text(record, model.positive_label)}")

    classifier_options.running_mode = RunningMode.LIVE_STREAM
    classifier_options.result_callback = on_result
    capture = open_capture(options)
    headless = options.headless
    if not headless and not has_gui():
        warnings.warn(
            "this OpenCV build has no windows (opencv-python-headless); printing results "
            "instead (pip install opencv-python for a preview)",
            LeukedgeWarning,
            stacklevel=2,
        )
        headless = True
    try:
        with Classifier(classifier_options) as classifier:
            model = ModelInfo.of(classifier)
            _capture_loop(capture, classifier, options, headless, stop, stats, latest, lock, draw)
    finally:
        capture.release()
        if not headless:
            cv2.destroyAllWindows()
    return stats


def _capture_loop(
    capture, classifier, options, headless, stop, stats, latest, lock, draw=None
) -> None:
    import cv2

    from_file = options.video is not None
    fps = capture.get(cv2.CAP_PROP_FPS) if from_file else 0.0
    frame_ms = 1000.0 / fps if fps and fps > 0 else 1000.0 / 30
    start = time.monotonic()
    last_ts = -1
    positive = "ALL" if "ALL" in classifier.labels else classifier.labels[0]
    while not stop and (options.frames is None or stats.captured < options.frames):
        if stats.snapshot_error is not None:
            break  # an output asked for can no longer be written
        ok, frame = capture.read()
        if not ok:
            if from_file:
                break  # end of the video
            raise CameraError("the camera stopped delivering frames")
        if from_file:
            timestamp = int(stats.captured * frame_ms)
            if options.realtime:
                delay = start + timestamp / 1000 - time.monotonic()
                if delay > 0:
                    stop.event.wait(delay)
        else:
            timestamp = int((time.monotonic() - start) * 1000)
        timestamp = max(timestamp, last_ts + 1)  # strictly increasing, as the classifier needs
        last_ts = timestamp
        stats.captured += 1
        if not classifier.classify_async(crop_centre_square(frame), timestamp, pixel_format="BGR"):
            stats.dropped += 1
        if not headless:
            with lock:
                record = latest.get("record")
            shown = frame.copy()
            x0, y0, side = centre_square(frame)
            cv2.rectangle(shown, (x0, y0), (x0 + side - 1, y0 + side - 1), (255, 255, 255), 1)
            (draw or draw_overlay)(shown, record, positive)
            cv2.imshow(WINDOW, shown)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                break

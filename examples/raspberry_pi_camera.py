#!/usr/bin/env python3
"""Live ALL/HEM calls from a microscope camera on a Raspberry Pi (or from a video file).

Frames come from a Raspberry Pi camera module (Picamera2, if it imports), from any camera
OpenCV can open (``cv2.VideoCapture(index)``: USB/UVC microscope eyepiece cameras), or, with
``--video FILE``, from a video file played at its own frame rate (to try the program without
a camera). Each frame's centre square (``leukedge.engine.preprocess.crop_centre_square``: the one
framing policy of every live frame, also ``leukedge camera``'s; the model was trained on
square smear fields) goes to a leukedge ``Classifier`` in
``LIVE_STREAM`` mode with the frame's own channel order as ``pixel_format``: no conversion
here. Results arrive in a callback on a worker thread; frames that arrive while the
previous one is still being classified are dropped, so the preview never lags.

Picamera2 names its formats after the 32-bit word, so memory order is the reverse of the
name (``PICAMERA2_PIXEL_FORMATS``): ``"XBGR8888"`` (its default for preview and video
configurations, 4 bytes a pixel) is ``[R, G, B, X]`` in the array (``pixel_format="RGBX"``),
``"XRGB8888"`` is ``[B, G, R, X]`` (``"BGRX"``), ``"RGB888"`` is ``[B, G, R]`` (``"BGR"``).
OpenCV cameras and video files deliver ``"BGR"``.

Decision support only: the label is one model's opinion on one field of view, not a
diagnosis. Nothing here imports TensorFlow; the model runs on LiteRT.

Examples::

    python3 examples/raspberry_pi_camera.py                      # preview window
    python3 examples/raspberry_pi_camera.py --headless           # over SSH: print only
    python3 examples/raspberry_pi_camera.py --camera 1 --every-n-frames 5 --threads 4
    python3 examples/raspberry_pi_camera.py --video smear.avi --headless --json

Exit codes: 0 normal end (q, Esc, Ctrl+C, --frames reached, end of the video); 1 no
camera, a video that cannot be opened, or the camera stopped delivering frames; 2 the model
cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import cv2
import numpy as np

from leukedge.classifier import (
    ClassificationResult,
    Classifier,
    ClassifierOptions,
    RunningMode,
)
from leukedge.engine.preprocess import array_to_rgb, centre_square, crop_centre_square

WINDOW = "leukedge (decision support, not a diagnosis)"
MAX_READ_FAILURES = 30
"""Consecutive failed reads after which the camera is considered gone."""
PICAMERA2_PIXEL_FORMATS = {
    "XRGB8888": "BGRX",
    "XBGR8888": "RGBX",
    "RGB888": "BGR",
    "BGR888": "RGB",
}
"""Picamera2 format name -> leukedge ``pixel_format`` (memory order, first byte first)."""


class NoCameraError(RuntimeError):
    """No usable camera; the message says what was tried and what to check."""


# --------------------------------------------------------------------------- cameras
class OpenCVCamera:
    """Any camera OpenCV opens by index (USB/UVC cameras; ``/dev/video<index>`` on Linux)."""

    name = "OpenCV"
    pixel_format = "BGR"
    ended = False  # a camera never ends; a video file does

    def __init__(self, index: int, width: int, height: int):
        self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            self._cap.release()
            raise NoCameraError(
                f"OpenCV could not open camera index {index}. Is the camera plugged in and "
                "not in use by another program? List devices with `v4l2-ctl --list-devices` "
                "(package v4l-utils) and pass --camera N."
            )
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        ok, _ = self._cap.read()
        if not ok:
            self._cap.release()
            raise NoCameraError(f"camera index {index} opened but delivers no frames")

    def read(self) -> tuple[np.ndarray, int | None] | None:
        """``(BGR uint8 (H, W, 3), None)`` (no timestamp of its own), or ``None``."""
        ok, frame = self._cap.read()
        return (frame, None) if ok else None

    def close(self) -> None:
        self._cap.release()


class VideoFile:
    """A video file as the camera, played at its own frame rate (``pace=True``).

    Timestamps are the video's (frame index × 1000 / fps, in ms), so a run is repeatable
    frame for frame; at the end, :attr:`ended` turns ``True`` and :meth:`read` gives ``None``.
    """

    name = "video file"
    pixel_format = "BGR"

    def __init__(self, path: str, pace: bool = True):
        if not os.path.isfile(path):
            raise NoCameraError(f"video file {path} not found")
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            self._cap.release()
            raise NoCameraError(f"OpenCV cannot open {path} as a video")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps <= 1000 else 25.0
        self._pace = pace
        self._index = 0
        self._start = time.monotonic()
        self.ended = False

    def read(self) -> tuple[np.ndarray, int] | None:
        """``(BGR uint8 (H, W, 3), timestamp ms)``, or ``None`` at the end of the file."""
        ok, frame = self._cap.read()
        if not ok:
            self.ended = True
            return None
        timestamp_ms = round(self._index * 1000 / self.fps)
        if self._pace:  # wait until this frame is due, as a camera would deliver it
            time.sleep(max(0.0, self._start + timestamp_ms / 1000 - time.monotonic()))
        self._index += 1
        return frame, timestamp_ms

    def close(self) -> None:
        self._cap.release()


class PiCamera:
    """A Raspberry Pi camera module through Picamera2 (libcamera).

    ``fmt`` is a key of :data:`PICAMERA2_PIXEL_FORMATS`; frames are handed to leukedge with
    the matching ``pixel_format`` (e.g. ``"XRGB8888"`` -> ``"BGRX"``), never converted here.
    """

    name = "Picamera2"
    ended = False

    def __init__(self, index: int, width: int, height: int, fmt: str = "XBGR8888"):
        from picamera2 import Picamera2  # apt: python3-picamera2

        cameras = Picamera2.global_camera_info()
        if index >= len(cameras):
            raise NoCameraError(
                f"Picamera2 sees {len(cameras)} camera(s), none at index {index}. Check the "
                "ribbon cable and `rpicam-hello --list-cameras`."
            )
        self.pixel_format = PICAMERA2_PIXEL_FORMATS[fmt]
        self._cam = Picamera2(index)
        config = self._cam.create_preview_configuration(
            main={"size": (width, height), "format": fmt}
        )
        self._cam.configure(config)
        self._cam.start()

    def read(self) -> tuple[np.ndarray, int | None]:
        """``(uint8 (H, W, 3 or 4) in self.pixel_format, None)``."""
        return self._cam.capture_array(), None

    def close(self) -> None:
        self._cam.stop()
        self._cam.close()


def open_camera(args: argparse.Namespace):
    """The video file (``--video``), else the first camera that opens: Picamera2 (if
    importable), then OpenCV.

    Raises:
        NoCameraError: nothing opened; the message lists every attempt.
    """
    if args.video:
        return VideoFile(args.video)
    backend, index, width, height = args.backend, args.camera, args.width, args.height
    tried = []
    if backend in ("auto", "picamera2"):
        try:
            return PiCamera(index, width, height, args.picamera2_format)
        except ImportError as exc:
            tried.append(
                f"Picamera2: cannot import ({exc}). Install it with apt (sudo apt install "
                "python3-picamera2) and create the venv with --system-site-packages; see "
                "examples/raspberry_pi/README.md"
            )
        except NoCameraError as exc:
            tried.append(f"Picamera2: {exc}")
        except (RuntimeError, OSError, IndexError, ValueError) as exc:
            tried.append(f"Picamera2: {type(exc).__name__}: {exc}")
    if backend in ("auto", "opencv"):
        try:
            return OpenCVCamera(index, width, height)
        except NoCameraError as exc:
            tried.append(f"OpenCV: {exc}")
    raise NoCameraError("no camera found.\n  " + "\n  ".join(tried))


# --------------------------------------------------------------------------- results
class LatestResult:
    """The most recent classification, shared between the callback thread and the UI."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.result: ClassificationResult | None = None
        self.error: Exception | None = None
        self.received_at = 0.0

    def set(self, result: ClassificationResult | None, error: Exception | None) -> None:
        with self._lock:
            self.result, self.error, self.received_at = result, error, time.monotonic()

    def get(self) -> tuple[ClassificationResult | None, Exception | None, float]:
        with self._lock:
            return self.result, self.error, self.received_at


def describe(result: ClassificationResult) -> str:
    """``"ALL 0.87  (ALL 0.87, HEM 0.13)"``, or ``"rejected: out_of_focus  (model: …)"``."""
    probs = ", ".join(f"{k} {v:.2f}" for k, v in result.model_probabilities.items())
    if result.status != "ok":
        return f"{result.status}: {result.reason}  (model, not a call: {probs})"
    return f"{result.label} {result.score:.2f}  ({probs})"


def as_json(result: ClassificationResult | None, timestamp_ms: int, error: Exception | None) -> str:
    """One JSON line per result: ``result.to_dict()`` (the shape ``leukedge classify --json``
    prints) with the frame's ``timestamp_ms`` and ``error``."""
    if error is not None or result is None:
        return json.dumps(
            {"timestamp_ms": timestamp_ms, "status": "error", "label": None, "error": str(error)}
        )
    return json.dumps({**result.to_dict(), "timestamp_ms": timestamp_ms, "error": None})


# --------------------------------------------------------------------------- drawing
def draw_overlay(
    frame: np.ndarray,
    latest: LatestResult,
    roi: tuple[int, int, int] | None,
    stale_after_s: float = 2.0,
) -> None:
    """Draw the ROI, the latest call and a disclaimer onto a BGR frame, in place."""
    if roi is not None:
        x0, y0, side = roi
        cv2.rectangle(frame, (x0, y0), (x0 + side - 1, y0 + side - 1), (255, 255, 255), 1)
    result, error, received_at = latest.get()
    if error is not None:
        text, colour = f"error: {error}"[:60], (0, 0, 255)
    elif result is None:
        text, colour = "waiting for the first result...", (200, 200, 200)
    elif result.status != "ok":  # refer or rejected: no call, say why
        text, colour = f"{result.status}: {result.reason}", (0, 200, 255)
    else:
        text = f"{result.label}  p={result.score:.2f}"
        colour = (0, 0, 255) if result.label == "ALL" else (0, 200, 0)
        if time.monotonic() - received_at > stale_after_s:
            text, colour = text + "  (stale)", (160, 160, 160)
    for thickness, c in ((4, (0, 0, 0)), (2, colour)):  # dark outline, then colour
        cv2.putText(frame, text, (10, 32), cv2.FONT_HERSHEY_SIMPLEX, 0.9, c, thickness, cv2.LINE_AA)
    cv2.putText(
        frame,
        "decision support only - not a diagnosis",
        (10, frame.shape[0] - 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )


def display_available() -> tuple[bool, str]:
    """Whether a preview window can be opened, and why not."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False, "no display (DISPLAY/WAYLAND_DISPLAY unset, e.g. over SSH)"
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        return False, (
            "this OpenCV build has no GUI support (opencv-python-headless); "
            "install a GUI build (e.g. `sudo apt install python3-opencv` in a venv "
            "with --system-site-packages, or `pip install opencv-python`)"
        )
    return True, ""


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Classify microscope camera frames as ALL or HEM, live "
        "(decision support, not a diagnosis).",
        allow_abbrev=False,  # options in a unit file or script are spelled out in full
    )
    parser.add_argument(
        "--model", default=None, help="a leukedge .tflite model (default: the embedded model)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=4,
        help="interpreter CPU threads (default 4: a Pi 4/5 has 4 cores)",
    )
    parser.add_argument(
        "--camera",
        type=int,
        default=0,
        help="camera index (Picamera2 camera number or /dev/videoN)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "picamera2", "opencv"),
        default="auto",
        help="camera library (default: Picamera2 if importable, else OpenCV)",
    )
    parser.add_argument(
        "--picamera2-format",
        choices=tuple(PICAMERA2_PIXEL_FORMATS),
        default="XBGR8888",
        help="Picamera2 pixel format (default XBGR8888, Picamera2's own default)",
    )
    parser.add_argument(
        "--video",
        metavar="FILE",
        default=None,
        help="read frames from a video file (at its frame rate) instead of a camera",
    )
    parser.add_argument(
        "--every-n-frames",
        type=int,
        default=3,
        help="submit every Nth frame for classification (default 3)",
    )
    parser.add_argument("--width", type=int, default=640, help="capture width (default 640)")
    parser.add_argument("--height", type=int, default=480, help="capture height (default 480)")
    parser.add_argument(
        "--headless", action="store_true", help="no preview window; print results only"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per result instead of text"
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=0,
        help="stop after this many captured frames (default 0: run until q, Esc or Ctrl+C)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1 or args.every_n_frames < 1 or args.frames < 0:
        parser.error("--threads and --every-n-frames must be >= 1, --frames >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    latest = LatestResult()

    def on_result(
        result: ClassificationResult | None,
        frame: np.ndarray,
        timestamp_ms: int,
        error: Exception | None,
    ) -> None:
        # Runs on the classifier's worker thread: keep it short, never touch the GUI here.
        latest.set(result, error)
        if args.json:
            print(as_json(result, timestamp_ms, error), flush=True)
        elif error is not None:
            print(f"{timestamp_ms:>10} ms  error: {error}", file=sys.stderr, flush=True)
        else:
            print(f"{timestamp_ms:>10} ms  {describe(result)}", flush=True)

    options = ClassifierOptions(
        model_path=args.model,
        num_threads=args.threads,
        running_mode=RunningMode.LIVE_STREAM,
        result_callback=on_result,
    )
    try:
        classifier = Classifier(options)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"error: cannot load model: {exc}", file=sys.stderr)
        return 2
    meta = classifier.metadata
    print(
        f"model: {meta.name} {meta.version} ({meta.precision}), input "
        f"{classifier.input_size[1]}x{classifier.input_size[0]} {meta.input.kind}, "
        f"{args.threads} thread(s)",
        file=sys.stderr if args.json else sys.stdout,
    )
    if meta.input.kind == "cell":
        print(
            "note: this model expects single segmented cells, not whole camera fields",
            file=sys.stderr,
        )

    try:
        camera = open_camera(args)
    except NoCameraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        classifier.close()
        return 1
    source = args.video if args.video else f"index {args.camera}"
    print(
        f"camera: {camera.name} {source}, pixel format {camera.pixel_format}",
        file=sys.stderr if args.json else sys.stdout,
    )

    show = not args.headless
    if show:
        show, why = display_available()
        if not show:
            print(f"no preview window: {why}; running headless", file=sys.stderr)

    status, count, failures, last_ts = 0, 0, 0, -1
    try:
        with classifier:  # on exit, waits for the frame still being classified
            while args.frames == 0 or count < args.frames:
                got = camera.read()
                if got is None:
                    if camera.ended:
                        break  # end of the video file
                    failures += 1
                    if failures >= MAX_READ_FAILURES:
                        print("error: the camera stopped delivering frames", file=sys.stderr)
                        status = 1
                        break
                    time.sleep(0.05)
                    continue
                frame, own_ts = got
                failures = 0
                count += 1
                # Timestamps must increase strictly; two frames in one millisecond get +1.
                timestamp_ms = own_ts if own_ts is not None else int(time.monotonic() * 1000)
                timestamp_ms = max(timestamp_ms, last_ts + 1)
                last_ts = timestamp_ms
                roi = centre_square(frame)  # drawn on the preview
                if count % args.every_n_frames == 0:
                    # The frame's own channel order; leukedge converts. False: busy, dropped.
                    classifier.classify_async(
                        crop_centre_square(frame), timestamp_ms, pixel_format=camera.pixel_format
                    )
                if show:
                    bgr = np.ascontiguousarray(array_to_rgb(frame, camera.pixel_format)[:, :, ::-1])
                    draw_overlay(bgr, latest, roi)
                    cv2.imshow(WINDOW, bgr)
                    if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
                        break
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
    finally:
        camera.close()
        if show:
            cv2.destroyAllWindows()
    return status


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Wiring leukedge into camera-PC software: vendor SDK frame callback → smoothed call.

Microscope camera SDKs (UVC, GenICam/Basler pylon, vendor DLLs…) typically deliver frames to
a callback ``on_frame(buffer, timestamp)`` on their own thread. :class:`SmoothedClassifier`
sits behind such a callback:

1. it hands the frame to leukedge with its channel order (``pixel_format``: check your
   SDK's pixel format!);
2. it classifies the frame with a leukedge ``Classifier`` in ``VIDEO`` mode, passing the
   frame's timestamp in milliseconds (strictly increasing; duplicates are skipped);
3. it keeps the last N per-frame results and reports a **majority vote** of the frames that
   got a call (status ``ok``), so one blurred or half-focused frame does not flip the
   displayed call; frames the classifier refers or rejects (out of focus, out of domain…)
   count as "no call". No call is made until ``min_frames`` frames are in and one label has
   a strict majority of all frames in the window;
4. when the slide changes (a stage event, an operator's button), :meth:`SmoothedClassifier.reset`
   empties the window, so no frame of the old slide votes on the new one.

This file simulates the SDK with the example images in ``examples/images`` (a few
jittered, noisy "frames" of each), so it runs anywhere::

    python3 examples/microscope_integration.py
    python3 examples/microscope_integration.py --model my_model_int8.tflite --window 9

IMPORTANT: this is decision support, not a diagnosis. The smoothed call is one model's
opinion on the current field of view. It must be shown to a qualified person next to the
image, never used on its own to diagnose, rule out or stage leukaemia.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from leukedge.classifier import (
    ClassificationResult,
    Classifier,
    ClassifierOptions,
    RunningMode,
)

EXAMPLE_IMAGES = Path(__file__).resolve().parent / "images"


@dataclass
class SmoothedCall:
    """The call over the last frames.

    Attributes:
        label: the majority label, or ``None`` while there are fewer than ``min_frames``
            frames or no label has a strict majority of them ("no consensus").
        votes: ``{label: frames}`` in the window; frames without a call (``refer``,
            ``rejected``) vote ``"no call"``.
        frames: frames in the window.
        mean_probabilities: ``{label: mean probability}`` over the window's frames that the
            model ran on (every status), as the model said them.
        latest: the newest frame's own result.
    """

    label: str | None
    votes: dict[str, int]
    frames: int
    mean_probabilities: dict[str, float]
    latest: ClassificationResult

    def __str__(self) -> str:
        votes = ", ".join(f"{k} {v}" for k, v in self.votes.items())
        call = self.label or "no call"
        latest = self.latest
        frame = (
            f"{latest.label} {latest.score:.2f}"
            if latest.status == "ok"
            else f"{latest.status} ({latest.reason})"
        )
        return (
            f"t={latest.timestamp_ms:>6} ms  frame {frame} | last {self.frames}: {votes} -> {call}"
        )


class SmoothedClassifier:
    """A ``VIDEO``-mode leukedge classifier behind a camera SDK's frame callback.

    Args:
        model_path: ``.tflite`` model; ``None`` = the embedded default model.
        num_threads: interpreter threads.
        window: frames in the majority vote (odd numbers avoid ties).
        min_frames: frames needed before any call is made.
        on_call: called with every :class:`SmoothedCall` (e.g. to update your UI; it runs
            on the SDK's thread, so hand the value over to your UI thread).

    Raises:
        FileNotFoundError, ValueError, RuntimeError: the model cannot be loaded.
    """

    def __init__(
        self,
        model_path: str | None = None,
        num_threads: int = 2,
        window: int = 15,
        min_frames: int = 5,
        on_call: Callable[[SmoothedCall], None] | None = None,
    ):
        if window < 1 or not 1 <= min_frames <= window:
            raise ValueError("need window >= 1 and 1 <= min_frames <= window")
        self._options = ClassifierOptions(
            model_path=model_path, num_threads=num_threads, running_mode=RunningMode.VIDEO
        )
        self._classifier = Classifier(self._options)
        self._recent: deque[ClassificationResult] = deque(maxlen=window)
        self._min_frames = min_frames
        self._on_call = on_call
        self._last_ts: int | None = None
        self._lock = threading.Lock()  # SDKs may call from several threads

    @property
    def classifier(self) -> Classifier:
        return self._classifier

    def reset(self) -> None:
        """Forget the window and the timestamp: call this for a new slide, or when the
        camera restarts and its clock starts again from zero."""
        with self._lock:
            self._classifier = Classifier(self._options)  # a fresh timestamp sequence
            self._recent.clear()
            self._last_ts = None

    def on_frame(
        self, frame: np.ndarray, timestamp_us: int, pixel_format: str = "BGR"
    ) -> SmoothedCall | None:
        """The SDK callback: classify one frame and return the smoothed call.

        Args:
            frame: ``uint8`` ``(H, W, 3)`` (or ``(H, W)`` mono). Copy it if the SDK reuses
                its buffer after the callback returns; this method finishes with it before
                returning.
            timestamp_us: the SDK's frame timestamp in microseconds (use the camera's own
                clock where it has one: it reflects exposure time, not arrival time).
            pixel_format: the frame's channel order in memory, as the SDK delivers it:
                ``"BGR"``, ``"RGB"``, ``"BGRA"``, ``"RGBA"``, ``"BGRX"`` or ``"RGBX"``;
                leukedge converts (a mono ``(H, W)`` frame takes none: pass ``None``).

        Returns:
            The :class:`SmoothedCall`, or ``None`` if the frame was skipped because its
            timestamp (in ms) is not after the previous frame's.
        """
        timestamp_ms = int(timestamp_us // 1000)
        with self._lock:
            if self._last_ts is not None and timestamp_ms <= self._last_ts:
                return None  # same millisecond as the previous frame, or clock went back
            self._last_ts = timestamp_ms
            result = self._classifier.classify_for_video(
                frame, timestamp_ms, pixel_format=pixel_format if frame.ndim == 3 else None
            )
            self._recent.append(result)
            call = self._smoothed(result)
        if self._on_call is not None:
            self._on_call(call)
        return call

    def _smoothed(self, latest: ClassificationResult) -> SmoothedCall:
        labels = self._classifier.labels
        votes = Counter(r.label or "no call" for r in self._recent)
        n = len(self._recent)
        label, count = votes.most_common(1)[0]
        if n < self._min_frames or 2 * count <= n or label == "no call":
            label = None
        ran = [r for r in self._recent if r.model_probabilities is not None]
        mean = {
            lb: float(np.mean([r.model_probabilities[lb] for r in ran])) if ran else 0.0
            for lb in labels
        }
        return SmoothedCall(
            label=label,
            votes={lb: votes.get(lb, 0) for lb in [*labels, "no call"]},
            frames=n,
            mean_probabilities=mean,
            latest=latest,
        )


# --------------------------------------------------------------------------- simulation
class SimulatedVendorCamera:
    """Stands in for a vendor SDK: delivers BGR frames and µs timestamps to a callback.

    Each still image becomes ``frames_per_image`` frames with a small random shift and sensor
    noise, as when a slide drifts under the objective; the timestamps step at ``fps``.
    """

    def __init__(
        self, images: Iterable[Path], frames_per_image: int = 12, fps: float = 15.0, seed: int = 0
    ):
        self._images = list(images)
        self._frames_per_image = frames_per_image
        self._period_us = int(1_000_000 / fps)
        self._rng = np.random.default_rng(seed)
        self._callback: Callable[[np.ndarray, int], object] | None = None
        self._on_slide_change: Callable[[], object] | None = None

    def register_callback(self, callback: Callable[[np.ndarray, int], object]) -> None:
        self._callback = callback

    def register_slide_change(self, callback: Callable[[], object]) -> None:
        """``callback()`` runs when a new slide comes under the objective, before its first
        frame (a motorised stage's "move done" event, or the operator's "next slide"
        button, in a real setup)."""
        self._on_slide_change = callback

    def run(self) -> None:
        if self._callback is None:
            raise RuntimeError("register a callback first")
        timestamp_us = 0
        for path in self._images:
            with Image.open(path) as pil:
                rgb = np.asarray(pil.convert("RGB"), dtype=np.int16)
            print(f"--- slide moved: now showing {path.name}")
            if self._on_slide_change is not None:
                self._on_slide_change()
            for _ in range(self._frames_per_image):
                dy, dx = self._rng.integers(-6, 7, size=2)
                frame = np.roll(rgb, (int(dy), int(dx)), axis=(0, 1))
                frame = frame + self._rng.normal(0, 4, frame.shape)
                bgr = np.clip(frame, 0, 255).astype(np.uint8)[..., ::-1]
                self._callback(bgr, timestamp_us)
                timestamp_us += self._period_us


def example_images(kind: str) -> list[Path]:
    """The example images that match the model's input kind (fields or single cells)."""
    pattern = "WBC-*.jpg" if kind == "field" else "UID_*.bmp"
    return sorted(EXAMPLE_IMAGES.glob(pattern))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Simulated microscope camera -> smoothed ALL/HEM call (decision support only)."
    )
    parser.add_argument(
        "--model", default=None, help="a leukedge .tflite model (default: the embedded model)"
    )
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads")
    parser.add_argument("--window", type=int, default=15, help="frames in the majority vote")
    parser.add_argument("--min-frames", type=int, default=5, help="frames before any call")
    parser.add_argument(
        "--frames-per-image", type=int, default=12, help="simulated frames per example image"
    )
    args = parser.parse_args(argv)

    try:
        assistant = SmoothedClassifier(
            args.model, args.threads, args.window, args.min_frames, on_call=print
        )
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"error: cannot load model or bad arguments: {exc}", file=sys.stderr)
        return 2
    kind = assistant.classifier.metadata.input.kind
    images = example_images(kind)
    if not images:
        print(f"error: no example images for a '{kind}' model in {EXAMPLE_IMAGES}", file=sys.stderr)
        return 2

    print("Decision support only - not a diagnosis.")
    camera = SimulatedVendorCamera(images, frames_per_image=args.frames_per_image)
    camera.register_callback(assistant.on_frame)  # the SDK calls us for every frame
    # A new slide starts a new vote: the old slide's frames must not vote on it.
    camera.register_slide_change(assistant.reset)
    camera.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

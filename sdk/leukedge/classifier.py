"""``leukedge.Classifier``: ALL/HEM calls for single cells or smear fields, on the CPU.

In the manner of MediaPipe Tasks' ``ImageClassifier``: an options dataclass, constructors
``Classifier()`` (the embedded default model), ``Classifier.from_model_path(path)`` and
``Classifier.create_from_options(options)``, and three running modes:

- ``classify(image)``: one still image (file, PIL image or RGB array);
- ``classify_for_video(frame, timestamp_ms)``: frames of a stream in time order, as from a
  microscope camera; results carry the timestamp;
- ``classify_async(frame, timestamp_ms)``: non-blocking; the result goes to
  ``options.result_callback`` from a worker thread; frames arriving while one is being
  classified are dropped (latest-frame-wins), so a live preview never lags behind.

Data flows one way: image → :mod:`leukedge.preprocess` → :class:`~leukedge.runtime.TFLiteEngine`
→ probabilities → :class:`ClassificationResult`.
"""

from __future__ import annotations

import enum
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from leukedge.calibration import apply_temperature
from leukedge.metadata import InputSpec, ModelMetadata, read_metadata
from leukedge.preprocess import ImageInput, load_rgb, resize_rgb
from leukedge.runtime import TFLiteEngine

DEFAULT_MODEL = "leukedge_default_int8.tflite"
"""File name of the embedded default model under ``leukedge/models/``."""


def default_model_path() -> Path:
    """Path of the embedded default model (int8, trained on the Taleqani training blocks)."""
    return Path(str(resources.files("leukedge") / "models" / DEFAULT_MODEL))


class RunningMode(enum.Enum):
    """How the classifier is fed (MediaPipe Tasks' three modes)."""

    IMAGE = "image"
    VIDEO = "video"
    LIVE_STREAM = "live_stream"


@dataclass
class ClassificationResult:
    """One classification.

    Attributes:
        label: the most probable class (``"ALL"`` or ``"HEM"``).
        probabilities: ``{label: probability}``, floats in [0, 1] summing to ~1 (int8 models
            move in steps of 1/256).
        score: probability of ``label``.
        model_name, model_version: from the model's metadata.
        source: file path, when the input was a file.
        timestamp_ms: the frame's timestamp in video and live-stream modes.
    """

    label: str
    probabilities: dict[str, float]
    score: float
    model_name: str
    model_version: str
    source: str | None = None
    timestamp_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "score": self.score,
            "model": self.model_name,
            "model_version": self.model_version,
            "source": self.source,
            "timestamp_ms": self.timestamp_ms,
        }


@dataclass
class ClassifierOptions:
    """Everything configurable about a :class:`Classifier`.

    Attributes:
        model_path: ``.tflite`` file; ``None`` = the embedded default model.
        num_threads: interpreter CPU threads (``None`` = runtime default; 2–4 on a Pi 4/5).
        running_mode: :class:`RunningMode`.
        result_callback: ``callback(result | None, frame, timestamp_ms, error | None)`` for
            ``LIVE_STREAM`` mode (required there, refused elsewhere).
        labels: class names for a model without leukedge metadata (required then).
        input_kind: ``"cell"`` or ``"field"`` for a model without metadata.
    """

    model_path: str | os.PathLike | None = None
    num_threads: int | None = None
    running_mode: RunningMode = RunningMode.IMAGE
    result_callback: Callable[..., None] | None = None
    labels: list[str] | None = None
    input_kind: str | None = None


class Classifier:
    """ALL/HEM image classifier over a leukedge ``.tflite`` model.

    Args:
        options: :class:`ClassifierOptions`; default: embedded model, image mode.

    Raises:
        FileNotFoundError: the model file does not exist.
        leukedge.runtime.ModelLoadError: not a valid TFLite classifier.
        ValueError: the model has no leukedge metadata and ``options.labels`` is not given,
            the labels do not match the output width, or the callback does not fit the mode.
    """

    def __init__(self, options: ClassifierOptions | None = None):
        self.options = options or ClassifierOptions()
        try:
            self.options.running_mode = RunningMode(self.options.running_mode)
        except ValueError as exc:
            raise ValueError(
                f"unknown running_mode {self.options.running_mode!r}; choose "
                f"{[m.value for m in RunningMode]}"
            ) from exc
        mode = self.options.running_mode
        if (mode is RunningMode.LIVE_STREAM) != (self.options.result_callback is not None):
            raise ValueError("result_callback is required in LIVE_STREAM mode and only there")
        path = Path(self.options.model_path) if self.options.model_path else default_model_path()
        self.model_path = path
        self._engine = TFLiteEngine(path, num_threads=self.options.num_threads)
        self.metadata = self._metadata_or_defaults(path)
        if len(self.metadata.labels) != self._engine.num_classes:
            raise ValueError(
                f"{path}: {len(self.metadata.labels)} labels for {self._engine.num_classes} outputs"
            )
        self._last_timestamp: int | None = None
        self._busy = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _metadata_or_defaults(self, path: Path) -> ModelMetadata:
        metadata = read_metadata(self._engine.model_content)
        if metadata is not None:
            if self.options.labels and list(self.options.labels) != metadata.labels:
                warnings.warn(
                    f"{path}: labels {self.options.labels} ignored; the model's metadata "
                    f"says {metadata.labels}",
                    stacklevel=3,
                )
            return metadata
        if not self.options.labels:
            raise ValueError(
                f"{path}: no leukedge metadata in this model; give the class names in output "
                "order (ClassifierOptions.labels / --labels ALL,HEM) and the input kind"
            )
        warnings.warn(
            f"{path}: no leukedge metadata; using labels {self.options.labels} and "
            "RGB 0-255 input as given by the caller",
            stacklevel=3,
        )
        height, width = self._engine.input_size
        return ModelMetadata(
            name=path.stem,
            labels=list(self.options.labels),
            input=InputSpec(height=height, width=width, kind=self.options.input_kind or "field"),
        )

    # ---------------------------------------------------------------- constructors
    @classmethod
    def create_from_options(cls, options: ClassifierOptions) -> Classifier:
        """Build from :class:`ClassifierOptions`."""
        return cls(options)

    @classmethod
    def from_model_path(cls, path: str | os.PathLike, **kwargs: Any) -> Classifier:
        """Image-mode classifier for the ``.tflite`` at ``path`` (other options as keywords)."""
        return cls(ClassifierOptions(model_path=path, **kwargs))

    create_from_model_path = from_model_path

    # ---------------------------------------------------------------- properties
    @property
    def labels(self) -> list[str]:
        """Class names in output order."""
        return list(self.metadata.labels)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` the model takes, pixels."""
        return self._engine.input_size

    # ---------------------------------------------------------------- running modes
    def _classify_rgb(
        self, rgb: np.ndarray, source: str | None, timestamp_ms: int | None
    ) -> ClassificationResult:
        probs = apply_temperature(
            self._engine.run(resize_rgb(rgb, self._engine.input_size)),
            float(self.metadata.temperature or 1.0),
        )
        best = int(np.argmax(probs))
        return ClassificationResult(
            label=self.metadata.labels[best],
            probabilities={lb: float(p) for lb, p in zip(self.metadata.labels, probs, strict=True)},
            score=float(probs[best]),
            model_name=self.metadata.name,
            model_version=self.metadata.version,
            source=source,
            timestamp_ms=timestamp_ms,
        )

    def _require(self, mode: RunningMode) -> None:
        if self.options.running_mode is not mode:
            raise ValueError(
                f"this classifier runs in {self.options.running_mode.name} mode; "
                f"create it with running_mode=RunningMode.{mode.name}"
            )

    def classify(self, image: ImageInput) -> ClassificationResult:
        """Classify one image (``IMAGE`` mode).

        Args:
            image: a path, a ``PIL.Image`` or an RGB ``uint8`` array ``(H, W, 3)``; any size
                (resized to :attr:`input_size`, whole image, bilinear).

        Returns:
            :class:`ClassificationResult`.

        Raises:
            FileNotFoundError, leukedge.preprocess.ImageDecodeError: unreadable input.
            ValueError: wrong running mode.
        """
        self._require(RunningMode.IMAGE)
        source = None if isinstance(image, np.ndarray | Image.Image) else str(image)
        return self._classify_rgb(load_rgb(image), source, None)

    def classify_for_video(self, frame: np.ndarray, timestamp_ms: int) -> ClassificationResult:
        """Classify one frame of a video stream (``VIDEO`` mode).

        Args:
            frame: RGB ``uint8`` ``(H, W, 3)`` (convert OpenCV's BGR with
                ``cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)``).
            timestamp_ms: the frame's time in milliseconds; must increase monotonically.

        Raises:
            ValueError: wrong mode or a timestamp not after the previous one.
        """
        self._require(RunningMode.VIDEO)
        self._check_timestamp(timestamp_ms)
        result = self._classify_rgb(load_rgb(frame), None, timestamp_ms)
        self._last_timestamp = timestamp_ms  # a frame that failed does not use up its time
        return result

    def classify_async(self, frame: np.ndarray, timestamp_ms: int) -> bool:
        """Queue one frame for classification (``LIVE_STREAM`` mode); returns at once.

        The result (or the error) is delivered to ``options.result_callback`` from a worker
        thread. A frame that arrives while another is being classified is dropped.

        Returns:
            ``True`` if the frame was accepted, ``False`` if it was dropped.

        Raises:
            ValueError: wrong mode or a timestamp not after the previous one.
        """
        self._require(RunningMode.LIVE_STREAM)
        self._check_timestamp(timestamp_ms)
        if not self._busy.acquire(blocking=False):
            return False
        self._last_timestamp = timestamp_ms
        frame = np.array(frame, copy=True)

        def work() -> None:
            # The lock is held until the callback returns: one callback at a time, in
            # timestamp order; frames arriving meanwhile are dropped (latest frame wins).
            try:
                try:
                    result = self._classify_rgb(load_rgb(frame), None, timestamp_ms)
                    error = None
                except Exception as exc:  # noqa: BLE001 - reported to the callback
                    result, error = None, exc
                self.options.result_callback(result, frame, timestamp_ms, error)
            finally:
                self._busy.release()

        thread = threading.Thread(target=work, daemon=True, name="leukedge-classify")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return True

    def _check_timestamp(self, timestamp_ms: int) -> None:
        if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int | np.integer):
            raise ValueError(
                f"timestamp_ms must be an integer (milliseconds), got {timestamp_ms!r}"
            )
        if self._last_timestamp is not None and timestamp_ms <= self._last_timestamp:
            raise ValueError(
                f"timestamp {timestamp_ms} ms is not after the previous {self._last_timestamp} ms"
            )

    def close(self) -> None:
        """Wait for queued live-stream work to finish."""
        for thread in self._threads:
            thread.join()
        self._threads = []

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

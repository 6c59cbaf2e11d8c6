"""``leukedge.Classifier``: ALL/HEM calls for single cells or smear fields, on the CPU.

In the manner of MediaPipe Tasks' ``ImageClassifier``: an options dataclass, constructors
``Classifier()`` (the embedded default model), ``Classifier.create_from_model_path(path)``
and ``Classifier.create_from_options(options)``, and three running modes:

- ``classify(image)``: one still image (file, PIL image or array); safe from many threads;
- ``classify_for_video(frame, timestamp_ms)``: frames of a stream in time order, as from a
  microscope camera; results carry the timestamp;
- ``classify_async(frame, timestamp_ms)``: non-blocking; the result goes to
  ``options.result_callback`` from a worker thread; frames arriving while one is being
  classified are dropped (latest-frame-wins), so a live preview never lags behind.

Data flows one way (``classify`` and the other modes alike): decode
(:mod:`leukedge.engine.preprocess`, in the caller's thread) → resize to the model's input →
quality statistics and checks (:mod:`leukedge.checks.quality`) → interpreter
(:class:`~leukedge.engine.pool.EnginePool`: probabilities and, when the model has one, the
embedding) → temperature (:mod:`leukedge.checks.calibration`) → out-of-domain distance
(:mod:`leukedge.checks.ood`) → operating point and refer band (:mod:`leukedge.checks.decision`) →
:class:`ClassificationResult` with a ``status``. The model runs even when a quality check
fails, so a rejected result still shows what it would have said.

Over 400 lines on purpose: one class whose methods share one state (the engine pool, the
checks configured from the model's metadata, the running mode, the pixel budget and the
async worker), and the vocabulary its methods take and return (options, result, statuses,
reasons, running modes). The work itself is in :mod:`leukedge.engine` and
:mod:`leukedge.checks`. The result and its vocabulary are the seam to cut when a second
producer of results arrives (per-cell results on a field, issue 20).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import os
import threading
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from leukedge.cells.field import FIELD_REASONS, FieldOptions, FieldResult, classify_field
from leukedge.checks.calibration import temperature_scaled
from leukedge.checks.decision import decide, validate_operating_point
from leukedge.checks.ood import MahalanobisScorer
from leukedge.checks.quality import (
    QUALITY_REASONS,
    QualityThresholds,
    check_quality,
    image_statistics,
)
from leukedge.engine.interpreter import TFLiteEngine
from leukedge.engine.metadata import (
    InputSpec,
    ModelMetadata,
    check_gate,
    read_metadata,
    weights_sha256,
)
from leukedge.engine.pool import EnginePool, default_pool_size
from leukedge.engine.preprocess import (
    DEFAULT_MAX_PIXELS,
    ImageInput,
    PixelBudget,
    PixelFormat,
    decode_size,
    load_resized,
    resolve_pixel_format,
)
from leukedge.errors import LeukedgeWarning

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


STATUSES = ("ok", "refer", "rejected", "error")
"""Every result's ``status``: ``ok`` (a call), ``refer`` (no call: the probability lies in
the refer band; a person should look), ``rejected`` (the input failed a quality check or is
out of domain; the model's opinion is kept apart in ``model_label``), ``error`` (the input
could not be processed)."""

ERROR_REASONS = ("not_found", "decode_error", "too_large", "error")
"""``reason`` of ``error`` results (:meth:`ClassificationResult.from_error`)."""

REASONS = (*QUALITY_REASONS, "out_of_domain", "uncertain", *FIELD_REASONS, *ERROR_REASONS)
"""Every machine-readable ``reason``: the quality checks in the order they run
(:data:`leukedge.checks.quality.QUALITY_REASONS`), ``out_of_domain`` (the embedding lies farther
from the training data than the model's threshold), ``uncertain`` (``refer``: in the refer
band; for a field classified cell by cell: its cells' interval is not clear of one half), the
field reasons (:data:`leukedge.cells.field.FIELD_REASONS`: ``no_white_cells``,
``no_red_cells``; :meth:`Classifier.classify_field`) and the error reasons
(:data:`ERROR_REASONS`)."""


@dataclass
class ClassificationResult:
    """One classification, with a status that says whether to act on it.

    Attributes:
        label: the call, **only when** ``status == "ok"`` (``"ALL"`` or ``"HEM"``); ``None``
            otherwise.
        probabilities: ``{label: probability}`` (calibrated), floats in [0, 1] summing to ~1
            (int8 models move in steps of 1/256); for ``ok`` and ``refer``, else ``None``.
        score: probability of ``label`` (for ``refer``: of ``model_label``); ``None`` when
            ``probabilities`` is.
        model_name, model_version: from the model's metadata.
        status: one of :data:`STATUSES`.
        reason: ``None`` when ``ok``, else one of :data:`REASONS` (the first that applies).
        message: one sentence for a person (the figures and thresholds behind ``reason``).
        model_label: what the model calls the image at its operating point, whenever it ran
            (every status but ``error``), also when rejected: never act on it alone.
        model_probabilities: the calibrated probabilities behind ``model_label``.
        ood_distance: squared Mahalanobis distance of the image's embedding from the
            training data (:mod:`leukedge.checks.ood`); ``None`` when the model has no embedding
            output or out-of-domain data.
        quality: the measured :class:`~leukedge.checks.quality.QualityStatistics` as a dictionary.
        failed_checks: every check that failed, in order (``reason`` is the first).
        unchecked: checks this model cannot run (no thresholds or no embedding output).
        source: file path, when the input was a file.
        timestamp_ms: the frame's timestamp in video and live-stream modes.
        heatmap: with ``ClassifierOptions(explain=True)``: where the model found the evidence
            for ``model_label``, ``(H, W)`` float32 in [0, 1] at the decoded image's size
            (:mod:`leukedge.engine.heatmap`); ``None`` otherwise. Not in :meth:`to_dict`.
        heatmap_method: ``class_activation_map`` or ``occlusion``
            (:data:`~leukedge.engine.heatmap.HEATMAP_METHODS`), ``None`` without a map.
    """

    label: str | None
    probabilities: dict[str, float] | None
    score: float | None
    model_name: str
    model_version: str
    status: str = "ok"
    reason: str | None = None
    message: str | None = None
    model_label: str | None = None
    model_probabilities: dict[str, float] | None = None
    ood_distance: float | None = None
    quality: dict[str, float | int] | None = None
    failed_checks: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    source: str | None = None
    timestamp_ms: int | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)
    heatmap_method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary: the one JSON shape of a result (``leukedge classify
        --json`` prints it, adding ``path`` and ``error``)."""
        return {
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "label": self.label,
            "probabilities": self.probabilities,
            "score": self.score,
            "model_label": self.model_label,
            "model_probabilities": self.model_probabilities,
            "ood_distance": self.ood_distance,
            "quality": self.quality,
            "failed_checks": list(self.failed_checks),
            "unchecked": list(self.unchecked),
            "model": self.model_name,
            "model_version": self.model_version,
            "source": self.source,
            "timestamp_ms": self.timestamp_ms,
        }

    @classmethod
    def from_error(
        cls,
        error: BaseException,
        source: str | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> ClassificationResult:
        """The ``error`` result for an input that could not be processed.

        ``reason``: ``not_found`` (:class:`FileNotFoundError`), ``too_large`` or
        ``decode_error`` (:class:`~leukedge.engine.preprocess.ImageDecodeError`'s ``reason``),
        else ``error``; ``message``: the error's text.
        """
        from leukedge.engine.preprocess import ImageDecodeError

        if isinstance(error, FileNotFoundError):
            reason = "not_found"
        elif isinstance(error, ImageDecodeError):
            reason = error.reason
        else:
            reason = "error"
        return cls(
            label=None,
            probabilities=None,
            score=None,
            model_name=model_name,
            model_version=model_version,
            status="error",
            reason=reason,
            message=str(error) or type(error).__name__,
            source=source,
        )


class ResultCallback(Protocol):
    """What ``LIVE_STREAM`` mode calls with each frame's outcome, on a worker thread.

    Args:
        result: the :class:`ClassificationResult`, or ``None`` if the frame failed.
        frame: the frame as passed to :meth:`Classifier.classify_async` (a copy).
        timestamp_ms: the frame's timestamp.
        error: the exception that made the frame fail (e.g.
            :class:`~leukedge.engine.preprocess.ImageDecodeError`), else ``None``.

    Callbacks run one at a time, in timestamp order; frames arriving meanwhile are dropped.
    """

    def __call__(
        self,
        result: ClassificationResult | None,
        frame: np.ndarray,
        timestamp_ms: int,
        error: Exception | None,
    ) -> None: ...


@dataclass
class ClassifierOptions:
    """Everything configurable about a :class:`Classifier`.

    Attributes:
        model_path: ``.tflite`` file; ``None`` (and no ``model_content``) = the embedded
            default model.
        model_content: the ``.tflite`` file's bytes instead of a path (e.g. from a
            package resource or a database); exclusive with ``model_path``.
        num_threads: CPU threads per interpreter (``None`` = runtime default, 1 for LiteRT).
            One thread per interpreter gives the best throughput when several threads
            classify; more threads lower the latency of a single caller.
        max_interpreters: most interpreters the classifier creates for concurrent
            ``classify`` calls (created only when all are busy); ``None`` =
            ``max(1, cores // num_threads)``; ``1`` = one interpreter behind a lock.
        max_pixels: refuse images of more pixels (width × height) than this, from the
            file's header before decoding, and decode at most this many pixels at once over
            all threads sharing the classifier, so that a whole run's peak memory is
            bounded, not one image's (:class:`~leukedge.engine.preprocess.PixelBudget`); default
            50 MP (:data:`~leukedge.engine.preprocess.DEFAULT_MAX_PIXELS`). Large JPEGs are budgeted
            at their reduced decode size (:func:`~leukedge.engine.preprocess.decode_size`).
            ``None`` (Python only): no cap and no budget.
        running_mode: :class:`RunningMode`.
        result_callback: a :class:`ResultCallback`, for ``LIVE_STREAM`` mode (required
            there, refused elsewhere).
        labels: class names for a model without leukedge metadata (required then).
        input_kind: ``"cell"`` or ``"field"`` for a model without metadata.
        decision_threshold: call the positive class (ALL) when its calibrated probability
            is ≥ this; ``None``: the model's operating point (its metadata's ``decision``),
            or 0.5 (the arg-max) for a model without one. Overriding the threshold without
            ``refer_band`` uses no band (the model's band belongs to its threshold).
        refer_band: ``(low, high)``: ``low ≤ p < high`` → ``refer``; must contain the
            threshold; an empty band (``low == high``, e.g. ``(0, 0)``) turns it off;
            ``None``: the model's band.
        quality: :class:`~leukedge.checks.quality.QualityThresholds` replacing the model's
            (``None``: the model's, or the built-in
            :meth:`~leukedge.checks.quality.QualityThresholds.generic` for models without them).
        ood_threshold: squared-distance threshold replacing the model's (``math.inf``
            turns the out-of-domain check off); ``None``: the model's.
        explain: also make each result's ``heatmap`` (where the model looked): from the
            model's class activation map output in the same invoke when it has one (model v3:
            microseconds), else by occlusion (49 more invokes); off by default.
        allow_failed_gate: use a model whose card says it failed its conversion's accuracy
            gate (default ``False``: such a model raises
            :class:`~leukedge.engine.metadata.FailedGateError`); with ``True`` it loads with a
            :class:`~leukedge.errors.LeukedgeWarning` naming the gate's figures. Models
            without leukedge metadata or without a gate record are not affected.
    """

    model_path: str | os.PathLike | None = None
    model_content: bytes | None = None
    num_threads: int | None = None
    max_interpreters: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    running_mode: RunningMode = RunningMode.IMAGE
    result_callback: ResultCallback | None = None
    labels: list[str] | None = None
    input_kind: str | None = None
    decision_threshold: float | None = None
    refer_band: tuple[float, float] | None = None
    quality: QualityThresholds | None = None
    ood_threshold: float | None = None
    explain: bool = False
    allow_failed_gate: bool = False


class Classifier:
    """ALL/HEM image classifier over a leukedge ``.tflite`` model.

    Threads: in ``IMAGE`` mode one classifier may be shared by any number of threads, and
    every call returns exactly what it would return alone. Decoding and resizing run in
    the calling thread, outside any lock, so they overlap with inference; inference runs on
    one of up to ``options.max_interpreters`` interpreters (an
    :class:`~leukedge.engine.pool.EnginePool`, grown only while all are busy; a call waits
    when none is free). ``VIDEO`` and ``LIVE_STREAM`` modes expect one producer thread,
    since their timestamps must increase; live-stream callbacks run on a worker thread, one
    at a time.

    Args:
        options: :class:`ClassifierOptions`; default: embedded model, image mode.

    Raises:
        FileNotFoundError: the model file does not exist.
        leukedge.engine.interpreter.ModelLoadError: not a valid TFLite classifier.
        leukedge.engine.interpreter.RuntimeNotFoundError: no usable TFLite interpreter package.
        leukedge.engine.metadata.MetadataError: the model's leukedge metadata is malformed.
        leukedge.engine.metadata.FailedGateError: the model's card says it failed its accuracy
            gate and ``options.allow_failed_gate`` is not set.
        ValueError: both ``model_path`` and ``model_content``; the model has no leukedge
            metadata and ``options.labels`` is not given, the labels do not match the
            output width, the callback does not fit the mode, or the decision threshold /
            refer band is out of range (a band must contain the threshold) or given for a
            model with other than two classes.

    Warns:
        LeukedgeWarning: once, at load, when the model cannot run every check (no
            out-of-domain data or embedding output; no quality thresholds): those checks
            are listed in every result's ``unchecked``; and when a model that failed its
            gate is used with ``allow_failed_gate``.
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
        if self.options.max_interpreters is not None and self.options.max_interpreters < 1:
            raise ValueError(f"max_interpreters must be >= 1, got {self.options.max_interpreters}")
        if self.options.model_content is not None:
            if self.options.model_path is not None:
                raise ValueError("give model_path or model_content, not both")
            self.model_path: Path | None = None
            engine = TFLiteEngine(bytes(self.options.model_content), self.options.num_threads)
        else:
            path = Path(self.options.model_path or default_model_path())
            self.model_path = path
            engine = TFLiteEngine(path, num_threads=self.options.num_threads)
        self._engine = engine
        self._pool = EnginePool(
            engine,
            self.options.max_interpreters or default_pool_size(self.options.num_threads),
        )
        self.metadata = self._metadata_or_defaults(engine.origin)
        allowed = check_gate(self.metadata, engine.origin, self.options.allow_failed_gate)
        if allowed is not None:
            warnings.warn(allowed, LeukedgeWarning, stacklevel=2)
        if len(self.metadata.labels) != engine.num_classes:
            raise ValueError(
                f"{engine.origin}: {len(self.metadata.labels)} labels for "
                f"{engine.num_classes} outputs"
            )
        self._decode_size = decode_size(engine.input_size)
        cap = self.options.max_pixels
        self.pixel_budget = PixelBudget(cap) if cap is not None else None
        self._temperature = float(self.metadata.temperature or 1.0)
        self._configure_checks(engine.origin)
        self._last_timestamp: int | None = None
        self._busy = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _metadata_or_defaults(self, origin: str) -> ModelMetadata:
        metadata = read_metadata(self._engine.model_content)
        if metadata is not None:
            if self.options.labels and list(self.options.labels) != metadata.labels:
                warnings.warn(
                    f"{origin}: labels {self.options.labels} ignored; the model's metadata "
                    f"says {metadata.labels}",
                    LeukedgeWarning,
                    stacklevel=3,
                )
            return metadata
        if not self.options.labels:
            raise ValueError(
                f"{origin}: no leukedge metadata in this model; give the class names in "
                "output order (ClassifierOptions.labels / --labels ALL,HEM) and the input kind"
            )
        warnings.warn(
            f"{origin}: no leukedge metadata; using labels {self.options.labels} and "
            "RGB 0-255 input as given by the caller",
            LeukedgeWarning,
            stacklevel=3,
        )
        height, width = self._engine.input_size
        return ModelMetadata(
            name=Path(origin).stem if self.model_path else "model",
            labels=list(self.options.labels),
            input=InputSpec(height=height, width=width, kind=self.options.input_kind or "field"),
        )

    def _configure_checks(self, origin: str) -> None:
        """Quality thresholds, out-of-domain scorer and operating point: the model's,
        overridden by the options; one warning for whatever the model cannot check."""
        meta, opts = self.metadata, self.options
        self.quality_thresholds = (
            opts.quality or meta.quality or QualityThresholds.generic(min(self.input_size))
        )
        missing = []
        if opts.quality is None and meta.quality is None:
            missing.append(
                "no quality thresholds (only the built-in too_small and blank checks run)"
            )
        self._scorer: MahalanobisScorer | None = None
        if meta.ood is None:
            why = "no embedding output" if self._engine.embedding_dim is None else "no OOD data"
            missing.append(f"out-of-domain check unavailable ({why})")
        elif meta.ood.embedding_dim != self._engine.embedding_dim:
            missing.append(
                f"out-of-domain check unavailable (metadata expects a {meta.ood.embedding_dim}"
                f"-d embedding, the model outputs {self._engine.embedding_dim})"
            )
        else:
            self._scorer = MahalanobisScorer(meta.ood)
        self.ood_threshold = (
            None
            if self._scorer is None
            else float(opts.ood_threshold if opts.ood_threshold is not None else meta.ood.threshold)
        )
        self.unchecked = self.quality_thresholds.unchecked() + (
            ["out_of_domain"] if self._scorer is None else []
        )
        if missing:
            warnings.warn(
                f"{origin}: " + "; ".join(missing) + ". Inputs unlike the training images may "
                "get confident calls; re-convert the model with this leukedge to add them.",
                LeukedgeWarning,
                stacklevel=3,
            )
        spec = meta.decision
        positive = spec.positive_label if spec else meta.positive_label
        binary = len(meta.labels) == 2 and positive in meta.labels
        overridden = opts.decision_threshold is not None or opts.refer_band is not None
        if overridden and not binary:
            raise ValueError(
                f"{origin}: a decision threshold or refer band needs two classes with a "
                f"positive one, the model has {meta.labels} (positive {positive!r})"
            )
        self._positive = meta.labels.index(positive) if binary else None
        if opts.decision_threshold is not None:
            threshold = float(opts.decision_threshold)
            band = opts.refer_band
        else:
            threshold = spec.threshold if spec else 0.5
            band = opts.refer_band if opts.refer_band is not None else (spec and spec.refer_band)
        if band is not None and float(band[0]) == float(band[1]):
            band = None  # an empty band: no refer band
        band = None if band is None else (float(band[0]), float(band[1]))
        validate_operating_point(threshold, band)
        self.decision_threshold = threshold if binary else None
        self.refer_band = band if binary else None

    # ---------------------------------------------------------------- constructors
    @classmethod
    def create_from_options(cls, options: ClassifierOptions) -> Classifier:
        """Build from :class:`ClassifierOptions`."""
        return cls(options)

    @classmethod
    def create_from_model_path(cls, path: str | os.PathLike, **options: Any) -> Classifier:
        """Image-mode classifier for the ``.tflite`` at ``path``; other
        :class:`ClassifierOptions` fields as keywords (e.g. ``num_threads=2``)."""
        return cls(ClassifierOptions(model_path=path, **options))

    # ---------------------------------------------------------------- properties
    @property
    def labels(self) -> list[str]:
        """Class names in output order."""
        return list(self.metadata.labels)

    @property
    def output_dtype(self) -> np.dtype:
        """NumPy dtype of the model's probabilities tensor (``uint8`` for int8 models)."""
        return self._engine.output_dtype

    @property
    def output_quantization(self) -> tuple[float, int]:
        """``(scale, zero_point)`` of the probabilities tensor; ``(0.0, 0)`` if float. Its
        probabilities move in steps of the scale (1/256 for int8 models)."""
        return self._engine.output_quantization

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` the model takes, pixels."""
        return self._engine.input_size

    @property
    def max_interpreters(self) -> int:
        """Most interpreters this classifier runs at once (its pool size)."""
        return self._pool.size

    @functools.cached_property
    def model_sha256(self) -> str:
        """SHA-256 of the ``.tflite`` bytes (hex), so a result can be traced to the exact
        model file (``sha256sum model.tflite`` prints the same)."""
        return hashlib.sha256(self._engine.model_content).hexdigest()

    @functools.cached_property
    def weights_sha256(self) -> str:
        """SHA-256 of the model's weights alone (hex;
        :func:`~leukedge.engine.metadata.weights_sha256`): unchanged when only the metadata is
        rewritten (``train evaluate --update-card``), which changes :attr:`model_sha256`."""
        return weights_sha256(self._engine.model_content)

    # ---------------------------------------------------------------- running modes
    def _load(
        self, image: ImageInput, pixel_format: PixelFormat | None
    ) -> tuple[np.ndarray, tuple[int, int]]:
        """Decode and resize in the calling thread (no lock); also the decoded size.

        A file's decode is held in :attr:`pixel_budget` until it is resized (and freed).
        """
        budget = self.pixel_budget
        with budget.claim() if budget is not None else contextlib.nullcontext() as reserve:
            return load_resized(
                image,
                self._engine.input_size,
                pixel_format=pixel_format,
                max_pixels=self.options.max_pixels,
                min_size=self._decode_size,
                reserve=reserve,
            )  # the full-size decode is freed before the budget is given back

    def _classify_resized(
        self,
        loaded: tuple[np.ndarray, tuple[int, int]],
        source: str | None,
        timestamp_ms: int | None,
    ) -> ClassificationResult:
        rgb, decoded_size = loaded
        # The red-cell estimate costs a few ms: only for models that carry a range.
        red_cells = self.quality_thresholds.red_cell_diameter_range is not None
        stats = image_statistics(rgb, decoded_size, red_cells=red_cells)
        failures = [(f.reason, f.message) for f in check_quality(stats, self.quality_thresholds)]
        # The probabilities stay plain Python: NumPy calls on these few numbers, right after
        # the invoke, would cost more than the rest of the SDK's own work (README,
        # "Performance": SDK overhead).
        cam = None
        if self.options.explain and self._engine.cam_shape is not None:
            raw_array, embedding, cam = self._pool.run_with_cam(rgb)
            raw = [float(v) for v in raw_array]
        else:
            raw, embedding = self._pool.probabilities_with_embedding(rgb)
        probs = temperature_scaled(raw, self._temperature)
        labels = self.metadata.labels
        distance = None
        if self._scorer is not None and embedding is not None:
            distance = self._scorer.distances(embedding)
            if distance > self.ood_threshold:
                failures.append(
                    (
                        "out_of_domain",
                        f"out of domain: distance {distance:.4g} from the training images > "
                        f"{self.ood_threshold:.4g}, which "
                        f"{100 * self.metadata.ood.threshold_quantile:g} % of validation "
                        "images stay within: unlike anything the model was trained on",
                    )
                )
        if self._positive is None:  # not a two-class model: the arg-max, no band
            model_index = max(range(len(probs)), key=probs.__getitem__)
            status, p_positive = "ok", None
        else:
            p_positive = float(probs[self._positive])
            decision = decide(p_positive, self.decision_threshold, self.refer_band)
            other = 1 - self._positive
            model_index = self._positive if decision.positive else other
            status = decision.status
        model_label = labels[model_index]
        probabilities = {lb: float(p) for lb, p in zip(labels, probs, strict=True)}
        result = ClassificationResult(
            label=None,
            probabilities=None,
            score=None,
            model_name=self.metadata.name,
            model_version=self.metadata.version,
            model_label=model_label,
            model_probabilities=probabilities,
            ood_distance=None if distance is None else float(distance),
            quality=stats.to_dict(),
            failed_checks=[reason for reason, _ in failures],
            unchecked=list(self.unchecked),
            source=source,
            timestamp_ms=timestamp_ms,
        )
        if self.options.explain:
            self._explain(result, rgb, cam, model_index, decoded_size)
        if failures:
            result.status, result.reason = "rejected", failures[0][0]
            also = [reason for reason, _ in failures[1:]]
            result.message = failures[0][1] + (f" (also: {', '.join(also)})" if also else "")
            return result
        result.probabilities, result.score = probabilities, float(probs[model_index])
        positive_name = None if self._positive is None else labels[self._positive]
        if status == "refer":
            low, high = self.refer_band
            result.status, result.reason = "refer", "uncertain"
            result.message = (
                f"uncertain: p({positive_name}) {p_positive:.3f} lies in the refer band "
                f"[{low:.3f}, {high:.3f}); a person should look"
            )
            return result
        result.label = model_label
        if p_positive is None:
            result.message = f"{model_label}: the most probable class (p {result.score:.3f})"
        else:
            sign = "≥" if model_index == self._positive else "<"
            result.message = (
                f"{model_label}: p({positive_name}) {p_positive:.3f} {sign} operating "
                f"threshold {self.decision_threshold:.3f}"
            )
        return result

    def _explain(
        self,
        result: ClassificationResult,
        rgb: np.ndarray,
        cam: np.ndarray | None,
        class_index: int,
        decoded_size: tuple[int, int],
    ) -> None:
        """Set ``result.heatmap`` for ``class_index`` (the model's call) at the decoded size:
        the class activation map when the model has one, else occlusion."""
        from leukedge.engine.heatmap import cam_heatmap, occlusion_heatmap

        if cam is not None:
            result.heatmap = cam_heatmap(cam, class_index, decoded_size)
            result.heatmap_method = "class_activation_map"
        else:
            result.heatmap = occlusion_heatmap(
                lambda x: np.asarray(self._pool.probabilities_with_embedding(x)[0]),
                rgb,
                class_index,
                decoded_size,
            )
            result.heatmap_method = "occlusion"

    def _require(self, mode: RunningMode) -> None:
        if self.options.running_mode is not mode:
            raise ValueError(
                f"this classifier runs in {self.options.running_mode.name} mode; "
                f"create it with running_mode=RunningMode.{mode.name}"
            )

    def classify(
        self, image: ImageInput, *, pixel_format: PixelFormat | None = None
    ) -> ClassificationResult:
        """Classify one image (``IMAGE`` mode); safe to call from several threads at once.

        Args:
            image: a path, a ``PIL.Image`` or a ``uint8`` array ``(H, W, 3)``, ``(H, W, 4)``
                or ``(H, W)`` (grey); any size (resized whole to :attr:`input_size`,
                bilinear).
            pixel_format: channel order of an array: ``"RGB"`` (default for 3 channels),
                ``"BGR"`` (OpenCV), ``"RGBA"``, ``"BGRA"``, ``"RGBX"``, ``"BGRX"``; required
                for 4 channels. Picamera2: ``"RGB888"`` → ``"BGR"``, ``"BGR888"`` →
                ``"RGB"``, ``"XRGB8888"`` → ``"BGRX"``, ``"XBGR8888"`` → ``"RGBX"`` (see
                :func:`leukedge.engine.preprocess.array_to_rgb`). Not for files or PIL images.

        Returns:
            :class:`ClassificationResult` with a ``status``: ``ok`` (a ``label``),
            ``refer`` or ``rejected`` (no ``label``; the model's opinion in
            ``model_label``). Unreadable inputs raise instead (the CLI reports them as
            ``error`` results via :meth:`ClassificationResult.from_error`).

        Raises:
            FileNotFoundError, leukedge.engine.preprocess.ImageDecodeError: unreadable input, or
                larger than ``options.max_pixels``.
            ValueError: wrong running mode; a missing, unknown or mismatched
                ``pixel_format``.
        """
        self._require(RunningMode.IMAGE)
        source = None if isinstance(image, np.ndarray | Image.Image) else str(image)
        return self._classify_resized(self._load(image, pixel_format), source, None)

    def classify_field(
        self,
        image: ImageInput,
        options: FieldOptions | None = None,
        *,
        pixel_format: PixelFormat | None = None,
    ) -> FieldResult:
        """Classify a smear field cell by cell with a cell model (``IMAGE`` mode): locate
        the white cells, classify each one's crop on black, and call the field from the
        ALL fraction of the ok cell calls with its Wilson interval
        (:func:`leukedge.cells.field.classify_field`, whose docstring has the details).

        Args:
            image: the field at full resolution (path, ``PIL.Image`` or ``uint8`` array).
            options: :class:`~leukedge.cells.field.FieldOptions` (locator, crop size, call
                rule); ``None``: defaults.
            pixel_format: an array's channel order, as in :meth:`classify`.

        Returns:
            :class:`~leukedge.cells.field.FieldResult`: ``cells`` (box and result each),
            ``cells_found``, ``positive`` of ``cells_ok``, ``fraction`` with ``ci_low`` /
            ``ci_high``, and the field's ``status`` / ``reason`` / ``label`` (``rejected``,
            ``no_white_cells`` for a field without white cells: not an error).

        Raises:
            As :meth:`classify`; ValueError: not a two-class model.
        """
        self._require(RunningMode.IMAGE)
        return classify_field(self, image, options, pixel_format=pixel_format)

    def classify_for_video(
        self, frame: np.ndarray, timestamp_ms: int, *, pixel_format: PixelFormat | None = None
    ) -> ClassificationResult:
        """Classify one frame of a video stream (``VIDEO`` mode).

        Args:
            frame: ``uint8`` ``(H, W, 3)``, ``(H, W, 4)`` or ``(H, W)``.
            timestamp_ms: the frame's time in milliseconds; must increase monotonically.
            pixel_format: the frame's channel order, as in :meth:`classify` (OpenCV frames:
                ``"BGR"``).

        Raises:
            ValueError: wrong mode, a timestamp not after the previous one, or a missing,
                unknown or mismatched ``pixel_format``.
            leukedge.engine.preprocess.ImageDecodeError: not an image array.
        """
        self._require(RunningMode.VIDEO)
        self._check_timestamp(timestamp_ms)
        result = self._classify_resized(self._load(frame, pixel_format), None, timestamp_ms)
        self._last_timestamp = timestamp_ms  # a frame that failed does not use up its time
        return result

    def classify_async(
        self, frame: np.ndarray, timestamp_ms: int, *, pixel_format: PixelFormat | None = None
    ) -> bool:
        """Queue one frame for classification (``LIVE_STREAM`` mode); returns at once.

        The result (or the error) is delivered to ``options.result_callback`` from a worker
        thread. A frame that arrives while another is being classified is dropped.

        Args:
            frame, timestamp_ms, pixel_format: as in :meth:`classify_for_video`.

        Returns:
            ``True`` if the frame was accepted, ``False`` if it was dropped.

        Raises:
            ValueError: wrong mode, a timestamp not after the previous one, or a missing,
                unknown or mismatched ``pixel_format`` (checked here, not in the callback).
        """
        self._require(RunningMode.LIVE_STREAM)
        self._check_timestamp(timestamp_ms)
        if isinstance(frame, np.ndarray):
            resolve_pixel_format(frame.shape, pixel_format)
        if not self._busy.acquire(blocking=False):
            return False
        self._last_timestamp = timestamp_ms
        frame = np.array(frame, copy=True)

        def work() -> None:
            # The lock is held until the callback returns: one callback at a time, in
            # timestamp order; frames arriving meanwhile are dropped (latest frame wins).
            try:
                try:
                    loaded = self._load(frame, pixel_format)
                    result = self._classify_resized(loaded, None, timestamp_ms)
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

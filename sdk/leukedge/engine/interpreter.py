"""The TFLite engine: one interpreter, quantization handled at its edges, no TensorFlow.

Interpreter packages are tried in this order (first that imports wins):

1. ``ai_edge_litert`` (LiteRT, the maintained successor of tflite-runtime);
2. ``tflite_runtime`` (older Raspberry Pi images);
3. ``tensorflow.lite`` (only if TensorFlow is already installed; slow to import).

The engine takes RGB ``uint8`` images already at the model's input size and returns float
probabilities. For a quantized input tensor, pixels are mapped with the tensor's own
``scale`` and ``zero_point`` (``q = round(x / scale) + zero_point``, clipped to the dtype); a
quantized output is dequantized with ``x = (q - zero_point) · scale``.

LiteRT's C++ library writes ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` to
the process's standard error (file descriptor 2) when the first interpreter is made; it has
no Python setting, environment variable or log level that turns this line off (its
``tflite::LoggerOptions::SetMinimumLogSeverity`` is C++ only and not exported).
:func:`quiet_delegate_banner` removes that one line and nothing else.

Over 500 lines: the interpreter choice, the delegate banner and the quantization at the
edges are each short and used by :class:`TFLiteEngine` alone; the class is most of it (one
invoke, read as probabilities, embedding and class activation map).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from leukedge.errors import LeukedgeError, LeukedgeWarning

INTERPRETER_MODULES = (
    "ai_edge_litert.interpreter",
    "tflite_runtime.interpreter",
    "tensorflow.lite",
)


class RuntimeNotFoundError(LeukedgeError, ImportError):
    """No TFLite interpreter package imports; the message says what was tried and why it
    failed. Still an ``ImportError`` for older code."""


def interpreter_class() -> tuple[type, str]:
    """The first importable ``Interpreter`` class and the module it came from.

    A package that is not installed is skipped quietly. One that is installed but fails to
    import (``ImportError``, ``SystemError``, ``AttributeError``: typically a binary built
    for another NumPy) is skipped with its reason, which the final error (or, if a later
    package works, a :class:`~leukedge.errors.LeukedgeWarning`) reports. tflite-runtime's
    last release (2.14) is built for NumPy 1.x and cannot load under NumPy 2: the message
    says so and points to ``ai-edge-litert``.

    Raises:
        RuntimeNotFoundError: none of :data:`INTERPRETER_MODULES` imports.
    """
    problems = []
    for name in INTERPRETER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.split(".")[0] == exc.name.split(".")[0]:
                continue  # the package itself is not installed
            problems.append(_import_problem(name, exc))
            continue
        except (ImportError, SystemError, AttributeError) as exc:
            problems.append(_import_problem(name, exc))
            continue
        if problems:
            warnings.warn(
                f"using {name}; skipped: " + "; ".join(problems), LeukedgeWarning, stacklevel=2
            )
        return module.Interpreter, name
    if problems:
        raise RuntimeNotFoundError("no usable TFLite interpreter: " + "; ".join(problems))
    raise RuntimeNotFoundError("no TFLite interpreter installed: pip install ai-edge-litert")


def _import_problem(name: str, exc: BaseException) -> str:
    """Why an installed interpreter package failed to import, and what to do about it."""
    package = name.split(".")[0]
    what = f"{package} is installed but failed to import ({type(exc).__name__}: {exc})"
    numpy_major = int(np.__version__.split(".")[0])
    if package == "tflite_runtime" and numpy_major >= 2:
        return (
            f"{what}. tflite-runtime (last release 2.14) is built for NumPy 1.x and cannot "
            f"load beside NumPy {np.__version__}: "
            "pip install ai-edge-litert (LiteRT, its successor; wheels for 64-bit Linux on "
            "x86-64 and aarch64 such as 64-bit Raspberry Pi OS, macOS and Windows)"
        )
    return f"{what}; reinstall it or pip install ai-edge-litert"


DELEGATE_BANNER = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
"""The line LiteRT writes to standard error once per process, when its first interpreter
applies the default XNNPACK delegate (``TFLITE_LOG_PROD_ONCE`` in its C++ code)."""

SHOW_LITERT_LOG_ENV = "LEUKEDGE_LITERT_LOG"
"""Set this environment variable to ``1`` to keep LiteRT's banner (e.g. to see that XNNPACK
is used: ``examples/raspberry_pi/check_arm64.sh`` does)."""

_banner_lock = threading.RLock()  # re-entrant: a block may make an engine itself
_banner_seen = False


@contextmanager
def quiet_delegate_banner() -> Iterator[None]:
    """Run the block (an interpreter's creation) with LiteRT's :data:`DELEGATE_BANNER` line
    removed from standard error; every other byte written there is kept.

    The banner comes from C++ code straight to file descriptor 2, below Python's
    ``sys.stderr``, so descriptor 2 itself points to a temporary file during the block; after
    it, descriptor 2 is restored and what was captured, less the banner line, is written to
    it. Nothing is swallowed: LiteRT's errors, and anything other threads wrote meanwhile,
    arrive after the block instead of during it (a crash inside the block would lose them,
    which is why the capture stops once the banner has been seen: LiteRT prints it once
    per process). A lock makes concurrent creations take turns while it is on.

    Does nothing when :data:`SHOW_LITERT_LOG_ENV` is ``1``, after the banner has been seen,
    or when descriptor 2 cannot be duplicated (closed).
    """
    global _banner_seen
    if _banner_seen or os.environ.get(SHOW_LITERT_LOG_ENV) == "1":
        yield
        return
    with _banner_lock, tempfile.TemporaryFile() as captured:
        _flush_stderr()
        try:
            saved = os.dup(2)
        except OSError:  # descriptor 2 is closed: nothing to hide
            saved = None
        if saved is None:
            yield
            return
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().splitlines(keepends=True)
            kept = [line for line in lines if line.rstrip(b"\r\n") != DELEGATE_BANNER]
            _banner_seen = _banner_seen or len(kept) < len(lines)
            _write_fd2(b"".join(kept))


def _flush_stderr() -> None:
    with suppress(AttributeError, OSError, ValueError):  # no stderr, or a closed one
        sys.stderr.flush()


def _write_fd2(data: bytes) -> None:
    while data:
        try:
            written = os.write(2, data)
        except OSError:
            return
        data = data[written:]


class ModelLoadError(LeukedgeError, RuntimeError):
    """The model file cannot be read or the interpreter rejects it; names the file. Still a
    ``RuntimeError`` for older code."""


def input_quantizer(
    dtype: np.dtype, quantization: tuple[float, int], origin: str = "model"
) -> Callable[[np.ndarray], np.ndarray]:
    """The function that maps ``uint8`` RGB to an input tensor of ``dtype``.

    ``q = round(x / scale) + zero_point``, clipped to ``dtype``; float32 inputs get ``x``.
    Integer shortcuts give the same values without the float round trip, which costs about
    0.1 ms on a 224×224 image (3–4 % of an int8 invoke on a fast CPU): ``uint8`` with scale 1
    and zero point 0 (leukedge's int8 models) is the image itself (``set_tensor`` copies it,
    strided views included), and ``int8`` with scale 1 and zero point −128 is ``x − 128``,
    i.e. the top bit flipped.

    Raises:
        ModelLoadError: a quantized input without a scale (``origin`` names the model).
    """
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return lambda rgb: rgb.astype(np.float32)
    scale, zero_point = quantization
    if not scale:
        raise ModelLoadError(f"{origin}: quantized input without a scale")
    if scale == 1.0 and dtype == np.uint8 and zero_point == 0:
        return lambda rgb: rgb if rgb.dtype == np.uint8 else _quantize(rgb, dtype, 1.0, 0)
    if scale == 1.0 and dtype == np.int8 and zero_point == -128:
        flip = np.uint8(0x80)

        def flip_top_bit(rgb: np.ndarray) -> np.ndarray:
            if rgb.dtype != np.uint8:
                return _quantize(rgb, dtype, 1.0, -128)
            return (rgb ^ flip).view(np.int8)

        return flip_top_bit
    return lambda rgb: _quantize(rgb, dtype, scale, zero_point)


def _quantize(rgb: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(rgb.astype(np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def output_dequantizer(
    dtype: np.dtype, quantization: tuple[float, int]
) -> Callable[[np.ndarray], np.ndarray]:
    """The function that maps the raw output to float32: ``(q − zero_point) · scale`` for a
    quantized output, a float32 copy for a float one."""
    if np.dtype(dtype) == np.float32:
        return lambda raw: raw.astype(np.float32)
    scale, zero_point = quantization
    scale, zero_point = np.float32(scale), np.float32(zero_point)
    if not zero_point:
        return lambda raw: np.multiply(raw, scale, dtype=np.float32)
    return lambda raw: (raw.astype(np.float32) - zero_point) * scale


def _io_attribute(name: str, doc: str) -> property:
    """A public attribute of :class:`TFLiteEngine` that run() reads through functions
    resolved once (:meth:`TFLiteEngine._resolve_io`): setting it re-resolves them, so it
    keeps meaning what it says (tests set a wrong zero point this way)."""
    private = "_" + name

    def get(self):
        return getattr(self, private)

    def set_(self, value) -> None:
        setattr(self, private, value)
        if getattr(self, "_io_ready", False):
            self._resolve_io()

    return property(get, set_, doc=doc)


class TFLiteEngine:
    """A TFLite interpreter for an image classifier: one image input, the probabilities
    output and, optionally, an embedding output.

    Outputs are told apart by width, never by their order in the file (TFLite does not
    promise one): a model with two ``(1, n)`` outputs has its probabilities in the narrower
    (``n_classes`` wide) and its embedding in the wider (``D``, e.g. 1,280) one.

    Args:
        model: path of a ``.tflite`` file, or its bytes.
        num_threads: CPU threads for the interpreter (≥ 1; ``None`` = runtime default, which
            is 1 for LiteRT 2.x).
        origin: name for messages when ``model`` is bytes (default ``"<model bytes>"``).

    Threads: :meth:`run` holds a lock around ``set_tensor`` / ``invoke`` / ``get_tensor``
    (LiteRT's interpreter is not re-entrant: concurrent calls fail with "There is at least
    1 reference to internal data" or read another call's output), so an engine is safe to
    share but runs one image at a time. For parallel inference use one engine per worker
    (:meth:`clone`, or :class:`leukedge.engine.pool.EnginePool`).

    Attributes:
        model_content: the ``.tflite`` bytes (read once; metadata is parsed from them).
        input_size: ``(height, width)`` of the input tensor, pixels.
        input_dtype, output_dtype: numpy dtypes of the input/probabilities tensors
            (``float32``, ``uint8``, ``int8``, ``int16``).
        input_quantization, output_quantization: ``(scale, zero_point)``; ``(0.0, 0)`` for
            float tensors.
        num_classes: width of the probabilities output.
        embedding_dim: width of the embedding output, ``None`` when the model has none.
        embedding_name: that output tensor's name, ``None`` when the model has none.
        runtime: module the interpreter came from.

    Raises:
        FileNotFoundError: no such file.
        ModelLoadError: the file is not a valid TFLite model, or it does not have one
            ``(1, H, W, 3)`` input and one ``(1, n_classes)`` output, plus at most one wider
            ``(1, D)`` embedding output.
    """

    input_dtype = _io_attribute("input_dtype", "NumPy dtype of the input tensor.")
    output_dtype = _io_attribute("output_dtype", "NumPy dtype of the probabilities tensor.")
    input_quantization = _io_attribute(
        "input_quantization", "``(scale, zero_point)`` of the input; ``(0.0, 0)`` if float."
    )
    output_quantization = _io_attribute(
        "output_quantization", "``(scale, zero_point)`` of the probabilities; ``(0.0, 0)``."
    )

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        num_threads: int | None = None,
        *,
        origin: str | None = None,
    ):
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        if isinstance(model, bytes):
            content, origin = model, origin or "<model bytes>"
        else:
            path = Path(model)
            if path.is_dir():
                raise ModelLoadError(f"{path}: is a directory, not a .tflite model")
            if not path.is_file():
                raise FileNotFoundError(f"{path}: model file not found")
            content, origin = path.read_bytes(), str(path)
        if not content:
            raise ModelLoadError(f"{origin}: empty file, not a TFLite model")
        self.origin = origin
        self.model_content = content  # the file's bytes, read once (metadata comes from here)
        self.num_threads = num_threads
        self._lock = threading.Lock()
        interpreter_cls, self.runtime = interpreter_class()
        try:
            with quiet_delegate_banner():
                self._interpreter = interpreter_cls(model_content=content, num_threads=num_threads)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{origin}: not a valid TFLite model ({exc})") from exc
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) not in (1, 2, 3):
            raise ModelLoadError(
                f"{origin}: expected 1 input and 1 output (probabilities), 2 (and an "
                f"embedding) or 3 (and a class activation map), got {len(inputs)} and "
                f"{len(outputs)}"
            )
        self._input = inputs[0]
        self._output, self._embedding, self._cam = _split_outputs(outputs, origin)
        shape = tuple(int(d) for d in self._input["shape"])
        if len(shape) != 4 or shape[3] != 3:
            raise ModelLoadError(f"{origin}: input shape {shape} is not (1, H, W, 3)")
        self.input_size = (shape[1], shape[2])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self.input_quantization = tuple(self._input["quantization"])
        self.output_quantization = tuple(self._output["quantization"])
        self.num_classes = int(self._output["shape"][-1])
        self.embedding_dim = None if self._embedding is None else int(self._embedding["shape"][-1])
        self.embedding_name = None if self._embedding is None else str(self._embedding["name"])
        self.cam_shape = (
            None if self._cam is None else tuple(int(d) for d in self._cam["shape"][1:])
        )
        if self.cam_shape is not None and self.cam_shape[-1] != self.num_classes:
            raise ModelLoadError(
                f"{origin}: class activation map {self.cam_shape} does not have one channel "
                f"per class ({self.num_classes})"
            )
        self._io_ready = True
        self._resolve_io()

    def _resolve_io(self) -> None:
        """Resolve, once, what every call needs from the tensor details: run() is on every
        image's path, where each check costs (README, "Performance": the SDK adds at most
        5 % to a bare invoke)."""
        self._rgb_shape = (*self.input_size, 3)
        self._input_index, self._output_index = self._input["index"], self._output["index"]
        self._embedding_index = None if self._embedding is None else self._embedding["index"]
        self._cam_index = None if self._cam is None else self._cam["index"]
        self._quantize = input_quantizer(self.input_dtype, self.input_quantization, self.origin)
        self._dequantize_output = output_dequantizer(self.output_dtype, self.output_quantization)
        scale, zero_point = self.output_quantization
        self._output_scale = (
            None if self.output_dtype == np.float32 else (float(np.float32(scale)), int(zero_point))
        )

    def _quantize_input(self, rgb: np.ndarray) -> np.ndarray:
        """The input tensor for ``rgb`` (see :func:`input_quantizer`)."""
        return input_quantizer(self.input_dtype, self.input_quantization, self.origin)(rgb)

    @staticmethod
    def _dequantize(detail: dict[str, Any], raw: np.ndarray) -> np.ndarray:
        return output_dequantizer(np.dtype(detail["dtype"]), detail["quantization"])(raw)

    def run(self, rgb: np.ndarray) -> np.ndarray:
        """Probabilities for one image.

        Args:
            rgb: ``(height, width, 3)`` ``uint8`` RGB 0–255 at :attr:`input_size`.

        Returns:
            ``(n_classes,)`` float32 probabilities (the model's softmax; quantized outputs are
            dequantized, so they move in steps of the output scale, 1/256 for int8).

        Raises:
            ValueError: wrong shape.
            RuntimeError: the interpreter failed.
        """
        return self._dequantize_output(self._invoke(rgb)[0][0])

    def run_with_embedding(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and embedding of one image, from one invoke.

        Args:
            rgb: as in :meth:`run`.

        Returns:
            ``(probabilities, embedding)``: ``(n_classes,)`` and ``(embedding_dim,)`` float32
            (dequantized), the embedding ``None`` for a model without that output.

        Raises:
            ValueError: wrong shape.
            RuntimeError: the interpreter failed.
        """
        raw, raw_embedding = self._invoke(rgb)
        probabilities = self._dequantize_output(raw[0])
        if raw_embedding is None:
            return probabilities, None
        return probabilities, self._dequantize(self._embedding, raw_embedding[0])

    def probabilities_with_embedding(
        self, rgb: np.ndarray
    ) -> tuple[list[float], np.ndarray | None]:
        """:meth:`run_with_embedding`, the probabilities as a list of Python floats
        dequantized without NumPy arithmetic.

        The values are :meth:`run`'s (``(q − zero_point) · scale``, here in float64 rather
        than float32). This is the :class:`~leukedge.Classifier`'s path: right after an
        invoke, which evicts NumPy's code from the CPU caches, each NumPy call on a 2-vector
        costs about 20 µs, while plain Python arithmetic on two numbers costs about 1 µs
        (README, "Performance": SDK overhead).
        """
        raw, raw_embedding = self._invoke(rgb)
        values = raw.tolist()[0]
        if self._output_scale is not None:
            scale, zero_point = self._output_scale
            values = [(q - zero_point) * scale for q in values]
        if raw_embedding is None:
            return values, None
        return values, self._dequantize(self._embedding, raw_embedding[0])

    def run_with_cam(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Probabilities, embedding and class activation map of one image, one invoke.

        Args:
            rgb: as in :meth:`run`.

        Returns:
            ``(probabilities, embedding, cam)``: as :meth:`run_with_embedding`, and the map
            ``(h, w, n_classes)`` float32: the head's logits at every cell of the backbone's
            last feature map (their mean over cells is the model's logit vector; Zhou et
            al. 2016).

        Raises:
            ValueError: wrong shape, or a model without that output (:attr:`cam_shape` is
                ``None``).
            RuntimeError: the interpreter failed.
        """
        if self._cam_index is None:
            raise ValueError(f"{self.origin}: no class activation map output")
        raw, raw_embedding, raw_cam = self._invoke(rgb, cam=True)
        embedding = (
            None if raw_embedding is None else self._dequantize(self._embedding, raw_embedding[0])
        )
        cam = self._dequantize(self._cam, raw_cam[0]).astype(np.float32)
        return self._dequantize_output(raw[0]), embedding, cam

    def probabilities(self, rgb: np.ndarray) -> list[float]:
        """:meth:`probabilities_with_embedding` without the embedding."""
        return self.probabilities_with_embedding(rgb)[0]

    def _invoke(self, rgb: np.ndarray, cam: bool = False) -> tuple:
        """The raw ``(1, n_classes)`` output and ``(1, D)`` embedding (or ``None``); with
        ``cam``, also the raw ``(1, h, w, n_classes)`` class activation map."""
        if rgb.shape != self._rgb_shape:
            raise ValueError(f"image shape {rgb.shape} != model input {self._rgb_shape}")
        batch = self._quantize(rgb)[None]
        with self._lock:  # get_tensor returns a copy, taken before the next call's set_tensor
            self._interpreter.set_tensor(self._input_index, batch)
            self._interpreter.invoke()
            raw = self._interpreter.get_tensor(self._output_index)
            embedding = (
                None
                if self._embedding_index is None
                else self._interpreter.get_tensor(self._embedding_index)
            )
            if cam:
                return raw, embedding, self._interpreter.get_tensor(self._cam_index)
            return raw, embedding

    def clone(self) -> TFLiteEngine:
        """A new, independent interpreter over the same model bytes and thread count."""
        return TFLiteEngine(self.model_content, self.num_threads, origin=self.origin)

    def details(self) -> dict[str, Any]:
        """Input/output tensor details (name, shape, dtype, scale, zero point) and operators."""

        def tensor(d: dict[str, Any]) -> dict[str, Any]:
            scale, zero_point = d["quantization"]
            return {
                "name": d["name"],
                "shape": [int(v) for v in d["shape"]],
                "dtype": np.dtype(d["dtype"]).name,
                "scale": float(scale),
                "zero_point": int(zero_point),
            }

        try:
            ops = sorted({op["op_name"] for op in self._interpreter._get_ops_details()})
        except Exception:  # noqa: BLE001 - private API; absent in some runtimes
            ops = []
        return {
            "runtime": self.runtime,
            "input": tensor(self._input),
            "output": tensor(self._output),
            "embedding": None if self._embedding is None else tensor(self._embedding),
            "class_activation_map": None if self._cam is None else tensor(self._cam),
            "operators": ops,
        }


def _split_outputs(
    outputs: list[dict[str, Any]], origin: str
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """``(probabilities, embedding or None, class activation map or None)`` among a model's
    output details: the ``(1, h, w, n)`` output is the map; of the ``(1, n)`` ones, the
    narrower is the probabilities and the wider the embedding."""
    shapes = [tuple(int(d) for d in o["shape"]) for o in outputs]
    maps = [i for i, shape in enumerate(shapes) if len(shape) == 4 and shape[0] == 1]
    if len(maps) > 1:
        raise ModelLoadError(f"{origin}: more than one 4-d output: {shapes}")
    cam = outputs[maps[0]] if maps else None
    rest = [i for i in range(len(outputs)) if i not in maps]
    if any(len(shapes[i]) != 2 or shapes[i][0] != 1 for i in rest) or not rest or len(rest) > 2:
        raise ModelLoadError(
            f"{origin}: outputs must be (1, n), at most two, and one (1, h, w, n) map; got {shapes}"
        )
    if len(rest) == 1:
        return outputs[rest[0]], None, cam
    narrow, wide = sorted(rest, key=lambda i: shapes[i][1])
    if shapes[narrow][1] == shapes[wide][1]:
        raise ModelLoadError(
            f"{origin}: two outputs of equal width {shapes[narrow][1]}: cannot tell the "
            "probabilities from the embedding"
        )
    return outputs[narrow], outputs[wide], cam

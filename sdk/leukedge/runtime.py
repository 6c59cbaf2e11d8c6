"""The TFLite engine: one interpreter, quantization handled at its edges, no TensorFlow.

Interpreter packages are tried in this order (first that imports wins):

1. ``ai_edge_litert`` (LiteRT, the maintained successor of tflite-runtime);
2. ``tflite_runtime`` (older Raspberry Pi images);
3. ``tensorflow.lite`` (only if TensorFlow is already installed; slow to import).

The engine takes RGB ``uint8`` images already at the model's input size and returns float
probabilities. For a quantized input tensor, pixels are mapped with the tensor's own
``scale`` and ``zero_point`` (``q = round(x / scale) + zero_point``, clipped to the dtype); a
quantized output is dequantized with ``x = (q - zero_point) · scale``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

INTERPRETER_MODULES = (
    "ai_edge_litert.interpreter",
    "tflite_runtime.interpreter",
    "tensorflow.lite",
)


class RuntimeNotFoundError(ImportError):
    """No TFLite interpreter package is installed."""


def interpreter_class() -> tuple[type, str]:
    """The first importable ``Interpreter`` class and the module it came from.

    Raises:
        RuntimeNotFoundError: none of :data:`INTERPRETER_MODULES` imports.
    """
    import importlib

    for name in INTERPRETER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return module.Interpreter, name
    raise RuntimeNotFoundError(
        "no TFLite interpreter found: `pip install ai-edge-litert` "
        "(or tflite-runtime on older Raspberry Pi OS)"
    )


class ModelLoadError(RuntimeError):
    """The model file cannot be read or the interpreter rejects it; names the file."""


class TFLiteEngine:
    """A TFLite interpreter for an image classifier with one image input and one output.

    Args:
        model: path of a ``.tflite`` file, or its bytes.
        num_threads: CPU threads for the interpreter (≥ 1; ``None`` = runtime default).

    Attributes:
        model_content: the ``.tflite`` bytes (read once; metadata is parsed from them).
        input_size: ``(height, width)`` of the input tensor, pixels.
        input_dtype, output_dtype: numpy dtypes of the input/output tensors
            (``float32``, ``uint8``, ``int8``, ``int16``).
        input_quantization, output_quantization: ``(scale, zero_point)``; ``(0.0, 0)`` for
            float tensors.
        runtime: module the interpreter came from.

    Raises:
        FileNotFoundError: no such file.
        ModelLoadError: the file is not a valid TFLite model, or it does not have one
            ``(1, H, W, 3)`` input and one ``(1, n_classes)`` output.
    """

    def __init__(self, model: str | os.PathLike | bytes, num_threads: int | None = None):
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        if isinstance(model, bytes):
            content, origin = model, "<model bytes>"
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
        interpreter_cls, self.runtime = interpreter_class()
        try:
            self._interpreter = interpreter_cls(model_content=content, num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{origin}: not a valid TFLite model ({exc})") from exc
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(
                f"{origin}: expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}"
            )
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self._input["shape"])
        if len(shape) != 4 or shape[3] != 3:
            raise ModelLoadError(f"{origin}: input shape {shape} is not (1, H, W, 3)")
        self.input_size = (shape[1], shape[2])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self.input_quantization = tuple(self._input["quantization"])
        self.output_quantization = tuple(self._output["quantization"])
        self.num_classes = int(self._output["shape"][-1])

    def _quantize_input(self, rgb: np.ndarray) -> np.ndarray:
        x = rgb.astype(np.float32)
        if self.input_dtype == np.float32:
            return x
        scale, zero_point = self.input_quantization
        if not scale:
            raise ModelLoadError(f"{self.origin}: quantized input without a scale")
        info = np.iinfo(self.input_dtype)
        q = np.round(x / scale) + zero_point
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def _dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        if self.output_dtype == np.float32:
            return raw.astype(np.float32)
        scale, zero_point = self.output_quantization
        return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)

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
        if rgb.shape != (*self.input_size, 3):
            raise ValueError(f"image shape {rgb.shape} != model input {(*self.input_size, 3)}")
        self._interpreter.set_tensor(self._input["index"], self._quantize_input(rgb)[None])
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output["index"])[0]
        return self._dequantize_output(raw)

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
            "operators": ops,
        }

"""Which layers does int8 hurt? TensorFlow Lite's quantization debugger, per layer.

EfficientNet-B0 (swish, squeeze-and-excitation) and attention blocks are known to lose
accuracy under full-integer post-training quantization. When int8 fails the gate, the
converter runs ``tf.lite.experimental.QuantizationDebugger`` on a few calibration images and
ranks every quantized tensor by **RMSE / scale**: the root-mean-square error between the float
and the dequantized int8 values, in units of the tensor's quantization step. A well
quantized tensor sits near 0.29 (the RMS of uniform rounding noise, 1/√12); values well
above 1 mean the int8 grid cannot represent that layer (TFLite guide, "Inspecting
Quantization Errors with Quantization Debugger").

Those tensors can then be kept in float (``--keep-float NAME``, or automatically, worst
first, until the gate passes): selective quantization.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

UNIFORM_NOISE_RMSE_PER_SCALE = 1.0 / math.sqrt(12.0)
"""RMSE/scale of ideal rounding: the floor a perfectly calibrated tensor reaches."""


@dataclass
class LayerError:
    """Quantization error of one tensor.

    Attributes:
        tensor_name: the TFLite tensor (the name ``--keep-float`` takes).
        op_name: the TFLite operator that produces it (``CONV_2D``, ``BATCH_MATMUL``…).
        rmse_per_scale: RMSE between float and dequantized values divided by the scale
            (dimensionless; ≈ 0.29 is ideal).
        max_abs_error: largest absolute error, in the tensor's float units.
        scale: the tensor's quantization scale.
    """

    tensor_name: str
    op_name: str
    rmse_per_scale: float
    max_abs_error: float
    scale: float


def layer_errors(model, representative: np.ndarray, samples: int = 16) -> list[LayerError]:
    """Per-tensor int8 errors of a Keras model, worst first.

    Args:
        model: Keras model (TensorFlow backend).
        representative: ``(n, H, W, 3)`` RGB 0–255 calibration images; the first
            ``samples`` also serve as the debug dataset.
        samples: images run through the debug model.

    Returns:
        :class:`LayerError` list sorted by ``rmse_per_scale``, descending.
    """
    import tensorflow as tf

    from leukedge.converters.tflite import representative_dataset

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(representative)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=representative_dataset(representative[:samples]),
    )
    debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    rows = []
    for row in csv.DictReader(buffer):
        scale = float(row["scale"])
        if not scale:
            continue
        rows.append(
            LayerError(
                tensor_name=row["tensor_name"],
                op_name=row["op_name"],
                rmse_per_scale=math.sqrt(float(row["mean_squared_error"])) / scale,
                max_abs_error=float(row["max_abs_error"]),
                scale=scale,
            )
        )
    return sorted(rows, key=lambda r: r.rmse_per_scale, reverse=True)


def format_layer_errors(errors: list[LayerError], top: int = 10) -> str:
    """The ``top`` worst tensors as a plain-text table."""
    lines = [f"{'RMSE/scale':>10}  {'op':<18} tensor"]
    for e in errors[:top]:
        lines.append(f"{e.rmse_per_scale:>10.3f}  {e.op_name:<18} {e.tensor_name}")
    return "\n".join(lines)

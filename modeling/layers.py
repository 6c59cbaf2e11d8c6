"""leukedge's own layers: in-graph input normalisation and the backbones' preprocessing.

Every model takes RGB 0–255 and normalises inside its own graph (Keras applications'
convention), so training, export and inference cannot disagree about it. Custom layers are
registered with Keras (package ``leukedge``): importing this module is what lets a saved
``.keras`` that holds them load (:func:`leukedge.modeling.saving.load_keras_model`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from leukedge.modeling.architectures import Preprocessing
from leukedge.modeling.config import INPUT_NORM_LAYERS, InputNormConfig


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
    """A normalised 1-D Gaussian of ``sigma`` pixels spanning ±ceil(3 sigma) (odd length).

    Returns:
        float64 ``(2 r + 1,)`` weights summing to 1, ``r = max(1, ceil(3 sigma))``.
    """
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


def _caffe_layers() -> list[layers.Layer]:
    # RGB→BGR, ImageNet mean subtracted: a fixed Normalization, then a fixed 1×1
    # channel-swap convolution.
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


def _tf_layers() -> list[layers.Layer]:
    # Scaled to [-1, 1].
    return [layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling_tf")]


PREPROCESSING_LAYERS = {"in-graph": list, "caffe": _caffe_layers, "tf": _tf_layers}
"""``{preprocessing kind: function returning its fresh layers}``."""


def preprocessing_layers(kind: Preprocessing) -> list[layers.Layer]:
    """In-graph input normalisation for backbones whose Keras application lacks it.

    As ``keras.applications.*.preprocess_input``, but as layers, so the saved model and the
    ``.tflite`` carry it. EfficientNet-B0 and Lite0 normalise inside their own graph
    (``"in-graph"``: nothing to add); ResNet50's weights expect ``"caffe"`` (RGB→BGR,
    ImageNet mean subtracted), InceptionV3's ``"tf"`` (scaled to [-1, 1]).

    Args:
        kind: the architecture's :data:`~leukedge.modeling.architectures.Preprocessing`.

    Returns:
        Fresh layers, float ``(batch, H, W, 3)`` in and out; empty for ``"in-graph"``.

    Raises:
        KeyError: unknown kind.
    """
    return PREPROCESSING_LAYERS[kind]()

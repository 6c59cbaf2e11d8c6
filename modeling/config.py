"""Settings of a leukedge model that a run records: the head and the input normalisation.

Plain dataclasses without a Keras import, so :class:`~leukedge.training.config.TrainConfig`
and the command line can read them before any backend is loaded;
:func:`leukedge.modeling.models.build_model` turns them into layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

InputKind = Literal["field", "cell"]
"""What one input image shows: a smear field or one segmented cell (stored in the
``.tflite``'s metadata, :class:`leukedge.engine.metadata.InputSpec`)."""

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
"""ImageNet's RGB channel means and standard deviations in 0–255 grey levels (the values of
``torchvision``/Keras ``"torch"`` preprocessing): the statistics the pretrained backbones saw."""

INPUT_NORM_LAYERS = ("input_blur", "input_standardize")
"""Names of the input-normalisation layers (the converter keeps them in float in int8)."""


@dataclass
class HeadConfig:
    """The proposed head (paper, section IV.F).

    Attributes:
        attention_heads: heads of the self-attention block (4, as in the paper's code).
        attention_key_dim: key/query size per head (64).
        dense_units: widths of the two dense layers (256, 128).
        dropout: dropout after each dense layer (paper: 0.5, 0.3).
        leaky_relu_slope: negative slope of LeakyReLU (Keras' 0.3 default is the paper's).
    """

    attention_heads: int = 4
    attention_key_dim: int = 64
    dense_units: tuple[int, int] = (256, 128)
    dropout: tuple[float, float] = (0.5, 0.3)
    leaky_relu_slope: float = 0.3

    @classmethod
    def from_dict(cls, data: dict) -> HeadConfig:
        """Inverse of ``dataclasses.asdict`` (JSON lists back to tuples; unknown keys
        ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("dense_units", "dropout"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


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
        target_mean: RGB means (grey levels) the standardised image is mapped to; ``None``:
            measured on the training split (``train()`` fills it in).
        target_std: RGB standard deviations (grey levels), as ``target_mean``.
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

    @classmethod
    def from_dict(cls, data: dict) -> InputNormConfig:
        """Inverse of ``dataclasses.asdict`` (JSON lists back to tuples; unknown keys
        ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("target_mean", "target_std"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        return cls(**known)

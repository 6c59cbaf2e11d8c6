"""The architectures leukedge builds, as one table (no Keras import).

Keras applications' style: the architecture is data. Each row names the backbone's builder,
the nested model's name, the preprocessing its ImageNet weights expect, the file Keras
downloads for them, and the head. :func:`leukedge.modeling.models.build_model` reads the
row; adding a backbone is a row here (and a preprocessing kind, if it needs a new one).

There is no input-size column: every backbone here is fully convolutional and is trained at
the run's ``image_size`` (224 px in the paper, for all of them); the feature map is
``image_size / 32`` on a side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Architecture = Literal[
    "proposed", "proposed-lite", "lite0-linear", "efficientnetb0", "resnet50", "inceptionv3"
]
"""Names accepted by :func:`~leukedge.modeling.models.build_model` (``leukedge train --arch``)."""

Preprocessing = Literal["in-graph", "caffe", "tf"]
"""What a backbone's ImageNet weights expect of RGB 0–255 input: ``in-graph`` (the backbone
normalises itself: EfficientNet-B0 and Lite0), ``caffe`` (RGB→BGR, ImageNet mean
subtracted) or ``tf`` (scaled to [-1, 1]); see
:func:`leukedge.modeling.layers.preprocessing_layers`."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """One architecture.

    Attributes:
        name: the name users give (``--arch``).
        backbone: ``module:function`` that builds the backbone, Keras applications'
            signature (``include_top``, ``weights``, ``input_shape``).
        backbone_name: the name of the nested backbone model inside the built model.
        preprocessing: :data:`Preprocessing` kind of the backbone's ImageNet weights.
        head: ``attention`` (the paper's proposed head, section IV.F: self-attention over
            the feature map, Dense 256/128) or ``gap`` (the baselines, section IV.E:
            global average pooling, softmax).
        imagenet_file: the file Keras downloads for ``weights="imagenet"`` (named in the
            offline error); ``None`` where ImageNet weights are imported instead
            (``leukedge convert import-weights`` for Lite0).
    """

    name: str
    backbone: str
    backbone_name: str
    preprocessing: Preprocessing
    head: Literal["attention", "gap"]
    imagenet_file: str | None


_B0 = "keras.applications:EfficientNetB0"
_LITE0 = "leukedge.modeling.efficientnet_lite:EfficientNetLite0"

ARCHITECTURE_TABLE: dict[str, ArchitectureSpec] = {
    spec.name: spec
    for spec in (
        ArchitectureSpec("proposed", _B0, "efficientnetb0", "in-graph", "attention",
                         "efficientnetb0_notop.h5"),
        ArchitectureSpec("proposed-lite", _LITE0, "efficientnet_lite0", "in-graph", "attention",
                         None),
        ArchitectureSpec("lite0-linear", _LITE0, "efficientnet_lite0", "in-graph", "gap", None),
        ArchitectureSpec("efficientnetb0", _B0, "efficientnetb0", "in-graph", "gap",
                         "efficientnetb0_notop.h5"),
        ArchitectureSpec("resnet50", "keras.applications:ResNet50", "resnet50", "caffe", "gap",
                         "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ArchitectureSpec("inceptionv3", "keras.applications:InceptionV3", "inception_v3", "tf",
                         "gap", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    )
}  # fmt: skip
"""``{name: ArchitectureSpec}``, in the order ``--help`` lists them."""

ARCHITECTURES: tuple[str, ...] = tuple(ARCHITECTURE_TABLE)
"""The names of :data:`ARCHITECTURE_TABLE`."""

BACKBONE_NAMES: dict[str, str] = {n: s.backbone_name for n, s in ARCHITECTURE_TABLE.items()}
"""Name of the nested backbone model inside each architecture."""


def architecture(name: str) -> ArchitectureSpec:
    """The row of ``name``.

    Raises:
        ValueError: unknown name (the message lists the architectures).
    """
    if name not in ARCHITECTURE_TABLE:
        raise ValueError(f"unknown architecture {name!r}; choose one of {ARCHITECTURES}")
    return ARCHITECTURE_TABLE[name]

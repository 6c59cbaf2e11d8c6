"""Every setting of a training run, in one dataclass: :class:`TrainConfig`.

It is the one source of each setting: ``train()`` reads it, ``config.json`` stores it
(:meth:`TrainConfig.to_dict` / :meth:`TrainConfig.from_dict`, which also reads the files
of older runs), and ``leukedge train``'s options, their help, defaults and choices are
derived from it (:mod:`leukedge.training.cli`). Named recipes
(:mod:`leukedge.training.recipes`) are sets of its values.

No Keras import here: the command line reads these classes before any backend loads.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from leukedge.evaluation.data import LABELS
from leukedge.modeling.architectures import ARCHITECTURES, Architecture
from leukedge.modeling.config import HeadConfig, InputKind, InputNormConfig
from leukedge.training.augment import AugmentConfig
from leukedge.training.distribute import DISTRIBUTIONS, Distribution

DatasetKind = Literal["auto", "taleqani", "cnmc", "folder", "csv"]
"""How :func:`leukedge.evaluation.data.load_dataset` reads ``data``."""

SplitStrategy = Literal["auto", "subject", "blocks", "kfold"]
"""How :func:`leukedge.evaluation.data.make_split` splits the images."""

MixedPrecision = Literal["mixed_float16", "mixed_bfloat16"]
"""Keras mixed-precision policies (GPUs)."""

Recipe = Literal["camera", "paper"]
"""Named recipes (:data:`leukedge.training.recipes.RECIPES`)."""

MINIMUM = {
    "image_size": 32,
    "batch_size": 1,
    "head_epochs": 0,
    "finetune_epochs": 0,
    "unfreeze_top": 0,
    "seed": 0,
    "folds": 3,
    "fold": 0,
    "early_stopping_patience": 0,
    "lr_plateau_patience": 0,
}
"""Smallest value of each integer setting (checked here, and by the command line)."""


@dataclass
class TrainConfig:
    """Every setting of a training run (saved as ``config.json``).

    Attributes:
        data: dataset folder or CSV (see :func:`leukedge.evaluation.data.load_dataset`).
        out: run directory (created; an existing ``model.keras`` there is an error).
        dataset_kind: how to read ``data``: ``auto`` (by its layout), ``taleqani``,
            ``cnmc``, ``folder`` (one sub-folder per class) or ``csv``
            (``path,label[,subject]``).
        input_kind: ``field`` (smear photographs) or ``cell`` (segmented single cells);
            recorded in the model metadata.
        arch: architecture (:data:`leukedge.modeling.architectures.ARCHITECTURE_TABLE`).
        weights: ``imagenet``, a local backbone weights file, or ``None`` (random
            initialisation; ``none`` on the command line).
        image_size: square input side, pixels (224 as the paper).
        batch_size: images per step.
        head_epochs: phase 1 epochs, backbone frozen.
        finetune_epochs: phase 2 epochs, top ``unfreeze_top`` backbone layers trainable.
        unfreeze_top: backbone layers unfrozen in phase 2 (20 in the paper).
        head_lr: Adam learning rate of phase 1.
        finetune_lr: Adam learning rate of phase 2.
        split: ``auto`` (subject if known, else contiguous blocks), ``subject``, ``blocks``
            or ``kfold`` (by subject; ``folds`` folds, fold ``fold`` is the test split).
        fractions: train/validation/test fractions.
        folds: k-fold: number of subject folds.
        fold: k-fold: which fold is the test split (the next one is validation).
        head: :class:`~leukedge.modeling.config.HeadConfig`, the proposed head (attention,
            dense widths, dropout after Dense 256 and Dense 128: paper 0.5, 0.3).
        input_norm: :class:`~leukedge.modeling.config.InputNormConfig`, fixed blur and
            per-image standardisation in the graph (off in the paper's setting); its target
            statistics are measured on the training split when not given.
        class_weights: weight the loss by inverse class frequency ("balanced").
        augment: :class:`~leukedge.training.augment.AugmentConfig` (training split only).
        seed: non-negative; seeds Python, NumPy and the backend
            (``keras.utils.set_random_seed``), the shuffle order, and the random states of
            dropout, stochastic depth and augmentation, which are reset from
            ``(seed, epoch[, batch])`` so that a resumed run replays the uninterrupted one
            (:mod:`leukedge.training.seeding`).
        max_per_split: cap of images per split, for smoke tests (``None`` = all).
        early_stopping_patience: stop a phase after this many epochs without a better
            validation weighted F1 (0 = off).
        lr_plateau_patience: multiply the learning rate by ``lr_plateau_factor`` after this
            many epochs without a better validation weighted F1 (0 = off).
        lr_plateau_factor: the learning-rate factor of ``lr_plateau_patience``.
        tensorboard: write TensorBoard logs to ``out/tensorboard`` (TensorFlow backend).
        mixed_precision: ``None``, ``mixed_float16`` or ``mixed_bfloat16`` (GPUs).
        distribute: ``none``, ``mirrored``, ``multiworker`` (TensorFlow) or
            ``data-parallel`` (JAX) (:mod:`leukedge.training.distribute`).
        ema_momentum: keep an exponential moving average of the trainable weights
            (Polyak averaging; Keras' ``use_ema``) with this momentum, validate and save
            the averaged weights (``SwapEMAWeights``); ``None`` = off (the paper's setting).
            It damps the epoch-to-epoch swings of a small head on few benign fields.
        recipe: the named recipe the settings started from
            (:mod:`leukedge.training.recipes`), recorded for the model card; the fields
            above are what ran.
    """

    data: str
    out: str
    dataset_kind: DatasetKind = "auto"
    input_kind: InputKind = "field"
    arch: Architecture = "proposed-lite"
    weights: str | None = "imagenet"
    image_size: int = 224
    batch_size: int = 32
    head_epochs: int = 4
    finetune_epochs: int = 4
    unfreeze_top: int = 20
    head_lr: float = 1e-3
    finetune_lr: float = 1e-4
    split: SplitStrategy = "auto"
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    folds: int = 5
    fold: int = 0
    head: HeadConfig = field(default_factory=HeadConfig)
    input_norm: InputNormConfig = field(default_factory=InputNormConfig)
    class_weights: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    max_per_split: int | None = None
    early_stopping_patience: int = 0
    lr_plateau_patience: int = 0
    lr_plateau_factor: float = 0.5
    tensorboard: bool = True
    mixed_precision: MixedPrecision | None = None
    distribute: Distribution = "none"
    ema_momentum: float | None = None
    recipe: Recipe = "paper"

    def __post_init__(self) -> None:
        """Check every setting before anything is written, and make ``data`` absolute.

        Raises:
            ValueError: a setting out of range or of the wrong type, naming it.
        """
        # An absolute path, so config.json and split.csv work from any directory.
        self.data = os.path.abspath(os.fspath(self.data))
        for name, low in MINIMUM.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.max_per_split is not None and (
            not isinstance(self.max_per_split, int) or self.max_per_split < 1
        ):
            raise ValueError(f"max_per_split must be an integer >= 1, got {self.max_per_split!r}")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {ARCHITECTURES}")
        if self.distribute not in DISTRIBUTIONS:
            raise ValueError(
                f"unknown distribution {self.distribute!r}; choose one of {DISTRIBUTIONS}"
            )
        if self.mixed_precision not in (None, *get_args(MixedPrecision)):
            raise ValueError(
                f"mixed_precision must be mixed_float16 or mixed_bfloat16, "
                f"got {self.mixed_precision!r}"
            )
        for name in ("head_lr", "finetune_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.head_epochs + self.finetune_epochs == 0:
            raise ValueError("head_epochs + finetune_epochs is 0: nothing to train")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (with the Keras backend and leukedge version added)."""
        import keras

        from leukedge import __version__

        data = asdict(self)
        data["fractions"] = list(self.fractions)
        data["labels"] = list(LABELS)
        data["keras_backend"] = keras.backend.backend()
        data["keras_version"] = keras.__version__
        data["leukedge_version"] = __version__
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys ignored).

        Reads the ``config.json`` of older runs too: a flat ``dropout`` (before the head
        settings were nested) becomes ``head.dropout``; missing keys take their defaults.

        Raises:
            ValueError / TypeError: a value that :class:`TrainConfig` refuses.
        """
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["augment"] = AugmentConfig.from_dict(known.get("augment", {}))
        known["input_norm"] = InputNormConfig.from_dict(known.get("input_norm", {}))
        head = dict(known.get("head", {}))
        if "dropout" in data and "dropout" not in head:
            head["dropout"] = data["dropout"]
        known["head"] = HeadConfig.from_dict(head)
        known["fractions"] = tuple(known.get("fractions", (0.7, 0.15, 0.15)))
        return cls(**known)

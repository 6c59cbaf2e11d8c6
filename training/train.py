"""One training run: data → split → model → two-phase fit → best epoch → files on disk.

Paper, section IV.F: the backbone is ImageNet-pretrained; the head is trained first with the
backbone frozen, then the top 20 backbone layers are unfrozen and trained at a lower learning
rate (BatchNorm stays in inference mode). Categorical cross-entropy, Adam. The epoch kept is
the one with the best **validation weighted F1** (the C-NMC challenge metric).

A run directory holds:

- ``model.keras``: the best epoch's model, without optimizer state;
- ``config.json``: every setting (:class:`TrainConfig`), enough to rerun it;
- ``split.csv``: which file went to which split;
- ``history.csv``: per-epoch training loss/accuracy and validation loss/accuracy/weighted F1;
- ``metrics_val.json``, ``predictions_val.csv`` and ``report.md``: the kept model on the
  validation split; ``calibration.json``: the softmax temperature fitted there;
- PNG figures (curves, confusion matrix, ROC, reliability diagram);
- ``checkpoints/`` (best epoch, finished phases) and ``backup/`` (the phase in progress),
  which ``--resume`` reads after an interruption; ``tensorboard/`` logs.

The test split is not touched here; ``leukedge train evaluate`` does that, once.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leukedge.training.data import (
    LABELS,
    Sample,
    balanced_class_weights,
    check_no_subject_leak,
    class_counts,
    load_dataset,
    make_split,
    write_split,
)
from leukedge.training.models import InputNormConfig
from leukedge.training.pipeline import AugmentConfig


@dataclass
class TrainConfig:
    """Every setting of a training run (saved as ``config.json``).

    Attributes:
        data: dataset folder or CSV (see :func:`leukedge.training.data.load_dataset`).
        out: run directory (created; an existing ``model.keras`` there is an error).
        dataset_kind: ``auto``, ``taleqani``, ``cnmc``, ``folder`` or ``csv``.
        input_kind: ``"field"`` (smear photographs) or ``"cell"`` (segmented single cells);
            recorded in the model metadata.
        arch: architecture name (:data:`leukedge.training.models.ARCHITECTURES`).
        weights: ``"imagenet"``, a local backbone weights file, or ``None``.
        image_size: square input side, pixels (224 as the paper).
        batch_size: images per step.
        head_epochs: phase 1 epochs, backbone frozen.
        finetune_epochs: phase 2 epochs, top ``unfreeze_top`` backbone layers trainable.
        unfreeze_top: backbone layers unfrozen in phase 2 (20 in the paper).
        head_lr, finetune_lr: Adam learning rates of the two phases.
        split: ``auto`` (subject if known, else contiguous blocks), ``subject``, ``blocks``
            or ``kfold`` (by subject; ``folds`` folds, fold ``fold`` is the test split).
        fractions: train/validation/test fractions.
        dropout: dropout after the head's Dense 256 and Dense 128 (paper: 0.5, 0.3).
        input_norm: :class:`~leukedge.training.models.InputNormConfig`, fixed blur and
            per-image standardisation in the graph (off in the paper's setting); its target
            statistics are measured on the training split when not given.
        class_weights: weight the loss by inverse class frequency ("balanced").
        augment: :class:`AugmentConfig` (training split only).
        seed: non-negative; seeds Python, NumPy and the backend
            (``keras.utils.set_random_seed``), the shuffle order, and the random states of
            dropout, stochastic depth and augmentation, which are reset from
            ``(seed, epoch[, batch])`` so that a resumed run replays the uninterrupted one
            (:mod:`leukedge.training.seeding`).
        max_per_split: cap of images per split, for smoke tests (``None`` = all).
        early_stopping_patience: stop a phase after this many epochs without a better
            validation weighted F1 (0 = off).
        lr_plateau_patience, lr_plateau_factor: multiply the learning rate by the factor
            after this many epochs without a better validation weighted F1 (0 = off).
        tensorboard: write TensorBoard logs to ``out/tensorboard`` (TensorFlow backend).
        mixed_precision: ``None``, ``"mixed_float16"`` or ``"mixed_bfloat16"`` (GPUs).
        distribute: ``none``, ``mirrored``, ``multiworker`` or ``data-parallel``
            (:mod:`leukedge.training.distribute`).
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
    dataset_kind: str = "auto"
    input_kind: str = "field"
    arch: str = "proposed-lite"
    weights: str | None = "imagenet"
    image_size: int = 224
    batch_size: int = 32
    head_epochs: int = 4
    finetune_epochs: int = 4
    unfreeze_top: int = 20
    head_lr: float = 1e-3
    finetune_lr: float = 1e-4
    split: str = "auto"
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    folds: int = 5
    fold: int = 0
    dropout: tuple[float, float] = (0.5, 0.3)
    input_norm: InputNormConfig = field(default_factory=InputNormConfig)
    class_weights: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    max_per_split: int | None = None
    early_stopping_patience: int = 0
    lr_plateau_patience: int = 0
    lr_plateau_factor: float = 0.5
    tensorboard: bool = True
    mixed_precision: str | None = None
    distribute: str = "none"
    ema_momentum: float | None = None
    recipe: str = "paper"

    def __post_init__(self) -> None:
        """Check every setting before anything is written, and make ``data`` absolute.

        Raises:
            ValueError: a setting out of range or of the wrong type, naming it.
        """
        from leukedge.training.distribute import DISTRIBUTIONS
        from leukedge.training.models import ARCHITECTURES

        # An absolute path, so config.json and split.csv work from any directory.
        self.data = os.path.abspath(os.fspath(self.data))
        minimum = {
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
        for name, low in minimum.items():
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
        if self.mixed_precision not in (None, "mixed_float16", "mixed_bfloat16"):
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
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["augment"] = AugmentConfig.from_dict(known.get("augment", {}))
        norm = dict(known.get("input_norm", {}))
        for key in ("target_mean", "target_std"):
            if norm.get(key) is not None:
                norm[key] = tuple(norm[key])
        known["input_norm"] = InputNormConfig(**norm)
        known["fractions"] = tuple(known.get("fractions", (0.7, 0.15, 0.15)))
        known["dropout"] = tuple(known.get("dropout", (0.5, 0.3)))
        return cls(**known)


def predict_samples(
    model, samples: list[Sample], image_size: int, batch_size: int = 32
) -> dict[str, list[float]]:
    """Run ``model`` on ``samples`` (no augmentation) → ``{path: probabilities}``.

    Batches are built from the sample list in order and each output row is attached to its
    own path immediately, so the result is keyed by file name, not position.
    """
    import numpy as np

    from leukedge.training.pipeline import ImageSequence

    seq = ImageSequence(samples, LABELS, image_size, batch_size, shuffle=False, with_labels=False)
    out: dict[str, list[float]] = {}
    for i in range(len(seq)):
        batch = seq.batch_samples(i)
        probs = np.asarray(model.predict_on_batch(seq[i]), dtype=np.float64)
        for sample, row in zip(batch, probs, strict=True):
            out[str(sample.path)] = row.tolist()
    return out


def _cap(splits: dict[str, list[Sample]], cap: int | None, seed: int) -> dict[str, list[Sample]]:
    """At most ``cap`` samples per split, drawn per class in proportion (stratified), with
    at least one of every class the split holds, so a capped validation split still has
    both classes (ROC, per-class metrics). Order within a split is kept."""
    if cap is None:
        return splits
    import numpy as np

    rng = np.random.default_rng(seed)
    capped = {}
    for name, items in splits.items():
        if len(items) > cap:
            by_class: dict[str, list[int]] = {}
            for i, sample in enumerate(items):
                by_class.setdefault(sample.label, []).append(i)
            quota = {
                label: max(1, round(cap * len(idx) / len(items))) for label, idx in by_class.items()
            }
            while sum(quota.values()) > cap:  # rounding up the rare classes overshot
                largest = max(quota, key=quota.__getitem__)
                quota[largest] -= 1
            keep = sorted(
                i
                for label, idx in by_class.items()
                for i in rng.choice(idx, min(quota[label], len(idx)), replace=False)
            )
            items = [items[i] for i in keep]
        capped[name] = items
    return capped


def train(
    config: TrainConfig, resume: bool = False, callbacks: list | None = None
) -> dict[str, Any]:
    """Run one training as configured and write the run directory.

    Args:
        config: the settings.
        resume: continue an interrupted run in ``config.out``: its ``split.csv`` is reused,
            finished phases are skipped (their weights are in ``checkpoints/``) and the
            phase in progress restarts from its last completed epoch (model and optimizer
            state, by ``keras.callbacks.BackupAndRestore``).
        callbacks: extra Keras callbacks for both phases (e.g. a test's interruption).

    Returns:
        The validation metrics of the kept epoch (also in ``metrics_val.json``), with
        ``best_epoch`` (1-based) added.

    Raises:
        FileExistsError: ``out`` already holds a ``model.keras``, or holds a run and
            ``resume`` is off.
        FileNotFoundError / ValueError: bad dataset, split, architecture or distribution.
    """
    import keras

    from leukedge.training.callbacks import EpochSync, ValidationCheckpoint
    from leukedge.training.data import read_split
    from leukedge.training.distribute import distribution_scope
    from leukedge.training.models import HeadConfig, build_model, set_trainable_backbone_layers
    from leukedge.training.pipeline import ImageSequence, build_augmenter

    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose a new --out")
    if (out / "model.keras").exists():
        raise FileExistsError(
            f"{out}/model.keras exists: that run has finished"
            + ("; nothing to resume" if resume else "; choose a new --out")
        )
    if (out / "split.csv").exists() and not resume:
        raise FileExistsError(f"{out} holds an unfinished run; pass --resume or a new --out")
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy(config.mixed_precision)

    split_on_disk = resume and (out / "split.csv").exists()
    if split_on_disk:
        splits = read_split(out / "split.csv")
        print(f"resuming {out}: split read from split.csv")
    else:
        samples = load_dataset(config.data, config.dataset_kind)
        splits = make_split(
            samples, config.split, config.fractions, config.seed, config.folds, config.fold
        )
        check_no_subject_leak(splits)
        splits = _cap(splits, config.max_per_split, config.seed)
    counts = {name: class_counts(items) for name, items in splits.items()}
    weights = balanced_class_weights(splits["train"], LABELS) if config.class_weights else None
    print(f"data {config.data}: " + "; ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"class weights: {weights}" if weights else "class weights: off (imbalance not handled)")
    for name, per_class in counts.items():
        missing = [label for label in LABELS if not per_class.get(label)]
        if missing and name != "train":
            print(f"note: the {name} split has no {', '.join(missing)} images (no ROC there)")

    norm = config.input_norm
    if norm.standardize and (norm.target_mean is None or norm.target_std is None):
        from leukedge.preprocess import load_and_resize
        from leukedge.training.models import channel_statistics

        size = (config.image_size, config.image_size)
        norm.target_mean, norm.target_std = channel_statistics(
            load_and_resize(s.path, size) for s in splits["train"]
        )
        print(
            "input standardisation targets (training split): mean "
            + ", ".join(f"{v:.1f}" for v in norm.target_mean)
            + "; std "
            + ", ".join(f"{v:.1f}" for v in norm.target_std)
        )

    # Everything that can fail on a bad setting (architecture, weights file, empty split)
    # runs before the run directory is written, so a failed start leaves nothing behind.
    scope, replicas = distribution_scope(config.distribute)
    with scope():
        model = build_model(
            config.arch,
            len(LABELS),
            config.image_size,
            config.weights,
            head=HeadConfig(dropout=tuple(config.dropout)),
            input_norm=config.input_norm,
        )
    train_seq = ImageSequence(
        splits["train"],
        LABELS,
        config.image_size,
        config.batch_size,
        shuffle=True,
        augmenter=build_augmenter(config.augment, config.seed),
        seed=config.seed,
        photometric=config.augment.photometric if config.augment.enabled else None,
        rot90=config.augment.enabled and config.augment.rot90,
    )
    if not splits.get("val"):
        raise ValueError("empty validation split: no samples to select the best epoch on")
    if not split_on_disk:
        out.mkdir(parents=True, exist_ok=True)
        write_split(out / "split.csv", splits)
    (out / "config.json").write_text(
        json.dumps(
            config.to_dict() | {"split_counts": counts, "class_weight_values": weights}, indent=2
        )
    )
    checkpoints = out / "checkpoints"
    best = ValidationCheckpoint(splits["val"], config.image_size, config.batch_size, checkpoints)
    history_csv = out / "history.csv"
    if not resume:
        history_csv.unlink(missing_ok=True)

    start = time.time()
    phases = [
        ("head", config.head_epochs, 0, config.head_lr),
        ("finetune", config.finetune_epochs, config.unfreeze_top, config.finetune_lr),
    ]
    epoch = 0
    for name, epochs, top_n, lr in phases:
        if epochs <= 0:
            continue
        done = checkpoints / f"phase_{name}.weights.h5"
        unfrozen = set_trainable_backbone_layers(
            model, top_n, train_batchnorm=config.weights is None
        )
        if done.is_file():
            _load_model_weights(model, done)
            print(f"phase {name}: already finished, weights from {done}")
            epoch += epochs
            continue
        print(
            f"phase {name}: {epochs} epochs, lr {lr}, {unfrozen} backbone layers trainable, "
            f"{replicas} replica(s)"
        )
        with scope():
            ema = (
                {"use_ema": True, "ema_momentum": config.ema_momentum}
                if config.ema_momentum
                else {}
            )
            model.compile(
                optimizer=keras.optimizers.Adam(lr, **ema),
                loss="categorical_crossentropy",
                metrics=["accuracy"],
            )
        backup = keras.callbacks.BackupAndRestore(str(out / "backup" / name))
        logger = keras.callbacks.CSVLogger(str(history_csv), append=True)
        if config.ema_momentum:
            # At an epoch's end the backup keeps the raw weights, then the averaged ones are
            # swapped in for validation, the best-epoch checkpoint and the log.
            ordered = [backup, keras.callbacks.SwapEMAWeights(swap_on_epoch=True), best, logger]
        else:
            ordered = [best, logger, backup]
        phase_callbacks = [
            EpochSync(train_seq, config.seed),
            *ordered,
            *_schedule_callbacks(config, out),
            *(callbacks or []),
        ]
        # Order the first batches of the epoch fit will start at (a resumed phase starts
        # after its last logged epoch) before the loader prefetches any.
        train_seq.set_epoch(max(epoch, _logged_epochs(history_csv)))
        model.fit(
            train_seq,
            epochs=epoch + epochs,
            initial_epoch=epoch,
            class_weight=weights,
            callbacks=phase_callbacks,
            verbose="auto",
            shuffle=False,  # the sequence shuffles by (seed, epoch); Keras' own order is not
        )  # reproducible across a restart
        model.save_weights(done)
        epoch += epochs
    seconds = time.time() - start

    if best.weights_path.is_file():
        _load_model_weights(model, best.weights_path)
    save_model(model, config, out / "model.keras")
    val_probs = predict_samples(model, splits["val"], config.image_size, config.batch_size)
    metrics = write_evaluation(out, "val", splits["val"], val_probs)
    metrics["best_epoch"] = best.best_epoch + 1
    metrics["train_seconds"] = round(seconds, 1)
    (out / "metrics_val.json").write_text(json.dumps(metrics, indent=2))
    from leukedge.training.calibration import calibrate_run
    from leukedge.training.figures import run_figures
    from leukedge.training.report import metrics_markdown

    calibration = calibrate_run(out, "val")
    print(
        f"temperature {calibration['temperature']:.3f} (validation ECE "
        f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f})"
    )
    (out / "report.md").write_text(metrics_markdown(metrics, f"{out.name}: validation"))
    run_figures(out, "val")
    print(
        f"kept epoch {metrics['best_epoch']}: val accuracy {metrics['accuracy']:.4f}, "
        f"weighted F1 {metrics['weighted_f1']:.4f}; wrote {out}"
    )
    return metrics


def _load_model_weights(model, path: Path) -> None:
    """Load the model's weights from ``path``, without Keras' warning that the optimizer
    state saved there (one phase's Adam) does not fit the current phase's optimizer: only
    the model's weights are wanted here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _logged_epochs(history_csv: Path) -> int:
    """Epochs already written to ``history.csv`` (0 if none)."""
    if not history_csv.is_file():
        return 0
    with open(history_csv, newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _schedule_callbacks(config: TrainConfig, out: Path) -> list:
    import keras

    found = []
    if config.early_stopping_patience > 0:
        found.append(
            keras.callbacks.EarlyStopping(
                monitor="val_weighted_f1", mode="max", patience=config.early_stopping_patience
            )
        )
    if config.lr_plateau_patience > 0:
        found.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_weighted_f1",
                mode="max",
                patience=config.lr_plateau_patience,
                factor=config.lr_plateau_factor,
                min_lr=1e-7,
            )
        )
    if config.tensorboard and keras.backend.backend() == "tensorflow":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            print("TensorBoard logs off: the tensorboard package is not installed")
            return found
        found.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")))
    return found


def save_model(model, config: TrainConfig, path: Path) -> None:
    """Save ``model`` as ``.keras`` without optimizer state, atomically.

    The weights are copied into a freshly built, uncompiled model of the same architecture,
    so the file holds weights and graph only (22 MB rather than 69 MB with Adam's moments).
    """
    from leukedge.training.models import HeadConfig, build_model

    fresh = build_model(
        config.arch,
        len(LABELS),
        config.image_size,
        weights=None,
        head=HeadConfig(dropout=tuple(config.dropout)),
        frozen_batchnorm=config.weights is not None,
        input_norm=config.input_norm,
    )
    fresh.set_weights(model.get_weights())
    tmp = path.with_name(path.stem + ".partial.keras")
    fresh.save(tmp)
    os.replace(tmp, path)


def write_evaluation(
    out: Path, split: str, samples: list[Sample], probabilities: dict[str, list[float]]
) -> dict[str, Any]:
    """Write ``predictions_<split>.csv`` and ``metrics_<split>.json``; return the metrics."""
    from leukedge.training.metrics import evaluate

    truth = {str(s.path): s.label for s in samples}
    subjects = {str(s.path): s.subject for s in samples}
    metrics = evaluate(probabilities, truth, LABELS, subjects)
    metrics["split"] = split
    with open(out / f"predictions_{split}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "predicted", *[f"p_{lb}" for lb in LABELS]])
        for path in sorted(truth):
            p = probabilities[path]
            writer.writerow(
                [
                    path,
                    truth[path],
                    LABELS[max(range(len(p)), key=p.__getitem__)],
                    *[f"{v:.6f}" for v in p],
                ]
            )
    (out / f"metrics_{split}.json").write_text(json.dumps(metrics, indent=2))
    return metrics

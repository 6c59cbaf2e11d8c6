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

The settings are :class:`~leukedge.training.config.TrainConfig` (importable from here too);
prediction and the evaluation files are :mod:`leukedge.evaluation`'s. Progress is logged to
``logging.getLogger("leukedge.training.train")``; each step's time is logged and stored in
``metrics_val.json`` as ``timings_s``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leukedge.errors import LeukedgeError
from leukedge.evaluation.data import (
    LABELS,
    Sample,
    balanced_class_weights,
    check_no_subject_leak,
    class_counts,
    load_dataset,
    make_split,
    write_split,
)
from leukedge.evaluation.resolution import split_size_warnings
from leukedge.timing import StepTimes
from leukedge.training.config import TrainConfig

__all__ = ["RunExistsError", "TrainConfig", "save_model", "train"]

log = logging.getLogger(__name__)


class RunExistsError(LeukedgeError, FileExistsError):
    """``out`` already holds a finished run, an unfinished one (without ``resume``), or is
    a file. A ``FileExistsError``, as before it existed."""


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

    The steps, each timed (``timings_s`` in ``metrics_val.json``): read or make the split
    (``data``), measure the input standardisation targets when asked (``input_statistics``),
    build the model (``build``), fit the phases (``phase_head``, ``phase_finetune``), save
    the best epoch (``save``) and evaluate it on the validation split (``evaluate_val``).

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
        RunExistsError: ``out`` already holds a ``model.keras``, or holds a run and
            ``resume`` is off (a ``FileExistsError``).
        leukedge.evaluation.data.DatasetError: the data cannot make an honest split (a
            ``ValueError``).
        FileNotFoundError / ValueError: no dataset folder, a bad weights file,
            architecture or distribution.
        RuntimeError: ImageNet weights unavailable offline.
    """
    import keras

    from leukedge.modeling.models import build_model, embedding_width
    from leukedge.training.callbacks import ValidationCheckpoint
    from leukedge.training.distribute import distribution_scope
    from leukedge.training.pipeline import ImageSequence, build_augmenter

    out = Path(config.out)
    _check_out(out, resume)
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy(config.mixed_precision)

    times = StepTimes(log)
    split_on_disk = resume and (out / "split.csv").exists()
    with times.step("data"):
        splits = _splits(config, out if split_on_disk else None)
    counts = {name: class_counts(items) for name, items in splits.items()}
    weights = balanced_class_weights(splits["train"], LABELS) if config.class_weights else None
    _log_data(config, counts, weights)
    _measure_input_norm(config, splits["train"], times)

    # Everything that can fail on a bad setting (architecture, weights file, empty split)
    # runs before the run directory is written, so a failed start leaves nothing behind.
    scope, replicas = distribution_scope(config.distribute)
    with times.step("build"), scope():
        model = build_model(
            config.arch,
            len(LABELS),
            config.image_size,
            config.weights,
            head=config.head,
            input_norm=config.input_norm,
        )
    # Before any fitting: figures that the splits are too small to fit or check.
    split_warnings = split_size_warnings(counts, embedding_width(model))
    for warning in split_warnings:
        log.warning("small split: %s", warning)
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
            config.to_dict()
            | {
                "split_counts": counts,
                "split_warnings": split_warnings,
                "class_weight_values": weights,
            },
            indent=2,
        )
    )
    best = ValidationCheckpoint(
        splits["val"], config.image_size, config.batch_size, out / "checkpoints"
    )
    if not resume:
        (out / "history.csv").unlink(missing_ok=True)

    phases = [
        ("head", config.head_epochs, 0, config.head_lr),
        ("finetune", config.finetune_epochs, config.unfreeze_top, config.finetune_lr),
    ]
    fitting = _Fitting(
        model, config, out, train_seq, weights, best, callbacks or [], scope, replicas, times
    )
    epoch = 0
    for name, epochs, top_n, lr in phases:
        if epochs > 0:
            fitting.phase(name, epoch, epochs, top_n, lr)
            epoch += epochs
    seconds = sum(v for k, v in times.seconds.items() if k.startswith("phase_"))

    with times.step("save"):
        if best.weights_path.is_file():
            _load_model_weights(model, best.weights_path)
        save_model(model, config, out / "model.keras")
    with times.step("evaluate_val"):
        metrics = _evaluate_val(model, config, out, splits["val"])
    metrics["best_epoch"] = best.best_epoch + 1
    metrics["train_seconds"] = round(seconds, 1)
    metrics["timings_s"] = times.as_dict()
    (out / "metrics_val.json").write_text(json.dumps(metrics, indent=2))
    log.info(
        "kept epoch %d: val accuracy %.4f, weighted F1 %.4f; wrote %s",
        metrics["best_epoch"],
        metrics["accuracy"],
        metrics["weighted_f1"],
        out,
    )
    return metrics


def _check_out(out: Path, resume: bool) -> None:
    """Refuse an ``out`` that is a file, a finished run, or (without ``resume``) an
    unfinished one.

    Raises:
        RunExistsError: as :func:`train` says.
    """
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"{out} exists and is not a folder; choose a new --out")
    if (out / "model.keras").exists():
        raise RunExistsError(
            f"{out}/model.keras exists: that run has finished"
            + ("; nothing to resume" if resume else "; choose a new --out")
        )
    if (out / "split.csv").exists() and not resume:
        raise RunExistsError(f"{out} holds an unfinished run; pass --resume or a new --out")


def _splits(config: TrainConfig, resumed: Path | None) -> dict[str, list[Sample]]:
    """The run's split: read from ``resumed/split.csv``, else made from ``config.data``
    (checked for subjects in two splits, capped at ``max_per_split``)."""
    from leukedge.evaluation.data import read_split

    if resumed is not None:
        log.info("resuming %s: split read from split.csv", resumed)
        return read_split(resumed / "split.csv")
    samples = load_dataset(config.data, config.dataset_kind)
    splits = make_split(
        samples, config.split, config.fractions, config.seed, config.folds, config.fold
    )
    check_no_subject_leak(splits)
    return _cap(splits, config.max_per_split, config.seed)


def _log_data(
    config: TrainConfig, counts: dict[str, dict[str, int]], weights: dict[int, float] | None
) -> None:
    """Log the split's class counts, the class weights and any class a split lacks."""
    log.info("data %s: %s", config.data, "; ".join(f"{k} {v}" for k, v in counts.items()))
    log.info("class weights: %s", weights or "off (imbalance not handled)")
    for name, per_class in counts.items():
        missing = [label for label in LABELS if not per_class.get(label)]
        if missing and name != "train":
            log.info("note: the %s split has no %s images (no ROC there)", name, ", ".join(missing))


def _measure_input_norm(config: TrainConfig, train_split: list[Sample], times: StepTimes) -> None:
    """Fill ``config.input_norm``'s standardisation targets with the training split's
    channel statistics, where standardisation is on and no targets were given (the
    camera recipe gives ImageNet's)."""
    norm = config.input_norm
    if not norm.standardize or (norm.target_mean is not None and norm.target_std is not None):
        return
    from leukedge.engine.preprocess import load_and_resize
    from leukedge.modeling.layers import channel_statistics

    size = (config.image_size, config.image_size)
    with times.step("input_statistics"):
        norm.target_mean, norm.target_std = channel_statistics(
            load_and_resize(s.path, size) for s in train_split
        )
    log.info(
        "input standardisation targets (training split): mean %s; std %s",
        ", ".join(f"{v:.1f}" for v in norm.target_mean),
        ", ".join(f"{v:.1f}" for v in norm.target_std),
    )


@dataclass
class _Fitting:
    """What the phases of one run share: the model, its settings and run folder, the
    training sequence, the class weights (``None``: off), the best-epoch checkpoint,
    extra callbacks, the distribution scope and its number of replicas, and the step
    timer (each phase's fit is its step ``phase_<name>``)."""

    model: Any
    config: TrainConfig
    out: Path
    sequence: Any
    class_weight: dict[int, float] | None
    best: Any
    extra: list
    scope: Any
    replicas: int
    times: StepTimes

    def phase(self, name: str, epoch: int, epochs: int, top_n: int, lr: float) -> None:
        """Fit one phase (``name``: ``head`` or ``finetune``) from epoch ``epoch`` for
        ``epochs`` epochs, the top ``top_n`` backbone layers trainable, at learning rate
        ``lr``.

        A phase whose weights are in ``checkpoints/phase_<name>.weights.h5`` is finished:
        its weights are loaded instead. Otherwise the model is compiled (Adam, with the
        moving average of the weights when ``ema_momentum`` is set), fitted with the
        best-epoch checkpoint, ``history.csv``, ``backup/<name>`` (for ``--resume``), the
        schedule callbacks and the extra ones, and its weights are saved there.
        """
        import keras

        from leukedge.modeling.models import set_trainable_backbone_layers
        from leukedge.training.callbacks import EpochSync

        model, config, out = self.model, self.config, self.out
        done = out / "checkpoints" / f"phase_{name}.weights.h5"
        unfrozen = set_trainable_backbone_layers(
            model, top_n, train_batchnorm=config.weights is None
        )
        if done.is_file():
            _load_model_weights(model, done)
            log.info("phase %s: already finished, weights from %s", name, done)
            return
        log.info(
            "phase %s: %d epochs, lr %s, %d backbone layers trainable, %d replica(s)",
            name,
            epochs,
            lr,
            unfrozen,
            self.replicas,
        )
        with self.scope():
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
        history_csv = out / "history.csv"
        backup = keras.callbacks.BackupAndRestore(str(out / "backup" / name))
        logger = keras.callbacks.CSVLogger(str(history_csv), append=True)
        if config.ema_momentum:
            # At an epoch's end the backup keeps the raw weights, then the averaged ones are
            # swapped in for validation, the best-epoch checkpoint and the log.
            ordered = [
                backup,
                keras.callbacks.SwapEMAWeights(swap_on_epoch=True),
                self.best,
                logger,
            ]
        else:
            ordered = [self.best, logger, backup]
        phase_callbacks = [
            EpochSync(self.sequence, config.seed),
            *ordered,
            *_schedule_callbacks(config, out),
            *self.extra,
        ]
        # Order the first batches of the epoch fit will start at (a resumed phase starts
        # after its last logged epoch) before the loader prefetches any.
        self.sequence.set_epoch(max(epoch, _logged_epochs(history_csv)))
        with self.times.step(f"phase_{name}"):
            model.fit(
                self.sequence,
                epochs=epoch + epochs,
                initial_epoch=epoch,
                class_weight=self.class_weight,
                callbacks=phase_callbacks,
                verbose="auto",
                shuffle=False,  # the sequence shuffles by (seed, epoch); Keras' own order
            )  # is not reproducible across a restart
        model.save_weights(done)


def _evaluate_val(model, config: TrainConfig, out: Path, val: list[Sample]) -> dict[str, Any]:
    """The kept model on the validation split: predictions and metrics files, the fitted
    temperature (``calibration.json``), ``report.md`` and the figures; returns the metrics."""
    from leukedge.evaluation.evaluate import write_evaluation
    from leukedge.evaluation.figures import run_figures
    from leukedge.evaluation.predict import predict_keras
    from leukedge.evaluation.report import metrics_markdown
    from leukedge.training.calibration import calibrate_run

    val_probs = predict_keras(model, val, config.image_size, config.batch_size)
    metrics = write_evaluation(out, "val", val, val_probs)
    calibration = calibrate_run(out, "val")
    (out / "report.md").write_text(metrics_markdown(metrics, f"{out.name}: validation"))
    run_figures(out, "val")
    log.info(
        "temperature %.3f (validation ECE %.4f -> %.4f)",
        calibration["temperature"],
        calibration["ece_before"],
        calibration["ece_after"],
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
            log.warning("TensorBoard logs off: the tensorboard package is not installed")
            return found
        found.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")))
    return found


def save_model(model, config: TrainConfig, path: Path) -> None:
    """Save ``model`` as ``.keras`` without optimizer state, atomically.

    The weights are copied into a freshly built, uncompiled model of the same architecture,
    so the file holds weights and graph only (22 MB rather than 69 MB with Adam's moments).
    """
    from leukedge.modeling.models import build_model

    fresh = build_model(
        config.arch,
        len(LABELS),
        config.image_size,
        weights=None,
        head=config.head,
        frozen_batchnorm=config.weights is not None,
        input_norm=config.input_norm,
    )
    fresh.set_weights(model.get_weights())
    tmp = path.with_name(path.stem + ".partial.keras")
    fresh.save(tmp)
    os.replace(tmp, path)

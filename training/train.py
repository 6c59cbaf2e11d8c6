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
- ``metrics_val.json`` and ``predictions_val.csv``: the kept model on the validation split.

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
        split: ``auto`` (subject if known, else contiguous blocks), ``subject``, ``blocks``.
        fractions: train/validation/test fractions.
        class_weights: weight the loss by inverse class frequency ("balanced").
        augment: :class:`AugmentConfig` (training split only).
        seed: seeds Python, NumPy and the backend (``keras.utils.set_random_seed``).
        max_per_split: cap of images per split, for smoke tests (``None`` = all).
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
    class_weights: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    max_per_split: int | None = None

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
        known["augment"] = AugmentConfig(**known.get("augment", {}))
        known["fractions"] = tuple(known.get("fractions", (0.7, 0.15, 0.15)))
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
    if cap is None:
        return splits
    import numpy as np

    rng = np.random.default_rng(seed)
    capped = {}
    for name, items in splits.items():
        if len(items) > cap:
            keep = sorted(rng.choice(len(items), cap, replace=False))
            items = [items[i] for i in keep]
        capped[name] = items
    return capped


class BestEpoch:
    """Keras callback factory: validation metrics per epoch, best weights by weighted F1."""

    @staticmethod
    def make(samples: list[Sample], image_size: int, batch_size: int):
        import keras
        import numpy as np

        from leukedge.training.metrics import evaluate

        class _BestEpoch(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.best_f1 = -1.0
                self.best_epoch = -1
                self.best_weights = None
                self.truth = {str(s.path): s.label for s in samples}

            def on_epoch_end(self, epoch, logs=None):
                logs = logs if logs is not None else {}
                probs = predict_samples(self.model, samples, image_size, batch_size)
                m = evaluate(probs, self.truth, LABELS)
                p = np.array([probs[k] for k in sorted(self.truth)])
                y = np.array([LABELS.index(self.truth[k]) for k in sorted(self.truth)])
                logs["val_loss"] = float(
                    -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0)))
                )
                logs["val_accuracy"] = m["accuracy"]
                logs["val_weighted_f1"] = m["weighted_f1"]
                if m["weighted_f1"] > self.best_f1:
                    self.best_f1, self.best_epoch = m["weighted_f1"], epoch
                    self.best_weights = self.model.get_weights()
                print(
                    f"  epoch {epoch + 1}: val accuracy {m['accuracy']:.4f}, "
                    f"val weighted F1 {m['weighted_f1']:.4f}"
                    + (" (best)" if self.best_epoch == epoch else ""),
                    flush=True,
                )

        return _BestEpoch()


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one training as configured and write the run directory.

    Returns:
        The validation metrics of the kept epoch (also in ``metrics_val.json``), with
        ``best_epoch`` (1-based) added.

    Raises:
        FileExistsError: ``out`` already holds a ``model.keras``.
        FileNotFoundError / ValueError: bad dataset, split or architecture.
    """
    import keras

    from leukedge.training.models import build_model, set_trainable_backbone_layers
    from leukedge.training.pipeline import ImageSequence, build_augmenter

    out = Path(config.out)
    if (out / "model.keras").exists():
        raise FileExistsError(f"{out}/model.keras exists; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)

    samples = load_dataset(config.data, config.dataset_kind)
    splits = make_split(samples, config.split, config.fractions, config.seed)
    check_no_subject_leak(splits)
    splits = _cap(splits, config.max_per_split, config.seed)
    write_split(out / "split.csv", splits)
    counts = {name: class_counts(items) for name, items in splits.items()}
    weights = balanced_class_weights(splits["train"], LABELS) if config.class_weights else None
    print(f"data {config.data}: " + "; ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"class weights: {weights}" if weights else "class weights: off (imbalance not handled)")
    (out / "config.json").write_text(
        json.dumps(
            config.to_dict() | {"split_counts": counts, "class_weight_values": weights}, indent=2
        )
    )

    model = build_model(config.arch, len(LABELS), config.image_size, config.weights)
    train_seq = ImageSequence(
        splits["train"],
        LABELS,
        config.image_size,
        config.batch_size,
        shuffle=True,
        augmenter=build_augmenter(config.augment, config.seed),
        seed=config.seed,
    )
    best = BestEpoch.make(splits["val"], config.image_size, config.batch_size)
    history_csv = out / "history.csv"
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
        unfrozen = set_trainable_backbone_layers(
            model, top_n, train_batchnorm=config.weights is None
        )
        print(f"phase {name}: {epochs} epochs, lr {lr}, {unfrozen} backbone layers trainable")
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
        logger = keras.callbacks.CSVLogger(str(history_csv), append=True)
        model.fit(
            train_seq,
            epochs=epoch + epochs,
            initial_epoch=epoch,
            class_weight=weights,
            callbacks=[best, logger],
            verbose=2,
        )
        epoch += epochs
    seconds = time.time() - start

    if best.best_weights is not None:
        model.set_weights(best.best_weights)
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


def save_model(model, config: TrainConfig, path: Path) -> None:
    """Save ``model`` as ``.keras`` without optimizer state, atomically.

    The weights are copied into a freshly built, uncompiled model of the same architecture,
    so the file holds weights and graph only (22 MB rather than 69 MB with Adam's moments).
    """
    from leukedge.training.models import build_model

    fresh = build_model(
        config.arch,
        len(LABELS),
        config.image_size,
        weights=None,
        frozen_batchnorm=config.weights is not None,
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

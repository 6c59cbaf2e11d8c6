"""Keras callbacks of a leukedge run (backend-neutral Keras 3 API)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np

from leukedge.evaluation.data import LABELS, Sample
from leukedge.evaluation.metrics import evaluate
from leukedge.evaluation.predict import predict_keras
from leukedge.training.calibration import negative_log_likelihood

log = logging.getLogger(__name__)


class ValidationCheckpoint(keras.callbacks.Callback):
    """Validation metrics every epoch; the best epoch by weighted F1 kept on disk.

    After each epoch the model predicts the validation split (keyed by file path, joined to
    labels by name) and adds ``val_loss``, ``val_accuracy`` and ``val_weighted_f1`` to the
    epoch's logs, so later callbacks (CSV log, early stopping, learning-rate schedule,
    TensorBoard) see them. When weighted F1 improves, the weights go to
    ``checkpoint_dir/best.weights.h5`` and the epoch to ``best.json``; a resumed run reads
    both back, so the best epoch survives an interruption.

    Args:
        samples: the validation split.
        image_size: model input side, pixels.
        batch_size: prediction batch size.
        checkpoint_dir: where ``best.weights.h5`` and ``best.json`` live.
    """

    def __init__(
        self, samples: list[Sample], image_size: int, batch_size: int, checkpoint_dir: Path
    ):
        super().__init__()
        self.samples, self.image_size, self.batch_size = samples, image_size, batch_size
        self.truth = {str(s.path): s.label for s in samples}
        self.dir = Path(checkpoint_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self.dir / "best.json"
        saved = json.loads(state.read_text()) if state.is_file() else {}
        self.best_f1 = float(saved.get("weighted_f1", -1.0))
        self.best_epoch = int(saved.get("epoch", -1))

    @property
    def weights_path(self) -> Path:
        return self.dir / "best.weights.h5"

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        probs = predict_keras(self.model, self.samples, self.image_size, self.batch_size)
        m = evaluate(probs, self.truth, LABELS)
        keys = sorted(self.truth)
        p = np.array([probs[k] for k in keys])
        y = np.array([LABELS.index(self.truth[k]) for k in keys])
        logs["val_loss"] = negative_log_likelihood(y, p)
        logs["val_accuracy"] = m["accuracy"]
        logs["val_weighted_f1"] = m["weighted_f1"]
        improved = m["weighted_f1"] > self.best_f1
        if improved:
            self.best_f1, self.best_epoch = m["weighted_f1"], epoch
            self.model.save_weights(self.weights_path)
            (self.dir / "best.json").write_text(
                json.dumps(
                    {"epoch": epoch, "weighted_f1": m["weighted_f1"], "accuracy": m["accuracy"]}
                )
            )
        log.info(
            "epoch %d: val accuracy %.4f, val weighted F1 %.4f%s",
            epoch + 1,
            m["accuracy"],
            m["weighted_f1"],
            " (best)" if improved else "",
        )


class EpochSync(keras.callbacks.Callback):
    """Make epoch ``e`` a pure function of ``(seed, e)``, so a resumed run replays it.

    At the start of each epoch the training sequence is told the epoch (its shuffle order
    and augmentation depend only on ``(seed, epoch, batch)``) and the model's random layers
    (dropout, stochastic depth) are reseeded from ``(seed, epoch)``; see
    :mod:`leukedge.training.seeding`.

    Args:
        sequence: the training :class:`~leukedge.training.pipeline.ImageSequence`.
        seed: the run's seed (``TrainConfig.seed``), non-negative.
    """

    def __init__(self, sequence, seed: int = 0):
        super().__init__()
        self.sequence = sequence
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        from leukedge.training.seeding import reseed

        self.sequence.set_epoch(epoch)
        reseed(self.model, self.seed, epoch)

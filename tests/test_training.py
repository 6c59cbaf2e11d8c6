"""Training on real images: the model, the fine-tuning rule, two real steps, a tiny run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="training needs Keras (pip install .[train])")

from leukedge.training.data import LABELS, load_taleqani, split_by_blocks  # noqa: E402
from leukedge.training.models import (  # noqa: E402
    build_model,
    set_trainable_backbone_layers,
)
from leukedge.training.pipeline import (  # noqa: E402
    AugmentConfig,
    ImageSequence,
    build_augmenter,
)

SIZE = 64


@pytest.fixture(scope="module")
def splits(taleqani):
    return split_by_blocks(load_taleqani(taleqani))


def test_proposed_model_matches_the_paper():
    """Section IV.F: B0 + MHA + Dense 256/128 with BN, LeakyReLU, Dropout 0.5/0.3; 5.7 M."""
    model = build_model("proposed", weights=None)
    assert model.count_params() == pytest.approx(5.73e6, rel=0.01)
    names = [layer.name for layer in model.layers]
    order = [
        "efficientnetb0",
        "attention_mha",
        "head_gap",
        "head_dense_256",
        "head_bn_256",
        "head_act_256",
        "head_dropout_256",
        "head_dense_128",
        "head_bn_128",
        "head_act_128",
        "head_dropout_128",
        "predictions",
    ]
    assert [n for n in names if n in order] == order
    assert model.get_layer("head_dropout_256").rate == 0.5
    assert model.get_layer("head_dropout_128").rate == 0.3
    assert tuple(model.get_layer("attention_mha").output.shape[1:]) == (49, 1280)
    assert model.output_shape == (None, 2)


def test_top20_unfreezing_keeps_batchnorm_frozen():
    model = build_model("proposed-lite", input_size=SIZE, weights=None)
    backbone = model.get_layer("efficientnet_lite0")
    assert not any(w.trainable for w in backbone.weights)
    n = set_trainable_backbone_layers(model, 20)
    trainable = [layer for layer in backbone.layers if layer.trainable and layer.weights]
    assert n == len(trainable) > 0
    assert all(layer in backbone.layers[-20:] for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)


def test_augmentation_changes_training_images_only(splits):
    samples = splits["train"][:4]
    plain = ImageSequence(samples, LABELS, SIZE, batch_size=4)
    augmented = ImageSequence(
        samples, LABELS, SIZE, batch_size=4, augmenter=build_augmenter(AugmentConfig(), seed=1)
    )
    x0, y0 = plain[0]
    x1, y1 = augmented[0]
    assert x0.dtype == np.float32 and x0.shape == (4, SIZE, SIZE, 3)
    assert x0.min() >= 0 and x0.max() <= 255 and x1.min() >= 0 and x1.max() <= 255
    assert np.array_equal(y0, y1) and not np.allclose(x0, x1)
    assert build_augmenter(AugmentConfig(enabled=False)) is None


def test_random_draws_depend_only_on_seed_epoch_and_batch(splits):
    from leukedge.training.seeding import reseed, seed_states

    def sequence():
        return ImageSequence(
            splits["train"][:8], LABELS, SIZE, batch_size=4, shuffle=True, seed=3,
            augmenter=build_augmenter(AugmentConfig(), seed=3),
        )  # fmt: skip

    seq = sequence()
    seq.set_epoch(2)
    reference = seq[1][0]
    for index in (0, 1, 0):  # extra calls, as when Keras peeks at the first batches
        seq[index]
    seq.set_epoch(2)
    assert np.array_equal(seq[1][0], reference)
    fresh = sequence()  # a restarted process
    fresh.set_epoch(2)
    assert np.array_equal(fresh[1][0], reference)
    fresh.set_epoch(3)
    assert not np.allclose(fresh[1][0], reference)
    # The model's own random layers: same key, same dropout mask; another epoch, another.
    dropout = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5)])
    (state,) = seed_states(dropout)
    ones = np.ones((2, 64), np.float32)
    reseed(dropout, 0, 5)
    mask = np.asarray(dropout(ones, training=True))
    assert tuple(np.asarray(state.value)) != (0, 0)
    reseed(dropout, 0, 5)
    assert np.array_equal(np.asarray(dropout(ones, training=True)), mask)
    reseed(dropout, 0, 6)
    assert not np.array_equal(np.asarray(dropout(ones, training=True)), mask)


def test_two_training_steps_of_proposed_lite_move_the_right_weights(lite0_weights, splits):
    keras.utils.set_random_seed(0)
    model = build_model("proposed-lite", input_size=SIZE, weights=lite0_weights)
    set_trainable_backbone_layers(model, 20)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    backbone = model.get_layer("efficientnet_lite0")
    frozen = backbone.get_layer("stem_conv").get_weights()[0].copy()
    top = backbone.get_layer("top_conv").get_weights()[0].copy()
    bn_mean = backbone.get_layer("top_bn").moving_mean.numpy().copy()
    head = model.get_layer("head_dense_256").get_weights()[0].copy()
    seq = ImageSequence(
        splits["train"][::50],
        LABELS,
        SIZE,
        batch_size=8,
        shuffle=True,
        augmenter=build_augmenter(AugmentConfig()),
    )
    history = model.fit(seq, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert np.array_equal(backbone.get_layer("stem_conv").get_weights()[0], frozen)
    assert not np.array_equal(backbone.get_layer("top_conv").get_weights()[0], top)
    assert np.array_equal(backbone.get_layer("top_bn").moving_mean.numpy(), bn_mean)
    assert not np.array_equal(model.get_layer("head_dense_256").get_weights()[0], head)


@pytest.mark.slow
def test_tiny_run_writes_every_artefact(lite0_weights, taleqani, tmp_path):
    from leukedge.training.train import train

    out = tmp_path / "run"
    config = _tiny_config(
        taleqani,
        lite0_weights,
        out,
        head_epochs=1,
        finetune_epochs=1,
        augment=AugmentConfig(),
        tensorboard=True,
    )
    metrics = train(config)
    for name in (
        "model.keras",
        "config.json",
        "split.csv",
        "history.csv",
        "metrics_val.json",
        "predictions_val.csv",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "config.json").read_text())
    assert saved["arch"] == "proposed-lite" and saved["seed"] == 0
    assert saved["class_weight_values"]["1"] > saved["class_weight_values"]["0"]  # HEM rarer
    with open(out / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["0", "1"] and "val_weighted_f1" in rows[0]
    assert metrics["n"] == 16 and 1 <= metrics["best_epoch"] <= 2
    # The file holds weights and graph only (no optimizer state) and reloads.
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert getattr(model, "optimizer", None) is None
    with pytest.raises(FileExistsError):
        train(config)
    # config.json reproduces the run: the same losses and validation probabilities.
    from typer.testing import CliRunner

    from leukedge.cli import app

    again = tmp_path / "again"
    result = CliRunner().invoke(
        app, ["train", "--config", str(out / "config.json"), "--out", str(again)]
    )
    assert result.exit_code == 0, result.output
    assert _losses(again) == pytest.approx(_losses(out), rel=1e-5)
    assert (again / "predictions_val.csv").read_text() == (out / "predictions_val.csv").read_text()
    result = CliRunner().invoke(
        app, ["train", "--config", str(out / "split.csv"), "--out", str(tmp_path / "bad")]
    )
    assert result.exit_code == 2 and "not a usable leukedge config.json" in result.output
    result = CliRunner().invoke(app, ["train", "--resume", "--out", str(out)])
    assert result.exit_code == 2 and "finished; nothing to resume" in result.output


def _tiny_config(taleqani, weights, out, **overrides):
    from leukedge.training.train import TrainConfig

    settings = dict(
        data=str(taleqani),
        out=str(out),
        arch="proposed-lite",
        weights=str(weights),
        image_size=SIZE,
        batch_size=8,
        head_epochs=2,
        finetune_epochs=0,
        max_per_split=16,
        augment=AugmentConfig(enabled=False),
        tensorboard=False,
    )
    return TrainConfig(**(settings | overrides))


def _losses(run):
    with open(run / "history.csv") as handle:
        return [float(r["loss"]) for r in csv.DictReader(handle)]


class _StateProbe(keras.callbacks.Callback):
    """Record the head's weights and the optimizer's state as each epoch begins."""

    def __init__(self):
        super().__init__()
        self.states = {}

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        self.states[epoch] = (
            int(optimizer.iterations.numpy()),
            self.model.get_layer("head_dense_256").kernel.numpy().copy(),
            [v.numpy().copy() for v in optimizer.variables],
        )


@pytest.mark.slow
def test_resume_after_interruption_replays_the_uninterrupted_run(lite0_weights, taleqani, tmp_path):
    from leukedge.training.train import train

    # Dropout, stochastic depth and augmentation all on: their random states are reset from
    # (seed, epoch[, batch]), so a restart replays them too.
    augment = AugmentConfig()
    uninterrupted = _StateProbe()
    train(
        _tiny_config(taleqani, lite0_weights, tmp_path / "a", augment=augment),
        callbacks=[uninterrupted],
    )

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("simulated power cut after epoch 1")

    config = _tiny_config(taleqani, lite0_weights, tmp_path / "b", augment=augment)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt()])
    assert not (tmp_path / "b" / "model.keras").exists()
    with pytest.raises(FileExistsError, match="resume"):
        train(config)
    resumed = _StateProbe()
    train(config, resume=True, callbacks=[resumed])
    # The resumed run starts at epoch 2 with exactly the weights and Adam state (moments,
    # iteration count) that the uninterrupted run had there...
    assert list(resumed.states) == [1]
    iterations, kernel, optimizer_vars = resumed.states[1]
    assert iterations == uninterrupted.states[1][0] == 2
    assert np.array_equal(kernel, uninterrupted.states[1][1])
    assert all(
        np.array_equal(a, b)
        for a, b in zip(optimizer_vars, uninterrupted.states[1][2], strict=True)
    )
    # ...and trains through it like the uninterrupted run (measured: bit-identical losses).
    losses_a, losses_b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert len(losses_b) == 2
    assert losses_b == pytest.approx(losses_a, rel=1e-5)
    assert (tmp_path / "b" / "model.keras").is_file()


@pytest.mark.slow
def test_distributed_code_path_with_one_replica(lite0_weights, taleqani, tmp_path):
    from leukedge.training.distribute import distribution_scope
    from leukedge.training.train import train

    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        distribution_scope("data-parallel")
    with pytest.raises(ValueError, match="unknown distribution"):
        distribution_scope("ring")
    metrics = train(
        _tiny_config(
            taleqani,
            lite0_weights,
            tmp_path / "m",
            head_epochs=1,
            distribute="mirrored",
            max_per_split=8,
        )
    )
    assert metrics["n"] == 8
    assert json.loads((tmp_path / "m" / "config.json").read_text())["distribute"] == "mirrored"


def test_steps_on_cnmc_cells_by_subject(cnmc):
    from leukedge.training.data import load_cnmc

    samples = load_cnmc(cnmc)
    keras.utils.set_random_seed(0)
    model = build_model("proposed-lite", input_size=SIZE, weights=None)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    seq = ImageSequence(
        samples,
        LABELS,
        SIZE,
        batch_size=5,
        shuffle=True,
        augmenter=build_augmenter(AugmentConfig()),
    )
    x, y = seq[0]
    assert x.shape == (5, SIZE, SIZE, 3) and y.sum() == 5
    history = model.fit(seq, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_offline_imagenet_request_names_the_file(monkeypatch, tmp_path):
    from leukedge.training.models import build_backbone

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no weights there
    with pytest.raises(RuntimeError, match="import-weights"):
        build_backbone("proposed-lite", SIZE, "imagenet")
    with pytest.raises(ValueError, match="no such file"):
        build_backbone("proposed", SIZE, str(tmp_path / "missing.h5"))


def test_bad_settings_and_failed_starts_write_nothing(taleqani, tmp_path, monkeypatch):
    from leukedge.training.train import TrainConfig, train

    for bad, match in [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"image_size": "big"}, "image_size must be an integer"),
        ({"max_per_split": 0}, "max_per_split must be an integer >= 1"),
        ({"arch": "bogus"}, "unknown architecture 'bogus'"),
        ({"distribute": "ring"}, "unknown distribution"),
        ({"head_epochs": 0, "finetune_epochs": 0}, "nothing to train"),
        ({"seed": -1}, "seed must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(data=str(taleqani), out=str(tmp_path / "x"), **bad)
    # The data path is stored absolute, so a run's files work from any directory.
    monkeypatch.chdir(taleqani.parent)
    assert TrainConfig(data="taleqani", out="x").data == str(taleqani.absolute())
    # A start that fails on a setting only found out by trying (a missing weights file)
    # leaves no run folder, so the same --out can be used again without --resume.
    out = tmp_path / "run"
    config = TrainConfig(
        data=str(taleqani), out=str(out), weights=str(tmp_path / "missing.h5"),
        image_size=SIZE, max_per_split=8, tensorboard=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="no such file"):
        train(config)
    assert not out.exists()


def test_capped_splits_keep_every_class(splits):
    from leukedge.training.train import _cap

    capped = _cap(splits, 8, seed=0)
    for name, items in capped.items():
        assert len(items) == 8
        assert {s.label for s in items} == {"ALL", "HEM"}, name  # HEM is ~16 %: 1 of 8
        assert items == sorted(items, key=splits[name].index)  # order kept

"""Training on real images: the model, the fine-tuning rule, two real steps, a tiny run."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="training needs Keras (pip install .[train])")

from leukedge.evaluation.data import LABELS, load_taleqani, split_by_blocks  # noqa: E402
from leukedge.modeling.models import (  # noqa: E402
    build_model,
    set_trainable_backbone_layers,
)
from leukedge.training.augment import AugmentConfig  # noqa: E402
from leukedge.training.pipeline import ImageSequence, build_augmenter  # noqa: E402

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


PNG = b"\x89PNG\r\n\x1a\n"


def _history(run):
    with open(run / "history.csv") as handle:
        return list(csv.DictReader(handle))


def _losses(run):
    return [float(r["loss"]) for r in _history(run)]


@pytest.mark.slow
def test_tiny_run_writes_every_artefact(tiny_run, tiny_config, tmp_path):
    from leukedge.training.train import train

    out, metrics = tiny_run
    # Every file the README lists for a run, each with content.
    for name in (
        "model.keras",
        "config.json",
        "split.csv",
        "history.csv",
        "metrics_val.json",
        "predictions_val.csv",
        "report.md",
        "calibration.json",
        "checkpoints/best.weights.h5",
        "checkpoints/best.json",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("curves.png", "confusion_val.png", "roc_val.png", "reliability_val.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    assert list((out / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard logs"
    saved = json.loads((out / "config.json").read_text())
    assert saved["arch"] == "proposed-lite" and saved["seed"] == 0
    assert saved["class_weight_values"]["1"] > saved["class_weight_values"]["0"]  # HEM rarer
    rows = _history(out)
    assert [r["epoch"] for r in rows] == ["0", "1"] and "val_weighted_f1" in rows[0]
    # The kept epoch is the best by validation weighted F1 (the first of equals), and the
    # kept model scores that F1 again; every file says the same.
    f1 = [float(r["val_weighted_f1"]) for r in rows]
    assert metrics["best_epoch"] == f1.index(max(f1)) + 1
    assert json.loads((out / "checkpoints/best.json").read_text())["epoch"] == f1.index(max(f1))
    assert metrics["weighted_f1"] == pytest.approx(max(f1))
    assert json.loads((out / "metrics_val.json").read_text()) == metrics
    # Each step's seconds, as logged; training time is the two phases'.
    timings = metrics["timings_s"]
    assert {"data", "build", "phase_head", "phase_finetune", "save", "evaluate_val"} <= set(timings)
    phases = timings["phase_head"] + timings["phase_finetune"]
    assert metrics["train_seconds"] == pytest.approx(phases, abs=0.1) and phases > 0
    assert f"| weighted_f1 | {metrics['weighted_f1']:.4f} |" in (out / "report.md").read_text()
    with open(out / "predictions_val.csv") as handle:
        predicted = {r["path"] for r in csv.DictReader(handle)}
    with open(out / "split.csv") as handle:
        assert predicted == {r["path"] for r in csv.DictReader(handle) if r["split"] == "val"}
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["n"] == metrics["n"] == 16 and calibration["temperature"] > 0
    assert calibration["nll_after"] <= calibration["nll_before"]
    # The file holds weights and graph only (no optimizer state) and reloads.
    model = keras.saving.load_model(out / "model.keras", compile=False)
    assert getattr(model, "optimizer", None) is None
    with pytest.raises(FileExistsError):
        train(tiny_config(out))
    # config.json reproduces the run: the same losses and validation probabilities.
    again = tmp_path / "again"
    result = _train_cli("--config", out / "config.json", "--out", again)
    assert result.exit_code == 0, result.output
    assert _losses(again) == pytest.approx(_losses(out), rel=1e-5)
    assert (again / "predictions_val.csv").read_text() == (out / "predictions_val.csv").read_text()
    result = _train_cli("--config", out / "split.csv", "--out", tmp_path / "bad")
    assert result.exit_code == 2 and "not a usable leukedge config.json" in result.output
    result = _train_cli("--resume", "--out", out)
    assert result.exit_code == 2 and "finished; nothing to resume" in result.output


def _train_cli(*args):
    """``leukedge train ARGS`` in this process; output holds stdout and stderr."""
    from typer.testing import CliRunner

    from leukedge.cli import app

    return CliRunner().invoke(app, ["train", *map(str, args)])


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
def test_resume_after_interruption_replays_the_uninterrupted_run(tiny_config, tmp_path):
    from leukedge.training.train import train

    # Dropout, stochastic depth and augmentation all on: their random states are reset from
    # (seed, epoch[, batch]), so a restart replays them too.
    augment = AugmentConfig()
    uninterrupted = _StateProbe()
    train(
        tiny_config(tmp_path / "a", augment=augment),
        callbacks=[uninterrupted],
    )

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("simulated power cut after epoch 1")

    config = tiny_config(tmp_path / "b", augment=augment)
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
def test_resume_skips_a_finished_phase(tiny_config, tmp_path):
    """Interrupted at the start of the fine-tuning phase, a resumed run loads the head
    phase's weights from ``checkpoints/`` and fits only what was left: epoch 2."""
    from leukedge.training.train import train

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # the first epoch of the fine-tuning phase
                raise KeyboardInterrupt("simulated power cut between the phases")

    class Epochs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.begun = []

        def on_epoch_begin(self, epoch, logs=None):
            self.begun.append(epoch)

    config = tiny_config(tmp_path / "run", head_epochs=1, finetune_epochs=1)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt()])
    assert (tmp_path / "run" / "checkpoints" / "phase_head.weights.h5").is_file()
    epochs = Epochs()
    metrics = train(config, resume=True, callbacks=[epochs])
    assert epochs.begun == [1]
    assert len(_losses(tmp_path / "run")) == 2
    assert "phase_head" not in metrics["timings_s"] and metrics["timings_s"]["phase_finetune"] > 0


@pytest.mark.slow
def test_distributed_code_path_with_one_replica(tiny_config, tmp_path):
    import tensorflow as tf

    from leukedge.training.distribute import distribution_scope
    from leukedge.training.train import train

    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        distribution_scope("data-parallel")
    with pytest.raises(ValueError, match="unknown distribution"):
        distribution_scope("ring")

    class StrategyProbe(keras.callbacks.Callback):
        """What the model was built and trained under, seen from inside fit."""

        def on_train_batch_begin(self, batch, logs=None):
            self.strategy = self.model.distribute_strategy
            self.variable = self.model.trainable_variables[0].value

    probe = StrategyProbe()
    config = tiny_config(tmp_path / "m", head_epochs=1, distribute="mirrored", max_per_split=8)
    metrics = train(config, callbacks=[probe])
    assert metrics["n"] == 8
    assert json.loads((tmp_path / "m" / "config.json").read_text())["distribute"] == "mirrored"
    # The model was built and trained under a MirroredStrategy: its variables are mirrored.
    assert isinstance(probe.strategy, tf.distribute.MirroredStrategy)
    assert probe.strategy.num_replicas_in_sync == 1
    assert isinstance(probe.variable, tf.distribute.DistributedValues)


def test_steps_on_cnmc_cells_by_subject(cnmc):
    from leukedge.evaluation.data import load_cnmc

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
    from leukedge.modeling.models import build_backbone

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
    # The data path is stored absolute, so a run's files work from any directory (the
    # working directory is the resolved one when ../shared is a symlink: same folder).
    monkeypatch.chdir(taleqani.parent)
    data = TrainConfig(data="taleqani", out="x").data
    assert os.path.isabs(data) and os.path.samefile(data, taleqani)
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


class _PeakFirstThenRecord(keras.callbacks.Callback):
    """Make validation peak at the first epoch, and record each epoch's validation
    probabilities.

    From the second epoch on, the output layer is set to call every image the validation
    split's rarer class (kernel 0, bias ±20: a few Adam steps cannot move that), whose
    weighted F1 is the lowest a constant answer can score; the first epoch's is above it.
    """

    def __init__(self, run_dir, image_size):
        super().__init__()
        self.run_dir, self.image_size, self.val_probs = run_dir, image_size, {}
        self.learning_rates = []

    def on_train_begin(self, logs=None):
        from leukedge.evaluation.data import class_counts, read_split

        self.val = read_split(self.run_dir / "split.csv")["val"]
        counts = class_counts(self.val)
        self.rare = min(LABELS, key=lambda label: counts.get(label, 0))

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= 1:
            layer = self.model.get_layer("predictions")
            kernel, _ = layer.get_weights()
            bias = np.where(np.array(LABELS) == self.rare, 20.0, -20.0).astype(np.float32)
            layer.set_weights([np.zeros_like(kernel), bias])

    def on_epoch_end(self, epoch, logs=None):
        from leukedge.evaluation.predict import predict_keras

        self.val_probs[epoch] = predict_keras(self.model, self.val, self.image_size, 4)
        self.learning_rates.append(float(self.model.optimizer.learning_rate))


@pytest.mark.slow
def test_kfold_early_stopping_and_best_epoch_through_the_cli(
    cnmc, lite0_weights, tmp_path, monkeypatch
):
    """``--split kfold`` by subject, ``--early-stopping-patience``,
    ``--lr-plateau-patience`` and the best epoch kept, through ``leukedge train`` on the
    C-NMC cells (5 subjects) at 32 px."""
    import functools

    import leukedge.training.train as train_module
    from leukedge.evaluation.data import check_no_subject_leak, load_cnmc, read_split, subject_folds
    from leukedge.evaluation.predict import predict_keras

    out = tmp_path / "kfold"
    probe = _PeakFirstThenRecord(out, 32)
    monkeypatch.setattr(
        train_module, "train", functools.partial(train_module.train, callbacks=[probe])
    )
    result = _train_cli(
        "--data", cnmc, "--weights", lite0_weights, "--image-size", 32, "--batch-size", 4,
        "--head-epochs", 3, "--finetune-epochs", 0, "--split", "kfold", "--folds", 3,
        "--fold", 0, "--early-stopping-patience", 1, "--lr-plateau-patience", 1, "--no-augment",
        "--no-tensorboard", "--recipe", "paper",
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # k-fold by subject: of 3 subject folds, fold 0 is the test split, the next validation.
    splits = read_split(out / "split.csv")
    check_no_subject_leak(splits)
    folds = subject_folds(load_cnmc(cnmc), 3, seed=0)
    for name, fold in (("test", 0), ("val", 1), ("train", 2)):
        assert sorted(s.path.name for s in splits[name]) == sorted(s.path.name for s in folds[fold])
    # Early stopping: 3 epochs asked; the second had no better F1, so training stopped.
    f1 = [float(r["val_weighted_f1"]) for r in _history(out)]
    assert len(f1) == 2 and f1[1] <= f1[0], f1
    # The learning-rate schedule halved the head's 1e-3 (the paper's recipe) after that flat epoch.
    assert probe.learning_rates == pytest.approx([1e-3, 5e-4])
    # The best epoch (the first) is the one saved, not the last.
    metrics = json.loads((out / "metrics_val.json").read_text())
    assert metrics["best_epoch"] == 1
    model = keras.saving.load_model(out / "model.keras", compile=False)
    saved = predict_keras(model, splits["val"], 32, 4)
    first, last = probe.val_probs[0], probe.val_probs[1]
    for path, p in saved.items():
        assert p == pytest.approx(first[path], abs=1e-5), path
    assert max(np.abs(np.subtract(saved[k], last[k])).max() for k in saved) > 0.1


def test_train_cli_usage_errors_exit_2_and_write_nothing(cnmc, tmp_path):
    """Bad settings, a subject in two splits, a missing weights file or an --out that holds
    a run: exit 2 with the reason, and no run folder written."""
    out = tmp_path / "run"
    quick = ("--weights", "none", "--image-size", 32, "--head-epochs", 1, "--finetune-epochs", 0)
    cases = [
        (["--out", out], "--data is required"),
        (["--resume", "--out", out], "nothing to resume"),
        (["--data", tmp_path / "nowhere", "--out", out], "Invalid value"),
        # Choices come from TrainConfig's Literal types; Typer refuses the rest by name.
        (["--data", cnmc, "--arch", "bogus", "--out", out], "'bogus' is not one of"),
        (["--data", cnmc, "--split", "bogus", *quick, "--out", out], "'bogus' is not one of"),
        (["--data", cnmc, "--weights", tmp_path / "missing.h5", "--out", out], "no such file"),
        # C-NMC by blocks of file numbers puts subjects in several splits: refused.
        (["--data", cnmc, "--split", "blocks", *quick, "--out", out], "subjects in several"),
    ]
    for args, message in cases:
        result = _train_cli(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert not out.exists(), args
    out.mkdir()
    (out / "split.csv").write_text("path,label,subject,group,split\n")
    result = _train_cli("--data", cnmc, *quick, "--out", out)
    assert result.exit_code == 2 and "holds an unfinished run" in result.output
    assert [p.name for p in out.iterdir()] == ["split.csv"]


def test_config_file_repeats_every_setting_and_data_may_move(tiny_config, tmp_path, monkeypatch):
    """``--config RUN/config.json`` takes every setting from the file (other options are
    ignored); ``--data`` may point to the dataset's new place."""
    import leukedge.training.train as train_module
    from leukedge.training.train import TrainConfig

    old = tiny_config(tmp_path / "old", seed=7, early_stopping_patience=2, split="blocks")
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(old.to_dict()))
    moved = tmp_path / "moved"
    moved.symlink_to(old.data, target_is_directory=True)
    started = []
    monkeypatch.setattr(train_module, "train", lambda config, resume=False: started.append(config))
    new_out = tmp_path / "new"
    args = (
        "--config",
        config_file,
        "--data",
        moved,
        "--out",
        new_out,
        "--seed",
        1,
        "--arch",
        "resnet50",
    )
    result = _train_cli(*args)
    assert result.exit_code == 0, result.output
    assert "other options ignored" in result.output
    (config,) = started
    assert config == TrainConfig.from_dict(
        old.to_dict() | {"data": str(moved), "out": str(new_out)}
    )
    assert config.data == str(moved) and config.seed == 7 and config.arch == "proposed-lite"
    started.clear()
    assert _train_cli("--config", config_file, "--out", new_out).exit_code == 0
    assert started[0].data == old.data


@pytest.mark.slow
def test_train_bench_reports_both_rates(cnmc, tmp_path):
    out = tmp_path / "bench.json"
    result = _train_cli(
        "bench", "--data", cnmc, "--arch", "proposed-lite", "--image-size", 32,
        "--batch-size", 4, "--steps", 1, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert json.loads(result.output[result.output.index("{") :]) == report
    assert report["backend"] == "tensorflow" and report["image_size"] == 32
    assert report["pipeline_images_per_s"] > 0 and report["train_images_per_s"] > 0
    ratio = report["pipeline_images_per_s"] / report["train_images_per_s"]
    assert report["pipeline_to_train_ratio"] == pytest.approx(ratio, rel=0.05)

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
    order = ["efficientnetb0", "attention_mha", "head_gap", "head_dense_256", "head_bn_256",
             "head_act_256", "head_dropout_256", "head_dense_128", "head_bn_128", "head_act_128",
             "head_dropout_128", "predictions"]
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
    augmented = ImageSequence(samples, LABELS, SIZE, batch_size=4,
                              augmenter=build_augmenter(AugmentConfig(), seed=1))
    x0, y0 = plain[0]
    x1, y1 = augmented[0]
    assert x0.dtype == np.float32 and x0.shape == (4, SIZE, SIZE, 3)
    assert x0.min() >= 0 and x0.max() <= 255 and x1.min() >= 0 and x1.max() <= 255
    assert np.array_equal(y0, y1) and not np.allclose(x0, x1)
    assert build_augmenter(AugmentConfig(enabled=False)) is None


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
    seq = ImageSequence(splits["train"][::50], LABELS, SIZE, batch_size=8, shuffle=True,
                        augmenter=build_augmenter(AugmentConfig()))
    history = model.fit(seq, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert np.array_equal(backbone.get_layer("stem_conv").get_weights()[0], frozen)
    assert not np.array_equal(backbone.get_layer("top_conv").get_weights()[0], top)
    assert np.array_equal(backbone.get_layer("top_bn").moving_mean.numpy(), bn_mean)
    assert not np.array_equal(model.get_layer("head_dense_256").get_weights()[0], head)


@pytest.mark.slow
def test_tiny_run_writes_every_artefact(lite0_weights, taleqani, tmp_path):
    from leukedge.training.train import TrainConfig, train

    out = tmp_path / "run"
    config = TrainConfig(data=str(taleqani), out=str(out), arch="proposed-lite",
                         weights=str(lite0_weights), image_size=SIZE, batch_size=8,
                         head_epochs=1, finetune_epochs=1, max_per_split=16)
    metrics = train(config)
    for name in ("model.keras", "config.json", "split.csv", "history.csv", "metrics_val.json",
                 "predictions_val.csv"):
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

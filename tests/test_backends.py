"""Models trained under the other Keras backends (torch, JAX) convert under TensorFlow."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="conversion needs TensorFlow")

pytestmark = pytest.mark.slow

TRAIN_UNDER_TORCH = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "torch", keras.backend.backend()
    from leukedge.evaluation.data import LABELS, load_taleqani, split_by_blocks
    from leukedge.modeling.models import build_model, set_trainable_backbone_layers
    from leukedge.training.augment import AugmentConfig
    from leukedge.training.pipeline import ImageSequence, build_augmenter
    out, data = sys.argv[1], sys.argv[2]
    keras.utils.set_random_seed(0)
    model = build_model("proposed-lite", input_size=64, weights=None)
    set_trainable_backbone_layers(model, 20, train_batchnorm=True)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    train = split_by_blocks(load_taleqani(data))["train"][::100]
    seq = ImageSequence(train, LABELS, 64, batch_size=8, shuffle=True,
                        augmenter=build_augmenter(AugmentConfig()))
    history = model.fit(seq, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    model.save(out + "/torch_model.keras")
    x = np.stack([seq[0][0][:4]])[0]
    np.save(out + "/x.npy", x)
    np.save(out + "/p.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    print("TRAINED", keras.backend.backend())
""")


def test_torch_trained_model_converts_with_identical_outputs(taleqani, tmp_path):
    pytest.importorskip("torch", reason="the torch backend needs torch (pip install torch==2.13.0)")
    env = dict(os.environ, KERAS_BACKEND="torch")
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN_UNDER_TORCH, str(tmp_path), str(taleqani)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0 and "TRAINED torch" in proc.stdout, proc.stderr[-3000:]

    from leukedge.converters.tflite import convert_keras
    from leukedge.engine.interpreter import TFLiteEngine
    from leukedge.modeling.saving import load_keras_model

    model = load_keras_model(tmp_path / "torch_model.keras")
    x, p_torch = np.load(tmp_path / "x.npy"), np.load(tmp_path / "p.npy")
    p_tf = np.asarray(model(x, training=False))
    assert np.abs(p_tf - p_torch).max() <= 1e-4
    engine = TFLiteEngine(convert_keras(model, "fp32"))
    p_tflite = np.stack([engine.run(np.round(image).astype(np.uint8)) for image in x])
    # x came from the pipeline as float32 0-255 (augmented, so not integral): compare on the
    # rounded pixels the engine sees.
    p_rounded = np.asarray(model(np.round(x).astype(np.float32), training=False))
    assert np.abs(p_tflite - p_rounded).max() <= 1e-4


def test_jax_data_parallel_run_reloads_and_converts_under_tensorflow(
    lite0_weights, taleqani, tmp_path
):
    """The whole ``leukedge train`` command under JAX with ``--distribute data-parallel``
    (one CPU device = one replica), then its ``model.keras`` under TensorFlow: same
    validation probabilities as the run wrote, and the same again from the ``.tflite``."""
    pytest.importorskip("jax", reason="the JAX backend needs jax (in the dev extra)")
    out = tmp_path / "jax_run"
    proc = subprocess.run(
        [
            sys.executable, "-m", "leukedge.cli", "train",
            "--data", str(taleqani), "--arch", "proposed-lite", "--weights", str(lite0_weights),
            "--image-size", "64", "--batch-size", "4", "--head-epochs", "1",
            "--finetune-epochs", "1", "--max-per-split", "8", "--distribute", "data-parallel",
            "--no-tensorboard", "--out", str(out),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, KERAS_BACKEND="jax"),
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "1 replica(s)" in proc.stderr  # progress is logged to standard error
    config = json.loads((out / "config.json").read_text())
    assert config["keras_backend"] == "jax" and config["distribute"] == "data-parallel"

    from leukedge.converters.tflite import convert_keras
    from leukedge.engine.interpreter import TFLiteEngine
    from leukedge.engine.preprocess import load_and_resize
    from leukedge.modeling.saving import load_keras_model

    with open(out / "predictions_val.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    model = load_keras_model(out / "model.keras")
    engine = TFLiteEngine(convert_keras(model, "fp32"))
    for row in rows:  # joined by path: the file name, never the position
        image = load_and_resize(row["path"], (64, 64))
        p_jax = np.array([float(row["p_ALL"]), float(row["p_HEM"])])
        p_tf = np.asarray(model(image[None].astype(np.float32), training=False))[0]
        assert np.abs(p_tf - p_jax).max() <= 1e-4, row["path"]
        assert np.abs(engine.run(image) - p_jax).max() <= 1e-4, row["path"]

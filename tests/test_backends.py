"""A model trained under another Keras backend (torch) converts under TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("torch", reason="the torch backend needs torch (pip install torch==2.13.0)")
pytest.importorskip("tensorflow", reason="conversion needs TensorFlow")

pytestmark = pytest.mark.slow

TRAIN_UNDER_TORCH = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "torch", keras.backend.backend()
    from leukedge.training.data import LABELS, load_taleqani, split_by_blocks
    from leukedge.training.models import build_model, set_trainable_backbone_layers
    from leukedge.training.pipeline import AugmentConfig, ImageSequence, build_augmenter
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
    env = dict(os.environ, KERAS_BACKEND="torch")
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN_UNDER_TORCH, str(tmp_path), str(taleqani)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0 and "TRAINED torch" in proc.stdout, proc.stderr[-3000:]

    from leukedge.converters.tflite import convert_keras, load_keras_model
    from leukedge.runtime import TFLiteEngine

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

"""The camera recipe: in-graph input normalisation, photometric augmentation, robustness."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

keras = pytest.importorskip("keras", reason="training needs Keras (pip install .[train])")

from leukedge.engine.preprocess import load_rgb  # noqa: E402
from leukedge.evaluation import robustness  # noqa: E402
from leukedge.modeling.config import InputNormConfig  # noqa: E402
from leukedge.modeling.layers import (  # noqa: E402
    GaussianBlur,
    PerImageStandardization,
    channel_statistics,
    gaussian_kernel,
)
from leukedge.modeling.models import build_model  # noqa: E402
from leukedge.training.augment import PhotometricConfig, photometric  # noqa: E402
from leukedge.training.recipes import RECIPES, recipe  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
FIELD = EXAMPLES / "WBC-Benign-420.jpg"


def test_standardization_is_exact_and_cancels_exposure():
    rgb = load_rgb(FIELD).astype(np.float32)[None]
    layer = PerImageStandardization([200.0, 210.0, 230.0], [30.0, 32.0, 12.0], min_std=1.0)
    out = keras.ops.convert_to_numpy(layer(rgb))[0]
    np.testing.assert_allclose(out.mean(axis=(0, 1)), [200.0, 210.0, 230.0], atol=1e-2)
    np.testing.assert_allclose(out.std(axis=(0, 1)), [30.0, 32.0, 12.0], rtol=1e-3)
    darker = keras.ops.convert_to_numpy(layer(rgb * 0.9))[0]
    np.testing.assert_allclose(darker, out, atol=0.05)  # a −10 % exposure is cancelled
    floored = PerImageStandardization([200.0, 210.0, 230.0], [30.0, 32.0, 12.0], min_std=8.0)
    flat = keras.ops.convert_to_numpy(floored(np.full((1, 8, 8, 3), 100.0, np.float32)))
    np.testing.assert_allclose(flat, np.broadcast_to([200.0, 210.0, 230.0], flat.shape))


def test_blur_kernel_is_a_normalised_gaussian():
    layer = GaussianBlur(1.0)
    x = np.zeros((1, 15, 15, 3), np.float32)
    x[0, 7, 7, :] = 1.0
    response = keras.ops.convert_to_numpy(layer(x))[0, :, :, 0]
    assert layer.radius == 3 and not layer.weights
    assert response.shape == (15, 15) and response.sum() == pytest.approx(1.0, abs=1e-5)
    # Reflected borders: a flat image stays flat (no dark frame).
    flat = keras.ops.convert_to_numpy(layer(np.full((1, 12, 12, 3), 200.0, np.float32)))
    np.testing.assert_allclose(flat, 200.0, rtol=1e-5)
    assert response[7, 7] == pytest.approx(1 / (2 * np.pi), rel=0.05)  # peak of a σ=1 2-D Gaussian
    np.testing.assert_allclose(response, response.T, atol=1e-7)
    # Two 1-D passes give the 2-D kernel: the outer product of the 1-D Gaussian.
    g = gaussian_kernel(1.0)
    np.testing.assert_allclose(response[4:11, 4:11], np.outer(g, g), atol=1e-6)


def test_model_with_input_norm_round_trips_through_keras_file(tmp_path):
    norm = InputNormConfig(1.0, True, (200.0, 210.0, 230.0), (30.0, 32.0, 12.0))
    model = build_model("proposed-lite", input_size=64, weights=None, input_norm=norm)
    names = [layer.name for layer in model.layers]
    assert names[1:3] == ["input_blur", "input_standardize"]
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    from leukedge.modeling.saving import load_keras_model

    again = load_keras_model(path)
    np.testing.assert_allclose(again.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)
    with pytest.raises(ValueError, match="target_mean"):
        build_model("proposed-lite", 64, weights=None, input_norm=InputNormConfig(0, True))


def test_input_normalisation_stays_float_without_float_islands_and_loads_in_bench(tmp_path):
    """``--no-float-islands`` gives the attention back to int8 but never the input
    normalisation (in int8 it broke v2: 37.8 % agreement in ``bench --compare``), and
    ``bench --compare``'s Keras engines load a model with leukedge's custom layers."""
    from leukedge.converters.tflite import island_layers

    norm = InputNormConfig(1.0, True, (200.0, 210.0, 230.0), (30.0, 32.0, 12.0))
    model = build_model("proposed-lite", input_size=64, weights=None, input_norm=norm)
    assert island_layers(model, attention=False) == ["input_blur", "input_standardize"]
    assert set(island_layers(model)) == {
        "input_blur",
        "input_standardize",
        "attention_mha",
        "attention_norm",
    }
    path = tmp_path / "m.keras"
    model.save(path)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    # A fresh process, as the benchmark's workers are: nothing has registered leukedge's
    # layers there unless the engine does.
    script = (
        "import sys, numpy as np\n"
        "from leukedge.converters.engines import _keras\n"
        "run, prepare = _keras(sys.argv[1], threads=1, compiled=True)\n"
        "np.save(sys.argv[3], run(prepare(np.load(sys.argv[2]))))\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        check=True,
        capture_output=True,
        env=dict(os.environ, KERAS_BACKEND="tensorflow"),
        timeout=300,
    )
    expected = model.predict_on_batch(x.astype(np.float32))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


def test_channel_statistics_by_hand():
    a = np.zeros((2, 2, 3), np.uint8)
    b = np.full((2, 2, 3), 100, np.uint8)
    b[0, 0] = 0
    mean, std = channel_statistics([a, b])
    assert mean == pytest.approx((37.5,) * 3)
    assert std == pytest.approx((np.std([0, 100, 100, 100]) / 2,) * 3)


def test_photometric_is_seeded_and_changes_the_image():
    rgb = load_rgb(FIELD)
    config = RECIPES["camera"]["augment"].photometric
    config = PhotometricConfig(**{**config.__dict__, "p_clean": 0.0})
    first = photometric(rgb, np.random.default_rng(3), config)
    again = photometric(rgb, np.random.default_rng(3), config)
    other = photometric(rgb, np.random.default_rng(4), config)
    assert first.dtype == np.uint8 and first.shape == rgb.shape
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - rgb).mean() > 1.0
    assert np.abs(first.astype(int) - other).mean() > 0.5
    np.testing.assert_array_equal(
        photometric(rgb, np.random.default_rng(0), PhotometricConfig()), rgb
    )


def test_recipes_paper_is_the_dataclass_default_and_camera_differs():
    from leukedge.training.train import TrainConfig

    paper = TrainConfig(data=".", out="x", **recipe("paper"))
    camera = TrainConfig(data=".", out="x", **recipe("camera"))
    assert paper.augment.photometric.enabled is False and not paper.input_norm.enabled
    assert camera.input_norm.blur_sigma == 1.0 and camera.input_norm.standardize
    assert camera.input_norm.target_mean == pytest.approx((123.675, 116.28, 103.53))
    assert camera.finetune_epochs == 0 and camera.augment.vertical_flip
    assert recipe("camera") is not RECIPES["camera"]  # a copy: callers may change it
    with pytest.raises(ValueError, match="camera"):
        recipe("nope")
    import dataclasses

    again = TrainConfig.from_dict(dataclasses.asdict(camera))
    assert again.augment == camera.augment and again.input_norm == camera.input_norm


def test_perturbations_are_what_they_say():
    rgb = load_rgb(FIELD)
    noisy = robustness.gaussian_noise(rgb, seed=1)
    assert np.std(noisy.astype(float) - rgb) == pytest.approx(4.0, abs=0.3)
    np.testing.assert_array_equal(noisy, robustness.gaussian_noise(rgb, seed=1))
    dark = robustness.exposure(rgb)
    assert dark.mean() == pytest.approx(0.9 * rgb.mean(), abs=0.6)
    zoomed = robustness.zoom(rgb)
    assert zoomed.shape == rgb.shape and not np.array_equal(zoomed, rgb)
    assert robustness.stain_shift(rgb).shape == rgb.shape
    saved = robustness.jpeg(rgb)
    assert 0.5 < np.abs(saved.astype(int) - rgb).mean() < 10


def test_flip_rates_count_changed_calls():
    images = {f"{i}.png": np.full((8, 8, 3), 10 * i, np.uint8) for i in range(1, 11)}
    # The call is "mean brightness < 48": exposure −10 % moves only 50 → 45 across it.
    rates = robustness.flip_rates(
        lambda rgb: int(rgb.mean() < 48), images, {"exposure": robustness.exposure}
    )
    assert rates["exposure"]["n"] == 10
    expected = sum(int((10 * i * 0.9 < 48) != (10 * i < 48)) for i in range(1, 11))
    assert rates["exposure"]["flips"] == expected == 1
    with pytest.raises(ValueError):
        robustness.flip_rates(lambda rgb: 0, {})


def test_image_is_unchanged_by_pillow_roundtrip_helper(tmp_path):
    # The JPEG perturbation must not depend on the input's own file format.
    rgb = load_rgb(FIELD)
    path = tmp_path / "f.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(robustness.jpeg(load_rgb(path)), robustness.jpeg(rgb))

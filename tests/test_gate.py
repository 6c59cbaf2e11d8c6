"""The accuracy-delta gate end to end: it passes a well-calibrated int8 model and fails one
calibrated on wrongly scaled images, through ``convert_model`` and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow", reason="conversion needs TensorFlow (pip install .[train])")

from leukedge.converters.convert import ConvertConfig, convert_model  # noqa: E402
from leukedge.converters.gate import GateConfig, GateFailedError, check, compare  # noqa: E402
from leukedge.metadata import read_metadata  # noqa: E402
from leukedge.preprocess import load_and_resize  # noqa: E402
from leukedge.training.data import (  # noqa: E402
    LABELS,
    load_taleqani,
    split_by_blocks,
    write_split,
)

SIZE = 64
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(taleqani, lite0_weights, tmp_path_factory):
    """A run directory holding a real, input-sensitive classifier at 64 px.

    ImageNet Lite0 backbone + global average pooling + a softmax layer whose weights are a
    logistic regression fitted on training-block features (a linear probe): deterministic,
    about 0.94 validation accuracy, predictions of both classes.
    """
    import keras
    from sklearn.linear_model import LogisticRegression

    from leukedge.training.efficientnet_lite import EfficientNetLite0

    splits = split_by_blocks(load_taleqani(taleqani))
    splits = {"train": splits["train"][::8], "val": splits["val"][::4], "test": []}
    backbone = EfficientNetLite0(
        include_top=False, weights=lite0_weights, input_shape=(SIZE, SIZE, 3)
    )
    pooled = keras.layers.GlobalAveragePooling2D(name="head_gap")(backbone.output)
    probs = keras.layers.Dense(2, activation="softmax", name="predictions")(pooled)
    model = keras.Model(backbone.input, probs, name="linear_probe")
    x = np.stack([load_and_resize(s.path, (SIZE, SIZE)) for s in splits["train"]])
    y = np.array([LABELS.index(s.label) for s in splits["train"]])
    features = np.asarray(keras.Model(model.input, pooled).predict(x.astype(np.float32), verbose=0))
    probe = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit(features, y)
    w, b = probe.coef_[0], probe.intercept_[0]
    model.get_layer("predictions").set_weights(
        [
            np.stack([-w / 2, w / 2], axis=1).astype(np.float32),
            np.array([-b / 2, b / 2], dtype=np.float32),
        ]
    )
    directory = tmp_path_factory.mktemp("run")
    model.save(directory / "model.keras")
    write_split(directory / "split.csv", splits)
    (directory / "config.json").write_text(
        json.dumps({"labels": list(LABELS), "input_kind": "field"})
    )
    return directory


@pytest.fixture(scope="module")
def dark_images(run_dir, tmp_path_factory):
    """Calibration images scaled wrongly (×0.02, as a pipeline that normalises twice)."""
    from leukedge.training.data import read_split

    folder = tmp_path_factory.mktemp("dark")
    for s in read_split(run_dir / "split.csv")["train"][::3]:
        (folder / s.label).mkdir(exist_ok=True)
        dark = (load_and_resize(s.path, (SIZE, SIZE)) * 0.02).astype(np.uint8)
        Image.fromarray(dark).save(folder / s.label / (s.path.stem + ".png"))
    return folder


def test_gate_passes_a_well_calibrated_int8_model(run_dir, tmp_path):
    report = convert_model(
        ConvertConfig(
            model=str(run_dir / "model.keras"),
            out=str(tmp_path),
            precisions=["fp32", "int8"],
            name="probe",
        )
    )
    for precision in ("fp32", "int8"):
        f = report["precisions"][precision]
        assert f["gate_failures"] == [], (precision, f)
        assert f["agreement"] >= 0.98 and f["delta_pp"] <= 1.0
    assert report["precisions"]["fp32"]["max_abs_prob_diff"] <= 1e-4
    assert report["keras"]["accuracy"] >= 0.85 and report["keras"]["n"] == 103
    meta = read_metadata(tmp_path / "probe_int8.tflite")
    assert meta.precision == "int8" and meta.model_card["gate"]["passed"] is True
    assert meta.source_sha256 == report["source_sha256"] and len(meta.source_sha256) == 64
    assert json.loads((tmp_path / "conversion.json").read_text())["labels"] == ["ALL", "HEM"]


def test_gate_fails_an_int8_model_calibrated_on_wrongly_scaled_images(
    run_dir, dark_images, tmp_path
):
    config = ConvertConfig(
        model=str(run_dir / "model.keras"),
        out=str(tmp_path),
        precisions=["int8"],
        name="broken",
        representative_data=str(dark_images),
    )
    with pytest.raises(GateFailedError, match="int8") as info:
        convert_model(config)
    figures = info.value.report["precisions"]["int8"]
    assert figures["agreement"] < 0.98 and figures["delta_pp"] > 1.0
    # The debugger names the layers responsible, worst first.
    worst = figures["worst_layers"]
    assert len(worst) == 10 and worst[0]["rmse_per_scale"] >= worst[-1]["rmse_per_scale"]
    # The failing file and the report are still written, and say so.
    assert read_metadata(tmp_path / "broken_int8.tflite").model_card["gate"]["passed"] is False
    assert json.loads((tmp_path / "conversion.json").read_text())["precisions"]["int8"][
        "gate_failures"
    ]


def test_cli_exit_codes(run_dir, dark_images, tmp_path):
    from typer.testing import CliRunner

    from leukedge.cli import app

    runner = CliRunner()
    failed = runner.invoke(
        app,
        [
            "convert",
            str(run_dir / "model.keras"),
            "-p",
            "int8",
            "--representative-data",
            str(dark_images),
            "--out",
            str(tmp_path),
        ],
    )
    assert failed.exit_code == 1
    assert "gate FAILED" in failed.output
    missing = runner.invoke(app, ["convert", str(tmp_path / "nope.keras")])
    assert missing.exit_code == 2 and "nope.keras" in missing.output
    empty = tmp_path / "empty"
    (empty / "ALL").mkdir(parents=True)
    no_images = runner.invoke(
        app,
        [
            "convert",
            str(run_dir / "model.keras"),
            "-p",
            "int8",
            "--representative-data",
            str(empty),
            "--no-check",
        ],
    )
    assert no_images.exit_code == 2 and "no images" in no_images.output


def test_compare_and_check_hand_values():
    truth = {"a": "ALL", "b": "ALL", "c": "HEM", "d": "HEM"}
    ref = {"a": [0.9, 0.1], "b": [0.8, 0.2], "c": [0.3, 0.7], "d": [0.2, 0.8]}
    cand = {"a": [0.9, 0.1], "b": [0.4, 0.6], "c": [0.3, 0.7], "d": [0.2, 0.8]}
    f = compare(ref, cand, truth, LABELS)
    assert f["accuracy"] == 0.75 and f["delta_pp"] == pytest.approx(25.0)
    assert f["agreement"] == 0.75 and f["max_abs_prob_diff"] == pytest.approx(0.4)
    assert f["mean_abs_prob_diff"] == pytest.approx(0.1)
    assert f["recall"] == {"ALL": 0.5, "HEM": 1.0}
    reasons = check(f, GateConfig())
    assert len(reasons) == 2 and "25.00 pp" in reasons[0] and "75.00 %" in reasons[1]
    assert check(compare(ref, ref, truth, LABELS), GateConfig()) == []


def test_keep_float_leaves_the_named_layer_in_float(run_dir):
    """Selective quantization: the debugger's worst tensor, kept in float, is float."""
    from leukedge.converters.debug import layer_errors
    from leukedge.converters.tflite import convert_keras, load_keras_model
    from leukedge.runtime import TFLiteEngine
    from leukedge.training.data import read_split

    model = load_keras_model(run_dir / "model.keras")
    calib = np.stack(
        [
            load_and_resize(s.path, (SIZE, SIZE))
            for s in read_split(run_dir / "split.csv")["train"][::4]
        ]
    )
    errors = layer_errors(model, calib, samples=4)
    assert errors and all(e.rmse_per_scale >= 0 for e in errors)
    worst = errors[0].tensor_name
    content = convert_keras(model, "int8", representative=calib, keep_float=[worst])
    engine = TFLiteEngine(content)
    tensors = {t["name"]: t["dtype"] for t in engine._interpreter.get_tensor_details()}
    assert tensors[worst] == np.float32
    full = TFLiteEngine(convert_keras(model, "int8", representative=calib))
    full_tensors = {t["name"]: t["dtype"] for t in full._interpreter.get_tensor_details()}
    assert full_tensors[worst] == np.int8

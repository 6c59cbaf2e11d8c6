"""The accuracy-delta gate end to end: it passes a well-calibrated int8 model and fails one
calibrated on wrongly scaled images or on uniform noise (labels kept, probabilities
drifted), through ``convert_model`` and the CLI; the converted file carries the embedding
output, quality thresholds, out-of-domain model and operating point, and the SDK uses them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow", reason="conversion needs TensorFlow (pip install .[train])")

from leukedge.converters.convert import ConvertConfig, convert_model  # noqa: E402
from leukedge.converters.gate import GateConfig, GateFailedError, check, compare  # noqa: E402
from leukedge.engine.metadata import read_metadata  # noqa: E402
from leukedge.engine.preprocess import load_and_resize  # noqa: E402
from leukedge.evaluation.data import (  # noqa: E402
    LABELS,
    load_taleqani,
    split_by_blocks,
    write_split,
)

SIZE = 64
OOD_RTOL = 1e-9
"""Relative difference allowed between out-of-domain distances of the same embeddings
scored as a batch and one by one (float64 rounding): measured 2.5e-14 on the probe's 103
val images; 1e-9 leaves 4·10⁴ times that, 1,000 times below leukedge.checks.ood's rounding
margin (1e-6) and 60,000 times below the closest two val distances (6.3e-5 apart)."""
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

    from leukedge.modeling.efficientnet_lite import EfficientNetLite0

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
    from leukedge.evaluation.data import read_split

    folder = tmp_path_factory.mktemp("dark")
    for s in read_split(run_dir / "split.csv")["train"][::3]:
        (folder / s.label).mkdir(exist_ok=True)
        dark = (load_and_resize(s.path, (SIZE, SIZE)) * 0.02).astype(np.uint8)
        Image.fromarray(dark).save(folder / s.label / (s.path.stem + ".png"))
    return folder


@pytest.fixture(scope="module")
def noise_images(run_dir, tmp_path_factory):
    """Calibration images of uniform noise over the bright half of the range (a smear's
    background is bright), as many as the train split's third."""
    from leukedge.evaluation.data import read_split

    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for i, s in enumerate(read_split(run_dir / "split.csv")["train"][::3]):
        (folder / s.label).mkdir(exist_ok=True)
        noise = rng.integers(128, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / s.label / f"noise_{i}.png")
    return folder


@pytest.fixture(scope="module")
def probe_report(run_dir, tmp_path_factory):
    """fp32 and int8 of the probe, properly calibrated: the conversion report and folder."""
    out = tmp_path_factory.mktemp("probe")
    report = convert_model(
        ConvertConfig(
            model=str(run_dir / "model.keras"),
            out=str(out),
            precisions=["fp32", "int8"],
            name="probe",
        )
    )
    return report, out


def test_gate_passes_a_well_calibrated_int8_model(probe_report):
    report, tmp_path = probe_report
    for precision in ("fp32", "int8"):
        f = report["precisions"][precision]
        assert f["gate_failures"] == [], (precision, f)
        assert f["agreement"] >= 0.98 and f["delta_pp"] <= 1.0
    assert report["precisions"]["fp32"]["max_abs_prob_diff"] <= 1e-4
    # Proper calibration keeps the probabilities: far inside the drift bounds.
    int8 = report["precisions"]["int8"]
    assert int8["mean_abs_prob_diff"] <= 0.03 and int8["ece_increase"] <= 0.03
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


def test_gate_fails_int8_calibrated_on_noise_on_probability_drift(
    run_dir, noise_images, probe_report, tmp_path
):
    """Uniform-noise calibration moves the probabilities, and the drift bounds alone fail
    it, whatever happens to the labels.

    Measured on this 103-image validation split: mean |dp| 0.032 against 0.016 properly
    calibrated, ECE increase 0.032 to 0.037 in runs here (bound 0.02). Whether some labels
    flip as well depends on the CPU's int8 kernels (a Zen 5 with AVX-512 VNNI kept all
    103; a Xeon with AMX flipped 3, agreement 0.9709): so this test asserts no label
    figure. The drift figures are compared with the proper calibration's on the same
    machine, not with constants.
    """
    config = ConvertConfig(
        model=str(run_dir / "model.keras"),
        out=str(tmp_path),
        precisions=["int8"],
        name="noisy",
        representative_data=str(noise_images),
        trust=False,
    )
    with pytest.raises(GateFailedError, match="ECE") as info:
        convert_model(config)
    figures = info.value.report["precisions"]["int8"]
    # The drift bounds fail it on their own: with the label figures of a perfect model.
    drift_only = check(figures | {"delta_pp": 0.0, "agreement": 1.0}, GateConfig())
    assert drift_only and all("ECE" in r or "mean |dp|" in r for r in drift_only), drift_only
    # More drift than proper calibration of the same model on the same CPU.
    proper = probe_report[0]["precisions"]["int8"]
    assert check(proper, GateConfig()) == []
    assert figures["mean_abs_prob_diff"] > proper["mean_abs_prob_diff"]
    assert figures["ece_increase"] > proper["ece_increase"]
    assert not any("int16x8" in str(v) for v in figures.values())


def test_converted_file_carries_the_checks_and_the_sdk_uses_them(
    probe_report, run_dir, shared_data
):
    from leukedge.checks.ood import MahalanobisScorer, set_threshold
    from leukedge.classifier import Classifier
    from leukedge.engine.interpreter import TFLiteEngine
    from leukedge.evaluation.data import read_split
    from leukedge.evaluation.predict import infer_tflite

    report, folder = probe_report
    path = folder / "probe_int8.tflite"
    meta = read_metadata(path)
    engine = TFLiteEngine(path)
    # One file, two outputs: probabilities (2) and the pooled backbone embedding (1,280).
    assert (engine.num_classes, engine.embedding_dim) == (2, 1280)
    assert meta.schema_version == 2 and meta.ood.embedding_dim == 1280
    assert meta.ood.embedding_output == engine.embedding_name
    assert meta.ood.fitted_on == "train" and meta.ood.n_fit == 240
    assert meta.ood.n_threshold == 103 and meta.ood.validation["accepted"] >= 0.97
    assert meta.quality.source == "training split, n=240" and meta.quality.focus_min > 0
    d = meta.decision
    assert d.validation["operating_point"]["sensitivity"] >= 0.98
    assert d.refer_band is None or d.refer_band[0] <= d.threshold <= d.refer_band[1]
    assert report["precisions"]["int8"]["trust"]["ood"]["threshold"] == meta.ood.threshold
    # The SDK decides as the converter did, image by image, on the same embeddings. The
    # converter scored the val embeddings as one batch (set_threshold); the SDK scores one
    # image at a time; the two differ only by float rounding (OOD_RTOL). The image that
    # set the threshold lies a rounding margin below it (set_threshold), so no val image
    # is left to rounding (without the margin, the SDK accepted 99 of 103 here where the
    # converter counted 100); one within OOD_RTOL of the threshold could go either way.
    classifier = Classifier.create_from_model_path(path)
    assert classifier.unchecked == [] and classifier.ood_threshold == meta.ood.threshold
    threshold = meta.ood.threshold
    val = [str(s.path) for s in read_split(run_dir / "split.csv")["val"]]
    _, embeddings = infer_tflite(path, val)  # the converter's own inference
    batch = MahalanobisScorer(meta.ood).distances(np.stack([embeddings[p] for p in val]))
    refit = set_threshold(copy.deepcopy(meta.ood), np.stack([embeddings[p] for p in val]))
    assert refit.threshold == pytest.approx(threshold, rel=OOD_RTOL)
    results = [classifier.classify(p) for p in val]
    single = np.array([r.ood_distance for r in results])
    np.testing.assert_allclose(single, batch, rtol=OOD_RTOL)  # same embeddings, same scoring
    converter_accepts = batch <= threshold
    sdk_accepts = np.array(["out_of_domain" not in r.failed_checks for r in results])
    borderline = np.abs(batch - threshold) <= OOD_RTOL * threshold
    assert not borderline.any()  # the margin keeps the picked image clear
    assert (sdk_accepts == converter_accepts).all()
    assert np.mean(sdk_accepts) == np.mean(converter_accepts) == meta.ood.validation["accepted"]
    _, embedding = engine.run_with_embedding(load_and_resize(val[0], (SIZE, SIZE)))
    expected = MahalanobisScorer(meta.ood).distances(embedding)
    assert results[0].ood_distance == pytest.approx(expected, rel=OOD_RTOL)
    # Another lab's smear field (BCCD) and a C-NMC single cell: out of domain; the model's
    # opinion is kept apart from the call. (Uniform noise is not asserted: at 64 px the
    # pooled 2x2 backbone map of this probe, fitted on 240 fields, does not separate it; on
    # the 224-px default model it does, see tools/ood_study.py.)
    bccd = classifier.classify(shared_data / "bccd" / "JPEGImages" / "BloodImage_00000.jpg")
    assert (bccd.status, bccd.reason, bccd.label) == ("rejected", "out_of_domain", None)
    assert bccd.ood_distance > meta.ood.threshold and bccd.probabilities is None
    assert bccd.model_label in ("ALL", "HEM") and set(bccd.model_probabilities) == {"ALL", "HEM"}
    cell = classifier.classify(Path(__file__).parents[1] / "examples/images/UID_3_4_2_all.bmp")
    assert cell.status == "rejected" and "out_of_domain" in cell.failed_checks


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
    # The gate states its resolution: one of the 103 val images is 0.97 pp (1 pp allows 1).
    assert "gate resolution: one image = 0.97 pp of 103 held-out images" in failed.output
    assert "(one image = 0.97 pp of 103)" in failed.output  # in the failure's reasons
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
    assert "25.00 pp" in reasons[0] and "75.00 %" in reasons[1] and "mean |dp| 0.1000" in reasons[2]
    assert check(compare(ref, ref, truth, LABELS), GateConfig()) == []
    # ECE (15 bins): reference (0.1 + 0.2 + 0.3 + 0.2) / 4 = 0.2; the candidate calls b
    # wrongly at 0.6 confidence: (0.1 + 0.6 + 0.3 + 0.2) / 4 = 0.3.
    assert f["reference_ece"] == pytest.approx(0.2) and f["ece"] == pytest.approx(0.3)
    assert f["ece_increase"] == pytest.approx(0.1) and "ECE 0.3000" in reasons[3]
    # The figures: uniform-noise calibration (mean |dp| 0.113) fails, proper
    # calibration (0.009) passes, labels agreeing in both.
    base = {"delta_pp": 0.0, "agreement": 1.0, "ece": 0.05, "reference_ece": 0.05}
    noise = base | {"mean_abs_prob_diff": 0.113, "ece_increase": 0.0}
    proper = base | {"mean_abs_prob_diff": 0.009, "ece_increase": 0.0}
    assert check(noise, GateConfig()) == ["mean |dp| 0.1130 > 0.05"]
    assert check(proper, GateConfig()) == []


def test_keep_float_leaves_the_named_layer_in_float(run_dir):
    """Selective quantization: the debugger's worst tensor, kept in float, is float."""
    from leukedge.converters.debug import layer_errors
    from leukedge.converters.tflite import convert_keras
    from leukedge.engine.interpreter import TFLiteEngine
    from leukedge.evaluation.data import read_split
    from leukedge.modeling.saving import load_keras_model

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

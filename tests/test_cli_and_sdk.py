"""The embedded default model through the SDK and the CLI, as a user would run them.

Everything here but the held-out test block runs on the embedded model and
``examples/images/``, without TensorFlow and without ``../shared/data``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from leukedge import __version__
from leukedge.checks.calibration import apply_temperature
from leukedge.classifier import (
    Classifier,
    ClassifierOptions,
    RunningMode,
    default_model_path,
)
from leukedge.cli import app
from leukedge.engine.interpreter import ModelLoadError, TFLiteEngine
from leukedge.engine.metadata import METADATA_NAME, read_metadata, write_metadata
from leukedge.engine.preprocess import ImageDecodeError, load_and_resize, load_rgb, resize_rgb

FIELD = "WBC-Malignant-Pre-810.jpg"
BENIGN = "WBC-Benign-420.jpg"
CELLS = ("UID_3_4_2_all.bmp", "UID_H10_47_2_hem.bmp")


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier()


@pytest.fixture(scope="module")
def benign_frame(example_images):
    return load_rgb(example_images / BENIGN)


def _probabilities(result) -> np.ndarray:
    return np.array(list(result.probabilities.values()))


def test_default_model_is_embedded_int8_with_metadata():
    path = default_model_path()
    assert path.is_file()
    meta = read_metadata(path)
    assert meta.labels == ["ALL", "HEM"] and meta.precision == "int8"
    assert (meta.input.height, meta.input.width, meta.input.kind) == (224, 224, "field")
    card = meta.model_card
    assert card["split"]["strategy"] in ("auto", "blocks", "all")  # v3: fitted on all
    assert card["gate"]["passed"] is True
    assert card["training_data"] == {"dataset": "taleqani", "path": "taleqani"}
    # The README's model card is read from this file: its figures must be the file's
    # (model v3: the linear head fitted on every field; `leukedge info` prints them).
    assert meta.version == "3.0.0" and card["architecture"] == "lite0-linear"
    assert round(meta.temperature, 3) == 1.270
    assert card["fitted_on"]["images"] == 2733 and "test_metrics" not in card
    assert (
        round(card["gate"]["delta_pp"], 2) == 0.37 and round(card["gate"]["agreement"], 3) == 0.996
    )


def test_default_model_carries_the_checks():
    """The embedded model has the embedding output and the fitted checks (schema 2)."""
    from leukedge.engine.interpreter import TFLiteEngine

    meta = read_metadata(default_model_path())
    assert meta.schema_version == 2 and meta.ood is not None
    engine = TFLiteEngine(default_model_path())
    assert engine.embedding_dim == meta.ood.embedding_dim == 1280
    assert meta.ood.fitted_on == "train" and meta.ood.validation["accepted"] >= 0.97
    assert meta.quality is not None and meta.quality.unchecked() == []
    op = meta.decision.validation["operating_point"]
    assert op["sensitivity"] >= meta.decision.target_sensitivity
    assert op["coverage"] >= meta.decision.coverage_target


def test_default_model_card_gives_cross_validated_figures_and_out_of_fold_thresholds():
    """Model v3 trained on every shared field, so no block of them is unseen: the card's
    expected performance is the blocked cross-validation's (issue 18's floors: out of fold,
    specificity at sensitivity >= 0.98 at least 0.93 on average and 0.90 in the worst fold,
    AUC >= 0.98, ECE <= 0.03), and the operating point was fitted on out-of-fold outputs,
    never on outputs of weights that trained on the image."""
    meta = read_metadata(default_model_path())
    expected = meta.model_card["expected_performance"]
    kfold = expected["kfold"]
    assert kfold["mean"]["specificity"] >= 0.93 and kfold["worst"]["specificity"] >= 0.90
    assert kfold["worst"]["auc"] >= 0.98 and kfold["worst"]["ece"] <= 0.03
    assert kfold["mean"]["sensitivity"] >= 0.975
    assert expected["forward"]["mean"]["auc"] >= 0.98
    assert meta.decision.source.startswith("out-of-fold outputs")
    assert meta.decision.source.endswith("n=2733")
    assert meta.model_card["thresholds_from"]["operating_point"].startswith("out-of-fold")


def test_inputs_agree_path_pil_array(classifier, example_images):
    path = example_images / FIELD
    a = classifier.classify(path)
    b = classifier.classify(Image.open(path))
    c = classifier.classify(load_rgb(path))
    assert a.model_probabilities == b.model_probabilities == c.model_probabilities
    assert a.source == str(path) and c.source is None
    assert sum(a.model_probabilities.values()) == pytest.approx(1.0, abs=0.01)
    assert a.status == b.status == c.status


def test_cell_of_other_size_is_resized(classifier, example_images):
    """README: any size is resized whole (bilinear) to the model's input. The two C-NMC
    example cells (450×450, out of the default model's domain) are rejected as segmented
    cells (a cell on black), and the model's opinion behind that is still computed."""
    for name in CELLS:
        rgb = load_rgb(example_images / name)
        assert rgb.shape == (450, 450, 3)
        result = classifier.classify(example_images / name)
        assert (result.status, result.reason) == ("rejected", "segmented_cell"), name
        assert result.model_label in ("ALL", "HEM"), name
        resized = classifier.classify(resize_rgb(rgb, classifier.input_size))
        assert result.model_probabilities == resized.model_probabilities, name
    # The whole image, not its centre: a centre crop of the last cell is another input.
    crop = rgb[113:337, 113:337]
    assert classifier.classify(crop).model_probabilities != result.model_probabilities


def test_temperature_stored_in_the_model_is_applied(tmp_path, example_images):
    """Probabilities are softmax(log p / T) with the T in the model's metadata (Guo et al.)."""
    content = default_model_path().read_bytes()
    meta = read_metadata(content)
    embedded_t = meta.temperature
    # Fields whose raw p(ALL) is neither 0.5 nor near 0 or 1 show a temperature; blends of
    # the two example fields and a flip give some on any CPU (the first two alone are
    # 0.5 and 1.0 for model v3, which no temperature moves).
    benign, field = (load_rgb(example_images / name) for name in (BENIGN, FIELD))
    benign, field = (resize_rgb(x, (224, 224)).astype(float) for x in (benign, field))
    images = [
        benign.astype(np.uint8),
        field.astype(np.uint8),
        np.ascontiguousarray(benign[:, ::-1]).astype(np.uint8),
    ]
    images += [
        (benign * (1 - w) + field * w).round().astype(np.uint8) for w in (0.1, 0.3, 0.5, 0.6)
    ]

    def outputs(clf):
        return np.stack([_probabilities(clf.classify(image)) for image in images])

    by_t = {}
    for temperature in (1.0, 3.0):
        meta.temperature = temperature
        path = tmp_path / f"t{temperature}.tflite"
        path.write_bytes(write_metadata(content, meta))
        by_t[temperature] = outputs(Classifier.create_from_model_path(path))
    raw = by_t[1.0]
    assert by_t[3.0] == pytest.approx(apply_temperature(raw, 3.0), abs=1e-9)
    assert np.abs(by_t[3.0] - raw).max() > 0.1
    default = outputs(Classifier())
    assert default == pytest.approx(apply_temperature(raw, embedded_t), abs=1e-9)
    assert np.abs(default - raw).max() > 0.01


def test_video_mode_requires_increasing_timestamps(benign_frame):
    clf = Classifier(ClassifierOptions(running_mode=RunningMode.VIDEO))
    first = clf.classify_for_video(benign_frame, 10)
    assert first.timestamp_ms == 10
    with pytest.raises(ValueError, match="not after"):
        clf.classify_for_video(benign_frame, 10)
    with pytest.raises(ValueError, match="VIDEO mode"):
        clf.classify(benign_frame)


def test_live_stream_delivers_results_and_drops_when_busy(benign_frame, classifier):
    frame = benign_frame
    got, done = [], threading.Event()

    def callback(result, image, timestamp_ms, error):
        got.append((result, timestamp_ms, error))
        done.set()

    with pytest.raises(ValueError, match="result_callback"):
        Classifier(ClassifierOptions(running_mode=RunningMode.LIVE_STREAM))
    with Classifier(
        ClassifierOptions(running_mode=RunningMode.LIVE_STREAM, result_callback=callback)
    ) as clf:
        accepted = [clf.classify_async(frame, t) for t in range(1, 6)]
        assert accepted[0] is True
    assert done.is_set() and len(got) == sum(accepted)
    assert got[0][0].model_probabilities == classifier.classify(frame).model_probabilities
    assert got[0][1] == 1 and got[0][2] is None
    # A bad frame reaches the callback as an error, not as an exception in a thread.
    errors = []
    with Classifier(
        ClassifierOptions(
            running_mode=RunningMode.LIVE_STREAM,
            result_callback=lambda r, f, t, e: errors.append(e),
        )
    ) as c:
        c.classify_async(np.zeros((4, 4, 2), dtype=np.uint8), 1)
    assert isinstance(errors[0], ImageDecodeError)


def test_live_stream_callbacks_run_one_at_a_time_in_order(benign_frame):
    import time

    frame = benign_frame
    seen, active, peak = [], [0], [0]

    def slow_callback(result, image, timestamp_ms, error):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        seen.append(timestamp_ms)
        active[0] -= 1

    options = ClassifierOptions(running_mode=RunningMode.LIVE_STREAM, result_callback=slow_callback)
    with Classifier(options) as clf:
        for t in range(1, 41):
            clf.classify_async(frame, t)
            time.sleep(0.005)
    assert peak[0] == 1 and seen == sorted(seen) and 1 <= len(seen) < 40
    with pytest.raises(ValueError, match="integer"):
        Classifier(ClassifierOptions(running_mode="video")).classify_for_video(frame, 1.5)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m leukedge.cli ARGS`` in a fresh process (the console script's ``main``)."""
    return subprocess.run(
        [sys.executable, "-m", "leukedge.cli", *args], capture_output=True, text=True, timeout=120
    )


def _invoke(*args: str):
    """The CLI in this process (Typer's test runner); output holds stdout and stderr."""
    return CliRunner().invoke(app, [str(a) for a in args])


def _rewritten(edit, path, content: bytes | None = None):
    """``content`` (default: the embedded model) changed by ``edit(model)`` (TFLite schema
    object API of ai-edge-litert, no TensorFlow), written to ``path``."""
    from conftest import rewrite_model

    content = default_model_path().read_bytes() if content is None else content
    path.write_bytes(rewrite_model(content, edit))
    return path


@pytest.fixture(scope="module")
def model_without_metadata(tmp_path_factory):
    """The embedded model with its leukedge metadata entry removed (weights unchanged)."""

    def strip(model, schema):
        names = (METADATA_NAME, METADATA_NAME.encode())
        model.metadata = [entry for entry in model.metadata if entry.name not in names]

    path = _rewritten(strip, tmp_path_factory.mktemp("plain") / "plain_int8.tflite")
    assert read_metadata(path) is None
    return path


def test_int8_io_zero_points_are_applied(tmp_path, example_images, classifier, integer_input_model):
    """int8 input and output tensors with zero point −128 (what ``convert --io-dtype int8``
    writes). The embedded model's input is float32 (its in-graph normalisation stays
    float), so the int8 input comes from ``integer_input_model``: a DEQUANTIZE op in front
    gives back the pixel values exactly. Its uint8 probabilities are retyped to int8: the
    last QUANTIZE then requantizes int8 → int8 with equal parameters. A runtime that
    applies both zero points gives the embedded model's probabilities exactly."""

    def int8_output(model, schema):
        graph = model.subgraphs[0]
        index = next(i for i in graph.outputs if graph.tensors[i].shape[-1] == 2)
        assert graph.tensors[index].type == schema.TensorType.UINT8
        graph.tensors[index].type = schema.TensorType.INT8
        graph.tensors[index].quantization.zeroPoint = np.array([-128])

    int8_input = integer_input_model(np.int8, -128)
    path = _rewritten(int8_output, tmp_path / "int8_io.tflite", int8_input)
    engine = TFLiteEngine(path)
    assert (engine.input_dtype, engine.input_quantization) == (np.int8, (1.0, -128))
    assert (engine.output_dtype, engine.output_quantization) == (np.int8, (1 / 256, -128))
    retyped = Classifier.create_from_model_path(path)
    for name in (BENIGN, FIELD, *CELLS):
        image = load_rgb(example_images / name)
        assert retyped.classify(image).probabilities == classifier.classify(image).probabilities


@pytest.fixture
def interpreter_threads(monkeypatch) -> list:
    """The ``num_threads`` every LiteRT interpreter is created with, in order."""
    import ai_edge_litert.interpreter as litert

    seen = []

    class Recording(litert.Interpreter):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("num_threads"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(litert, "Interpreter", Recording)
    return seen


def test_cli_version():
    proc = _run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"leukedge {__version__}"


def test_cli_json_lines_with_good_corrupt_and_text_inputs(tmp_path, example_images):
    good = example_images / FIELD
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(good.read_bytes()[:2000])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    missing = tmp_path / "missing.png"
    proc = _run_cli("classify", "--json", str(good), str(corrupt), str(text), str(missing))
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["path"] for r in lines] == [str(good), str(corrupt), str(text), str(missing)]
    expected = Classifier().classify(good)
    assert lines[0]["error"] is None and lines[0]["label"] == expected.label
    assert lines[0]["probabilities"] == expected.probabilities
    assert lines[0]["score"] == expected.score and lines[0]["model"] == "leukedge_default"
    assert lines[0]["status"] == expected.status and lines[0]["reason"] == expected.reason
    assert "corrupt.jpg" in lines[1]["error"] and lines[1]["label"] is None
    assert (lines[1]["status"], lines[2]["status"]) == ("error", "error")
    assert "notes.txt" in lines[2]["error"] and "not a recognised image" in lines[2]["error"]
    assert "missing.png" in lines[3]["error"] and lines[3]["probabilities"] is None
    assert "3 of 4 inputs failed" in proc.stderr


def test_cli_table_and_exit_zero(classifier, example_images):
    """The table's cells are the SDK's result; a rejected input shows no call and the
    model's probabilities in brackets."""
    paths = [example_images / BENIGN, example_images / FIELD, example_images / CELLS[1]]
    proc = _run_cli("classify", *map(str, paths))
    assert proc.returncode == 0, proc.stderr  # a rejected input is an answer
    assert "p(ALL)" in proc.stdout and "p(HEM)" in proc.stdout
    for path in paths:
        row = next(line for line in proc.stdout.splitlines() if path.name in line)
        cells = [cell.strip() for cell in row.split("│")[1:-1]]
        expected = classifier.classify(path)
        p = expected.probabilities or expected.model_probabilities
        shown = "{:.3f}" if expected.probabilities else "({:.3f})"
        assert cells[:5] == [
            str(path),
            expected.status,
            expected.label or "-",
            shown.format(p["ALL"]),
            shown.format(p["HEM"]),
        ]
        assert cells[5] == (expected.reason or "")
    # The rows differ, so a constant answer cannot pass: the default model v3 refers the
    # benign field (int8 p(ALL) about 0.5, in the refer band [0.126, 0.751): float 0.06, one
    # of the few fields whose int8 output moves that far; README, "Model card"), calls the
    # malignant one ALL (p about 1.0) and rejects the C-NMC cell (a segmented cell).
    results = [classifier.classify(p) for p in paths]
    assert [(r.status, r.label) for r in results] == [
        ("refer", None),
        ("ok", "ALL"),
        ("rejected", None),
    ]
    # int8 kernels round differently on other CPUs (uint8 steps of 1/256): bounds, not a
    # figure. The band's edges are 0.37 and 0.25 away from the benign field's 0.5.
    low, high = classifier.metadata.decision.refer_band
    assert low + 0.1 < results[0].model_probabilities["ALL"] < high - 0.1
    assert results[1].probabilities["ALL"] >= 0.98


def test_litert_banner_is_hidden_and_nothing_else(example_images):
    """LiteRT's C++ "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." line does not
    reach standard error; whatever else is written there while an interpreter is made is
    kept, in order; LEUKEDGE_LITERT_LOG=1 keeps the banner (check_arm64.sh uses it)."""
    import os

    proc = _run_cli("classify", str(example_images / BENIGN))
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK" not in proc.stderr and "INFO:" not in proc.stderr
    code = (
        "import os\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "from leukedge.classifier import default_model_path\n"
        "from leukedge.engine.interpreter import quiet_delegate_banner\n"
        "content = default_model_path().read_bytes()\n"
        "with quiet_delegate_banner():\n"
        "    os.write(2, b'ERROR: before\\n')\n"
        "    Interpreter(model_content=content).allocate_tensors()\n"
        "    os.write(2, b'after\\n')\n"
    )
    for env, expected in (
        ({}, "ERROR: before\nafter\n"),
        (
            {"LEUKEDGE_LITERT_LOG": "1"},
            "ERROR: before\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nafter\n",
        ),
    ):
        shown = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )
        assert shown.returncode == 0 and shown.stderr == expected, shown.stderr


def test_cli_bad_refer_band_names_the_option(example_images):
    """A band that is not LOW,HIGH in [0, 1], or does not contain the threshold, is a usage
    error (exit 2) naming --refer-band (and --threshold when given), not "cannot load
    model"."""
    image = example_images / BENIGN
    for band, problem in (
        ("0.9,0.1", "0 <= LOW <= HIGH <= 1"),
        ("0.1,1.5", "0 <= LOW <= HIGH <= 1"),
        ("a,b", "expected LOW,HIGH"),
        ("0.6,0.7", "contain the threshold 0.523"),  # the model's operating point
    ):
        result = _invoke("classify", "--refer-band", band, image)
        assert result.exit_code == 2, (band, result.output)
        assert "error: --refer-band" in result.output and problem in result.output
        assert "cannot load model" not in result.output
    both = _invoke("classify", "--threshold", "0.7", "--refer-band", "0.1,0.6", image)
    assert both.exit_code == 2 and "error: --threshold and --refer-band:" in both.output
    assert _invoke("classify", "--refer-band", "0.1,0.6", image).exit_code == 0


def test_training_and_conversion_logs_print_once(capsys):
    """``leukedge train`` / ``convert`` print each log record once, on standard error, even
    when TensorFlow (absl) has given the root logger a handler of its own."""
    import io
    import logging

    from leukedge.cli_kit.groups import attach_log_handler

    root, leukedge_logger = logging.getLogger(), logging.getLogger("leukedge")
    saved = (leukedge_logger.propagate, list(leukedge_logger.handlers), leukedge_logger.level)
    root_stream = io.StringIO()
    foreign = logging.StreamHandler(root_stream)
    root.addHandler(foreign)
    try:
        attach_log_handler()
        attach_log_handler()  # idempotent
        logging.getLogger("leukedge.converters.convert").info("load: %.1f s", 1.25)
    finally:
        root.removeHandler(foreign)
        leukedge_logger.propagate, leukedge_logger.handlers[:], level = saved
        leukedge_logger.setLevel(level)
    captured = capsys.readouterr()
    assert (captured.err, captured.out) == ("load: 1.2 s\n", "")
    assert root_stream.getvalue() == ""


def test_stdout_to_takes_python_and_c_level_output(capfd, tmp_path):
    """What TensorFlow's converter prints (Python print and C++ writes to descriptor 1)
    goes into the log during the block; standard output is back after it."""
    import os

    from leukedge.cli_kit.groups import stdout_to

    with open(tmp_path / "conversion.log", "w+", encoding="utf-8") as log:
        with stdout_to(log):
            print("Saved artifact at /tmp/x", flush=True)
            os.write(1, b"fully_quantize: 0\n")
        print("wrote model.tflite")
    assert capfd.readouterr().out == "wrote model.tflite\n"
    logged = (tmp_path / "conversion.log").read_text().splitlines()
    assert sorted(logged) == ["Saved artifact at /tmp/x", "fully_quantize: 0"]


def test_cli_help_lists_every_command_and_option():
    top = _invoke("--help")
    assert top.exit_code == 0
    for command in ("classify", "info", "bench", "train", "convert"):
        assert command in top.output
    classify = _invoke("classify", "--help")
    for option in ("--model", "--json", "--threads", "--labels"):
        assert option in classify.output


def test_cli_bad_or_missing_model_is_a_usage_error(tmp_path, example_images):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"nonsense")
    # The SDK's errors, as the README lists them; the CLI turns both into exit 2.
    with pytest.raises(ModelLoadError, match="bad.tflite"):
        Classifier.create_from_model_path(bad)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        Classifier.create_from_model_path(tmp_path / "missing.tflite")
    proc = _run_cli("classify", "--model", str(bad), str(example_images / BENIGN))
    assert proc.returncode == 2 and "bad.tflite" in proc.stderr
    result = _invoke("classify", "--model", tmp_path / "missing.tflite", example_images / BENIGN)
    assert result.exit_code == 2 and "missing.tflite" in result.output
    assert "not found" in result.output


@pytest.mark.filterwarnings("ignore:.*no leukedge metadata:UserWarning")
def test_cli_labels_and_threads_for_a_model_without_metadata(
    model_without_metadata, example_images, interpreter_threads
):
    image = example_images / FIELD  # a clear call: model v3's benign field is a tie in int8
    refused = _invoke("classify", "--model", model_without_metadata, image)
    assert refused.exit_code == 2 and "no leukedge metadata" in refused.output
    assert "--labels" in refused.output
    wrong = _invoke("classify", "--model", model_without_metadata, "--labels", "A,B,C", image)
    assert wrong.exit_code == 2 and "3 labels for 2 outputs" in wrong.output
    assert _invoke("classify", "--threads", "0", image).exit_code == 2
    # With metadata, --labels is ignored (with a warning): the model's own labels win.
    with pytest.warns(UserWarning, match="ignored"):
        kept = _invoke("classify", "--labels", "HEM,ALL", "--json", image)
    expected = Classifier().classify(image).probabilities
    assert kept.exit_code == 0 and json.loads(kept.output)["probabilities"] == expected
    interpreter_threads.clear()
    args = ("--model", model_without_metadata, "--threads", "1", "--labels", "HEM,ALL", "--json")
    result = _invoke("classify", *args, image)
    assert result.exit_code == 0, result.output
    assert interpreter_threads == [1]
    record = json.loads(result.output.splitlines()[-1])
    # --labels names the outputs in order; without metadata there is no temperature.
    raw = TFLiteEngine(model_without_metadata).run(load_and_resize(image, (224, 224)))
    assert record["probabilities"] == pytest.approx({"HEM": raw[0], "ALL": raw[1]})
    assert record["label"] == ("HEM", "ALL")[int(np.argmax(raw))]
    # The console script prints the missing metadata as one warning line.
    proc = _run_cli("classify", *map(str, args), str(image))
    assert proc.returncode == 0
    warned = [line for line in proc.stderr.splitlines() if "no leukedge metadata" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: ")


def test_cli_info_prints_metadata_and_tensors():
    proc = _run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["metadata"]["labels"] == ["ALL", "HEM"]
    # float32 input (the in-graph normalisation stays float), quantized outputs.
    assert (info["input"]["dtype"], info["input"]["scale"]) == ("float32", 0.0)
    assert (info["output"]["dtype"], info["output"]["scale"]) == ("uint8", 1 / 256)
    # Model v3's embedding is the float mean of the int8 feature map (its linear head
    # stays float: converters.tflite.LINEAR_HEAD_LAYERS); no blur, so no MIRROR_PAD.
    assert (info["embedding"]["dtype"], info["embedding"]["shape"]) == ("float32", [1, 1280])
    assert "CONV_2D" in info["operators"] and "MIRROR_PAD" not in info["operators"]


def test_cli_info_text(tmp_path, model_without_metadata):
    """README: a readable summary, one line per subject, read from the file itself: the
    model, its labels and input (field, 224x224 RGB 0-255; float32 input tensor, the
    in-graph normalisation stays float), uint8 output (scale 1/256) and embedding, the
    gate's result, the model card's key figures, the temperature, which checks it carries,
    the operating point, band and thresholds. No raw JSON (that is ``--json``)."""
    import dataclasses

    path = default_model_path()
    meta = read_metadata(path)
    embedding = TFLiteEngine(path).details()["embedding"]
    result = _invoke("info")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    by_key = dict(line.split(None, 1) for line in lines if not line.startswith((" ", "(")))
    assert by_key["model"] == f"leukedge_default (int8), version {meta.version}"
    assert by_key["file"] == (
        f"{path} ({path.stat().st_size / 1e6:.2f} MB), runtime ai_edge_litert.interpreter"
    )
    assert by_key["labels"] == "ALL, HEM (positive class: ALL)"
    assert by_key["input"] == "field image, resized whole (bilinear) to 224x224 RGB 0-255"
    assert any(
        ln.startswith("  tensor ") and ln.endswith(": float32 [1, 224, 224, 3]") for ln in lines
    )
    assert by_key["output"].endswith(": uint8 [1, 2], scale 0.00390625, zero point 0")
    assert by_key["embedding"] == f"{embedding['name']}: float32 [1, 1280]"
    assert any(
        ln.startswith("heat map   ")
        and ln.endswith(": float32 [1, 7, 7, 2] (class activation map)")
        for ln in lines
    )
    # The README's figures: gate 0.37 pp lost, 99.6 % agreement on the latest block (every
    # field trained the weights: the gate measures the conversion, not new patients); no
    # test figures, the cross-validated ones instead.
    assert by_key["gate"].startswith(
        "passed on the val split (n=544): accuracy 0.996 vs float 1.000 (0.37 pp lost), "
        "label agreement 99.6 %"
    )
    assert by_key["test"].startswith("none: every image trained the shipped weights")
    assert by_key["fitted"].startswith("on  all 2733 images (2305 ALL, 428 HEM)")
    expected = [ln for ln in lines if ln.startswith("expected ")]
    assert expected[0].startswith(
        "expected   kfold (blocked CV, mean / worst fold): sensitivity 0.980 / 0.963, "
        "specificity 0.946 / 0.906, AUC 0.994 / 0.988"
    )
    assert expected[1].startswith("expected   forward (blocked CV, mean / worst fold): ")
    assert "trained" in by_key
    assert by_key["temperature"].startswith("1.270 ")
    assert by_key["checks"] == (
        "quality thresholds fitted; out of domain on; operating point fitted"
    )
    # The model's operating point (p(ALL) >= 0.523, refer band [0.126, 0.751)), fitted on
    # out-of-fold outputs and labelled so.
    assert by_key["call"] == (
        "ALL when p(ALL) >= 0.5230: operating point for sensitivity >= 0.98 on "
        f"{meta.decision.source}"
    )
    assert by_key["refer"].startswith("0.1257 <= p(ALL) < 0.7508: ")
    assert any(ln.strip().startswith("out of fold, this operating point: n=2733") for ln in lines)
    assert "ood" in by_key and "quality" in by_key
    ops = by_key["operators"].split(", ")
    assert "CONV_2D" in ops and "SOFTMAX" in ops and ops == sorted(ops)
    # A summary, not the card: no JSON, no line of the card's 140.
    assert "{" not in result.output and len(lines) < 30
    # A model whose gate failed says so.
    card = {**meta.model_card, "gate": {**meta.model_card["gate"], "passed": False}}
    failed = tmp_path / "failed.tflite"
    failed.write_bytes(
        write_metadata(path.read_bytes(), dataclasses.replace(meta, model_card=card))
    )
    shown = _invoke("info", failed)
    assert shown.exit_code == 0
    assert "gate       FAILED on the val split" in shown.output
    assert "refused by leukedge unless --allow-failed-gate" in shown.output
    plain = _invoke("info", model_without_metadata)
    assert plain.exit_code == 0 and "carries no leukedge metadata" in plain.output
    assert "model   " not in plain.output and "output     " in plain.output
    for bad in (tmp_path / "missing.tflite", tmp_path):
        result = _invoke("info", bad)
        assert result.exit_code == 2 and str(bad) in result.output


def test_cli_bench_table_and_json(tmp_path, interpreter_threads):
    result = _invoke("bench", "--threads", "1", "--threads", "2", "--runs", "3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    path = default_model_path()
    assert report["path"] == str(path) and report["size_bytes"] == path.stat().st_size
    assert set(report["latency_ms"]) == {"1", "2"} and interpreter_threads == [1, 2]
    for figures in report["latency_ms"].values():
        assert set(figures) == {"median", "p90", "cpu_median"}
        assert 0 < figures["median"] <= figures["p90"] and figures["cpu_median"] > 0
    # Without --json: a table of the same figures (those --out writes), no JSON.
    out = tmp_path / "bench.json"
    table = _invoke("bench", "--threads", "1", "--threads", "2", "--runs", "3", "--out", out)
    assert table.exit_code == 0, table.output
    assert "{" not in table.output and "latency per image (ms)" in table.output
    written = json.loads(out.read_text())
    for threads, figures in written["latency_ms"].items():
        row = next(
            ln for ln in table.output.splitlines() if ln.startswith(f"│ {' ' * 6}{threads} ")
        )
        cells = [cell.strip() for cell in row.split("│")[1:-1]]
        assert cells == [
            threads,
            f"{figures['median']:.2f}",
            f"{figures['p90']:.2f}",
            f"{figures['cpu_median']:.2f}",
        ]
    assert _invoke("bench", "--threads", "0").exit_code == 2
    missing = _invoke("bench", tmp_path / "missing.tflite", "--runs", "1")
    assert missing.exit_code == 2 and "missing.tflite" in missing.output


def test_metadata_round_trip_without_tensorflow(tmp_path):
    """Reading and writing the metadata needs flatbuffers and ai-edge-litert's schema only;
    the rewritten model runs and gives the same outputs."""
    code = f"""
import sys
import numpy as np
from leukedge.classifier import default_model_path
from leukedge.engine.metadata import read_metadata, read_metadata_entries, write_metadata
from leukedge.engine.interpreter import ModelLoadError, TFLiteEngine
content = default_model_path().read_bytes()
meta = read_metadata(content)
meta.name, meta.temperature = "renamed", 2.5
meta.model_card["note"] = "ünïcode ✓"
written = write_metadata(content, meta)
from leukedge.engine.metadata import SCHEMA_VERSION
meta.schema_version = SCHEMA_VERSION  # the writer writes the current layout
assert read_metadata(written) == meta
again = write_metadata(written, meta)
assert list(read_metadata_entries(again)).count("leukedge_metadata") == 1
assert read_metadata(again) == meta
image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
assert np.array_equal(TFLiteEngine(content).run(image), TFLiteEngine(again).run(image))
open({str(tmp_path / "renamed.tflite")!r}, "wb").write(again)
heavy = [m for m in ("tensorflow", "keras", "torch", "jax") if m in sys.modules]
assert not heavy, heavy
print("ROUND TRIP OK")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ROUND TRIP OK" in proc.stdout, proc.stderr[-3000:]
    assert read_metadata(tmp_path / "renamed.tflite").model_card["note"] == "ünïcode ✓"


def test_classify_never_imports_tensorflow_or_keras(example_images):
    code = (
        "import sys\n"
        "from leukedge.cli import app\n"
        "try:\n"
        f"    app(['classify', '--json', {str(example_images / BENIGN)!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'torch', 'jax') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout

"""A model that failed its accuracy gate is refused unless allowed; every model names its
version, its training data (never a machine path) and its weights (a hash a card update
keeps).

Runtime only: the embedded model with its metadata rewritten (no TensorFlow, no
../shared/data).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge import Classifier, ClassifierOptions, LeukedgeError, LeukedgeWarning
from leukedge.classifier import default_model_path
from leukedge.cli import app
from leukedge.engine.metadata import (
    FailedGateError,
    gate_failure,
    read_metadata,
    weights_sha256,
    write_metadata,
)
from leukedge.lab.records import ModelInfo, result_record

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "images"
FIELD = EXAMPLES / "WBC-Malignant-Pre-810.jpg"
CLI = [sys.executable, "-m", "leukedge.cli"]

FAILED_GATE = {
    "eval_split": "val",
    "n": 410,
    "float_accuracy": 0.9756,
    "accuracy": 0.95,
    "weighted_f1": 0.949,
    "delta_pp": 2.56,
    "agreement": 0.961,
    "mean_abs_prob_diff": 0.031,
    "ece": 0.04,
    "float_ece": 0.015,
    "passed": False,
    "failures": ["accuracy delta 2.56 pp > 1.0 pp", "agreement 96.10 % < 98.00 %"],
}


def _with_card(path: Path, **card) -> Path:
    """The embedded model with ``card`` merged into its model card, written to ``path``."""
    content = default_model_path().read_bytes()
    metadata = read_metadata(content)
    metadata.model_card.update(card)
    path.write_bytes(write_metadata(content, metadata))
    return path


@pytest.fixture(scope="module")
def failed_model(tmp_path_factory) -> Path:
    """The embedded model, its card rewritten to say the int8 gate failed."""
    return _with_card(tmp_path_factory.mktemp("failed") / "failed_int8.tflite", gate=FAILED_GATE)


def _cli(*args) -> subprocess.CompletedProcess:
    """The console script's ``main`` in a fresh process (leukedge warnings as ``warning:``)."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------- the gate, SDK
def test_sdk_refuses_a_model_that_failed_its_gate_and_says_why_and_how(failed_model):
    for options in (
        ClassifierOptions(model_path=failed_model),
        ClassifierOptions(model_content=failed_model.read_bytes()),
    ):
        with pytest.raises(FailedGateError) as info:
            Classifier(options)
        message = str(info.value)
        assert isinstance(info.value, LeukedgeError)
        assert "FAILED its conversion's accuracy gate" in message
        # The gate's figures and the bounds it broke, then the opt-in.
        assert "accuracy 0.950 vs 0.976 float (delta 2.56 pp)" in message
        assert "agreement with the float model 0.961" in message
        assert "accuracy delta 2.56 pp > 1.0 pp" in message
        assert "allow_failed_gate=True" in message and "--allow-failed-gate" in message
    assert str(failed_model) in str(
        pytest.raises(FailedGateError, Classifier.create_from_model_path, failed_model).value
    )


def test_sdk_uses_a_failed_model_only_when_allowed_and_warns(failed_model):
    with pytest.warns(LeukedgeWarning, match="FAILED its accuracy gate") as caught:
        allowed = Classifier.create_from_model_path(failed_model, allow_failed_gate=True)
    assert any("delta 2.56 pp" in str(w.message) for w in caught)
    # Same weights, same answer: only the card differs.
    expected = Classifier().classify(FIELD)
    assert allowed.classify(FIELD).probabilities == expected.probabilities


def test_models_without_a_gate_record_load_as_before(tmp_path):
    """Not checked (``"gate": null``, ``--no-check``), or no ``passed`` entry: nothing says
    the model failed, so it loads without a gate warning (README, "Identity")."""
    for gate in (None, {"n": 3}, {"passed": True}):
        path = _with_card(tmp_path / "model.tflite", gate=gate)
        assert gate_failure(read_metadata(path)) is None
        with warnings.catch_warnings():
            warnings.simplefilter("error", LeukedgeWarning)
            Classifier.create_from_model_path(path)
    assert gate_failure(None) is None  # a model without leukedge metadata


@pytest.mark.parametrize(
    "gate, refused",
    [
        ({"passed": False}, True),  # a failure with no figures and no `failures` list
        ({"passed": 0}, True),  # malformed verdicts are not "passed"
        ({"passed": "false"}, True),
        ({"passed": None}, True),
        ({"passed": True}, False),  # a verdict without figures
        ({"n": 3}, False),  # no verdict recorded
        (None, False),
    ],
)
def test_info_and_loading_agree_on_any_gate_record(tmp_path, gate, refused):
    """``info`` and the SDK read one verdict (``gate_failure``), and ``info`` prints a
    summary, not a traceback, whatever the gate record holds of its figures."""
    path = _with_card(tmp_path / "model.tflite", gate=gate)
    if refused:
        with pytest.raises(FailedGateError):
            Classifier.create_from_model_path(path)
    else:
        Classifier.create_from_model_path(path)
    shown = CliRunner().invoke(app, ["info", str(path)])
    assert shown.exit_code == 0 and shown.exception is None, shown.output
    gate_line = next(line for line in shown.stdout.splitlines() if line.startswith("gate "))
    assert ("FAILED" in gate_line) is refused, gate_line
    assert ("refused by leukedge unless --allow-failed-gate" in shown.stdout) is refused


# ----------------------------------------------------------------------- the gate, CLI
def test_classify_refuses_a_failed_model_and_warns_at_every_allowed_run(failed_model):
    refused = _cli("classify", FIELD, "--model", failed_model)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "cannot load model" in refused.stderr and "FAILED" in refused.stderr
    assert "--allow-failed-gate" in refused.stderr
    for _ in range(2):  # every run says so, not only the first
        run = _cli("classify", FIELD, "--model", failed_model, "--allow-failed-gate", "--json")
        assert run.returncode == 0, run.stderr
        warned = [line for line in run.stderr.splitlines() if line.startswith("warning: ")]
        assert len(warned) == 1 and "FAILED its accuracy gate" in warned[0], run.stderr
        assert json.loads(run.stdout)["status"] in ("ok", "refer", "rejected")


def test_watch_camera_and_bench_refuse_a_failed_model(failed_model, tmp_path):
    runner = CliRunner()
    watch = runner.invoke(app, ["watch", str(tmp_path), "--jsonl", str(tmp_path / "w.jsonl"),
                                "--model", str(failed_model)])  # fmt: skip
    assert watch.exit_code == 2 and "--allow-failed-gate" in watch.output
    bench = runner.invoke(app, ["bench", str(failed_model), "--threads", "1", "--runs", "1"])
    assert bench.exit_code == 2 and "FAILED" in bench.output
    allowed = runner.invoke(
        app, ["bench", str(failed_model), "--threads", "1", "--runs", "1", "--allow-failed-gate"]
    )
    assert allowed.exit_code == 0 and "warning: " in allowed.output
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 64))
    for _ in range(2):
        writer.write(np.full((64, 64, 3), 128, np.uint8))
    writer.release()
    camera = _cli("camera", "--video", video, "--headless", "--model", failed_model)
    assert camera.returncode == 2 and "--allow-failed-gate" in camera.stderr
    camera = _cli(
        "camera", "--video", video, "--headless", "--model", failed_model, "--allow-failed-gate"
    )
    assert camera.returncode == 0, camera.stderr
    assert "FAILED its accuracy gate" in camera.stderr


def test_info_shows_the_failed_gate(failed_model):
    run = _cli("info", failed_model)
    assert run.returncode == 0, run.stderr
    assert "gate       FAILED on the val split (n=410): accuracy 0.950" in run.stdout
    assert "refused by leukedge unless --allow-failed-gate" in run.stdout
    assert "FAILED its accuracy gate" in run.stderr  # also beside --json
    as_json = _cli("info", failed_model, "--json")
    assert json.loads(as_json.stdout)["metadata"]["model_card"]["gate"]["passed"] is False
    assert "FAILED its accuracy gate" in as_json.stderr


def test_evaluate_refuses_a_failed_model_unless_allowed(failed_model, tmp_path):
    """``train evaluate --model X.tflite [--update-card]`` runs the model: the same rule."""
    from leukedge.evaluation.evaluate import evaluate_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "split.csv").write_text(f"path,label,subject,group,split\n{FIELD},ALL,,g,test\n")
    before = failed_model.read_bytes()
    with pytest.raises(FailedGateError, match="allow-failed-gate"):
        evaluate_run(run, "test", failed_model, update_card=True)
    assert failed_model.read_bytes() == before and not list(run.glob("metrics_*"))


# ------------------------------------------------------------------ identity and hashes
def test_rewriting_metadata_keeps_weights_sha256_and_changes_model_sha256(tmp_path):
    content = default_model_path().read_bytes()
    metadata = read_metadata(content)
    metadata.model_card["test_metrics_again"] = {"n": 1}
    updated = write_metadata(content, metadata)
    assert hashlib.sha256(updated).digest() != hashlib.sha256(content).digest()
    assert weights_sha256(updated) == weights_sha256(content)
    # A second rewrite reuses the metadata buffer: the file does not grow with each update.
    assert len(write_metadata(updated, metadata)) == len(updated)
    # One weight changed: another weights hash.
    from conftest import rewrite_model

    def nudge(model, schema):
        buffer = next(b for b in model.buffers if b.data is not None and len(b.data) > 1000)
        buffer.data = np.array(buffer.data, copy=True)
        buffer.data[len(buffer.data) // 2] ^= 1  # one bit, mid-tensor

    assert weights_sha256(rewrite_model(content, nudge)) != weights_sha256(content)
    # Records and CSV rows carry both; a card update keeps the records' weights_sha256.
    path = tmp_path / "updated.tflite"
    path.write_bytes(updated)
    records = []
    for model in (default_model_path(), path):
        classifier = Classifier.create_from_model_path(model)
        records.append(result_record(FIELD, classifier.classify(FIELD), ModelInfo.of(classifier)))
    assert records[0]["weights_sha256"] == records[1]["weights_sha256"] == weights_sha256(content)
    assert records[0]["model_sha256"] != records[1]["model_sha256"]
    out = tmp_path / "calls.csv"
    assert _cli("classify", FIELD, "--csv", out).returncode == 0
    with open(out, newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["weights_sha256"] == weights_sha256(content)


def test_embedded_model_names_its_version_and_dataset_not_a_machine_path():
    meta = read_metadata(default_model_path())
    # Its own version (v1 and the first v2 both said 0.1.0, leukedge's version), which the
    # README's model card names; the leukedge version that wrote it is the card's.
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta.version) and meta.version != "0.1.0"
    assert f"`{meta.version}`" in (REPO / "README.md").read_text()
    assert meta.model_card["leukedge_version"] and Classifier().classify(FIELD).model_version
    data = meta.model_card["training_data"]
    assert set(data) == {"dataset", "path"} and data["dataset"] == "taleqani"
    assert not Path(data["path"]).is_absolute() and ".." not in Path(data["path"]).parts


def test_card_names_training_data_relative_to_a_dataset():
    from leukedge.converters.card import training_data
    from leukedge.converters.convert import default_model_version

    assert training_data("/work/shared/data/taleqani") == {
        "dataset": "taleqani",
        "path": "taleqani",
    }
    assert training_data("../shared/data/taleqani/") == training_data("/srv/taleqani")
    assert training_data(r"C:\data\C-NMC\training_data\fold_0", dataset="C-NMC") == {
        "dataset": "C-NMC",
        "path": "C-NMC/training_data/fold_0",
    }
    assert training_data("/home/x/runs/split.csv") == {"dataset": "split", "path": "split.csv"}
    assert training_data(None) is None
    assert default_model_version("cc255154188cc7a3612a") == "0.0.0+cc255154188c"

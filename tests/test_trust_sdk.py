"""Statuses end to end in the SDK and the CLI: out_of_domain, uncertain (refer), the error
reasons, overrides, models without the new parts, and ``leukedge info``.

Runtime only (no TensorFlow, no ../shared/data): the embedded model (v2: an embedding
output and fitted checks: quality thresholds, out-of-domain model, operating point and
refer band), and two models made from it without TensorFlow:

- ``ood_model``: its out-of-domain model replaced by a stand-in fitted on rotations and
  mirror images of the two example fields, and its quality thresholds and operating point
  removed, so that the out-of-domain check is the only fitted one at work. That stand-in
  tests the wiring; how well the real embedding separates out-of-domain inputs is measured
  in tools/ood_study.py.
- ``model_without_checks`` (conftest.py): a model as converted before the checks existed
  (no embedding output, no fitted checks), for the fallback: built-in too_small and blank
  only, the arg-max, one warning at load.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from leukedge.checks.decision import DecisionSpec
from leukedge.checks.ood import MahalanobisScorer, fit_mahalanobis
from leukedge.checks.quality import QualityThresholds
from leukedge.classifier import (
    REASONS,
    ClassificationResult,
    Classifier,
    ClassifierOptions,
    default_model_path,
)
from leukedge.cli import app
from leukedge.engine.interpreter import TFLiteEngine
from leukedge.engine.metadata import read_metadata, write_metadata
from leukedge.engine.preprocess import load_and_resize
from leukedge.errors import LeukedgeWarning

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
# A benign field that the embedded model (v2) calls ALL, p(ALL) 0.944: a genuine error of
# the model on this field. Tests that need a refer or a HEM call put 0.944 inside a refer
# band or below a threshold of their own.
BENIGN = EXAMPLES / "WBC-Benign-420.jpg"
PRE = EXAMPLES / "WBC-Malignant-Pre-810.jpg"
CELL = EXAMPLES / "UID_3_4_2_all.bmp"


def _views(rgb: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations and mirror images of a field."""
    out = []
    for k in range(4):
        r = np.rot90(rgb, k)
        out += [np.ascontiguousarray(r), np.ascontiguousarray(r[:, ::-1])]
    return out


@pytest.fixture(scope="module")
def ood_model() -> bytes:
    """Embedded model with an OOD spec on 16 views of the example fields (its own
    embedding output) instead of its fitted one, and no quality thresholds or operating
    point (built-in checks, the arg-max); threshold 10 × the median in-sample distance
    (measured: views 1,051 median, 1,933 max; noise 70,462, a C-NMC cell 66,878, the
    benign field 5 % brighter 2,758)."""
    content = default_model_path().read_bytes()
    engine = TFLiteEngine(content)
    embeddings, y = [], []
    for path, cls in ((PRE, 0), (BENIGN, 1)):
        for view in _views(load_and_resize(path, (224, 224))):
            embeddings.append(engine.run_with_embedding(view)[1])
            y.append(cls)
    spec = fit_mahalanobis(np.array(embeddings), np.array(y), ["ALL", "HEM"], rank=4)
    spec.threshold = 10 * float(np.median(MahalanobisScorer(spec).distances(embeddings)))
    spec.embedding_output = engine.embedding_name
    metadata = read_metadata(content)
    metadata.ood = spec
    metadata.quality = metadata.decision = None
    return write_metadata(content, metadata)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeukedgeWarning)  # the embedded model runs every check
        return Classifier()


def test_out_of_domain_is_rejected_with_the_model_opinion_apart(ood_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeukedgeWarning)  # every check available: no warning
        classifier = Classifier(
            ClassifierOptions(model_content=ood_model, quality=QualityThresholds())
        )
    assert classifier.unchecked == [
        "too_small",
        "blank",
        "underexposed",
        "saturated",
        "out_of_focus",
        "not_stained",
    ]
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    r = classifier.classify(noise)
    assert (r.status, r.reason, r.label, r.probabilities, r.score) == (
        "rejected",
        "out_of_domain",
        None,
        None,
        None,
    )
    assert r.failed_checks == ["out_of_domain"] and r.ood_distance > classifier.ood_threshold
    assert r.model_label in ("ALL", "HEM") and sum(r.model_probabilities.values()) == pytest.approx(
        1.0, abs=0.01
    )
    assert "out of domain" in r.message
    cell = classifier.classify(CELL)
    assert cell.reason == "out_of_domain"
    # An in-domain field, even brightened a little, gets a call; its distance is the
    # scorer's on the engine's embedding.
    field = load_and_resize(BENIGN, (224, 224))
    brighter = np.clip(field * 1.05, 0, 255).astype(np.uint8)
    ok = classifier.classify(brighter)
    assert ok.status == "ok" and ok.label == ok.model_label and ok.failed_checks == []
    engine = TFLiteEngine(ood_model)
    expected = MahalanobisScorer(read_metadata(ood_model).ood).distances(
        engine.run_with_embedding(brighter)[1]
    )
    assert ok.ood_distance == pytest.approx(expected)
    # The threshold can be overridden (inf: check off).
    off = Classifier(
        ClassifierOptions(
            model_content=ood_model, quality=QualityThresholds(), ood_threshold=float("inf")
        )
    )
    assert off.classify(noise).status == "ok"


def test_quality_failure_comes_before_out_of_domain(ood_model):
    with pytest.warns(LeukedgeWarning, match="no quality thresholds"):
        classifier = Classifier(ClassifierOptions(model_content=ood_model))
    black = classifier.classify(np.zeros((224, 224, 3), dtype=np.uint8))
    # Built-in thresholds (the model has none): blank first, then out of domain.
    assert black.reason == "blank" and black.failed_checks == ["blank", "out_of_domain"]
    assert "(also: out_of_domain)" in black.message


def _band_around(p: float) -> tuple[float, tuple[float, float]]:
    """A threshold just above ``p`` and a band that holds ``p`` (3-decimal edges)."""
    return round(p + 0.02, 3), (round(p - 0.05, 3), round(p + 0.05, 3))


def test_refer_band_gives_uncertain(classifier):
    """BENIGN's p(ALL) (about 0.5 for model v3; int8 kernels move it between CPUs, so the
    bands here are placed around the value measured) lies inside the model's own band
    [0.126, 0.751): refer. A band of our own around it refers it too; one just beside it
    gives a call."""
    default = classifier.classify(BENIGN)
    p_all = default.probabilities["ALL"]
    low_edge, high_edge = classifier.refer_band
    assert low_edge + 0.1 < p_all < high_edge - 0.1
    assert (default.status, default.reason, default.label) == ("refer", "uncertain", None)
    threshold, band = _band_around(p_all)
    r = Classifier(ClassifierOptions(decision_threshold=threshold, refer_band=band)).classify(
        BENIGN
    )
    assert (r.status, r.reason, r.label) == ("refer", "uncertain", None)
    # The model's opinion at this operating point: below the threshold, so HEM.
    assert r.probabilities["ALL"] == pytest.approx(p_all) and r.model_label == "HEM"
    assert r.score == pytest.approx(r.probabilities["HEM"])
    assert f"[{band[0]:.3f}, {band[1]:.3f})" in r.message
    # Just outside the band: a call.
    beside = (round(p_all + 0.005, 3), band[1])
    outside = Classifier(ClassifierOptions(decision_threshold=threshold, refer_band=beside))
    assert outside.classify(BENIGN).label == "HEM"
    # Threshold below p(ALL): called ALL. An empty band switches the band off.
    low = Classifier(ClassifierOptions(decision_threshold=p_all - 0.02, refer_band=(0.0, 0.0)))
    assert low.refer_band is None and low.classify(BENIGN).label == "ALL"


def test_operating_point_from_metadata_and_overrides(classifier, model_without_checks):
    content = default_model_path().read_bytes()
    metadata = read_metadata(content)
    # An operating point of our own whose band holds BENIGN's p(ALL) and not FIELD's.
    p_all = classifier.classify(BENIGN).probabilities["ALL"]
    threshold, band = _band_around(p_all)
    metadata.decision = DecisionSpec(threshold=threshold, refer_band=list(band))
    model = write_metadata(content, metadata)
    c = Classifier(ClassifierOptions(model_content=model))
    assert (c.decision_threshold, c.refer_band) == (threshold, band)
    assert c.classify(BENIGN).status == "refer"
    # A threshold override drops the model's band (it belonged to the model's threshold).
    t = Classifier(ClassifierOptions(model_content=model, decision_threshold=p_all - 0.02))
    assert t.refer_band is None
    assert (t.classify(BENIGN).status, t.classify(BENIGN).label) == ("ok", "ALL")
    with pytest.raises(ValueError, match="contain the threshold"):
        Classifier(ClassifierOptions(decision_threshold=0.5, refer_band=(0.6, 0.7)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Classifier(ClassifierOptions(decision_threshold=1.5))
    # The embedded model: its own operating point (p(ALL) >= 0.523, band [0.126, 0.751)).
    spec = read_metadata(content).decision
    assert (classifier.decision_threshold, classifier.refer_band) == (
        spec.threshold,
        tuple(spec.refer_band),
    )
    assert (round(spec.threshold, 3), [round(b, 3) for b in spec.refer_band]) == (
        0.523,
        [0.126, 0.751],
    )
    # A model without decision metadata: 0.5, the arg-max, no band.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeukedgeWarning)  # it has no checks: expected
        plain = Classifier(ClassifierOptions(model_content=model_without_checks))
    assert (plain.decision_threshold, plain.refer_band) == (0.5, None)


def test_model_without_embedding_warns_once_and_reports_unchecked(model_without_checks):
    """A model converted before the checks (no embedding output, no fitted thresholds):
    one warning at load, the missing checks in every result; the embedded model, which
    has them all, loads without a warning and reports nothing unchecked."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeukedgeWarning)
        assert Classifier().classify(BENIGN).unchecked == []
    with pytest.warns(LeukedgeWarning, match="out-of-domain check unavailable") as record:
        c = Classifier(ClassifierOptions(model_content=model_without_checks))
    assert len([w for w in record if issubclass(w.category, LeukedgeWarning)]) == 1
    assert "no quality thresholds" in str(record[0].message)
    assert "(no embedding output)" in str(record[0].message)
    r = c.classify(BENIGN)
    assert r.ood_distance is None and r.status == "ok"
    assert r.unchecked == [
        "underexposed",
        "saturated",
        "out_of_focus",
        "not_stained",
        "out_of_domain",
    ]
    assert r.quality["width"] == 224 and r.quality["grey_std"] > 10


def test_ood_data_for_another_embedding_width_is_unavailable(ood_model):
    metadata = read_metadata(ood_model)
    metadata.ood.embedding_dim = 64
    content = write_metadata(ood_model, metadata)
    with pytest.warns(LeukedgeWarning, match="expects a 64-d embedding"):
        c = Classifier(ClassifierOptions(model_content=content))
    assert c.ood_threshold is None and "out_of_domain" in c.unchecked


def test_error_results_have_reasons(tmp_path, classifier):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    cases = {
        "not_found": tmp_path / "missing.png",
        "decode_error": broken,
    }
    for reason, path in cases.items():
        with pytest.raises(Exception) as info:
            classifier.classify(path)
        r = ClassificationResult.from_error(info.value, str(path), "m", "1")
        assert (r.status, r.reason, r.label, r.model_label) == ("error", reason, None, None)
        assert str(path.name) in r.message
    small_cap = Classifier(ClassifierOptions(max_pixels=100))
    with pytest.raises(Exception) as info:
        small_cap.classify(BENIGN)
    assert ClassificationResult.from_error(info.value).reason == "too_large"
    assert ClassificationResult.from_error(RuntimeError("boom")).reason == "error"
    assert set(REASONS) >= {"too_large", "decode_error", "not_found", "uncertain"}


def test_to_dict_is_the_one_json_shape(classifier):
    d = classifier.classify(BENIGN).to_dict()
    assert list(d) == [
        "status",
        "reason",
        "message",
        "label",
        "probabilities",
        "score",
        "model_label",
        "model_probabilities",
        "ood_distance",
        "quality",
        "failed_checks",
        "unchecked",
        "model",
        "model_version",
        "source",
        "timestamp_ms",
    ]
    json.dumps(d)


# ------------------------------------------------------------------------------- CLI
def test_cli_json_statuses_and_exit_codes(tmp_path):
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((224, 224, 3), dtype=np.uint8)).save(black)
    runner = CliRunner()
    result = runner.invoke(app, ["classify", "--json", str(BENIGN), str(black)])
    assert result.exit_code == 0  # a rejected input is an answer, not a failure
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    # The embedded model v3 refers this benign field (p(ALL) about 0.5, in its band).
    assert [(r["status"], r["reason"], r["label"]) for r in lines] == [
        ("refer", "uncertain", None),
        ("rejected", "blank", None),
    ]
    # The model's opinion on the black image is kept apart, never as the call.
    assert lines[1]["model_label"] in ("ALL", "HEM") and lines[1]["error"] is None
    assert lines[1]["probabilities"] is None and lines[1]["label"] is None
    assert lines[0]["path"] == str(BENIGN)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 nope")
    failed = runner.invoke(app, ["classify", "--json", str(BENIGN), str(broken)])
    assert failed.exit_code == 1
    last = json.loads([ln for ln in failed.stdout.splitlines() if ln.startswith("{")][-1])
    assert (last["status"], last["reason"]) == ("error", "decode_error")
    assert last["error"].startswith(str(broken))


def test_cli_refer_band_threshold_and_table(classifier):
    """--threshold and --refer-band around BENIGN's p(ALL) put it in the band; "off" gives
    a call."""
    runner = CliRunner()
    threshold, band = _band_around(classifier.classify(BENIGN).probabilities["ALL"])
    option = [f"{threshold}", f"{band[0]},{band[1]}"]
    result = runner.invoke(
        app,
        ["classify", "--json", "--threshold", option[0], "--refer-band", option[1], str(BENIGN)],
    )
    assert result.exit_code == 0
    record = json.loads([ln for ln in result.stdout.splitlines() if ln.startswith("{")][0])
    assert (record["status"], record["reason"]) == ("refer", "uncertain")
    off = runner.invoke(app, ["classify", "--json", "--refer-band", "off", str(BENIGN)])
    assert json.loads(off.stdout.splitlines()[-1])["status"] == "ok"
    bad = runner.invoke(app, ["classify", "--refer-band", "0.4", str(BENIGN)])
    assert bad.exit_code == 2 and "LOW,HIGH" in bad.output
    outside = runner.invoke(
        app, ["classify", "--threshold", "0.45", "--refer-band", "0.5,0.6", str(BENIGN)]
    )
    assert outside.exit_code == 2 and "contain the threshold" in outside.output
    table = runner.invoke(
        app, ["classify", "--threshold", option[0], "--refer-band", option[1], str(BENIGN)]
    )
    assert table.exit_code == 0
    assert "status" in table.stdout and "refer" in table.stdout and "uncertain" in table.stdout
    assert (
        f"call ALL when p(ALL) >= {threshold:.3f}; refer when {band[0]:.3f} <= p < {band[1]:.3f}"
        in table.stdout
    )


def test_info_prints_operating_point_band_ood_and_quality(
    tmp_path, ood_model, model_without_checks
):
    content = ood_model
    metadata = read_metadata(content)
    metadata.decision = DecisionSpec(
        threshold=0.3,
        refer_band=[0.25, 0.45],
        target_sensitivity=0.98,
        coverage_target=0.95,
        source="validation split, n=410",
        validation={
            "operating_point": {
                "n": 410,
                "sensitivity": 0.991,
                "specificity": 0.8,
                "coverage": 0.96,
                "ok_accuracy": 0.98,
            }
        },
    )
    metadata.quality = QualityThresholds(focus_min=38.3, stain_min=6.5, source="training split")
    path = tmp_path / "m.tflite"
    path.write_bytes(write_metadata(content, metadata))
    out = CliRunner().invoke(app, ["info", str(path)]).stdout
    assert "call       ALL when p(ALL) >= 0.3000: operating point for sensitivity >= 0.98" in out
    assert "refer      0.2500 <= p(ALL) < 0.4500" in out
    assert "n=410: sensitivity 0.991, specificity 0.800, coverage 0.960" in out
    assert "ood        mahalanobis, 1280-d embedding" in out and "rank 4" in out
    assert "out_of_focus: Laplacian variance < 38.3" in out
    plain = tmp_path / "without_checks.tflite"
    plain.write_bytes(model_without_checks)
    without = CliRunner().invoke(app, ["info", str(plain)]).stdout
    assert "ood        unavailable (no embedding output)" in without
    assert "the arg-max; the model carries no operating point" in without
    default = CliRunner().invoke(app, ["info"]).stdout  # the embedded model has them all
    assert "ood        mahalanobis, 1280-d embedding" in default and "unavailable" not in default
    assert "call       ALL when p(ALL) >= 0.5230: operating point" in default

"""Heat maps of each call (issue 20, part 3): the class activation map that model v3 exports
as a third output, the occlusion fallback, ``ClassifierOptions(explain=True)`` and
``leukedge classify --explain / --overlay / --report``. No TensorFlow, no shared data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukedge import Classifier, ClassifierOptions
from leukedge.classifier import default_model_path
from leukedge.engine.heatmap import cam_heatmap, occlusion_heatmap, upsample
from leukedge.engine.interpreter import TFLiteEngine
from leukedge.engine.preprocess import load_and_resize, load_rgb

IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"
FIELD = IMAGES / "WBC-Malignant-Pre-810.jpg"
BENIGN = IMAGES / "WBC-Benign-420.jpg"


def _without_cam(content: bytes) -> bytes:
    """The model with its class activation map output dropped (as v2 and the proposed
    models are: no such output)."""
    from conftest import rewrite_model

    engine = TFLiteEngine(content)
    name = engine.details()["class_activation_map"]["name"]

    def drop(model, schema):
        graph = model.subgraphs[0]
        keep = [i for i in graph.outputs if graph.tensors[i].name not in (name, name.encode())]
        assert len(keep) == len(graph.outputs) - 1
        graph.outputs = keep
        for signature in model.signatureDefs or []:
            signature.outputs = [o for o in signature.outputs if o.tensorIndex in keep]

    return rewrite_model(content, drop)


def test_the_class_activation_map_splits_the_models_own_logit():
    """The map's mean over cells is the model's logit margin (pooling and the Dense layer
    are linear): softmax of the mean gives the model's probabilities, on fields it calls
    either way. Tolerance: the file rounds the logits to its SOFTMAX input's int8 step
    (each by up to half a step, so p by up to a quarter step near 0.5; the step is read from
    the file, as int8 kernels differ between CPUs) and p to the uint8 output (2 steps)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    engine = TFLiteEngine(default_model_path())
    assert engine.cam_shape == (7, 7, 2)
    plain = Interpreter(
        model_content=engine.model_content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    tensors = {t["index"]: t for t in plain.get_tensor_details()}
    (softmax_op,) = [op for op in plain._get_ops_details() if op["op_name"] == "SOFTMAX"]
    logit_step = tensors[softmax_op["inputs"][0]]["quantization"][0]
    assert 0 < logit_step < 0.2  # a step that small still tells 0.5 from the calls below
    tolerance = logit_step / 4 + 2 / 256 + 1e-6
    rgb = load_and_resize(BENIGN, engine.input_size)
    for image in (rgb, np.ascontiguousarray(rgb[:, ::-1]), load_and_resize(FIELD, (224, 224))):
        probabilities, embedding, cam = engine.run_with_cam(image)
        assert cam.dtype == np.float32 and embedding.shape == (1280,)
        mean = cam.reshape(-1, 2).mean(axis=0)
        softmax = np.exp(mean - mean.max()) / np.exp(mean - mean.max()).sum()
        assert softmax == pytest.approx(probabilities, abs=tolerance)
        assert engine.run(image) == pytest.approx(probabilities)  # the same invoke's outputs


def test_cam_heatmap_shows_the_called_class_evidence_at_the_images_size():
    cam = np.zeros((7, 7, 2), np.float32)
    cam[2, 5, 0] = 4.0  # one cell with strong evidence for class 0
    cam[6, 0, 1] = 3.0  # another for class 1
    cam[4, 4] = 5.0  # both classes high: no margin either way, so never the hottest cell
    heat = cam_heatmap(cam, 0, (480, 640))
    assert heat.shape == (480, 640) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and 0.95 <= heat.max() <= 1.0  # bilinear between cell centres
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert (int(y * 7 / 480), int(x * 7 / 640)) == (2, 5)
    other = cam_heatmap(cam, 1, (70, 70))
    y, x = np.unravel_index(np.argmax(other), other.shape)
    assert (y // 10, x // 10) == (6, 0)
    assert not cam_heatmap(np.ones((7, 7, 2)), 0, (7, 7)).any()  # no contrast: all zeros
    with pytest.raises(ValueError, match="class index"):
        cam_heatmap(cam, 2, (7, 7))
    with pytest.raises(ValueError, match="at least 1x1"):
        upsample(np.zeros((2, 2)), (0, 5))


def test_occlusion_finds_the_region_the_model_reads():
    """A model that reads only the top-left corner's redness: blurring that corner moves its
    output, nothing else does, so the heat lies there."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)

    def probabilities(x):
        p = float(x[:32, :32, 0].astype(float).std() / 128.0)  # texture, blur removes it
        return np.array([p, 1.0 - p])

    heat = occlusion_heatmap(probabilities, rgb, 0, (224, 224))
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert y < 48 and x < 48 and heat[112:, 112:].max() < 0.05
    with pytest.raises(ValueError, match="grid"):
        occlusion_heatmap(probabilities, rgb, 0, (224, 224), grid=1)


def test_explain_adds_a_heatmap_and_changes_nothing_else():
    plain = Classifier().classify(FIELD)
    explained = Classifier(ClassifierOptions(explain=True)).classify(FIELD)
    assert plain.heatmap is None and plain.heatmap_method is None
    size = load_rgb(FIELD).shape[:2]
    assert explained.heatmap.shape == size and explained.heatmap_method == "class_activation_map"
    assert explained.heatmap.min() >= 0.0 and explained.heatmap.max() <= 1.0
    # The map of the model's call (ALL here), from the same outputs the engine gives.
    engine = TFLiteEngine(default_model_path())
    _, _, cam = engine.run_with_cam(load_and_resize(FIELD, engine.input_size))
    expected = cam_heatmap(cam, ["ALL", "HEM"].index(explained.model_label), size)
    assert explained.model_label == "ALL" and np.allclose(explained.heatmap, expected, atol=1e-6)
    assert explained.to_dict() == plain.to_dict()  # the record is the same; the map is apart
    assert "heatmap" not in explained.to_dict() and "heatmap=" not in repr(explained)
    # A model without the map output falls back to occlusion (49 more invokes).
    without = Classifier(
        ClassifierOptions(
            model_content=_without_cam(default_model_path().read_bytes()), explain=True
        )
    )
    result = without.classify(BENIGN)
    assert result.heatmap_method == "occlusion" and result.heatmap.shape == size
    assert result.probabilities == Classifier().classify(BENIGN).probabilities


def test_classify_overlay_and_report_folders(tmp_path):
    """--overlay writes one PNG per field at its size; --report writes the review page and
    its overlays; both are checked before any image is read."""
    from typer.testing import CliRunner

    from leukedge.cli import app

    images = tmp_path / "slide_A"
    images.mkdir()
    for path in (FIELD, BENIGN):
        (images / path.name).write_bytes(path.read_bytes())
    runner = CliRunner()
    overlay, report = tmp_path / "ov", tmp_path / "rep"
    args = ["classify", str(images), "--overlay", str(overlay), "--report", str(report), "--json"]
    result = runner.invoke(app, [*args, "--explain"])
    assert result.exit_code == 0, result.output
    records = [json.loads(ln) for ln in result.stdout.splitlines() if ln.startswith("{")]
    written = sorted(overlay.glob("*.png"))
    assert [p.name for p in written] == [
        "00001_WBC-Benign-420.png",
        "00002_WBC-Malignant-Pre-810.png",
    ]
    for png, record in zip(written, records, strict=True):
        assert Image.open(png).size == Image.open(record["path"]).size
        drawn = np.asarray(Image.open(png).convert("RGB"))
        assert not np.array_equal(drawn, load_rgb(record["path"]))  # something drawn on it
    html = (report / "index.html").read_text(encoding="utf-8")
    assert (
        html.count('<figure class="card') == 2
        and len(list((report / "overlays").glob("*.png"))) == 2
    )
    # Without --explain the same overlays carry no heat map (the measured map is not yet
    # faithful enough to show unasked: README, "Heat maps").
    plain = tmp_path / "plain"
    assert runner.invoke(app, ["classify", str(images), "--overlay", str(plain)]).exit_code == 0
    for drawn, bare in zip(written, sorted(plain.glob("*.png")), strict=True):
        assert drawn.name == bare.name
        assert not np.array_equal(np.asarray(Image.open(drawn)), np.asarray(Image.open(bare)))
    # A 1×1 image (too_small for the model) gets an enlarged overlay and its card; the run
    # goes on (it used to stop the run with a traceback, no page written).
    tiny = tmp_path / "slide_B"
    tiny.mkdir()
    Image.new("RGB", (1, 1), (200, 100, 150)).save(tiny / "a_tiny.png")
    (tiny / FIELD.name).write_bytes(FIELD.read_bytes())
    small = runner.invoke(
        app,
        ["classify", str(tiny), "--overlay", str(tmp_path / "t"), "--report", str(tmp_path / "tr")],
    )
    assert small.exit_code == 0, small.output
    assert Image.open(tmp_path / "t" / "00002_a_tiny.png").size == (32, 32)
    assert (tmp_path / "t" / "00001_WBC-Malignant-Pre-810.png").is_file()
    assert (tmp_path / "tr" / "index.html").read_text(encoding="utf-8").count(
        '<figure class="card'
    ) == 2
    # Checked before any work: the same folders again need --overwrite (exit 2).
    again = runner.invoke(app, ["classify", str(images), "--overlay", str(overlay)])
    assert again.exit_code == 2 and "--overlay" in again.output and "--overwrite" in again.output
    again = runner.invoke(app, ["classify", str(images), "--report", str(report)])
    assert again.exit_code == 2 and "--report" in again.output
    # --overwrite leaves one run's overlays: an earlier run's other fields' are removed.
    one = runner.invoke(
        app, ["classify", str(images / FIELD.name), "--overlay", str(overlay), "--overwrite"]
    )
    assert one.exit_code == 0, one.output
    assert [p.name for p in overlay.glob("*.png")] == ["00001_WBC-Malignant-Pre-810.png"]
    # A picture folder inside a folder being classified is refused (the next run would
    # classify the overlays as fields).
    inside = runner.invoke(app, ["classify", str(images), "--report", str(images / "review")])
    assert inside.exit_code == 2 and "being classified" in inside.output
    assert not (images / "review").exists()
    blocked = tmp_path / "file"
    blocked.write_text("x")
    assert runner.invoke(app, ["classify", str(images), "--overlay", str(blocked)]).exit_code == 2
    assert not list(tmp_path.glob("**/.*partial*"))


def test_report_refuses_to_draw_a_call_on_an_image_replaced_since(tmp_path):
    """`leukedge report` reads each image again from its recorded path: a file replaced by
    another field since the run gets a card marked as changed, never the old call drawn on
    the new picture (found by a fresh user swapping the two example fields)."""
    from typer.testing import CliRunner

    from leukedge.cli import app

    images = tmp_path / "slide"
    images.mkdir()
    for path in (FIELD, BENIGN):
        (images / path.name).write_bytes(path.read_bytes())
    runner = CliRunner()
    jsonl = tmp_path / "run.jsonl"
    assert runner.invoke(app, ["classify", str(images), "--jsonl", str(jsonl)]).exit_code == 0
    same = runner.invoke(app, ["report", str(jsonl), "--out", str(tmp_path / "r1")])
    assert same.exit_code == 0 and "changed since" not in same.output
    a, b = images / FIELD.name, images / BENIGN.name
    a.write_bytes(BENIGN.read_bytes())
    b.write_bytes(FIELD.read_bytes())
    swapped = runner.invoke(app, ["report", str(jsonl), "--out", str(tmp_path / "r2")])
    assert swapped.exit_code == 1 and swapped.output.count("changed since") == 2
    html = (tmp_path / "r2" / "index.html").read_text(encoding="utf-8")
    assert html.count("image not readable") == 2
    assert not list((tmp_path / "r2" / "overlays").glob("*.png"))


def test_camera_preview_draws_the_review_overlay_on_the_centre_square():
    """`leukedge camera`'s window draws the same overlay as `classify --overlay` (issue 20,
    part 4) on the square the model sees; outside it the frame is left as it was."""
    from leukedge.cli.camera import draw_review_overlay
    from leukedge.review.overlay import call_colour

    frame = np.full((240, 320, 3), 128, np.uint8)  # BGR
    ok = {"status": "ok", "label": "ALL", "probabilities": {"ALL": 0.98, "HEM": 0.02}}
    drawn = frame.copy()
    draw_review_overlay(drawn, ok, "ALL")
    assert np.array_equal(drawn[:, :40], frame[:, :40]) and np.array_equal(
        drawn[:, 280:], frame[:, 280:]
    )
    colour_bgr = np.array(call_colour("ALL", ["ALL", "HEM"])[::-1])
    assert (np.abs(drawn[:, 40:280].astype(int) - colour_bgr).sum(axis=-1) == 0).any()
    refer = {"status": "refer", "reason": "uncertain", "probabilities": {"ALL": 0.5, "HEM": 0.5}}
    referred = frame.copy()
    draw_review_overlay(referred, refer, "ALL")
    assert not (np.abs(referred.astype(int) - colour_bgr).sum(axis=-1) == 0).any()  # no call colour
    assert not np.array_equal(referred, frame)
    waiting = frame.copy()
    draw_review_overlay(waiting, None, "ALL")  # before the first result: the text line
    assert not np.array_equal(waiting, frame)

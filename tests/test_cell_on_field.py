"""A cell model on a field (issue 20, part 2; :mod:`leukedge.cells.field`,
``Classifier.classify_field`` and ``leukedge classify --locate``), end to end on drawn fields
with a cell model the tests write: no TensorFlow, no data.

The model (:func:`cell_model`) is a ``.tflite`` written here with the flatbuffer schema:
MEAN over the crop's pixels → FULLY_CONNECTED → SOFTMAX, so p(ALL) rises as the crop's mean
red channel falls: a dark-purple cell ("blast", nucleus filling the cell) is ALL, a pale
cell with a small lighter nucleus ("normal") is HEM. Its leukedge metadata says
``input.kind = "cell"`` and carries quality thresholds derived from its own crops, as a
converted cell model would.
"""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from leukedge import Classifier, FieldOptions
from leukedge.cells.field import FIELD_REASONS, classify_input, looks_like_field
from leukedge.cells.locate import LocateOptions, cell_crop, locate_cells
from leukedge.checks.quality import derive_thresholds, image_statistics
from leukedge.cli import app
from leukedge.engine.metadata import InputSpec, ModelMetadata, write_metadata
from leukedge.lab.groups import wilson_interval

SIDE = 32
"""The cell model's input side, pixels."""

D = 40
"""Red-cell diameter of the drawn fields, pixels."""

BACKGROUND = (232, 226, 228)
RED_CELL = (205, 140, 150)
BLAST = {"cytoplasm": (95, 55, 160), "nucleus": (70, 30, 140), "nucleus_r": 0.6}
NORMAL = {"cytoplasm": (205, 185, 220), "nucleus": (140, 95, 190), "nucleus_r": 0.45}


# --------------------------------------------------------------------------- the model
def _tflite(weights: np.ndarray, bias: np.ndarray) -> bytes:
    """``(1, SIDE, SIDE, 3)`` float32 in → MEAN over H, W → FULLY_CONNECTED(weights (2, 3),
    bias (2,)) → SOFTMAX → ``(1, 2)`` probabilities."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    model.description = b"leukedge test cell model"
    model.buffers = [schema.BufferT()]  # buffer 0: empty, by convention

    def buffer(array: np.ndarray | None) -> int:
        entry = schema.BufferT()
        if array is not None:
            entry.data = np.frombuffer(array.tobytes(), np.uint8)
        model.buffers.append(entry)
        return len(model.buffers) - 1

    graph = schema.SubGraphT()
    graph.tensors = []

    def tensor(name: str, shape, dtype, data: np.ndarray | None = None) -> int:
        t = schema.TensorT()
        t.name = name.encode()
        t.shape = np.array(shape, np.int32)
        t.type = dtype
        t.buffer = buffer(data)
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    f32, i32 = schema.TensorType.FLOAT32, schema.TensorType.INT32
    image = tensor("image", [1, SIDE, SIDE, 3], f32)
    axes = tensor("axes", [2], i32, np.array([1, 2], np.int32))
    mean = tensor("mean", [1, 3], f32)
    w = tensor("weights", [2, 3], f32, weights.astype(np.float32))
    b = tensor("bias", [2], f32, bias.astype(np.float32))
    logits = tensor("logits", [1, 2], f32)
    probabilities = tensor("probabilities", [1, 2], f32)
    model.operatorCodes = []
    for code in (
        schema.BuiltinOperator.MEAN,
        schema.BuiltinOperator.FULLY_CONNECTED,
        schema.BuiltinOperator.SOFTMAX,
    ):
        oc = schema.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = min(code, 127)
        oc.version = 1
        model.operatorCodes.append(oc)

    def op(index, inputs, outputs, options_type, options):
        o = schema.OperatorT()
        o.opcodeIndex = index
        o.inputs = np.array(inputs, np.int32)
        o.outputs = np.array(outputs, np.int32)
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        return o

    reducer = schema.ReducerOptionsT()
    reducer.keepDims = False
    dense = schema.FullyConnectedOptionsT()
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    options = schema.BuiltinOptions
    graph.operators = [
        op(0, [image, axes], [mean], options.ReducerOptions, reducer),
        op(1, [mean, w, b], [logits], options.FullyConnectedOptions, dense),
        op(2, [logits], [probabilities], options.SoftmaxOptions, softmax),
    ]
    graph.inputs = np.array([image], np.int32)
    graph.outputs = np.array([probabilities], np.int32)
    graph.name = b"main"
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


pytestmark = pytest.mark.filterwarnings(
    "ignore:.*out-of-domain check unavailable:leukedge.errors.LeukedgeWarning"
)  # the test model has no embedding output: no out-of-domain check, by design

RED_MIDPOINT = 75.0
"""The crop's mean red channel (0–255) at which the model says p(ALL) = 0.5."""


def cell_model(quality=None, kind="cell") -> bytes:
    """The test's cell model: logit(ALL) − logit(HEM) = 0.2 · (:data:`RED_MIDPOINT` − mean
    red), with leukedge metadata (labels ALL, HEM; ``input.kind`` = ``kind``)."""
    weights = np.array([[-0.2, 0.0, 0.0], [0.0, 0.0, 0.0]])
    bias = np.array([0.2 * RED_MIDPOINT, 0.0])
    metadata = ModelMetadata(
        name="test-cell-model",
        version="0.0.1",
        labels=["ALL", "HEM"],
        positive_label="ALL",
        input=InputSpec(height=SIDE, width=SIDE, kind=kind),
        precision="fp32",
        quality=quality,
    )
    return write_metadata(_tflite(weights, bias), metadata)


# --------------------------------------------------------------------------- the fields
def drawn_field(cells, size=(480, 360), seed=0):
    """A field at red-cell diameter :data:`D`: red cells on a jittered grid, white cells
    (cytoplasm 1.4 D across, nucleus as the kind says) at ``cells`` = ``[(x, y, kind)]``.

    Returns:
        (RGB uint8 field, true boxes (x0, y0, x1, y1) in the order of ``cells``).
    """
    rng = np.random.default_rng(seed)
    w, h = size
    field = np.empty((h, w, 3), np.uint8)
    field[:] = BACKGROUND
    step = int(1.3 * D)
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            if any(np.hypot(x - cx, y - cy) < 1.4 * D for cx, cy, _ in cells):
                continue
            jx, jy = rng.integers(-2, 3, 2)
            cv2.circle(field, (x + int(jx), y + int(jy)), D // 2, RED_CELL, -1)
    boxes = []
    for cx, cy, kind in cells:
        r = int(0.7 * D)
        cv2.circle(field, (cx, cy), r, kind["cytoplasm"], -1)
        cv2.circle(field, (cx, cy), int(kind["nucleus_r"] * D), kind["nucleus"], -1)
        boxes.append((cx - r, cy - r, cx + r + 1, cy + r + 1))
    noise = rng.normal(0, 3, field.shape)
    return np.clip(field + noise, 0, 255).astype(np.uint8), boxes


MIXED = [(120, 110, BLAST), (340, 120, BLAST), (230, 260, NORMAL)]
"""Two blasts and one normal cell: 2 ALL of 3, an interval that straddles one half."""

FIVE_BLASTS = [(90, 90, BLAST), (240, 90, BLAST), (390, 90, BLAST), (150, 260, BLAST)]
FIVE_BLASTS += [(330, 260, BLAST)]
"""Five blasts: 5 of 5 ALL, Wilson interval (0.57, 1): the field is called ALL."""


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    """The cell model with quality thresholds derived from its own crops (of a drawn field
    other than the tests'), as a converted cell model carries them."""
    field, _ = drawn_field(MIXED, seed=7)
    crops = [cell_crop(field, c, SIDE) for c in locate_cells(field)]
    thresholds = derive_thresholds([image_statistics(c) for c in crops], SIDE, source="crops")
    return cell_model(quality=thresholds)


@pytest.fixture(scope="module")
def model_path(model_bytes, tmp_path_factory):
    path = tmp_path_factory.mktemp("cell-model") / "cell_model.tflite"
    path.write_bytes(model_bytes)
    return path


@pytest.fixture(scope="module")
def classifier(model_bytes) -> Classifier:
    from leukedge import ClassifierOptions

    return Classifier.create_from_options(ClassifierOptions(model_content=model_bytes))


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def matched(found_boxes, true_boxes) -> list[int]:
    """For each true box, the index of the found box with the highest IoU (≥ 0.5)."""
    out = []
    for box in true_boxes:
        best = max(range(len(found_boxes)), key=lambda i: iou(found_boxes[i], box))
        assert iou(found_boxes[best], box) >= 0.5, (found_boxes, box)
        out.append(best)
    assert len(set(out)) == len(out)
    return out


# --------------------------------------------------------------------------- the API
def test_the_model_is_a_cell_model_that_reads_the_crops(classifier):
    """The metadata's input kind identifies a cell model; the model tells the two drawn
    kinds apart on their crops (else every later test would be vacuous)."""
    assert classifier.metadata.input.kind == "cell"
    field, _ = drawn_field(MIXED)
    crops = {}
    for cell in locate_cells(field):
        result = classifier.classify(cell_crop(field, cell, SIDE))
        crops[cell.box] = result
        assert result.status == "ok", result.message
        assert max(result.probabilities.values()) > 0.9  # far from the threshold
    assert sorted(r.label for r in crops.values()) == ["ALL", "ALL", "HEM"]


def test_each_cell_is_boxed_and_called_and_the_field_counted(classifier):
    field, boxes = drawn_field(MIXED)
    result = classifier.classify_field(field)
    assert result.cells_found == 3
    found = [cell.box for cell in result.cells]
    for index, (_, _, kind) in zip(matched(found, boxes), MIXED, strict=True):
        cell = result.cells[index]
        assert cell.status == "ok"
        assert cell.label == ("ALL" if kind is BLAST else "HEM")
        assert set(cell.result.probabilities) == {"ALL", "HEM"}
    assert (result.cells_ok, result.positive) == (3, 2)
    assert result.fraction == pytest.approx(2 / 3)
    assert (result.ci_low, result.ci_high) == pytest.approx(wilson_interval(2, 3))
    # (0.21, 0.94) straddles one half: no call for the field
    assert (result.status, result.reason, result.label) == ("refer", "uncertain", None)
    assert "3 white cells" in result.message and "2 ALL" in result.message


def test_a_field_of_blasts_is_called_all_when_the_interval_clears_one_half(classifier):
    field, boxes = drawn_field(FIVE_BLASTS)
    result = classifier.classify_field(field)
    assert result.cells_found == 5
    matched([c.box for c in result.cells], boxes)
    assert (result.cells_ok, result.positive) == (5, 5)
    low, high = wilson_interval(5, 5)
    assert low > 0.5
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))
    assert (result.status, result.reason, result.label) == ("ok", None, "ALL")
    # the rule's fraction is the option: demanding more than the interval's low end refers
    strict = classifier.classify_field(field, FieldOptions(fraction=0.6))
    assert (strict.status, strict.label) == ("refer", None)


def test_a_field_without_white_cells_is_a_clear_rejection_not_an_error(classifier):
    field, _ = drawn_field([])
    result = classifier.classify_field(field)
    assert (result.status, result.reason, result.label) == ("rejected", "no_white_cells", None)
    assert result.cells_found == 0 and result.cells_ok == 0 and result.fraction is None
    assert "no white cell" in result.message
    assert result.reason in FIELD_REASONS
    from leukedge import REASONS

    assert set(FIELD_REASONS) <= set(REASONS)


def test_a_field_without_red_cells_to_measure_is_rejected_with_its_reason(classifier):
    blank = np.full((200, 300, 3), BACKGROUND, np.uint8)
    result = classifier.classify_field(blank)
    assert (result.status, result.reason) == ("rejected", "no_red_cells")
    assert "red cells" in result.message


def test_the_cell_models_own_checks_apply_to_each_crop():
    """A model whose metadata says a cell on black is ``segmented_cell`` (a field model's
    thresholds) rejects every crop: the per-cell checks are the model's own, so no cell is
    counted and the field is referred. The cell model above (thresholds from its own crops)
    accepts them."""
    from leukedge import ClassifierOptions
    from leukedge.checks.quality import QualityThresholds

    field_like = QualityThresholds(min_side=16, blank_std_max=2.0, black_background_max=0.05)
    strict = Classifier(ClassifierOptions(model_content=cell_model(quality=field_like)))
    field, _ = drawn_field(MIXED)
    result = strict.classify_field(field)
    assert result.cells_found == 3
    assert {c.result.reason for c in result.cells} == {"segmented_cell"}
    assert (result.cells_ok, result.status, result.reason) == (0, "refer", "uncertain")
    assert (result.ci_low, result.ci_high) == (0.0, 1.0) and result.fraction is None
    record = result.to_dict()
    assert (record["cells_found"], record["cells_ok"], record["n_ALL"]) == (3, 0, 0)
    assert (record["fraction_ALL"], record["ci_low"], record["ci_high"]) == (None, 0.0, 1.0)


def test_auto_locates_only_a_cell_model_on_a_field(classifier, model_bytes, tmp_path):
    from leukedge import ClassifierOptions

    field, _ = drawn_field(MIXED)
    assert looks_like_field(field, classifier.input_size)
    one_cell = cell_crop(field, locate_cells(field)[0], 96)  # a segmented cell on black
    assert not looks_like_field(one_cell, classifier.input_size)
    assert not looks_like_field(field[:SIDE, :SIDE], classifier.input_size)  # not larger
    assert hasattr(classify_input(classifier, field, "auto"), "cells")
    whole = classify_input(classifier, one_cell, "auto")
    assert not hasattr(whole, "cells")
    assert whole.to_dict() == classifier.classify(one_cell).to_dict()
    assert not hasattr(classify_input(classifier, field, "never"), "cells")
    assert hasattr(classify_input(classifier, one_cell, "always"), "cells")
    field_model = Classifier(ClassifierOptions(model_content=cell_model(kind="field")))
    assert not hasattr(classify_input(field_model, field, "auto"), "cells")
    with pytest.raises(ValueError, match="locate"):
        classify_input(classifier, field, "sometimes")


def test_options_are_checked():
    with pytest.raises(ValueError, match="fraction"):
        FieldOptions(fraction=1.0)
    with pytest.raises(ValueError, match="crop_diameters"):
        FieldOptions(crop_diameters=0)
    # a red-cell size given skips the estimate and reaches the result
    options = FieldOptions(locate=LocateOptions(red_cell_diameter_px=D, masks=False))
    assert options.locate.red_cell_diameter_px == D


# --------------------------------------------------------------------------- the command
def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    """``slide/mixed.png`` (2 blasts, 1 normal), ``slide/blasts.png`` (5 blasts),
    ``slide/empty.png`` (red cells only)."""
    folder = tmp_path_factory.mktemp("fields") / "slide"
    folder.mkdir()
    for name, cells in (("mixed", MIXED), ("blasts", FIVE_BLASTS), ("empty", [])):
        field, _ = drawn_field(cells)
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(field, cv2.COLOR_RGB2BGR))
    return folder


def test_classify_locates_cells_in_jsonl_and_csv(model_path, fields, tmp_path):
    jsonl, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    paths = [fields / "mixed.png", fields / "blasts.png", fields / "empty.png"]
    result = run("classify", *paths, "-m", model_path, "--jsonl", jsonl, "--csv", table)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    mixed, blasts, empty = records
    assert [len(r["cells"]) for r in records] == [3, 5, 0]
    for cell in mixed["cells"]:
        assert set(cell) >= {"box", "label", "probabilities", "status", "reason"}
        assert len(cell["box"]) == 4 and cell["status"] == "ok"
    assert sorted(c["label"] for c in mixed["cells"]) == ["ALL", "ALL", "HEM"]
    assert (mixed["status"], mixed["reason"], mixed["label"]) == ("refer", "uncertain", None)
    assert (mixed["cells_found"], mixed["cells_ok"], mixed["n_ALL"]) == (3, 3, 2)
    assert mixed["fraction_ALL"] == pytest.approx(2 / 3)
    assert [mixed["ci_low"], mixed["ci_high"]] == pytest.approx(list(wilson_interval(2, 3)))
    assert (blasts["status"], blasts["label"], blasts["n_ALL"]) == ("ok", "ALL", 5)
    assert (empty["status"], empty["reason"], empty["cells_found"]) == (
        "rejected",
        "no_white_cells",
        0,
    )
    assert all(r["model_sha256"] and r["path"].endswith(".png") for r in records)
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    assert header[-6:] == ["cells_found", "cells_ok", "n_ALL", "fraction_ALL", "ci_low", "ci_high"]
    assert [r["status"] for r in rows] == ["refer", "ok", "rejected"]
    assert [int(r["cells_found"]) for r in rows] == [3, 5, 0]
    assert [int(r["n_ALL"]) for r in rows] == [2, 5, 0]
    assert float(rows[0]["fraction_ALL"]) == pytest.approx(2 / 3)
    assert rows[2]["fraction_ALL"] == ""
    assert float(rows[1]["ci_low"]) == pytest.approx(wilson_interval(5, 5)[0])


def test_classify_locate_never_gives_the_whole_image_result(model_path, fields, tmp_path):
    """``--locate never`` is the command as it was: one result for the whole image, the
    CSV's columns without the field's, no ``cells`` in the record."""
    jsonl, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    path = fields / "mixed.png"
    result = run(
        "classify", path, "-m", model_path, "--locate", "never", "--jsonl", jsonl, "--csv", table
    )
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert "cells" not in record and "cells_found" not in record
    whole = Classifier.create_from_model_path(model_path).classify(path)
    assert record["status"] == whole.status and record["label"] == whole.label
    assert record["probabilities"] == whole.probabilities
    from leukedge.lab.outputs import csv_columns

    with table.open(newline="") as handle:
        assert next(csv.reader(handle)) == csv_columns(["ALL", "HEM"])


def test_classify_table_shows_each_fields_counts(model_path, fields):
    """Every field's line holds its counts, an ok field's too (a whole image's ok line has
    no note)."""
    paths = [fields / "mixed.png", fields / "blasts.png", fields / "empty.png"]
    result = run("classify", *paths, "-m", model_path)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.replace("│", " ").split())
    assert "3 white cells, 3 called, 2 ALL" in out
    assert "5 white cells, 5 called, 5 ALL" in out
    assert "no white cell found" in out
    assert "model said None" not in out


def test_a_field_model_keeps_its_outputs_with_locate_auto(fields, tmp_path):
    """The default model is a field model: ``--locate auto`` (the default) changes nothing
    in its records or CSV columns."""
    outputs = {}
    for mode in ("auto", "never"):
        jsonl, table = tmp_path / f"{mode}.jsonl", tmp_path / f"{mode}.csv"
        result = run(
            "classify", fields / "mixed.png", "--locate", mode, "--jsonl", jsonl, "--csv", table
        )
        assert result.exit_code == 0, result.output
        outputs[mode] = (json.loads(jsonl.read_text()), table.read_text())
    assert outputs["auto"] == outputs["never"]
    assert "cells" not in outputs["auto"][0]


def test_wilson_interval_is_the_one_of_the_slide_summaries():
    from leukedge.checks import decision
    from leukedge.lab import groups

    assert groups.wilson_interval is decision.wilson_interval
    low, high = wilson_interval(2, 3)
    assert 0 < low < 2 / 3 < high < 1 and math.isclose(low, 0.2077, abs_tol=1e-4)


def test_auto_treats_real_cnmc_cells_as_cells_not_fields(classifier, cnmc):
    """C-NMC's cells (450×450, larger than the model's input) are segmented cells on black:
    ``auto`` classifies them whole. Needs ``../shared/data/cnmc`` (skips without it)."""
    from leukedge.engine.preprocess import load_rgb

    images = sorted(cnmc.rglob("*.bmp"))
    assert images, f"no C-NMC images under {cnmc}"
    for path in images:
        rgb = load_rgb(path)
        assert max(rgb.shape[:2]) > SIDE
        assert not looks_like_field(rgb, classifier.input_size), path


def test_report_boxes_each_located_cell_in_its_own_calls_colour(model_path, fields, tmp_path):
    """``leukedge report`` on ``classify --locate``'s records draws the record's cells (not
    a new search): the blasts' boxes in ALL's colour, the normal cell's in HEM's."""
    from PIL import Image

    from leukedge.review import PALETTE

    jsonl = tmp_path / "r.jsonl"
    path = fields / "mixed.png"
    assert run("classify", path, "-m", model_path, "--jsonl", jsonl).exit_code == 0
    (record,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    out = tmp_path / "review"
    result = run("report", jsonl, "--out", out, "--model", model_path, "--no-locate")
    assert result.exit_code == 0, result.output
    (overlay,) = (out / "overlays").glob("*.png")
    pixels = np.asarray(Image.open(overlay).convert("RGB")).astype(int)
    for cell in record["cells"]:
        x0, y0, x1, y1 = cell["box"]
        edge = pixels[y0:y1, x0 : x0 + 3].reshape(-1, 3)  # the box's left side
        near = np.abs(edge - PALETTE[cell["label"]]).max(axis=1) < 40
        assert near.mean() > 0.5, (cell["label"], cell["box"])

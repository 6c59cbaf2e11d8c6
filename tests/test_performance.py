"""Performance machinery, checked by values (no timings asserted: benchmarks are commands).

Runtime-only tests (quantization shortcuts, the draft factor, the per-operator profiler on the
embedded model) run without TensorFlow and without ``../shared/data``; the float-island
conversion and the ``bench --compare`` smoke test need TensorFlow and are marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leukedge.classifier import default_model_path
from leukedge.engine.interpreter import TFLiteEngine
from leukedge.engine.preprocess import DRAFT_SAFETY_FACTOR, decode_size, load_and_resize

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
BENIGN = EXAMPLES / "WBC-Benign-420.jpg"


def _formula(rgb: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(rgb.astype(np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


@pytest.mark.parametrize(
    ("dtype", "scale", "zero_point"),
    [(np.uint8, 1.0, 0), (np.int8, 1.0, -128), (np.int8, 0.5, -3), (np.uint8, 2.0, 7)],
)
def test_input_quantization_shortcuts_give_the_formula(dtype, scale, zero_point):
    """The integer shortcuts (uint8 scale 1 / zp 0: the image itself; int8 scale 1 / zp −128:
    top bit flipped) and the general path all equal round(x / scale) + zero_point, clipped.

    The embedded model's input is float32, so the engine is told it has an integer one:
    quantization first (with a float dtype that re-resolves to no quantization at all),
    then the dtype, which re-resolves the quantizer with both."""
    engine = TFLiteEngine(default_model_path())
    assert engine.input_dtype == np.float32
    engine.input_quantization = (scale, zero_point)
    engine.input_dtype = np.dtype(dtype)  # re-resolves the quantizer
    rgb = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    got = engine._quantize(rgb)
    np.testing.assert_array_equal(got, engine._quantize_input(rgb))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, _formula(rgb, dtype, scale, zero_point))


@pytest.mark.parametrize("temperature", [1.0, 0.79, 1.5])
def test_classify_gives_run_with_temperature(temperature):
    """The Classifier's plain-Python path (engine.probabilities, temperature_scaled) gives
    what TFLiteEngine.run and apply_temperature give, for any output quantization."""
    from leukedge import Classifier
    from leukedge.checks.calibration import apply_temperature, temperature_scaled

    classifier = Classifier()
    classifier._temperature = temperature
    engine = classifier._engine
    rgb = load_and_resize(BENIGN, engine.input_size)
    for quantization in [engine.output_quantization, (0.004, 3), (0.5, -7)]:
        engine.output_quantization = quantization  # re-resolves the dequantizer
        expected = apply_temperature(engine.run(rgb), temperature)
        got = classifier.classify(rgb).probabilities
        np.testing.assert_allclose(list(got.values()), expected, rtol=0, atol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.dirichlet(np.ones(3))
        p[rng.integers(3)] = 0.0 if rng.random() < 0.3 else p[0]
        np.testing.assert_allclose(
            temperature_scaled(list(p), temperature), apply_temperature(p, temperature), atol=1e-12
        )


def test_run_accepts_a_non_contiguous_view(integer_input_model):
    """The uint8 shortcut hands the image itself to the interpreter: a strided view (a crop
    of a larger frame) must give the same probabilities as its contiguous copy. The
    embedded model's input is float32, so this runs on it with a uint8 input (scale 1,
    zero point 0) in front."""
    engine = TFLiteEngine(integer_input_model(np.uint8, 0))
    assert (engine.input_dtype, engine.input_quantization) == (np.uint8, (1.0, 0))
    frame = np.zeros((300, 300, 3), np.uint8)
    frame[:224, :224] = load_and_resize(BENIGN, (224, 224))
    view = frame[:224, :224]
    assert not view.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(engine.run(view), engine.run(np.ascontiguousarray(view)))


def test_decode_size_factor():
    assert decode_size((224, 224)) == (DRAFT_SAFETY_FACTOR * 224, DRAFT_SAFETY_FACTOR * 224)
    assert decode_size((224, 200), 4) == (896, 800)
    assert decode_size((224, 224), 1) == (224, 224)
    with pytest.raises(ValueError, match=">= 1"):
        decode_size((224, 224), 0)


def test_single_operator_models_reproduce_the_full_run():
    """Every operator cut out of the embedded model, fed its inputs from a full run,
    computes exactly the output the full run computed (builtin kernels, bit for bit)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from leukedge.bench.op_profile import capture_tensors, feed_inputs, single_op_models

    content = default_model_path().read_bytes()
    engine = TFLiteEngine(content)
    image = engine._quantize_input(load_and_resize(BENIGN, engine.input_size))[None]
    values = capture_tensors(content, image)
    models = single_op_models(content)
    plain = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    assert len(models) == len(plain._get_ops_details())
    checked = set()
    for _, name, one, feeds, outputs in models:
        interpreter = Interpreter(
            model_content=one,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
        feed_inputs(interpreter, feeds, values)
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_array_equal(got, values[outputs[0]], err_msg=name)
        checked.add(name)
    # Model v3: convolutions and its float linear head (its class activation map too).
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "RESHAPE"} <= checked


def test_op_profile_marks_what_xnnpack_takes():
    from leukedge.bench.op_profile import profile_ops, summarize

    engine = TFLiteEngine(default_model_path())
    image = load_and_resize(BENIGN, engine.input_size)
    timings = profile_ops(engine.model_content, image, runs=2)
    by_op = {}
    for t in timings:
        by_op.setdefault(t.op, set()).add(t.xnnpack)
        # An operator XNNPACK cannot prepare alone (a reshape the full graph sizes at run
        # time: model v3's class activation map) is timed on the builtin kernels, and says so.
        assert t.ms_default >= 0 or (t.error or "").startswith("XNNPACK: ")
        assert t.ms_builtin >= 0 and t.dtypes.count("->") == 1
    assert by_op["CONV_2D"] == {True} and by_op["DEPTHWISE_CONV_2D"] == {True}
    assert by_op.get("SHAPE", {False}) == {False}  # integer shape arithmetic: never XNNPACK's
    assert sum(t.error is not None for t in timings) <= 3  # the map's path only
    summary = summarize(timings)
    assert sum(r["count"] for r in summary) == len(timings)
    assert summary == sorted(summary, key=lambda r: -r["ms_default"])


def test_bench_compare_without_tensorflow_names_the_extra(tmp_path):
    """In a runtime-only install, ``bench --compare`` says which extra to install, exit 2."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from leukedge.cli import app\n"
        f"app(['bench', '--compare', {str(tmp_path / 'model.keras')!r}])\n"
    )
    (tmp_path / "split.csv").write_text("path,label,subject,group,split\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'pip install ".[train]"' in proc.stderr and "leukedge[train]" not in proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- TensorFlow
def _example_images() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".jpg", ".bmp"))


@pytest.fixture(scope="module")
def tiny_proposed_lite(tmp_path_factory):
    """An untrained proposed-lite at 64 px (attention over 2×2 tokens, LayerNormalization),
    saved with a split.csv over the four example images (train = val = all four)."""
    pytest.importorskip("tensorflow", reason="conversion needs TensorFlow (pip install .[train])")
    import keras

    from leukedge.evaluation.data import Sample, write_split
    from leukedge.modeling.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("proposed-lite", input_size=64, weights=None)
    folder = tmp_path_factory.mktemp("tiny_run")
    model.save(folder / "model.keras")
    samples = [
        Sample(path, "HEM" if "Benign" in path.name or "_hem" in path.name else "ALL")
        for path in _example_images()
    ]
    write_split(folder / "split.csv", {"train": samples, "val": samples})
    return folder


@pytest.mark.slow
def test_int8_float_islands_run_inside_xnnpack(tiny_proposed_lite):
    """int8 with float islands: LayerNormalization and the attention core are float, the
    projections int8, the I/O uint8 as in a full int8 model, and no island operator is left
    to LiteRT's builtin kernels; without islands the int8 batch matmuls are."""
    from leukedge.bench.op_profile import profile_ops
    from leukedge.converters.tflite import convert_keras, island_layers
    from leukedge.modeling.saving import load_keras_model

    model = load_keras_model(tiny_proposed_lite / "model.keras")
    assert island_layers(model) == ["attention_mha", "attention_norm"]
    images = np.stack([load_and_resize(p, (64, 64)) for p in _example_images()])
    islands = convert_keras(model, "int8", images, float_layers=island_layers(model))
    plain = convert_keras(model, "int8", images)
    for content in (islands, plain):
        engine = TFLiteEngine(content)
        assert engine.input_dtype == np.uint8 and engine.output_dtype == np.uint8
    ops = {
        d: [(t.op, t.dtypes, t.xnnpack) for t in profile_ops(c, images[0], runs=1)]
        for d, c in (("islands", islands), ("plain", plain))
    }
    island_ops = {(op, dtypes) for op, dtypes, _ in ops["islands"]}
    assert ("BATCH_MATMUL", "float32,float32->float32") in island_ops
    assert ("SQUARED_DIFFERENCE", "float32,float32->float32") in island_ops
    assert ("FULLY_CONNECTED", "int8->int8") in island_ops
    outside = {op for op, _, xnnpack in ops["islands"] if not xnnpack}
    # Left outside: the uint8 input's QUANTIZE, the output softmax of 2 values and its
    # QUANTIZE, and the integer shape arithmetic of the tokens' Reshape.
    assert outside <= {"QUANTIZE", "SOFTMAX", "SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"}
    assert ("BATCH_MATMUL", "int8,int8->int8", False) in ops["plain"]


@pytest.mark.slow
def test_convert_keeps_float_islands_by_default_and_says_so(tiny_proposed_lite, tmp_path):
    """``leukedge convert``'s int8 has float islands unless --no-float-islands, and its model
    card names them (a file can be told from the other)."""
    from leukedge.converters.convert import ConvertConfig, convert_model
    from leukedge.converters.gate import GateConfig
    from leukedge.engine.metadata import read_metadata

    reports = {}
    for islands in (True, False):
        config = ConvertConfig(
            model=str(tiny_proposed_lite / "model.keras"),
            out=str(tmp_path / str(islands)),
            precisions=["int8"],
            representative_size=4,
            float_islands=islands,
            gate=GateConfig(max_delta=100.0, min_agreement=0.0),
        )
        reports[islands] = convert_model(config)["precisions"]["int8"]
    assert reports[True]["float_islands"] == ["attention_mha", "attention_norm"]
    assert reports[False]["float_islands"] == []
    for islands, figures in reports.items():
        content = Path(figures["path"]).read_bytes()
        assert read_metadata(content).model_card["float_islands"] == figures["float_islands"]
        dtypes = {d for op, d, _ in _ops(content) if op == "BATCH_MATMUL"}
        assert dtypes == ({"float32,float32->float32"} if islands else {"int8,int8->int8"})


def _ops(content: bytes) -> list[tuple[str, str, bool]]:
    from leukedge.bench.op_profile import profile_ops

    image = load_and_resize(BENIGN, TFLiteEngine(content).input_size)
    return [(t.op, t.dtypes, t.xnnpack) for t in profile_ops(content, image, runs=1)]


@pytest.mark.slow
def test_bench_compare_writes_its_schema(tiny_proposed_lite, tmp_path, monkeypatch):
    """``leukedge bench --compare`` on four images: every engine row is ok or skipped with
    the reason, figures are in range, LiteRT float32 matches Keras, and the Markdown, PNG,
    operator CSV and SDK figures are written."""
    from leukedge.converters import compare as cmp

    fake = cmp.EngineSpec("fake-engine", "Not installed", "litert", "int8", "tflite-int8",
                          ("leukedge_no_such_module",))  # fmt: skip
    monkeypatch.setattr(cmp, "ENGINES", (*cmp.ENGINES, fake))
    # Keras is the reference whatever runs; its own timing process (a TensorFlow import)
    # is left to the real command, to keep this test short.
    names = ["litert-fp32", "litert-int8", "ort-int8", "fake-engine"]
    config = cmp.CompareConfig(
        model=str(tiny_proposed_lite / "model.keras"),
        out=str(tmp_path / "out"),
        engines=names,
        threads=[1],
        runs=3,
        warmup=1,
        calibration_size=4,
        sdk_image=str(BENIGN),
        sdk_rounds=4,
        cold_runs=1,
    )
    cmp.run_compare(config)
    out = tmp_path / "out"
    report = json.loads((out / "compare.json").read_text())
    assert report["schema"] == cmp.SCHEMA and report["n_val"] == 4
    env = report["environment"]
    assert env["cpu"]["cores"] >= 1 and env["versions"]["ai-edge-litert"]
    assert {"date", "load_average", "command"} <= set(env)
    rows = {r["name"]: r for r in report["engines"]}
    assert list(rows) == names
    assert rows["fake-engine"]["status"] == "skipped"
    assert "leukedge_no_such_module not installed" in rows["fake-engine"]["reason"]
    for name, row in rows.items():
        assert row["status"] in ("ok", "skipped"), (name, row.get("reason"))
        if row["status"] == "skipped":
            continue
        t = row["by_threads"]["1"]
        assert 0 < t["p50_ms"] <= t["p90_ms"] and t["images_per_s"] > 0 and t["runs"] == 3
        assert t["peak_rss_mb"] > 10 and t["cpu_p50_ms"] >= 0 and row["size_bytes"] > 0
        assert 0 <= row["accuracy"]["accuracy"] <= 1 and row["accuracy"]["n"] == 4
    assert rows["litert-fp32"]["accuracy"]["agreement"] == 1.0
    assert rows["litert-fp32"]["accuracy"]["max_abs_prob_diff"] < 1e-4
    profile = report["op_profiles"]["litert-int8"]
    assert profile["ops"] == sum(r["count"] for r in profile["summary"])
    assert (out / "ops_litert-int8.csv").read_text().startswith("index,op,output")
    sdk = report["sdk"]
    assert sdk["array_224"]["ratio"] > 0 and sdk["camera_jpeg"]["size"] == "2592x1944"
    assert sdk["camera_jpeg"]["peak_rss_mb"] > 10 and sdk["cold_start_s"]["median"] > 0
    markdown = (out / "compare.md").read_text()
    assert "| engine | precision | file MB | val accuracy" in markdown
    assert "skipped: leukedge_no_such_module not installed" in markdown
    assert (out / "latency_vs_accuracy.png").read_bytes()[:4] == b"\x89PNG"

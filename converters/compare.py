"""``leukedge bench --compare``: one trained model on every engine, side by side.

For a trained ``.keras`` (proposed-lite) and its run's ``split.csv``:

1. the validation split (``val``; the test split is not read) and the calibration images
   (the ``train`` split, stratified, seeded: the same images ``leukedge convert`` uses) are
   decoded and resized once by :func:`leukedge.engine.preprocess.load_and_resize`;
2. every engine of :data:`ENGINES` whose packages are installed gets its model file: the
   ``.keras`` itself; LiteRT float32 / float16 / int8 (float islands, leukedge's default) /
   int8 without float islands, from :func:`leukedge.converters.tflite.convert_keras`;
   ONNX float32 (tf2onnx, opset 17, batch 1) and ONNX Runtime int8 (static QDQ,
   per-channel, uint8 activations and int8 weights, the same calibration images);
   OpenVINO float32 (the ONNX file, ``INFERENCE_PRECISION_HINT=f32``);
3. each engine runs at each thread count in its own process
   (:mod:`leukedge.converters.engines`): load time, latency p50/p90 and CPU time per image,
   back-to-back throughput, peak RSS, and (first thread count) the whole validation split;
4. accuracy is scored against the labels and against the Keras float model (the gate's
   :func:`~leukedge.converters.gate.compare`: Δ accuracy, label agreement, max |Δp|), so no
   speed is shown without what it costs;
5. LiteRT models are profiled per operator (:mod:`leukedge.bench.op_profile`), and the
   SDK's own figures are measured on the int8 model
   (:func:`~leukedge.bench.measure.sdk_measurements`:
   overhead on a 224×224 array, a 2592×1944 camera JPEG end to end, cold start).

Writes ``OUT/compare.json``, ``OUT/compare.md``, ``OUT/latency_vs_accuracy.png``
(:mod:`leukedge.converters.compare_report`),
``OUT/ops_<engine>.csv`` and the model files under ``OUT/models/``. An engine whose package
is missing is reported as skipped, with the install hint. This is a benchmark (a command
that writes files), not a test; run it on a machine as idle as you can get, and read the
CPU-time column when it is not (it is what one thread costs, whoever else runs).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from leukedge.converters.compare_report import write_report
from leukedge.errors import install_hint

log = logging.getLogger(__name__)

SCHEMA = "leukedge-bench-compare/1"
"""``schema`` field of ``compare.json``; bumped when its layout changes."""


@dataclass(frozen=True)
class EngineSpec:
    """One row of the comparison.

    Attributes:
        name: row key (``litert-int8``).
        label: what the row is, in words.
        runtime: a key of :data:`leukedge.converters.engines.LOADERS`.
        precision: ``float32``, ``float16``, ``int8``.
        artifact: how its model file is made (a key of :func:`build_artifact`'s table).
        requires: importable modules it needs (to build and to run).
    """

    name: str
    label: str
    runtime: str
    precision: str
    artifact: str
    requires: tuple[str, ...] = ()


ENGINES: tuple[EngineSpec, ...] = (
    EngineSpec("keras-predict", "Keras model.predict", "keras", "float32", "keras"),
    EngineSpec("keras-call", "Keras tf.function call", "keras-compiled", "float32", "keras"),
    EngineSpec("litert-fp32", "LiteRT float32", "litert", "float32", "tflite-fp32"),
    EngineSpec("litert-fp16", "LiteRT float16 weights", "litert", "float16", "tflite-fp16"),
    EngineSpec(
        "litert-int8", "LiteRT int8, float islands (default)", "litert", "int8", "tflite-int8"
    ),
    EngineSpec(
        "litert-int8-plain", "LiteRT int8, no float islands", "litert", "int8", "tflite-int8-plain"
    ),
    EngineSpec(
        "ort-fp32", "ONNX Runtime float32", "onnxruntime", "float32", "onnx-fp32",
        ("tf2onnx", "onnx", "onnxruntime"),
    ),
    EngineSpec(
        "ort-int8", "ONNX Runtime int8 (QDQ, per-channel)", "onnxruntime", "int8", "onnx-int8",
        ("tf2onnx", "onnx", "onnxruntime"),
    ),
    EngineSpec(
        "openvino-fp32", "OpenVINO float32", "openvino", "float32", "onnx-fp32",
        ("tf2onnx", "onnx", "openvino"),
    ),
)  # fmt: skip
"""The rows, in table order. Adding an engine is a row here and a loader in
:mod:`leukedge.converters.engines`."""

INSTALL_HINT = install_hint("compare")


@dataclass
class CompareConfig:
    """Settings of one comparison (saved into ``compare.json``).

    Attributes:
        model: the trained ``.keras`` (proposed-lite).
        out: output folder.
        split_file: the run's ``split.csv`` (default: beside the model).
        engines: names from :data:`ENGINES` (default: all).
        threads: interpreter / intra-op thread counts.
        runs, warmup: timed and untimed single-image calls per engine and thread count.
        calibration_size: int8 calibration images from the train split (as ``convert``).
        max_val: at most this many validation images (stratified; ``None``: all).
        profile_ops: per-operator profile of the LiteRT models.
        sdk: the SDK's own figures (overhead, camera JPEG, cold start) on the int8 model.
        sdk_image: image for the SDK figures (default: an example field).
        sdk_rounds, cold_runs: repetitions of the SDK figures.
        reuse_models: keep model files from an earlier run in ``OUT/models`` when they
            were made from the same ``.keras`` (sha256) with the same calibration settings.
        seed: calibration and validation subset seed.
        timeout_s: longest one engine process may run.
    """

    model: str
    out: str = "bench-compare"
    split_file: str | None = None
    engines: Sequence[str] | None = None
    threads: Sequence[int] = (1, 2)
    runs: int = 100
    warmup: int = 10
    calibration_size: int = 200
    max_val: int | None = None
    profile_ops: bool = True
    sdk: bool = True
    sdk_image: str | None = None
    sdk_rounds: int = 200
    cold_runs: int = 5
    reuse_models: bool = False
    seed: int = 0
    timeout_s: int = 1800
    extra: dict[str, Any] = field(default_factory=dict)


def missing_modules(spec: EngineSpec) -> list[str]:
    """Modules of ``spec.requires`` that cannot be imported here."""
    return [m for m in spec.requires if importlib.util.find_spec(m) is None]


# ----------------------------------------------------------------------------- model files
def _onnx_export(model, path: Path, size: tuple[int, int]) -> None:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((1, *size, 3), tf.float32, name="image"),)
    function = tf.function(lambda x: model(x, training=False))
    tf2onnx.convert.from_function(function, input_signature=spec, opset=17, output_path=str(path))


def _onnx_quantize(fp32: Path, path: Path, calibration: np.ndarray) -> None:
    """ONNX Runtime static quantization: QDQ format, per-channel int8 weights, uint8
    activations (ORT's recommended pairing for x86 CPUs), calibrated (MinMax) on
    ``calibration``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = iter(calibration)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {"image": image[None].astype(np.float32)}

    with tempfile.TemporaryDirectory(prefix="leukedge_ort_") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def _tflite(model, precision: str, calibration, float_islands: bool, metadata) -> bytes:
    from leukedge.converters.tflite import convert_keras, island_layers
    from leukedge.engine.metadata import write_metadata

    layers = island_layers(model, attention=float_islands)
    content = convert_keras(model, precision, calibration, float_layers=layers)
    return write_metadata(content, replace(metadata, precision=precision))


def build_artifact(kind: str, model, keras_path: Path, folder: Path, calibration, metadata) -> Path:
    """Make (or find) the model file of ``kind`` in ``folder``; returns its path."""
    size = tuple(int(d) for d in model.input_shape[1:3])
    files = {
        "keras": keras_path,
        "tflite-fp32": folder / "litert_fp32.tflite",
        "tflite-fp16": folder / "litert_fp16.tflite",
        "tflite-int8": folder / "litert_int8.tflite",
        "tflite-int8-plain": folder / "litert_int8_plain.tflite",
        "onnx-fp32": folder / "model_fp32.onnx",
        "onnx-int8": folder / "model_int8.onnx",
    }
    path = files[kind]
    if path.is_file():
        return path
    log.info(f"making {path.name} ...")
    tmp = path.with_name(path.name + ".partial")
    if kind.startswith("tflite-"):
        precision = kind.split("-")[1]
        islands = kind == "tflite-int8"
        tmp.write_bytes(_tflite(model, precision, calibration, islands, metadata))
    elif kind == "onnx-fp32":
        _onnx_export(model, tmp, size)
    elif kind == "onnx-int8":
        fp32 = build_artifact("onnx-fp32", model, keras_path, folder, calibration, metadata)
        _onnx_quantize(fp32, tmp, calibration)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- running
def _run_engine(spec: EngineSpec, artifact: Path, threads: int, work: Path, config, val) -> dict:
    task = {
        "engine": spec.runtime,
        "artifact": str(artifact),
        "threads": threads,
        "runs": config.runs,
        "warmup": config.warmup,
        "image": str(work / "image.npy"),
        "val": val,
        "result": str(work / f"{spec.name}_{threads}.json"),
    }
    task_file = work / f"{spec.name}_{threads}_task.json"
    task_file.write_text(json.dumps(task))
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "leukedge.converters.engines", str(task_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=config.timeout_s,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{spec.name} at {threads} thread(s) failed: " + " | ".join(tail))
    return json.loads(Path(task["result"]).read_text())


def run_compare(config: CompareConfig) -> dict[str, Any]:
    """Build, run and score every engine; write the report files; return the report.

    Raises:
        FileNotFoundError: no model, or no ``split.csv``.
        ValueError: unknown engine name, no validation images, a bad setting.
        ModuleNotFoundError: TensorFlow or Keras is not installed (the ``train`` extra).
        RuntimeError: Keras already runs on another backend than TensorFlow.
    """
    from leukedge.bench.measure import environment, sdk_measurements
    from leukedge.converters.convert import default_model_version, sha256_file
    from leukedge.converters.gate import compare
    from leukedge.engine.metadata import InputSpec, ModelMetadata
    from leukedge.engine.preprocess import load_and_resize
    from leukedge.evaluation.data import LABELS, samples_from, stratified_subset
    from leukedge.evaluation.predict import predict_keras
    from leukedge.modeling.saving import load_keras_model, require_tensorflow_backend

    # Every engine's file is made from the Keras model by TensorFlow: without it (a
    # runtime-only install) nothing else is worth checking.
    require_tensorflow_backend()
    names = list(config.engines or [e.name for e in ENGINES])
    known = {e.name: e for e in ENGINES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}; choose from {list(known)}")
    if not config.threads or any(t < 1 for t in config.threads) or config.runs < 1:
        raise ValueError(f"threads must be >= 1 and runs >= 1, got {config.threads}, {config.runs}")
    keras_path = Path(config.model)
    split_file = Path(config.split_file or keras_path.parent / "split.csv")
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file}: no split.csv (pass --split-file)")
    out = Path(config.out)
    folder = out / "models"
    folder.mkdir(parents=True, exist_ok=True)
    env_before = environment()
    model = load_keras_model(keras_path)
    size = tuple(int(d) for d in model.input_shape[1:3])
    run_config = (
        json.loads((keras_path.parent / "config.json").read_text())
        if (keras_path.parent / "config.json").is_file()
        else {}
    )
    labels = list(run_config.get("labels", LABELS))

    val = samples_from(str(split_file), "val")
    if config.max_val:
        val = stratified_subset(val, config.max_val, config.seed)
    if not val:
        raise ValueError(f"{split_file}: no validation images")
    calibration_samples = stratified_subset(
        samples_from(str(split_file), "train"), config.calibration_size, config.seed
    )
    calibration = np.stack([load_and_resize(s.path, size) for s in calibration_samples])
    truth = {str(s.path): s.label for s in val}
    log.info(f"validation images: {len(val)}; calibration images: {len(calibration)}")
    reference = predict_keras(model, val, size[0])

    source_sha = sha256_file(keras_path)
    manifest = {
        "source_sha256": source_sha,
        "calibration_size": config.calibration_size,
        "seed": config.seed,
        "split_file": str(split_file.resolve()),
    }
    manifest_file = folder / "manifest.json"
    if not (
        config.reuse_models
        and manifest_file.is_file()
        and json.loads(manifest_file.read_text()) == manifest
    ):
        for stale in folder.iterdir():
            stale.unlink()
    manifest_file.write_text(json.dumps(manifest, indent=1))
    metadata = ModelMetadata(
        name=keras_path.parent.name or keras_path.stem,
        labels=labels,
        version=default_model_version(source_sha),
        input=InputSpec(height=size[0], width=size[1], kind=run_config.get("input_kind", "field")),
        source_sha256=source_sha,
        model_card={"note": "made by leukedge bench --compare; not a gated release"},
    )

    with tempfile.TemporaryDirectory(prefix="leukedge_compare_") as tmp:
        work = Path(tmp)
        np.save(work / "image.npy", load_and_resize(val[0].path, size))
        np.save(work / "val.npy", np.stack([load_and_resize(s.path, size) for s in val]))
        rows = []
        for name in names:
            spec = known[name]
            row: dict[str, Any] = {
                "name": spec.name,
                "label": spec.label,
                "runtime": spec.runtime,
                "precision": spec.precision,
            }
            rows.append(row)
            missing = missing_modules(spec)
            if missing:
                row |= {
                    "status": "skipped",
                    "reason": f"{', '.join(missing)} not installed ({INSTALL_HINT})",
                }
                log.info(f"{spec.name}: skipped ({row['reason']})")
                continue
            try:
                artifact = build_artifact(
                    spec.artifact, model, keras_path, folder, calibration, metadata
                )
                row |= {"file": str(artifact), "size_bytes": artifact.stat().st_size}
                by_threads = {}
                for i, threads in enumerate(config.threads):
                    accuracy_pass = i == 0 and not spec.runtime.startswith("keras")
                    val_file = str(work / "val.npy") if accuracy_pass else None
                    log.info(f"{spec.name}: {threads} thread(s) ...")
                    result = _run_engine(spec, artifact, threads, work, config, val_file)
                    probabilities = result.pop("probabilities", None)
                    by_threads[str(threads)] = result
                    if probabilities is not None:
                        paths = [str(s.path) for s in val]
                        candidate = dict(zip(paths, probabilities, strict=True))
                        row["accuracy"] = compare(reference, candidate, truth, labels)
                if spec.runtime.startswith("keras"):
                    row["accuracy"] = compare(reference, reference, truth, labels)
                    row["accuracy"]["reference"] = True
                row |= {"status": "ok", "by_threads": by_threads}
            except Exception as exc:  # noqa: BLE001 - one engine's failure must not cost the rest
                row |= {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
                log.info(f"{spec.name}: error: {row['reason']}")

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "environment": env_before,
        "load_average_after": list(os.getloadavg()),
        "model": {"path": str(keras_path), "sha256": source_sha, "input_size": list(size)},
        "split_file": str(split_file),
        "n_val": len(val),
        "n_calibration": len(calibration),
        "settings": {k: v for k, v in asdict(config).items() if k not in ("model", "out")},
        "engines": rows,
        "op_profiles": {},
        "sdk": None,
    }
    write_report(report, out)  # the engines' figures are safe before the extras run
    if config.profile_ops:
        report["op_profiles"] = _profile_litert(rows, out, size, val[0].path)
        write_report(report, out)
    int8 = next((r for r in rows if r["name"] == "litert-int8" and r["status"] == "ok"), None)
    if config.sdk and int8 is not None:
        log.info("SDK figures on the int8 model ...")
        image = config.sdk_image or val[0].path
        try:
            report["sdk"] = sdk_measurements(
                int8["file"], image, rounds=config.sdk_rounds, cold=config.cold_runs
            )
        except Exception as exc:  # noqa: BLE001 - reported in the files, not lost
            report["sdk"] = {"error": f"{type(exc).__name__}: {exc}"}
        write_report(report, out)
    return report


def _profile_litert(rows, out: Path, size, image_path) -> dict[str, Any]:
    from leukedge.bench.op_profile import as_dicts, profile_ops, summarize
    from leukedge.engine.preprocess import load_and_resize

    image = load_and_resize(image_path, size)
    profiles = {}
    for row in rows:
        # float16 weights are DEQUANTIZE operators that the full graph runs once at load;
        # cut out alone they are not what the model spends its time on: not profiled.
        if row["runtime"] != "litert" or row["status"] != "ok" or row["precision"] == "float16":
            continue
        log.info(f"per-operator profile of {row['name']} ...")
        try:
            timings = profile_ops(Path(row["file"]).read_bytes(), image, threads=1)
        except Exception as exc:  # noqa: BLE001 - reported in the files, not lost
            profiles[row["name"]] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        with open(out / f"ops_{row['name']}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(as_dicts(timings[:1])[0]))
            writer.writeheader()
            writer.writerows(as_dicts(timings))
        outside = [t for t in timings if not t.xnnpack]
        profiles[row["name"]] = {
            "ops": len(timings),
            "sum_ms_default": float(np.nansum([t.ms_default for t in timings])),
            "sum_ms_outside_xnnpack": float(np.nansum([t.ms_default for t in outside])),
            "summary": summarize(timings),
            "outside_xnnpack": as_dicts(outside),
        }
    return profiles

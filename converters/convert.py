"""``leukedge convert``: a trained ``.keras`` → ``.tflite`` files with metadata, gated.

Steps (one way, no step repeated):

1. load the ``.keras`` under the TensorFlow backend and hash it (sha256);
2. find the run's ``split.csv`` beside the model (or ``--split-file``): the representative
   dataset comes from its **train** split (stratified by class, 200 images by default), the
   gate's held-out images from its **val** split; the test split is not read;
3. run the float Keras model once on the held-out images;
4. per precision: convert (with the embedding as a second output,
   :func:`~leukedge.converters.tflite.with_embedding_output`), check that the SDK runtime
   loads and runs the file, run it on the same images and compare
   (:mod:`leukedge.converters.gate`); fit the checks it will stand behind on its own
   outputs (:mod:`leukedge.converters.trust`: quality thresholds from the train images,
   the out-of-domain model on train embeddings with its threshold on val, the operating
   point and refer band on val); embed them with the metadata and model card
   (:mod:`leukedge.metadata`) and write ``<name>_<precision>.tflite`` atomically;
5. write ``conversion.json`` and raise :class:`~leukedge.converters.gate.GateFailedError` if any
   precision failed the gate (the CLI exits 1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leukedge import __version__
from leukedge.converters.trust import TrustConfig
from leukedge.metadata import InputSpec, ModelMetadata, write_metadata
from leukedge.preprocess import load_and_resize
from leukedge.training.metrics import headline


@dataclass
class ConvertConfig:
    """Settings of one conversion (saved into ``conversion.json``).

    Attributes:
        model: the ``.keras`` file.
        out: output directory (default: the model's directory).
        precisions: any of :data:`leukedge.converters.tflite.PRECISIONS`.
        name: file-name stem and model name (default: the run directory's name).
        split_file: ``split.csv`` of the run (default: beside the model).
        representative_data: dataset folder/CSV or ``split.csv`` for calibration; from a
            ``split.csv`` only the train split is used. Default: the run's train split.
        representative_size: calibration images, stratified by class (200).
        eval_data: labelled held-out images for the gate (folder/CSV or ``split.csv``, whose
            val split is used). Default: the run's val split.
        io_dtype: int8 model input/output tensor type, ``"uint8"`` or ``"int8"``.
        keep_float: TFLite tensor names (from the debugger's report) to keep in float
            (selective int8 quantization).
        float_islands: int8 keeps the operators of LayerNormalization and of the
            attention core in float, where LiteRT's XNNPACK delegate runs them
            (:func:`~leukedge.converters.tflite.island_layers`; README, "Performance");
            ``False``: every operator that has an int8 kernel is int8.
        auto_keep_float: when int8 fails the gate, keep the worst 1, 2, 4… tensors (by the
            debugger's RMSE/scale) in float until it passes, up to ``max_keep_float``.
        max_delta, min_agreement, max_mean_abs_prob_diff, max_ece_increase: the gate
            (:class:`~leukedge.converters.gate.GateConfig`).
        check: run the gate (``--no-check`` skips it and says so in the model card).
        embedding: export the embedding output (needed for the out-of-domain check).
        trust: fit the quality thresholds, out-of-domain model and operating point
            (:mod:`leukedge.converters.trust`); needs the run's train and val splits.
        trust_config: their settings (:class:`~leukedge.converters.trust.TrustConfig`).
        input_kind: ``"field"`` or ``"cell"`` when the run's config does not say.
        seed: sampling seed for the representative dataset.
    """

    model: str
    out: str | None = None
    precisions: Sequence[str] = ("fp32", "int8")
    name: str | None = None
    split_file: str | None = None
    representative_data: str | None = None
    representative_size: int = 200
    eval_data: str | None = None
    io_dtype: str = "uint8"
    keep_float: Sequence[str] = ()
    float_islands: bool = True
    max_delta: float = 1.0
    min_agreement: float = 0.98
    max_mean_abs_prob_diff: float = 0.05
    max_ece_increase: float = 0.02
    check: bool = True
    embedding: bool = True
    trust: bool = True
    trust_config: TrustConfig = field(default_factory=TrustConfig)
    auto_keep_float: bool = False
    max_keep_float: int = 16
    input_kind: str | None = None
    seed: int = 0
    extra_card: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _samples_from(source: str, split_name: str):
    """Samples of ``source``: a run's ``split.csv`` (its ``split_name`` split, recognised by
    its ``split`` column), or any dataset :func:`~leukedge.training.data.load_dataset` reads."""
    import csv

    from leukedge.training.data import load_dataset, read_split

    path = Path(source)
    if path.suffix.lower() == ".csv" and path.is_file():
        with open(path, newline="") as handle:
            columns = next(csv.reader(handle), [])
        if "split" in columns:
            splits = read_split(path)
            if split_name not in splits:
                raise ValueError(f"{source}: no {split_name!r} split in it")
            return splits[split_name]
    return load_dataset(source)


def stratified_subset(samples, size: int, seed: int):
    """Up to ``size`` samples, drawn per class in proportion to the class counts (seeded)."""
    if size <= 0:
        raise ValueError(f"representative dataset size must be positive, got {size}")
    if len(samples) <= size:
        return list(samples)
    rng = np.random.default_rng(seed)
    by_label = defaultdict(list)
    for s in samples:
        by_label[s.label].append(s)
    chosen = []
    for label in sorted(by_label):
        items = by_label[label]
        k = max(1, round(size * len(items) / len(samples)))
        chosen += [
            items[i] for i in sorted(rng.choice(len(items), min(k, len(items)), replace=False))
        ]
    return chosen


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def convert_model(config: ConvertConfig) -> dict[str, Any]:
    """Convert, gate and write; returns the report (also written as ``conversion.json``).

    Raises:
        FileNotFoundError: model or data missing.
        ValueError: corrupt ``.keras``, empty representative dataset, unknown precision, no
            held-out images while ``check`` is on.
        leukedge.converters.gate.GateFailedError: a precision failed the gate (files and report
            are written first).
    """
    from leukedge.converters import trust
    from leukedge.converters.gate import (
        GateConfig,
        GateFailedError,
        check,
        compare,
        format_table,
        infer_tflite,
    )
    from leukedge.converters.tflite import (
        PRECISIONS,
        ConversionError,
        convert_keras,
        float_island_nodes,
        island_layers,
        load_keras_model,
        with_embedding_output,
    )
    from leukedge.runtime import TFLiteEngine
    from leukedge.training.data import LABELS
    from leukedge.training.train import predict_samples

    unknown = [p for p in config.precisions if p not in PRECISIONS]
    if unknown or not config.precisions:
        raise ValueError(f"unknown precision(s) {unknown}; choose from {PRECISIONS}")
    model_path = Path(config.model)
    model = load_keras_model(model_path)
    run_dir = model_path.parent
    run_config = _read_json(run_dir / "config.json")
    labels = list(run_config.get("labels", LABELS))
    height, width = (int(d) for d in model.input_shape[1:3])
    out = Path(config.out) if config.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    name = config.name or run_dir.name
    split_file = config.split_file or (
        str(run_dir / "split.csv") if (run_dir / "split.csv").is_file() else None
    )
    temperature = float(_read_json(run_dir / "calibration.json").get("temperature", 1.0))
    export_model, embedding_dim = (model, None)
    if config.embedding:
        export_model, embedding_dim = with_embedding_output(model)
    if config.embedding and embedding_dim is None:
        print("note: no attention_tokens or head_gap layer: no embedding output exported")

    representative = None
    if any(p in ("int8", "int16x8") for p in config.precisions):
        source = config.representative_data or split_file
        if source is None:
            raise ValueError(
                "int8 needs calibration images: pass --representative-data "
                "(a dataset folder, CSV or the run's split.csv)"
            )
        pool = _samples_from(source, "train")
        chosen = stratified_subset(pool, config.representative_size, config.seed)
        if not chosen:
            raise ValueError(f"{source}: representative dataset is empty")
        representative = np.stack([load_and_resize(s.path, (height, width)) for s in chosen])
        print(f"representative dataset: {len(chosen)} images from {source}")

    eval_samples = []
    if config.check:
        source = config.eval_data or split_file
        if source is None:
            raise ValueError(
                "the accuracy-delta check needs labelled held-out images: pass "
                "--eval-data (folder, CSV or split.csv) or --no-check"
            )
        eval_samples = _samples_from(source, "val")
        truth = {str(s.path): s.label for s in eval_samples}
        reference = predict_samples(model, eval_samples, height)
        from leukedge.training.metrics import evaluate, expected_calibration_error, join_by_name

        ref_metrics = evaluate(reference, truth, labels)
        _, y_ref, p_ref = join_by_name(reference, truth, labels)
        print(f"held-out images for the gate: {len(eval_samples)} from {source}")

    trust_train, trust_val, quality = [], [], None
    if config.trust:
        train_source = split_file or config.representative_data
        val_source = config.eval_data or split_file
        if train_source is None or val_source is None:
            print("note: no train/val split: quality, out-of-domain, operating point skipped")
        else:
            trust_train = _samples_from(train_source, "train")
            trust_val = eval_samples or _samples_from(val_source, "val")
            cap = config.trust_config.max_train_images
            if cap is not None:
                trust_train = stratified_subset(trust_train, cap, config.seed)
            quality = trust.derive_quality(
                [str(s.path) for s in trust_train], (height, width), config.trust_config
            )
            print(f"quality thresholds from {len(trust_train)} train images")

    gate = GateConfig(
        config.max_delta,
        config.min_agreement,
        config.max_mean_abs_prob_diff,
        config.max_ece_increase,
    )
    source_sha = sha256_file(model_path)
    report: dict[str, Any] = {
        "model": str(model_path),
        "source_sha256": source_sha,
        "labels": labels,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "leukedge_version": __version__,
        "gate": {
            "max_delta_pp": gate.max_delta,
            "min_agreement": gate.min_agreement,
            "max_mean_abs_prob_diff": gate.max_mean_abs_prob_diff,
            "max_ece_increase": gate.max_ece_increase,
            "checked": config.check,
        },
        "trust": asdict(config.trust_config) | {"fitted": bool(trust_train)},
        "precisions": {},
    }
    if config.check:
        from leukedge.calibration import apply_temperature

        report["keras"] = {
            "accuracy": ref_metrics["accuracy"],
            "weighted_f1": ref_metrics["weighted_f1"],
            "ece": expected_calibration_error(y_ref, apply_temperature(p_ref, temperature)),
            "n": ref_metrics["n"],
        }
    failures = {}
    float_layers: list[str] = []
    island_nodes: tuple[str, ...] = ()
    if config.float_islands and "int8" in config.precisions:
        # Names from the graph that will be quantized: the exported model (with its
        # embedding output), converted at fp32.
        float_layers = island_layers(export_model)
        if float_layers:
            fp32 = convert_keras(export_model, "fp32")
            island_nodes = tuple(float_island_nodes(fp32, float_layers))
            print(f"int8 float islands: {', '.join(float_layers)} ({len(island_nodes)} operators)")

    def convert_and_gate(precision: str, keep_float: Sequence[str]):
        islands = island_nodes if precision == "int8" else ()
        keep = tuple(dict.fromkeys([*islands, *keep_float]))
        content = convert_keras(export_model, precision, representative, config.io_dtype, keep)
        # The file must load and run in the SDK's runtime, or it is not written at all
        # (RuntimeError / ValueError are reported per precision below).
        engine = TFLiteEngine(content)
        engine.run(np.zeros((height, width, 3), dtype=np.uint8))
        figures: dict[str, Any] = {
            "size_bytes": len(content),
            "keep_float": list(keep_float),
            "float_islands": float_layers if islands else [],
            "embedding_dim": engine.embedding_dim,
        }
        if config.check:
            candidate, _ = infer_tflite(content, list(truth))
            figures |= compare(reference, candidate, truth, labels, temperature)
            figures["gate_failures"] = check(figures, gate)
        return content, figures

    for precision in config.precisions:
        print(f"converting {precision} ...", flush=True)
        keep = tuple(config.keep_float) if precision == "int8" else ()
        try:
            content, figures = convert_and_gate(precision, keep)
        except (ConversionError, RuntimeError, ValueError) as exc:
            # A precision the converter cannot produce, or the runtime cannot run, must not
            # cost the others; no file is written for it.
            message = f"{type(exc).__name__}: {exc}"
            print(f"error: {precision}: {message}")
            failures[precision] = [message]
            report["precisions"][precision] = {"error": message, "gate_failures": [message]}
            continue
        if precision == "int8" and figures.get("gate_failures"):
            content, figures = _diagnose_int8(
                export_model, representative, figures, content, config, convert_and_gate
            )
        if figures.get("gate_failures"):
            failures[precision] = figures["gate_failures"]
        ood = decision = None
        if trust_train:
            ood, decision = _fit_trust(
                content, trust_train, trust_val, labels, temperature, precision, config
            )
            figures["trust"] = trust.summary(ood, decision)
            print(f"{precision}: {json.dumps(figures['trust'])}")
        card = _model_card(
            run_dir, run_config, config, precision, figures, report.get("keras"), len(eval_samples)
        )
        metadata = ModelMetadata(
            name=name,
            version=__version__,
            labels=labels,
            positive_label="ALL",
            input=InputSpec(
                height=height,
                width=width,
                kind=config.input_kind or run_config.get("input_kind", "field"),
            ),
            precision=precision,
            temperature=temperature,
            source_sha256=source_sha,
            model_card=card,
            quality=quality,
            ood=ood,
            decision=decision,
        )
        target = out / f"{name}_{precision}.tflite"
        tmp = target.with_name(target.name + ".partial")
        tmp.write_bytes(write_metadata(content, metadata))
        os.replace(tmp, target)
        figures["path"] = str(target)
        report["precisions"][precision] = figures
    (out / "conversion.json").write_text(json.dumps(report, indent=2))
    if config.check:
        print(format_table(report["keras"], report["precisions"]))
    if failures:
        raise GateFailedError(
            "accuracy-delta gate FAILED: "
            + "; ".join(f"{p}: {', '.join(r)}" for p, r in failures.items()),
            report,
        )
    return report


def _fit_trust(content, train, val, labels, temperature, precision, config):
    """Out-of-domain model and operating point of one converted file, on its own outputs
    (:mod:`leukedge.converters.trust`)."""
    from leukedge.converters import trust
    from leukedge.converters.gate import infer_tflite
    from leukedge.runtime import TFLiteEngine

    val_paths = [str(s.path) for s in val]
    val_probs, val_embeddings = infer_tflite(content, val_paths)
    decision = trust.fit_operating_point(
        np.array([val_probs[p] for p in val_paths]),
        [s.label for s in val],
        labels,
        "ALL",
        temperature,
        precision,
        config.trust_config,
    )
    if val_embeddings is None:
        return None, decision
    train_paths = [str(s.path) for s in train]
    print(f"{precision}: embedding {len(train_paths)} train images ...", flush=True)
    _, train_embeddings = infer_tflite(content, train_paths)
    ood = trust.fit_ood(
        np.stack([train_embeddings[p] for p in train_paths]),
        [s.label for s in train],
        np.stack([val_embeddings[p] for p in val_paths]),
        labels,
        TFLiteEngine(content).embedding_name,
        config.trust_config,
    )
    return ood, decision


def _diagnose_int8(model, representative, figures, content, config, convert_and_gate):
    """int8 failed the gate: rank layers with the quantization debugger; optionally keep the
    worst in float, 1, 2, 4… of them, until the gate passes (selective quantization)."""
    from leukedge.converters.debug import format_layer_errors, layer_errors

    print("int8 failed the gate: " + "; ".join(figures["gate_failures"]))
    print("quantization debugger, worst tensors (RMSE in units of the int8 step):")
    errors = layer_errors(model, representative)
    print(format_layer_errors(errors))
    figures["worst_layers"] = [
        {"tensor": e.tensor_name, "op": e.op_name, "rmse_per_scale": e.rmse_per_scale}
        for e in errors[:10]
    ]
    if not config.auto_keep_float:
        print("retry with --keep-float TENSOR… or --auto-keep-float")
        return content, figures
    k = 1
    while k <= min(config.max_keep_float, len(errors)):
        names = tuple(dict.fromkeys([*config.keep_float, *(e.tensor_name for e in errors[:k])]))
        print(f"selective int8: keeping {k} worst tensor(s) in float ...", flush=True)
        new_content, new_figures = convert_and_gate("int8", names)
        if not new_figures["gate_failures"]:
            new_figures["worst_layers"] = figures["worst_layers"]
            return new_content, new_figures
        k *= 2
    print(f"still failing with the {config.max_keep_float} worst tensors in float")
    return content, figures


def _model_card(
    run_dir: Path,
    run_config: dict[str, Any],
    config: ConvertConfig,
    precision: str,
    figures: dict[str, Any],
    keras_figures: dict | None,
    n_eval: int,
) -> dict[str, Any]:
    val = _read_json(run_dir / "metrics_val.json")
    card: dict[str, Any] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "leukedge_version": __version__,
        "architecture": run_config.get("arch"),
        "training_data": run_config.get("data"),
        "split": {"strategy": run_config.get("split"), "counts": run_config.get("split_counts")},
        "training": {
            k: run_config.get(k)
            for k in (
                "image_size",
                "head_epochs",
                "finetune_epochs",
                "unfreeze_top",
                "class_weights",
                "weights",
                "seed",
            )
        },
        "validation_metrics_float": headline(val, extra=("best_epoch",)) if val else None,
        "precision": precision,
        "gate": None,
    }
    if precision == "int8":
        card["float_islands"] = figures.get("float_islands", [])
        card["keep_float"] = figures.get("keep_float", [])
    if keras_figures is not None and "accuracy" in figures:
        card["gate"] = {
            "eval_split": "val",
            "n": n_eval,
            "float_accuracy": keras_figures["accuracy"],
            "accuracy": figures["accuracy"],
            "weighted_f1": figures["weighted_f1"],
            "delta_pp": figures["delta_pp"],
            "agreement": figures["agreement"],
            "mean_abs_prob_diff": figures["mean_abs_prob_diff"],
            "ece": figures["ece"],
            "float_ece": figures["reference_ece"],
            "passed": not figures["gate_failures"],
        }
    card |= config.extra_card
    return card

"""``leukedge convert``: a trained ``.keras`` → ``.tflite`` files with metadata, gated.

One :class:`Converter` per conversion (Ultralytics' ``Exporter`` shape): its state is the
model, the calibration images, the gate's held-out images and float reference, and the
trust sets; its steps are methods, each timed and logged, in this order (one way, no step
repeated):

1. :meth:`Converter.load`: the ``.keras`` under the TensorFlow backend, hashed (sha256);
   the run's ``split.csv`` beside the model (or ``--split-file``);
2. :meth:`Converter.calibration_images`: the representative dataset, from the run's
   **train** split (stratified by class, 200 images by default); the test split is not read;
3. :meth:`Converter.float_reference`: the float Keras model once on the gate's held-out
   images (the run's **val** split);
4. :meth:`Converter.trust_sets`: train/val images for the fitted checks, and the quality
   thresholds from the train images (:mod:`leukedge.converters.trust`);
5. per precision, :meth:`Converter.export`: convert (with the embedding as a second output,
   :func:`~leukedge.converters.tflite.with_embedding_output`), check that the SDK runtime
   loads and runs the file, run it on the held-out images and compare
   (:mod:`leukedge.converters.gate`); when int8 fails, :meth:`Converter.diagnose_int8`;
   :meth:`Converter.fit_trust` fits the out-of-domain model and operating point on this
   file's own outputs; the metadata and model card (:mod:`leukedge.converters.card`) go in
   and ``<name>_<precision>.tflite`` is written atomically;
6. ``conversion.json`` (with ``timings_s``, seconds per step) and
   :class:`~leukedge.converters.gate.GateFailedError` if any precision failed the gate (the
   CLI exits 1).

Progress goes to ``logging.getLogger("leukedge.converters.convert")``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leukedge import __version__
from leukedge.converters import gate
from leukedge.converters.card import model_card, read_json
from leukedge.converters.gate import GateConfig, GateFailedError
from leukedge.converters.precisions import PRECISION_TABLE, PRECISIONS, IoDtype, Precision
from leukedge.converters.tflite import ConversionError
from leukedge.converters.trust import TrustConfig
from leukedge.engine.metadata import InputSpec, ModelMetadata, write_metadata
from leukedge.engine.preprocess import load_and_resize
from leukedge.evaluation.data import (
    LABELS,
    Sample,
    read_split,
    samples_from,
    stratified_subset,
)
from leukedge.evaluation.resolution import gate_images_needed, image_pp
from leukedge.modeling.config import InputKind
from leukedge.timing import StepTimes

__all__ = ["ConvertConfig", "Converter", "convert_model", "sha256_file"]

log = logging.getLogger(__name__)


@dataclass
class ConvertConfig:
    """Settings of one conversion (saved into ``conversion.json``).

    Attributes:
        model: the ``.keras`` file.
        out: output directory (default: the model's directory).
        precisions: any of :data:`leukedge.converters.precisions.PRECISIONS`.
        name: file-name stem and model name (default: the run directory's name).
        model_version: the model's version, stored as the metadata's ``version`` and
            reported as every result's ``model_version`` (e.g. ``2.0.0``; give each
            released model its own). Default: ``0.0.0+`` and the first 12 hex digits of
            the ``.keras`` file's sha256, distinct for every trained model.
        dataset: name of the training dataset in the model card (``training_data``);
            default: the name of the run's data folder (or CSV). The card holds it with
            the path relative to that dataset, never the build machine's path.
        split_file: ``split.csv`` of the run (default: beside the model).
        representative_data: dataset folder/CSV or ``split.csv`` for calibration; from a
            ``split.csv`` only the train split is used. Default: the run's train split.
        representative_size: calibration images, stratified by class (200).
        eval_data: labelled held-out images for the gate (folder/CSV or ``split.csv``, whose
            val split is used). Default: the run's val split.
        io_dtype: int8 model input/output tensor type, ``uint8`` or ``int8``.
        keep_float: TFLite tensor names (from the debugger's report) to keep in float
            (selective int8 quantization).
        float_islands: int8 keeps the operators of LayerNormalization and of the
            attention core in float, where LiteRT's XNNPACK delegate runs them
            (:func:`~leukedge.converters.tflite.island_layers`; README, "Performance");
            off: every operator that has an int8 kernel is int8, except the in-graph input
            normalisation, which always stays float.
        auto_keep_float: when int8 fails the gate, keep the worst 1, 2, 4… tensors (by the
            debugger's RMSE/scale) in float until it passes, up to ``max_keep_float``.
        max_keep_float: the most tensors ``auto_keep_float`` keeps in float.
        check: run the accuracy-delta gate (off: the model card says it was not checked).
        gate: the gate's bounds (:class:`~leukedge.converters.gate.GateConfig`).
        embedding: export the embedding output (needed for the out-of-domain check).
        trust: fit the quality thresholds, out-of-domain model and operating point
            (:mod:`leukedge.converters.trust`); needs the run's train and val splits.
        trust_config: their settings (:class:`~leukedge.converters.trust.TrustConfig`).
        input_kind: ``field`` or ``cell`` when the run's config does not say.
        seed: sampling seed for the representative dataset.
        extra_card: keys added to every file's model card.
    """

    model: str
    out: str | None = None
    precisions: Sequence[Precision] = ("fp32", "int8")
    name: str | None = None
    model_version: str | None = None
    dataset: str | None = None
    split_file: str | None = None
    representative_data: str | None = None
    representative_size: int = 200
    eval_data: str | None = None
    io_dtype: IoDtype = "uint8"
    keep_float: Sequence[str] = ()
    float_islands: bool = True
    auto_keep_float: bool = False
    max_keep_float: int = 16
    check: bool = True
    gate: GateConfig = field(default_factory=GateConfig)
    embedding: bool = True
    trust: bool = True
    trust_config: TrustConfig = field(default_factory=TrustConfig)
    input_kind: InputKind | None = None
    seed: int = 0
    extra_card: dict[str, Any] = field(default_factory=dict)


def default_model_version(source_sha256: str) -> str:
    """``0.0.0+<first 12 hex digits of the .keras sha256>``: a version (PEP 440, local
    part) that differs for every trained model when none is given
    (``ConvertConfig.model_version``)."""
    return f"0.0.0+{source_sha256[:12]}" if source_sha256 else "0.0.0"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Converter:
    """One conversion of ``config.model``; :meth:`run` does every step.

    Args:
        config: the settings.

    Attributes:
        times: :class:`~leukedge.timing.StepTimes`, seconds per step (``conversion.json``'s
            ``timings_s``).
        report: the ``conversion.json`` dictionary, filled in as the steps run.
    """

    def __init__(self, config: ConvertConfig):
        self.config = config
        self.times = StepTimes(log)
        self.report: dict[str, Any] = {}
        self.representative: np.ndarray | None = None
        self.eval_samples: list[Sample] = []
        self.truth: dict[str, str] = {}
        self.reference: dict[str, list[float]] = {}
        self.trust_train: list[Sample] = []
        self.trust_val: list[Sample] = []
        self.view_train: list[Sample] = []
        self.view_val: list[Sample] = []
        self.oof: list[tuple[str, str, float]] | None = None
        self.run_dir: Path | None = None  # set by load()
        self.quality = None
        self.island_nodes: tuple[str, ...] = ()
        self.float_layers: list[str] = []

    # ----------------------------------------------------------------------------- steps
    def load(self) -> None:
        """Load and hash the ``.keras``; read the run's files; add the embedding output.

        Raises:
            ValueError: an unknown precision, or a corrupt ``.keras``.
            FileNotFoundError: no such model file.
        """
        from leukedge.converters.tflite import with_embedding_output
        from leukedge.modeling.saving import load_keras_model

        config = self.config
        unknown = [p for p in config.precisions if p not in PRECISIONS]
        if unknown or not config.precisions:
            raise ValueError(f"unknown precision(s) {unknown}; choose from {PRECISIONS}")
        self.model_path = Path(config.model)
        self.model = load_keras_model(self.model_path)
        self.run_dir = self.model_path.parent
        self.run_config = read_json(self.run_dir / "config.json")
        self.labels = list(self.run_config.get("labels", LABELS))
        self.size = tuple(int(d) for d in self.model.input_shape[1:3])
        self.out = Path(config.out) if config.out else self.run_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.name = config.name or self.run_dir.name
        split = self.run_dir / "split.csv"
        self.split_file = config.split_file or (str(split) if split.is_file() else None)
        calibration = read_json(self.run_dir / "calibration.json")
        self.temperature = float(calibration.get("temperature", 1.0))
        self.export_model = self.model
        if config.embedding:
            self.export_model, dim = with_embedding_output(self.model)
            if dim is None:
                log.info("note: no attention_tokens or head_gap layer: no embedding output")
        self.source_sha = sha256_file(self.model_path)

    def calibration_images(self) -> np.ndarray | None:
        """The representative dataset of the calibrated precisions: ``(n, H, W, 3)`` uint8
        RGB, ``None`` when no requested precision needs one.

        Raises:
            ValueError: no source of calibration images, or an empty one.
        """
        config = self.config
        if not any(PRECISION_TABLE[p].calibrated for p in config.precisions):
            return None
        source = config.representative_data or self.split_file
        if source is None:
            raise ValueError(
                "int8 needs calibration images: pass --representative-data "
                "(a dataset folder, CSV or the run's split.csv)"
            )
        pool = samples_from(source, "train")
        chosen = stratified_subset(pool, config.representative_size, config.seed)
        if not chosen:
            raise ValueError(f"{source}: representative dataset is empty")
        log.info("representative dataset: %d images from %s", len(chosen), source)
        return np.stack([load_and_resize(s.path, self.size) for s in chosen])

    def float_reference(self) -> dict[str, Any] | None:
        """Run the float model on the gate's held-out images; ``report["keras"]``.

        Returns:
            ``{"accuracy", "weighted_f1", "ece", "n"}`` of the float model (ECE with the
            run's temperature), or ``None`` when the gate is off.

        Raises:
            ValueError: the gate is on and there are no held-out images.
        """
        from leukedge.checks.calibration import apply_temperature
        from leukedge.evaluation.metrics import (
            evaluate,
            expected_calibration_error,
            join_by_name,
        )
        from leukedge.evaluation.predict import predict_keras

        config = self.config
        if not config.check:
            return None
        source = config.eval_data or self.split_file
        if source is None:
            raise ValueError(
                "the accuracy-delta check needs labelled held-out images: pass "
                "--eval-data (folder, CSV or split.csv) or --no-check"
            )
        self.eval_samples = samples_from(source, "val")
        self.truth = {str(s.path): s.label for s in self.eval_samples}
        self.reference = predict_keras(self.model, self.eval_samples, self.size[0])
        metrics = evaluate(self.reference, self.truth, self.labels)
        _, y_ref, p_ref = join_by_name(self.reference, self.truth, self.labels)
        log.info("held-out images for the gate: %d from %s", len(self.eval_samples), source)
        log.info("%s", gate.resolution(len(self.eval_samples), config.gate))
        return {
            "accuracy": metrics["accuracy"],
            "weighted_f1": metrics["weighted_f1"],
            "ece": expected_calibration_error(y_ref, apply_temperature(p_ref, self.temperature)),
            "n": metrics["n"],
        }

    def trust_sets(self) -> None:
        """Train and val images of the fitted checks, and the quality thresholds (from the
        train images); nothing when trust is off or the run has no split."""
        from leukedge.converters import trust

        config = self.config
        if not config.trust:
            return
        train_source = self.split_file or config.representative_data
        val_source = config.eval_data or self.split_file
        if train_source is None or val_source is None:
            log.info("note: no train/val split: quality, out-of-domain, operating point skipped")
            return
        self.trust_train = samples_from(train_source, "train")
        self.trust_val = self.eval_samples or samples_from(val_source, "val")
        cap = config.trust_config.max_train_images
        if cap is not None:
            self.trust_train = stratified_subset(self.trust_train, cap, config.seed)
        self.view_train, self.view_val = self._augmentation_views(train_source, val_source)
        self.oof = self._oof_outputs()
        self.quality = trust.derive_quality(
            [str(s.path) for s in self.trust_train], self.size, config.trust_config
        )
        log.info("quality thresholds from %d train images", len(self.trust_train))

    def _augmentation_views(
        self, train_source: str, val_source: str
    ) -> tuple[list[Sample], list[Sample]]:
        """The ``train_views`` / ``val_views`` splits of the run's ``split.csv``: saved
        augmentation views of the train / val images (``leukedge train final`` writes them)
        that join the out-of-domain fit and threshold, so that camera nuisances count as
        in-domain (issue 18). ``([], [])`` when the split has none."""
        splits: dict[Path, dict[str, list[Sample]]] = {}  # each split.csv read once
        views = []
        for source, name in ((train_source, "train_views"), (val_source, "val_views")):
            path = Path(source)
            if path not in splits:
                csv_file = path.suffix.lower() == ".csv" and path.is_file()
                splits[path] = read_split(path) if csv_file else {}
            views.append(splits[path].get(name, []))
        if views[0] or views[1]:
            log.info(
                "out-of-domain: + %d train and %d val augmentation views",
                len(views[0]),
                len(views[1]),
            )
        return views[0], views[1]

    def _oof_outputs(self) -> list[tuple[str, str, float]] | None:
        """``(name, label, p(ALL))`` rows of the run's ``oof.csv`` (out-of-fold outputs of
        a blocked cross-validation, written by ``leukedge train final``): the operating
        point and refer band are fitted on them instead of this file's val outputs, so
        they hold on patients no fitted model saw (issue 18). ``None`` without the file.

        Raises:
            ValueError: an ``oof.csv`` without ``name``, ``label`` and ``p_all`` columns, or
                with a label the model does not have.
        """
        path = None if self.run_dir is None else self.run_dir / "oof.csv"
        if path is None or not path.is_file():
            return None
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or not {"name", "label", "p_all"} <= set(rows[0]):
            raise ValueError(f"{path}: needs name, label and p_all columns")
        unknown = {r["label"] for r in rows} - set(self.labels)
        if unknown:
            raise ValueError(f"{path}: labels {sorted(unknown)} are not the model's {self.labels}")
        log.info("operating point: from %d out-of-fold outputs (%s)", len(rows), path.name)
        return [(r["name"], r["label"], float(r["p_all"])) for r in rows]

    def find_float_islands(self) -> None:
        """Names of the operators int8 keeps in float, from the exported model converted
        at fp32 (the same graph the int8 quantizer sees)."""
        from leukedge.converters.tflite import convert_keras, float_island_nodes, island_layers

        if "int8" not in self.config.precisions:
            return
        self.float_layers = island_layers(self.export_model, attention=self.config.float_islands)
        if self.float_layers:
            fp32 = convert_keras(self.export_model, "fp32")
            self.island_nodes = tuple(float_island_nodes(fp32, self.float_layers))
            log.info(
                "int8 float islands: %s (%d operators)",
                ", ".join(self.float_layers),
                len(self.island_nodes),
            )

    def convert(self, precision: str, keep_float: Sequence[str] = ()) -> tuple[bytes, dict]:
        """Convert at ``precision``, check the runtime runs it, and gate it.

        Args:
            precision: a row of the precision table.
            keep_float: tensor names kept in float besides the float islands (int8).

        Returns:
            ``(content, figures)``: the ``.tflite`` bytes (no metadata yet) and
            ``size_bytes``, ``keep_float``, ``float_islands``, ``embedding_dim`` and, with
            the gate on, :func:`~leukedge.converters.gate.compare`'s figures and
            ``gate_failures``.

        Raises:
            ConversionError: the converter failed or refused the model.
            leukedge.ModelLoadError / ValueError: the runtime cannot run the file.
        """
        from leukedge.converters.tflite import convert_keras
        from leukedge.engine.interpreter import TFLiteEngine
        from leukedge.evaluation.predict import infer_tflite

        islands = self.island_nodes if PRECISION_TABLE[precision].keeps_float else ()
        keep = tuple(dict.fromkeys([*islands, *keep_float]))
        content = convert_keras(
            self.export_model, precision, self.representative, self.config.io_dtype, keep
        )
        # The file must load and run in the SDK's runtime, or it is not written at all.
        engine = TFLiteEngine(content)
        engine.run(np.zeros((*self.size, 3), dtype=np.uint8))
        figures: dict[str, Any] = {
            "size_bytes": len(content),
            "keep_float": list(keep_float),
            "float_islands": self.float_layers if islands else [],
            "embedding_dim": engine.embedding_dim,
        }
        if self.config.check:
            candidate, _ = infer_tflite(content, list(self.truth))
            figures |= gate.compare(
                self.reference, candidate, self.truth, self.labels, self.temperature
            )
            figures["gate_failures"] = gate.check(figures, self.config.gate)
        return content, figures

    def diagnose_int8(self, content: bytes, figures: dict) -> tuple[bytes, dict]:
        """int8 failed the gate: rank tensors with the quantization debugger; with
        ``auto_keep_float``, keep the worst 1, 2, 4… of them in float until the gate
        passes (selective quantization).

        A failure by one image on a split where one image is coarser than the bound
        (:func:`~leukedge.converters.gate.below_resolution`) is logged as such, with the
        number of held-out images the bounds need, instead of the advice to keep tensors
        in float.

        Returns:
            The passing ``(content, figures)``, or the failing ones given (with
            ``worst_layers`` added, and ``below_resolution`` when that is the case) when
            nothing passes or ``auto_keep_float`` is off.
        """
        from leukedge.converters.debug import format_layer_errors, layer_errors

        config = self.config
        log.info("int8 failed the gate: %s", "; ".join(figures["gate_failures"]))
        errors = layer_errors(self.export_model, self.representative)
        log.info(
            "quantization debugger, worst tensors (RMSE in units of the int8 step):\n%s",
            format_layer_errors(errors),
        )
        figures["worst_layers"] = [
            {"tensor": e.tensor_name, "op": e.op_name, "rmse_per_scale": e.rmse_per_scale}
            for e in errors[:10]
        ]
        if gate.below_resolution(figures, config.gate):
            n = figures["n"]
            log.warning(
                "int8 failed by one image of %d: one image is %.2f pp, coarser than the "
                "gate's bounds, so rounding on one borderline image can decide it and "
                "keeping tensors in float may not help; gate on more held-out images "
                "(--eval-data; at least %d for these bounds) or set bounds this split can "
                "resolve (--max-delta, --min-agreement)",
                n,
                100.0 / n,
                gate_images_needed(config.gate.max_delta, config.gate.min_agreement),
            )
            figures["below_resolution"] = True
        elif not config.auto_keep_float:
            log.info("retry with --keep-float TENSOR… or --auto-keep-float")
        if not config.auto_keep_float:
            return content, figures
        k = 1
        while k <= min(config.max_keep_float, len(errors)):
            names = tuple(dict.fromkeys([*config.keep_float, *(e.tensor_name for e in errors[:k])]))
            log.info("selective int8: keeping %d worst tensor(s) in float ...", k)
            new_content, new_figures = self.convert("int8", names)
            if not new_figures["gate_failures"]:
                new_figures["worst_layers"] = figures["worst_layers"]
                return new_content, new_figures
            k *= 2
        log.info("still failing with the %d worst tensors in float", config.max_keep_float)
        return content, figures

    def fit_trust(self, content: bytes, precision: str):
        """Out-of-domain model and operating point of one converted file, on its own
        outputs (:mod:`leukedge.converters.trust`).

        Returns:
            ``(OODSpec or None, DecisionSpec or None)``; the OOD model is ``None`` when the
            file has no embedding output.
        """
        from leukedge.converters import trust
        from leukedge.engine.interpreter import TFLiteEngine
        from leukedge.evaluation.predict import infer_tflite

        val_set = self.trust_val + self.view_val
        val_paths = [str(s.path) for s in val_set]
        val_probs, val_embeddings = infer_tflite(content, val_paths)
        if self.oof is not None:
            p_all = np.array([p for _, _, p in self.oof])
            decision = trust.fit_operating_point(
                np.stack([p_all, 1.0 - p_all], axis=1)
                if self.labels[0] == "ALL"
                else np.stack([1.0 - p_all, p_all], axis=1),
                [label for _, label, _ in self.oof],
                self.labels,
                "ALL",
                self.temperature,
                "out-of-fold (float head)",
                self.config.trust_config,
                source="out-of-fold outputs of the blocked cross-validation",
            )
        else:
            clean = [str(s.path) for s in self.trust_val]
            decision = trust.fit_operating_point(
                np.array([val_probs[p] for p in clean]),
                [s.label for s in self.trust_val],
                self.labels,
                "ALL",
                self.temperature,
                precision,
                self.config.trust_config,
            )
        if val_embeddings is None:
            return None, decision
        train_set = self.trust_train + self.view_train
        train_paths = [str(s.path) for s in train_set]
        log.info("%s: embedding %d train images ...", precision, len(train_paths))
        _, train_embeddings = infer_tflite(content, train_paths)
        ood = trust.fit_ood(
            np.stack([train_embeddings[p] for p in train_paths]),
            [s.label for s in train_set],
            np.stack([val_embeddings[p] for p in val_paths]),
            self.labels,
            TFLiteEngine(content).embedding_name,
            self.config.trust_config,
        )
        return ood, decision

    def write(self, precision: str, content: bytes, figures: dict, ood, decision) -> Path:
        """Embed metadata and model card; write ``<name>_<precision>.tflite`` atomically."""
        config = self.config
        card = model_card(
            self.run_dir,
            self.run_config,
            precision,
            figures,
            self.report.get("keras"),
            len(self.eval_samples),
            config.extra_card,
            dataset=config.dataset,
        )
        metadata = ModelMetadata(
            name=self.name,
            version=config.model_version or default_model_version(self.source_sha),
            labels=self.labels,
            positive_label="ALL",
            input=InputSpec(
                height=self.size[0],
                width=self.size[1],
                kind=config.input_kind or self.run_config.get("input_kind", "field"),
            ),
            precision=precision,
            temperature=self.temperature,
            source_sha256=self.source_sha,
            model_card=card,
            quality=self.quality,
            ood=ood,
            decision=decision,
        )
        target = self.out / f"{self.name}_{precision}.tflite"
        tmp = target.with_name(target.name + ".partial")
        tmp.write_bytes(write_metadata(content, metadata))
        os.replace(tmp, target)
        return target

    def export(self, precision: str) -> list[str]:
        """Convert, gate, fit and write one precision; its figures go into the report.

        Returns:
            The gate failures of this precision (empty when it passed); a precision that
            cannot be converted or run fails with its error and writes no file, without
            costing the others.
        """
        from leukedge.converters import trust

        config = self.config
        keep = tuple(config.keep_float) if PRECISION_TABLE[precision].keeps_float else ()
        try:
            with self.times.step(f"convert_{precision}"):
                content, figures = self.convert(precision, keep)
        except (ConversionError, RuntimeError, ValueError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            log.error("%s: %s", precision, message)
            self.report["precisions"][precision] = {"error": message, "gate_failures": [message]}
            return [message]
        if precision == "int8" and figures.get("gate_failures"):
            with self.times.step("diagnose_int8"):
                content, figures = self.diagnose_int8(content, figures)
        ood = decision = None
        if self.trust_train:
            with self.times.step(f"trust_{precision}"):
                ood, decision = self.fit_trust(content, precision)
            figures["trust"] = trust.summary(ood, decision)
            log.info("%s: %s", precision, json.dumps(figures["trust"]))
        target = self.write(precision, content, figures, ood, decision)
        figures["path"] = str(target)
        self.report["precisions"][precision] = figures
        return list(figures.get("gate_failures") or [])

    # ----------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Every step; writes the files and ``conversion.json``; returns the report.

        Raises:
            FileNotFoundError: model or data missing.
            ValueError: corrupt ``.keras``, empty representative dataset, unknown
                precision, no held-out images while ``check`` is on.
            GateFailedError: a precision failed the gate (files and report are written
                first; a file that failed is marked so in its card, ``gate.passed`` false,
                and the SDK refuses it without ``allow_failed_gate``).
        """
        config = self.config
        with self.times.step("load"):
            self.load()
        with self.times.step("calibration_images"):
            self.representative = self.calibration_images()
        with self.times.step("float_reference"):
            keras_figures = self.float_reference()
        with self.times.step("trust_sets"):
            self.trust_sets()
        self.report = {
            "model": str(self.model_path),
            "source_sha256": self.source_sha,
            "labels": self.labels,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "leukedge_version": __version__,
            "gate": {
                "max_delta_pp": config.gate.max_delta,
                "min_agreement": config.gate.min_agreement,
                "max_mean_abs_prob_diff": config.gate.max_mean_abs_prob_diff,
                "max_ece_increase": config.gate.max_ece_increase,
                "checked": config.check,
                "n": len(self.eval_samples),
                "resolution_pp": image_pp(len(self.eval_samples)),
            },
            "trust": asdict(config.trust_config) | {"fitted": bool(self.trust_train)},
            "precisions": {},
        }
        if keras_figures is not None:
            self.report["keras"] = keras_figures
        with self.times.step("float_islands"):
            self.find_float_islands()
        failures = {}
        for precision in config.precisions:
            log.info("converting %s ...", precision)
            reasons = self.export(precision)
            if reasons:
                failures[precision] = reasons
        self.report["timings_s"] = self.times.as_dict()
        (self.out / "conversion.json").write_text(json.dumps(self.report, indent=2))
        if config.check:
            log.info("%s", gate.format_table(self.report["keras"], self.report["precisions"]))
        if failures:
            written = [
                self.report["precisions"][p]["path"]
                for p in failures
                if "path" in self.report["precisions"].get(p, {})
            ]
            kept = (
                f". Written for inspection, marked failed in its metadata: {', '.join(written)}; "
                "leukedge refuses to run it unless --allow-failed-gate "
                "(ClassifierOptions(allow_failed_gate=True))"
                if written
                else ""
            )
            raise GateFailedError(
                "accuracy-delta gate FAILED: "
                + "; ".join(f"{p}: {', '.join(r)}" for p, r in failures.items())
                + kept,
                self.report,
            )
        return self.report


def convert_model(config: ConvertConfig) -> dict[str, Any]:
    """Convert, gate and write; returns the report (also written as ``conversion.json``).

    ``Converter(config).run()``; see :class:`Converter` for the steps.

    Raises:
        FileNotFoundError: model or data missing.
        ValueError: corrupt ``.keras``, empty representative dataset, unknown precision, no
            held-out images while ``check`` is on.
        leukedge.converters.gate.GateFailedError: a precision failed the gate (files and
            report are written first).
    """
    return Converter(config).run()

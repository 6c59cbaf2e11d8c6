"""Evaluate a model on labelled images and write what a run keeps of it.

:func:`write_evaluation` turns ``{path: probabilities}`` into ``predictions_<tag>.csv`` and
``metrics_<tag>.json`` (training writes the validation split's this way);
:func:`evaluate_run` runs a run's ``.keras`` or ``.tflite`` on one split of its
``split.csv`` (``leukedge train evaluate``) and adds the report, the figures and,
optionally, the robustness flip rates and the model card's figures.

The test split is meant to be read once, by the final model; :func:`evaluate_run` is what
does it. Predictions are keyed by file path and joined to the split's labels by name.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leukedge.evaluation.data import LABELS, Sample, read_split
from leukedge.evaluation.metrics import evaluate, headline

log = logging.getLogger(__name__)


def write_evaluation(
    out: Path, split: str, samples: Sequence[Sample], probabilities: dict[str, list[float]]
) -> dict[str, Any]:
    """Write ``predictions_<split>.csv`` and ``metrics_<split>.json``; return the metrics.

    Args:
        out: the run directory.
        split: the tag in the file names (``val``, ``test``, ``test_<model stem>``), also
            stored as ``metrics["split"]``.
        samples: the labelled images (path, label, subject).
        probabilities: ``{str(path): probabilities}`` in :data:`LABELS` order, one per
            sample (joined by path).

    Returns:
        :func:`leukedge.evaluation.metrics.evaluate`'s dictionary, with ``split``.

    Raises:
        ValueError: predictions and samples do not match by path.
    """
    truth = {str(s.path): s.label for s in samples}
    subjects = {str(s.path): s.subject for s in samples}
    metrics = evaluate(probabilities, truth, LABELS, subjects)
    metrics["split"] = split
    with open(Path(out) / f"predictions_{split}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "predicted", *[f"p_{lb}" for lb in LABELS]])
        for path in sorted(truth):
            p = probabilities[path]
            writer.writerow(
                [
                    path,
                    truth[path],
                    LABELS[max(range(len(p)), key=p.__getitem__)],
                    *[f"{v:.6f}" for v in p],
                ]
            )
    (Path(out) / f"metrics_{split}.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    model: str | os.PathLike | None = None,
    update_card: bool = False,
    robustness: bool = False,
    allow_failed_gate: bool = False,
) -> dict[str, Any]:
    """Evaluate and write ``metrics_<split>[_<model>].json`` and predictions in ``run_dir``.

    Args:
        run_dir: run directory with ``split.csv`` (and ``model.keras``).
        split: which split to read.
        model: ``.keras`` (run with Keras) or ``.tflite`` (run with the SDK runtime);
            default ``run_dir/model.keras``.
        update_card: for a ``.tflite``, store the figures in its model card under
            ``"<split>_metrics"`` (rewrites the file atomically; weights unchanged).
        robustness: also measure how often the call flips under the five perturbations of
            :mod:`leukedge.evaluation.robustness` (same read of the split); written to
            ``robustness_<tag>.json``, returned under ``"robustness"`` and, with
            ``update_card``, stored in the model card as ``"<split>_robustness"``.
        allow_failed_gate: evaluate (and with ``update_card``, update) a ``.tflite`` whose
            card says it failed its conversion's accuracy gate; warns
            (:class:`~leukedge.errors.LeukedgeWarning`). Default: refused, like the SDK.

    Returns:
        The metrics dictionary (:func:`leukedge.evaluation.metrics.evaluate`).

    Raises:
        FileNotFoundError: missing run files.
        ValueError: unknown split.
        leukedge.engine.metadata.FailedGateError: a ``.tflite`` that failed its gate, without
            ``allow_failed_gate`` (a ``ValueError``).
    """
    run_dir = Path(run_dir)
    split_file = run_dir / "split.csv"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file}: not found; is {run_dir} a training run?")
    splits = read_split(split_file)
    if split not in splits:
        raise ValueError(f"{split_file}: no split {split!r} (has {sorted(splits)})")
    samples = splits[split]
    model = Path(model) if model else run_dir / "model.keras"
    if not model.is_file():
        raise FileNotFoundError(f"{model}: model not found")
    if model.suffix == ".tflite":
        import warnings

        from leukedge.engine.metadata import check_gate, read_metadata
        from leukedge.errors import LeukedgeWarning
        from leukedge.evaluation.predict import predict_tflite

        allowed = check_gate(read_metadata(model), str(model), allow_failed_gate)
        if allowed is not None:
            warnings.warn(allowed, LeukedgeWarning, stacklevel=2)

        probabilities = predict_tflite(str(model), [str(s.path) for s in samples])
        tag = f"{split}_{model.stem}"
    else:
        from leukedge.evaluation.predict import predict_keras
        from leukedge.modeling.saving import load_keras_model

        net = load_keras_model(model)
        probabilities = predict_keras(net, samples, int(net.input_shape[1]))
        tag = split
    # Training wrote metrics_val.json with the epoch it kept; re-evaluating the run's own
    # model must not lose it (the converter copies it into the model card).
    earlier = run_dir / f"metrics_{tag}.json"
    kept = json.loads(earlier.read_text()).get("best_epoch") if earlier.is_file() else None
    metrics = write_evaluation(run_dir, tag, samples, probabilities)
    if kept is not None:
        metrics["best_epoch"] = kept
    metrics["model"] = str(model)
    (run_dir / f"metrics_{tag}.json").write_text(json.dumps(metrics, indent=2))
    from leukedge.evaluation.figures import run_figures
    from leukedge.evaluation.report import metrics_markdown

    (run_dir / f"report_{tag}.md").write_text(metrics_markdown(metrics, f"{run_dir.name}: {tag}"))
    run_figures(run_dir, tag)
    if robustness:
        metrics["robustness"] = _robustness(model, samples, allow_failed_gate)
        (run_dir / f"robustness_{tag}.json").write_text(json.dumps(metrics["robustness"], indent=2))
    if update_card and model.suffix == ".tflite":
        from leukedge.engine.metadata import read_metadata, write_metadata

        content = model.read_bytes()
        metadata = read_metadata(content)
        if metadata is None:
            raise ValueError(f"{model}: no leukedge metadata to update")
        metadata.model_card[f"{split}_metrics"] = headline(metrics, extra=("per_class",))
        if robustness:
            metadata.model_card[f"{split}_robustness"] = metrics["robustness"]
        tmp = model.with_name(model.name + ".partial")
        tmp.write_bytes(write_metadata(content, metadata))
        os.replace(tmp, model)
    return metrics


def _robustness(model: Path, samples, allow_failed_gate: bool = False) -> dict[str, Any]:
    """Flip rates of the call of ``model`` on ``samples`` (robustness.flip_rates).

    A ``.tflite`` is run through the SDK's :class:`~leukedge.Classifier`, so the call is the
    one users get (the model's label at its operating threshold, refer band ignored); a
    ``.keras`` model's call is its arg-max.
    """
    import numpy as np

    from leukedge.engine.preprocess import load_rgb
    from leukedge.evaluation.robustness import flip_rates

    images = {str(s.path): load_rgb(s.path) for s in samples}
    if model.suffix == ".tflite":
        from leukedge.classifier import Classifier

        classifier = Classifier.create_from_model_path(model, allow_failed_gate=allow_failed_gate)

        def predict(rgb: np.ndarray) -> int:
            result = classifier.classify(rgb)
            label = getattr(result, "model_label", None) or result.label
            return classifier.labels.index(label)

    else:
        from leukedge.engine.preprocess import resize_rgb
        from leukedge.modeling.saving import load_keras_model

        net = load_keras_model(model)
        size = (int(net.input_shape[1]), int(net.input_shape[2]))

        def predict(rgb: np.ndarray) -> int:
            x = resize_rgb(rgb, size).astype(np.float32)[None]
            return int(np.argmax(net.predict_on_batch(x)[0]))

    return flip_rates(predict, images)

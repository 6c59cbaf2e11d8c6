"""Evaluate a run's model (``.keras`` or ``.tflite``) on one split of its ``split.csv``.

The test split is meant to be read once, by the final model; this is the command that does
it. Predictions are keyed by file path and joined to the split's labels by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from leukedge.training.data import read_split
from leukedge.training.metrics import headline


def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    model: str | os.PathLike | None = None,
    update_card: bool = False,
    robustness: bool = False,
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
            :mod:`leukedge.training.robustness` (same read of the split); written to
            ``robustness_<tag>.json``, returned under ``"robustness"`` and, with
            ``update_card``, stored in the model card as ``"<split>_robustness"``.

    Returns:
        The metrics dictionary (:func:`leukedge.training.metrics.evaluate`).

    Raises:
        FileNotFoundError: missing run files.
        ValueError: unknown split.
    """
    from leukedge.training.train import write_evaluation

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
        from leukedge.converters.gate import predict_tflite

        probabilities = predict_tflite(str(model), [str(s.path) for s in samples])
        tag = f"{split}_{model.stem}"
    else:
        from leukedge.converters.tflite import load_keras_model
        from leukedge.training.train import predict_samples

        net = load_keras_model(model)
        probabilities = predict_samples(net, samples, int(net.input_shape[1]))
        tag = split
    metrics = write_evaluation(run_dir, tag, samples, probabilities)
    metrics["model"] = str(model)
    (run_dir / f"metrics_{tag}.json").write_text(json.dumps(metrics, indent=2))
    from leukedge.training.figures import run_figures
    from leukedge.training.report import metrics_markdown

    (run_dir / f"report_{tag}.md").write_text(metrics_markdown(metrics, f"{run_dir.name}: {tag}"))
    run_figures(run_dir, tag)
    if robustness:
        metrics["robustness"] = _robustness(model, samples)
        (run_dir / f"robustness_{tag}.json").write_text(json.dumps(metrics["robustness"], indent=2))
    if update_card and model.suffix == ".tflite":
        from leukedge.metadata import read_metadata, write_metadata

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


def _robustness(model: Path, samples) -> dict[str, Any]:
    """Flip rates of the call of ``model`` on ``samples`` (robustness.flip_rates).

    A ``.tflite`` is run through the SDK's :class:`~leukedge.Classifier`, so the call is the
    one users get (the model's label at its operating threshold, refer band ignored); a
    ``.keras`` model's call is its arg-max.
    """
    import numpy as np

    from leukedge.preprocess import load_rgb
    from leukedge.training.robustness import flip_rates

    images = {str(s.path): load_rgb(s.path) for s in samples}
    if model.suffix == ".tflite":
        from leukedge.classifier import Classifier

        classifier = Classifier.create_from_model_path(model)

        def predict(rgb: np.ndarray) -> int:
            result = classifier.classify(rgb)
            label = getattr(result, "model_label", None) or result.label
            return classifier.labels.index(label)

    else:
        from leukedge.converters.tflite import load_keras_model
        from leukedge.preprocess import resize_rgb

        net = load_keras_model(model)
        size = (int(net.input_shape[1]), int(net.input_shape[2]))

        def predict(rgb: np.ndarray) -> int:
            x = resize_rgb(rgb, size).astype(np.float32)[None]
            return int(np.argmax(net.predict_on_batch(x)[0]))

    return flip_rates(predict, images)

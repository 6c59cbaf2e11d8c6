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
) -> dict[str, Any]:
    """Evaluate and write ``metrics_<split>[_<model>].json`` and predictions in ``run_dir``.

    Args:
        run_dir: run directory with ``split.csv`` (and ``model.keras``).
        split: which split to read.
        model: ``.keras`` (run with Keras) or ``.tflite`` (run with the SDK runtime);
            default ``run_dir/model.keras``.
        update_card: for a ``.tflite``, store the figures in its model card under
            ``"<split>_metrics"`` (rewrites the file atomically; weights unchanged).

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
        import keras

        from leukedge.training.train import predict_samples

        net = keras.saving.load_model(model, compile=False)
        probabilities = predict_samples(net, samples, int(net.input_shape[1]))
        tag = split
    metrics = write_evaluation(run_dir, tag, samples, probabilities)
    metrics["model"] = str(model)
    (run_dir / f"metrics_{tag}.json").write_text(json.dumps(metrics, indent=2))
    from leukedge.training.figures import run_figures
    from leukedge.training.report import metrics_markdown

    (run_dir / f"report_{tag}.md").write_text(metrics_markdown(metrics, f"{run_dir.name}: {tag}"))
    run_figures(run_dir, tag)
    if update_card and model.suffix == ".tflite":
        from leukedge.metadata import read_metadata, write_metadata

        content = model.read_bytes()
        metadata = read_metadata(content)
        if metadata is None:
            raise ValueError(f"{model}: no leukedge metadata to update")
        metadata.model_card[f"{split}_metrics"] = headline(metrics, extra=("per_class",))
        tmp = model.with_name(model.name + ".partial")
        tmp.write_bytes(write_metadata(content, metadata))
        os.replace(tmp, model)
    return metrics

"""The model card a converted ``.tflite`` carries: where the model came from, how it did.

Built from the run's own files (``config.json``, ``metrics_val.json``), the conversion's
settings and the gate's figures for one precision; stored in the file's metadata
(:class:`leukedge.engine.metadata.ModelMetadata`, ``model_card``) and shown by ``leukedge info``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from leukedge import __version__
from leukedge.converters.precisions import PRECISION_TABLE
from leukedge.evaluation.metrics import headline

TRAINING_KEYS = (
    "image_size",
    "head_epochs",
    "finetune_epochs",
    "unfreeze_top",
    "class_weights",
    "weights",
    "seed",
)
"""``config.json`` keys the card repeats under ``training``."""


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when the file does not exist."""
    return json.loads(path.read_text()) if path.is_file() else {}


def training_data(data: str | None, dataset: str | None = None) -> dict[str, str] | None:
    """Where the training images came from, as a named dataset and a path relative to it,
    never the build machine's path (which means nothing on another machine and tells
    strangers about the build machine's folders).

    Args:
        data: the run's ``data`` setting (a folder or CSV, absolute or relative).
        dataset: the dataset's name; default: the folder's (or CSV's) own name.

    Returns:
        ``{"dataset": name, "path": relative path}``: for ``/srv/data/taleqani``,
        ``{"dataset": "taleqani", "path": "taleqani"}`` (the folder, as found in a folder of
        datasets); for ``/srv/cnmc/fold_0`` with ``dataset="cnmc"``,
        ``{"dataset": "cnmc", "path": "cnmc/fold_0"}``: the path from the folder that holds the
        dataset. ``None`` when ``data`` is unknown.
    """
    if not data:
        return None
    parts = [p for p in Path(str(data).replace("\\", "/")).parts if p not in ("/", ".", "..")]
    parts = [p for p in parts if not p.endswith(":")]  # a Windows drive
    if not parts:
        return None
    if dataset and dataset in parts[:-1]:
        relative = parts[len(parts) - 1 - parts[::-1].index(dataset) :]
    else:
        relative = parts[-1:]
    return {"dataset": dataset or Path(parts[-1]).stem, "path": "/".join(relative)}


def model_card(
    run_dir: Path,
    run_config: dict[str, Any],
    precision: str,
    figures: dict[str, Any],
    keras_figures: dict[str, Any] | None,
    n_eval: int,
    extra: dict[str, Any] | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """The card of one converted file.

    Args:
        run_dir: the training run (its ``metrics_val.json`` is read).
        run_config: the run's ``config.json`` (``{}`` when there is none).
        precision: the file's precision.
        figures: the conversion's figures for this precision (gate figures when checked,
            ``float_islands`` and ``keep_float`` for int8).
        keras_figures: the float model's figures on the gate's images (``None``: no gate).
        n_eval: held-out images the gate read.
        extra: keys added last (``ConvertConfig.extra_card``).
        dataset: the training dataset's name (:func:`training_data`).

    Returns:
        JSON-ready dictionary: ``created`` (UTC ISO 8601), ``leukedge_version``,
        ``architecture``, ``training_data`` (:func:`training_data`), ``split``,
        ``training``, ``validation_metrics_float``, ``precision``, ``gate`` (``None`` when
        not checked; ``passed`` and, since 2026-12, ``failures``: the bounds it broke)
        and, for int8, ``float_islands`` and ``keep_float``; then the keys of the run's
        ``card_extra.json`` (``leukedge train final``: ``fitted_on``, ``recipe``,
        ``thresholds_from``, ``expected_performance``).
    """
    val = read_json(run_dir / "metrics_val.json")
    card: dict[str, Any] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "leukedge_version": __version__,
        "architecture": run_config.get("arch"),
        "training_data": training_data(run_config.get("data"), dataset),
        "split": {"strategy": run_config.get("split"), "counts": run_config.get("split_counts")},
        "training": {k: run_config.get(k) for k in TRAINING_KEYS},
        "validation_metrics_float": headline(val, extra=("best_epoch",)) if val else None,
        "precision": precision,
        "gate": None,
    }
    if PRECISION_TABLE[precision].keeps_float:
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
            "failures": list(figures["gate_failures"]),
        }
    return card | read_json(run_dir / "card_extra.json") | dict(extra or {})

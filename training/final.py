"""``leukedge train final``: the shipped model, fitted on every image with a recipe that a
blocked cross-validation chose (issue 18, "fit the shipped model on everything").

A cross-validation (:mod:`leukedge.training.crossval`) estimates how a recipe does on
patients it has not seen; the model a lab runs should then learn from every patient the
project has. This command reads a finished ``train crossval`` folder and:

1. fits its head (the ``linear`` head: standardised logistic regression on the pooled
   1,280-d EfficientNet-Lite0 embedding of the clean images and their augmentation views)
   on **all** images, from the same feature cache;
2. folds the standardisation into one Dense layer and writes a Keras model
   (``lite0-linear``: input normalisation → ImageNet EfficientNet-Lite0 → global average
   pooling ``head_gap`` → Dense softmax) that the converter turns into a ``.tflite``; the
   Keras model's p(ALL) is checked against the fitted head on the cached embeddings;
3. writes what the converter reads from a run folder: ``config.json``, ``split.csv``
   (``train`` = every block but one, ``val`` = the held block, default the latest, for the
   out-of-domain threshold and the conversion gate; ``train_views`` / ``val_views`` = their
   augmentation views, saved as PNG under ``views/``, so that the out-of-domain model
   counts camera nuisances as in-domain), ``calibration.json`` (the temperature fitted on
   the cross-validation's **out-of-fold** outputs), ``oof.csv`` (those outputs, by file
   name: the converter fits the operating point and refer band on them) and
   ``card_extra.json`` (the cross-validated figures, the expected performance on new
   patients, which the model card carries).

Every threshold is therefore fitted on outputs of models that did not train on the image
scored, and the shipped weights saw every image: the card says both.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leukedge.checks.calibration import apply_temperature
from leukedge.checks.decision import fit_decision
from leukedge.evaluation import crossval as cv
from leukedge.evaluation.data import LABELS, Sample, load_dataset, write_split
from leukedge.training.calibration import fit_temperature
from leukedge.training.crossval import CrossValConfig, linear_pipeline
from leukedge.training.features import (
    FRONTS,
    FeatureCache,
    FrontConfig,
    View,
    augment_views,
    view_image,
)

log = logging.getLogger(__name__)

__all__ = ["CrossValFolderError", "FinalConfig", "fold_linear_head", "read_crossval", "run_final"]

ARCH = "lite0-linear"
"""The architecture row of the shipped linear model
(:data:`leukedge.modeling.architectures.ARCHITECTURE_TABLE`)."""


@dataclass
class FinalConfig:
    """Settings of one final fit (saved in ``final.json``).

    Attributes:
        crossval: a finished ``leukedge train crossval`` folder (its ``crossval.json``,
            ``folds.csv`` and ``oof_kfold.csv`` are read; its recipe is used as is).
        out: the run folder written (must not hold a ``model.keras``).
        data: the dataset (default: the cross-validation's).
        cache: the feature cache (default: the cross-validation's).
        threshold_fold: the block left out of the out-of-domain fit to place its threshold
            on, and whose images the conversion gate compares float and int8 on; ``-1``:
            the latest block (closest to the next patients).
        threads: interpreter threads of the feature front.
    """

    crossval: str
    out: str
    data: str | None = None
    cache: str | None = None
    threshold_fold: int = -1
    threads: int = 2


def fold_linear_head(pipeline, labels=LABELS) -> tuple[np.ndarray, np.ndarray]:
    """A fitted affine pipeline (``StandardScaler`` → optional ``PCA`` →
    ``LogisticRegression``) as one Dense softmax layer.

    The pipeline's logit for p(ALL), ``z = w·x + b`` (every step is affine), becomes the two-class
    logits ``(z/2, −z/2)`` (ALL, HEM order of ``labels``): ``softmax`` of those is
    ``(sigmoid(z), 1 − sigmoid(z))``, the same probabilities.

    Args:
        pipeline: scikit-learn pipeline from :func:`~leukedge.training.crossval.linear_pipeline`
            fitted with target 1 = ALL.
        labels: output order; must be ``("ALL", "HEM")`` in some order.

    Returns:
        ``(kernel (D, 2) float32, bias (2,) float32)``.

    Raises:
        ValueError: labels other than ALL and HEM.
    """
    if sorted(labels) != ["ALL", "HEM"]:
        raise ValueError(f"the linear head folds a two-class ALL/HEM model, got {labels}")
    # Every step is affine, so the logit is w·x + b exactly: read b at x = 0 and each w_i
    # at the unit vector e_i (float64; no step's internals are needed, PCA included).
    dim = int(pipeline[0].n_features_in_)
    probes = np.vstack([np.zeros((1, dim)), np.eye(dim)])
    logit = pipeline.decision_function(probes)  # log-odds of classes_[1]
    sign = 1.0 if list(pipeline[-1].classes_).index(1) == 1 else -1.0
    b = sign * float(logit[0])
    w = sign * (logit[1:] - logit[0])
    half = 0.5 if list(labels).index("ALL") == 0 else -0.5
    kernel = np.stack([half * w, -half * w], axis=1).astype(np.float32)
    bias = np.array([half * b, -half * b], dtype=np.float32)
    return kernel, bias


def _read_oof(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _check_folds(folds_csv: Path, names: list[str], fold_of: np.ndarray) -> None:
    with open(folds_csv, newline="") as handle:
        saved = {row["name"]: int(row["fold"]) for row in csv.DictReader(handle)}
    now = dict(zip(names, (int(f) for f in fold_of), strict=True))
    if saved != now:
        raise ValueError(
            f"{folds_csv}: the dataset's blocks differ from the cross-validation's "
            f"({len(set(saved.items()) ^ set(now.items()))} differences); rerun train crossval"
        )


class CrossValFolderError(ValueError):
    """``train final`` was given a folder that is not a finished ``train crossval`` of the
    linear head (a usage error: ``leukedge train final`` exits 2)."""


REQUIRED_FILES = ("crossval.json", "folds.csv", "oof_kfold.csv", "kfold.json")
"""The files of a finished ``train crossval`` that ``train final`` reads."""


def read_crossval(source: Path) -> CrossValConfig:
    """The settings of the finished cross-validation in ``source``.

    Raises:
        CrossValFolderError: a required file is missing, ``crossval.json`` is not its
            settings, or the head is not ``linear`` (the paper's head is trained end to end
            by ``leukedge train``); the message names the file.
    """
    missing = [name for name in REQUIRED_FILES if not (source / name).is_file()]
    if missing:
        raise CrossValFolderError(
            f"{source}: not a finished train crossval folder (no {', '.join(missing)})"
        )
    try:
        settings = dict(json.loads((source / "crossval.json").read_text())["config"])
        settings.pop("head_config", None)
        cv_config = CrossValConfig(
            **{k: v for k, v in settings.items() if k in CrossValConfig.__dataclass_fields__}
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CrossValFolderError(
            f"{source}/crossval.json: not the settings of a finished train crossval "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if cv_config.head != "linear":
        raise CrossValFolderError(
            f"{source}: train final fits the linear head; a {cv_config.head!r} head is "
            "trained end to end by `leukedge train`"
        )
    return cv_config


def run_final(config: FinalConfig) -> dict[str, Any]:
    """Fit the cross-validated recipe on every image and write the run folder (see the
    module docstring).

    Returns:
        ``final.json``'s dictionary.

    Raises:
        FileExistsError: ``out`` already holds a model.
        CrossValFolderError: not a finished cross-validation of the linear head
            (:func:`read_crossval`).
        ValueError: the dataset no longer matches the cross-validation's blocks.
    """
    started = time.perf_counter()
    source = Path(config.crossval)
    out = Path(config.out)
    if (out / "model.keras").exists():
        raise FileExistsError(f"{out}/model.keras exists; choose a new --out")
    cv_config = read_crossval(source)

    import keras  # after the checks: a bad folder is refused without TensorFlow's start-up

    from leukedge.modeling.models import build_model

    data = config.data or cv_config.data
    cache_root = config.cache or cv_config.cache

    samples = load_dataset(data)
    folds = cv.blocked_folds(samples, cv_config.k, cv_config.strategy, cv_config.seed)
    order = [s for fold in folds for s in fold]
    fold_of = np.array([j for j, fold in enumerate(folds) for _ in fold])
    names = [Path(s.path).name for s in order]
    _check_folds(source / "folds.csv", names, fold_of)
    y = np.array([LABELS.index(s.label) for s in order])
    held = config.threshold_fold % cv_config.k
    out.mkdir(parents=True, exist_ok=True)

    # 1. the head on every image and view
    t = time.perf_counter()
    cache = FeatureCache(cache_root, FrontConfig(norm=cv_config.front, keep="map"), config.threads)
    aug = augment_views(cv_config.augment_views)
    views = [View("clean"), *aug]
    pooled = [cache.features(order, v).astype(np.float32).mean(axis=(1, 2)) for v in views]
    x = np.concatenate(pooled).astype(np.float64)
    target = np.tile((y == LABELS.index("ALL")).astype(int), len(views))
    pipeline = linear_pipeline(cv_config.linear_c, cv_config.linear_pca).fit(x, target)
    kernel, bias = fold_linear_head(pipeline)
    fit_seconds = time.perf_counter() - t

    # 2. the Keras model, checked against the fitted head
    model = build_model(ARCH, 2, 224, "imagenet", input_norm=FRONTS[cv_config.front])
    model.get_layer("predictions").set_weights([kernel, bias])
    p_head = pipeline.predict_proba(pooled[0].astype(np.float64))[:, 1]
    folded = pooled[0] @ kernel + bias
    p_folded = np.exp(folded[:, 0]) / np.exp(folded).sum(axis=1)
    check_rows = np.linspace(0, len(order) - 1, 16).astype(int)
    from leukedge.engine.preprocess import load_and_resize

    batch = np.stack([load_and_resize(order[i].path, (224, 224)) for i in check_rows])
    p_keras = np.asarray(model.predict(batch.astype(np.float32), verbose=0))[:, 0]
    checks = {
        "folded_vs_head_max_abs": float(np.max(np.abs(p_folded - p_head))),
        "keras_vs_head_max_abs": float(np.max(np.abs(p_keras - p_head[check_rows]))),
        "keras_images_checked": len(check_rows),
    }
    if checks["folded_vs_head_max_abs"] > 1e-4 or checks["keras_vs_head_max_abs"] > 0.02:
        raise RuntimeError(f"the Keras model does not reproduce the fitted head: {checks}")
    model.save(out / "model.keras")

    # 3. thresholds from the out-of-fold outputs
    oof = _read_oof(source / "oof_kfold.csv")
    by_name = {row["name"]: row for row in oof}
    missing = [n for n in names if n not in by_name]
    if missing or len(by_name) != len(names):
        raise ValueError(
            f"{source}/oof_kfold.csv does not score every image once "
            f"({len(missing)} missing, {len(oof)} rows for {len(names)} images)"
        )
    p_oof = np.array([float(by_name[n]["p_all"]) for n in names])
    is_all = y == LABELS.index("ALL")
    probs = np.stack([p_oof, 1.0 - p_oof], axis=1)
    temperature = fit_temperature((~is_all).astype(int), probs)
    decision = fit_decision(
        apply_temperature(probs, temperature)[:, 0],
        is_all,
        "ALL",
        cv_config.target_sensitivity,
        cv_config.coverage,
        source="out-of-fold outputs",
    )
    with open(out / "oof.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "label", "fold", "p_all"])
        for n, s, f, p in zip(names, order, fold_of, p_oof, strict=True):
            writer.writerow([n, s.label, int(f), f"{p:.6g}"])
    (out / "calibration.json").write_text(
        json.dumps(
            {
                "temperature": temperature,
                "source": f"out-of-fold outputs of {cv_config.k}-fold blocked cross-validation "
                f"({len(names)} images, {source.name})",
            },
            indent=2,
        )
    )

    # 4. the split the converter reads, with the augmentation views as PNG files
    t = time.perf_counter()
    from PIL import Image

    split: dict[str, list] = {"train": [], "val": [], "train_views": [], "val_views": []}
    for sample, f in zip(order, fold_of, strict=True):
        split["val" if f == held else "train"].append(sample)
    for view in aug:
        folder = out / "views" / view.name
        folder.mkdir(parents=True, exist_ok=True)
        for sample, f in zip(order, fold_of, strict=True):
            target_path = folder / (Path(sample.path).stem + ".png")
            if not target_path.is_file():
                rgb = view_image(
                    load_and_resize(sample.path, (224, 224)), view, cache.sha(sample.path)
                )
                tmp = target_path.with_name(target_path.stem + ".partial.png")
                Image.fromarray(rgb).save(tmp)
                os.replace(tmp, target_path)
            split["val_views" if f == held else "train_views"].append(
                Sample(target_path.resolve(), sample.label, sample.subject, sample.group)
            )
    write_split(out / "split.csv", split)
    views_seconds = time.perf_counter() - t

    kfold = json.loads((source / "kfold.json").read_text())
    forward_path = source / "forward.json"
    forward = json.loads(forward_path.read_text()) if forward_path.is_file() else None
    n_all, n_hem = int(is_all.sum()), int((~is_all).sum())
    card_extra = {
        "fitted_on": {
            "images": len(order),
            "ALL": n_all,
            "HEM": n_hem,
            "augmentation_views": cv_config.augment_views,
            "note": "the shipped weights were fitted on every image of the dataset; the "
            "figures under expected_performance are the blocked cross-validation's, each "
            "image scored by a model that did not see its block",
        },
        "recipe": {
            "head": "linear (standardised logistic regression, balanced classes)",
            "linear_c": cv_config.linear_c,
            "linear_pca": cv_config.linear_pca,
            "input_norm": cv_config.front,
            "backbone": "EfficientNet-Lite0, ImageNet weights, frozen",
            "augment_views": cv_config.augment_views,
        },
        "thresholds_from": {
            "temperature": "out-of-fold outputs (all images)",
            "operating_point": "out-of-fold outputs (all images)",
            "out_of_domain": f"fitted on blocks other than {held}, threshold on block {held} "
            "(clean images and augmentation views)",
        },
        "expected_performance": {
            "protocol": f"blocked cross-validation by file number, k={cv_config.k}, "
            "thresholds fixed before each block is scored",
            "crossval": source.name,
            "kfold": {k: kfold[k] for k in ("mean", "worst", "pooled_auc") if k in kfold},
            "forward": (
                {k: forward[k] for k in ("mean", "worst", "pooled_auc") if k in forward}
                if forward
                else None
            ),
        },
    }
    (out / "card_extra.json").write_text(json.dumps(card_extra, indent=2, default=float))
    run_config = {
        "arch": ARCH,
        "data": data,
        "labels": list(LABELS),
        "input_kind": "field",
        "image_size": 224,
        "input_norm": cv_config.front,
        "weights": "imagenet",
        "class_weights": "balanced",
        "seed": cv_config.seed,
        "split": "all",
        "split_note": f"every image fitted; the out-of-domain threshold and the conversion "
        f"gate on block {held}",
        "split_counts": {
            k: dict(sorted(Counter(s.label for s in v).items())) for k, v in split.items()
        },
        "head": "linear",
        "linear_c": cv_config.linear_c,
        "linear_pca": cv_config.linear_pca,
        "augment_views": cv_config.augment_views,
        "crossval": str(source),
    }
    (out / "config.json").write_text(json.dumps(run_config, indent=2))
    report = {
        "config": asdict(config),
        "n": len(order),
        "held_block": held,
        "temperature": temperature,
        "decision": {"threshold": decision.threshold, "refer_band": decision.refer_band},
        "checks": checks,
        "timings_s": {
            "fit": round(fit_seconds, 1),
            "views": round(views_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "feature_images_per_s": cache.stats,
    }
    (out / "final.json").write_text(json.dumps(report, indent=2, default=float))
    keras.backend.clear_session()
    return report

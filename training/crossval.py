"""``leukedge train crossval``: blocked cross-validation of a head on cached front outputs.

The frozen front (input normalisation + ImageNet EfficientNet-Lite0) runs once per image
and view (:mod:`leukedge.training.features`); each fold fits only the head:

- ``proposed``: the paper's head (section IV.F) on the 7×7 tokens: multi-head
  self-attention with a residual connection and layer normalisation, average pooling,
  Dense 256 / 128 with BatchNorm, LeakyReLU and Dropout 0.5 / 0.3, softmax; categorical
  cross-entropy, Adam, balanced class weights, a fixed number of epochs (no epoch is
  picked on a scored block). With augmentation views, each epoch draws one view per
  image (clean or ``aug<i>``).
- ``linear``: standardised logistic regression on the pooled 1,280-d embedding
  (scikit-learn, ``C``, balanced classes; the issue's probe), fitted on every view.

Folds and the figures are :mod:`leukedge.evaluation.crossval`'s. For each scored fold the
temperature, the operating point (sensitivity ≥ 0.98) and the refer band are fitted on
outputs it did not shape (see :class:`~leukedge.evaluation.crossval.FoldPlan`), and the
out-of-domain model (:mod:`leukedge.checks.ood`) is fitted on the training folds' pooled
embeddings (clean and augmented views) with its threshold on a training fold left out of
that fit. Flip rates and extra refusals come from the cached perturbation views.

Writes into ``out``: ``folds.csv`` (file name → fold), ``oof_kfold.csv`` and
``oof_forward.csv`` (one row per scored image, by file name), ``kfold.{csv,md,json}`` and
``forward.{csv,md,json}`` (per-fold figures, mean and worst fold), ``crossval.json`` (the
settings, timings, feature images/s, both summaries) and ``report.md``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from leukedge.checks.calibration import apply_temperature
from leukedge.checks.decision import DEFAULT_COVERAGE, DEFAULT_TARGET_SENSITIVITY, fit_decision
from leukedge.checks.ood import (
    DEFAULT_ACCEPT_QUANTILE,
    MahalanobisScorer,
    fit_mahalanobis,
    set_threshold,
)
from leukedge.evaluation import crossval as cv
from leukedge.evaluation.data import LABELS, load_dataset
from leukedge.modeling.config import HeadConfig
from leukedge.training.calibration import fit_temperature
from leukedge.training.features import (
    FRONTS,
    PERTURBATION_VIEWS,
    FeatureCache,
    FrontConfig,
    View,
    augment_views,
)

log = logging.getLogger(__name__)

HeadKind = Literal["proposed", "linear"]
"""Which head a cross-validation fits."""


@dataclass
class CrossValConfig:
    """Settings of one blocked cross-validation (saved in ``crossval.json``).

    Attributes:
        data: dataset folder or CSV (:func:`~leukedge.evaluation.data.load_dataset`).
        out: output folder (created; an existing ``crossval.json`` there is an error).
        k: folds (≥ 5 for the issue's figures; ≥ 3 accepted).
        strategy: ``auto`` (subject where every file name has one), ``blocks``, ``subject``.
        head: ``proposed`` (the paper's attention head, default) or ``linear``.
        front: the input normalisation before the backbone (a key of
            :data:`~leukedge.training.features.FRONTS`: ``std``, ``blur-std`` (v2), ``none``).
        augment_views: seeded camera-recipe augmentation views used in training (0 = clean
            only).
        linear_c: inverse L2 strength of the linear head (0.01: the issue's probe).
        train_perturbations: perturbation views (:data:`PERTURBATION_VIEWS`) the head also
            trains on, for the training folds' images only (a scored fold's views never
            train its model); the flip rates then say whether the head learnt to ignore
            those nuisances on images it has not seen.
        linear_pca: keep only this many principal components of the standardised
            embedding before the linear head (0: all 1,280). Low-variance directions carry
            the sensor noise, JPEG artefacts and int8 rounding that flip a linear head's
            calls; a measured option (issue 18, "recipe work").
        epochs: epochs of the proposed head.
        lr: Adam learning rate of the proposed head (3e-4, the camera recipe's).
        batch_size: images per step of the proposed head.
        head_config: the proposed head's widths and dropout
            (:class:`~leukedge.modeling.config.HeadConfig`).
        perturbations: views scored for flip rates and extra refusals (``none``: no
            view; the flip columns are then left out).
        ood: fit and apply the out-of-domain check in each fold.
        ood_augment_views: augmentation views added to the out-of-domain fit (camera
            nuisances are in-domain); at most the views computed.
        ood_threshold_views: also place the out-of-domain threshold (97 % accepted) on
            the held-out fold's augmentation views, not only its clean images (issue 18,
            "camera nuisances are in-domain"; off: clean images only, the first rounds).
        target_sensitivity: sensitivity the operating point must reach on the calibration
            outputs (0.98).
        coverage: fraction of the calibration outputs that must keep a call with the band.
        schemes: ``kfold`` and/or ``forward``.
        cache: feature cache folder.
        only_folds: score only these folds (empty: all). A quick look at one block:
            folds whose calibration outputs are missing get AUC only, and the mean and
            worst fold are over the folds scored.
        seed: seed of the head's initialisation, shuffling and dropout.
        threads: interpreter threads of the feature front.
    """

    data: str
    out: str
    k: int = 5
    strategy: cv.FoldStrategy = "auto"
    head: HeadKind = "proposed"
    front: str = "std"
    augment_views: int = 0
    linear_c: float = 0.01
    linear_pca: int = 0
    train_perturbations: Sequence[str] = ()
    epochs: int = 6
    lr: float = 3e-4
    batch_size: int = 32
    head_config: HeadConfig = field(default_factory=HeadConfig)
    perturbations: Sequence[str] = tuple(PERTURBATION_VIEWS)
    ood: bool = True
    ood_augment_views: int = 2
    ood_threshold_views: bool = False
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    coverage: float = DEFAULT_COVERAGE
    schemes: Sequence[str] = ("kfold", "forward")
    cache: str = "runs/feature-cache"
    only_folds: Sequence[int] = ()
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        """Check every setting before anything runs.

        Raises:
            ValueError: a setting out of range, naming it.
        """
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 3:
            raise ValueError(f"k must be an integer >= 3, got {self.k!r}")
        if self.head not in ("proposed", "linear"):
            raise ValueError(f"head must be proposed or linear, got {self.head!r}")
        if self.front not in FRONTS:
            raise ValueError(f"unknown front {self.front!r}; choose {sorted(FRONTS)}")
        if tuple(self.perturbations) == ("none",):  # the command line's way to say none
            self.perturbations = ()
        self.perturbations = tuple(self.perturbations)
        self.train_perturbations = tuple(self.train_perturbations)
        unknown_train = set(self.train_perturbations) - set(PERTURBATION_VIEWS)
        if unknown_train:
            raise ValueError(
                f"unknown train_perturbations {sorted(unknown_train)}; "
                f"choose {list(PERTURBATION_VIEWS)}"
            )
        self.schemes = tuple(self.schemes)
        self.only_folds = tuple(int(f) for f in self.only_folds)
        if any(not 0 <= f < self.k for f in self.only_folds):
            raise ValueError(f"only_folds must be fold numbers below k={self.k}: {self.only_folds}")
        unknown = set(self.perturbations) - set(PERTURBATION_VIEWS)
        if unknown:
            raise ValueError(
                f"unknown perturbations {sorted(unknown)}; choose {list(PERTURBATION_VIEWS)}"
            )
        if set(self.schemes) - {"kfold", "forward"} or not self.schemes:
            raise ValueError(f"schemes must be kfold and/or forward, got {self.schemes!r}")
        for name in ("augment_views", "ood_augment_views", "epochs", "batch_size", "linear_pca"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (1 if name in ("epochs", "batch_size") else 0)
            ):
                raise ValueError(f"{name} out of range: {value!r}")
        for name in ("linear_c", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------- heads


def build_head(n_tokens: int, channels: int, head: HeadConfig, num_classes: int = 2):
    """The proposed head alone, on ``(batch, n_tokens, channels)`` tokens; its layers carry
    the names :func:`leukedge.modeling.models.build_model` gives them, so its weights load
    into the full model by name."""
    import keras
    from keras import layers

    from leukedge.modeling.models import attention_head

    tokens = keras.Input((n_tokens, channels), name="attention_tokens")
    x = attention_head(tokens, head)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(
        x
    )
    return keras.Model(tokens, outputs, name="proposed_head")


def _token_batches(views: list[np.ndarray], rows: np.ndarray, y: np.ndarray, batch: int, seed: int):
    """A ``keras.utils.PyDataset`` of ``(tokens float32 (b, h·w, c), one-hot (b, 2))`` over
    ``rows``; each epoch reshuffles and draws one view per image, both from
    ``(seed, epoch)``."""
    import keras

    class TokenBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.reset(0)

        def reset(self, epoch: int) -> None:
            rng = np.random.default_rng((seed, epoch))
            self.order = rows[rng.permutation(len(rows))]
            self.choice = rng.integers(len(views), size=len(rows))

        def __len__(self) -> int:
            return int(np.ceil(len(rows) / batch))

        def __getitem__(self, i: int):
            idx = self.order[i * batch : (i + 1) * batch]
            pick = self.choice[i * batch : (i + 1) * batch]
            x = np.stack([views[v][r] for r, v in zip(idx, pick, strict=True)]).astype(np.float32)
            x = x.reshape(len(idx), -1, x.shape[-1])
            onehot = np.zeros((len(idx), 2), np.float32)
            onehot[np.arange(len(idx)), y[idx]] = 1.0
            return x, onehot

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.reset(self.epoch)

    return TokenBatches()


def fit_proposed(
    train_views: list[np.ndarray], rows: np.ndarray, y: np.ndarray, config: CrossValConfig
):
    """Fit the proposed head on ``rows`` of the map views; returns ``predict(maps) → p(ALL)``.

    ``y``: class index per dataset row (0 = ALL, :data:`LABELS` order)."""
    import keras

    keras.utils.set_random_seed(config.seed)
    h, w, c = train_views[0].shape[1:]
    model = build_head(h * w, c, config.head_config)
    model.compile(optimizer=keras.optimizers.Adam(config.lr), loss="categorical_crossentropy")
    counts = np.bincount(y[rows], minlength=2)
    weights = {i: len(rows) / (2 * counts[i]) for i in range(2) if counts[i]}
    data = _token_batches(train_views, rows, y, config.batch_size, config.seed)
    model.fit(data, epochs=config.epochs, class_weight=weights, verbose=0, shuffle=False)

    def predict(maps: np.ndarray) -> np.ndarray:
        tokens = np.asarray(maps, dtype=np.float32).reshape(len(maps), h * w, c)
        return model.predict(tokens, batch_size=128, verbose=0)[:, LABELS.index("ALL")]

    return predict


def linear_pipeline(c: float, pca: int = 0):
    """The linear head, unfitted: ``StandardScaler`` → (``PCA(pca)`` when ``pca`` > 0) →
    ``LogisticRegression`` (L2, inverse strength ``c``, balanced class weights, lbfgs up to
    3,000 iterations); scikit-learn. Every step is affine, so the fitted pipeline is one
    Dense layer (:func:`leukedge.training.final.fold_linear_head`)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [StandardScaler()]
    if pca:
        steps.append(PCA(n_components=pca, random_state=0))
    steps.append(LogisticRegression(C=c, class_weight="balanced", max_iter=3000))
    return make_pipeline(*steps)


def fit_linear(
    train_views: list[np.ndarray], rows: np.ndarray, y: np.ndarray, config: CrossValConfig
):
    """Standardised logistic regression (``C``, balanced) on the pooled embeddings of every
    view of ``rows``; returns ``predict(pooled) → p(ALL)``."""
    x = np.concatenate([v[rows] for v in train_views]).astype(np.float64)
    target = np.tile((y[rows] == LABELS.index("ALL")).astype(int), len(train_views))
    model = linear_pipeline(config.linear_c, config.linear_pca).fit(x, target)
    column = list(model.classes_).index(1)

    def predict(pooled: np.ndarray) -> np.ndarray:
        return model.predict_proba(np.asarray(pooled, dtype=np.float64))[:, column]

    return predict


# ----------------------------------------------------------------------------- thresholds


def fold_thresholds(
    p_all: np.ndarray, is_all: np.ndarray, config: CrossValConfig
) -> dict[str, Any]:
    """Temperature, operating point and refer band fitted on calibration outputs.

    Args:
        p_all: ``(n,)`` raw p(ALL) of the calibration images (never the scored fold's).
        is_all: ``(n,)`` truth.

    Returns:
        ``{"temperature", "threshold", "refer_band"}``.
    """
    probs = np.stack([p_all, 1.0 - p_all], axis=1)
    temperature = fit_temperature((~is_all).astype(int), probs)
    calibrated = apply_temperature(probs, temperature)[:, 0]
    decision = fit_decision(calibrated, is_all, "ALL", config.target_sensitivity, config.coverage)
    return {
        "temperature": temperature,
        "threshold": decision.threshold,
        "refer_band": list(decision.refer_band) if decision.refer_band else None,
    }


def _calibrated(p_all: np.ndarray, temperature: float) -> np.ndarray:
    return apply_temperature(np.stack([p_all, 1.0 - p_all], axis=1), temperature)[:, 0]


# ----------------------------------------------------------------------------- the run


def run_crossval(config: CrossValConfig) -> dict[str, Any]:
    """Run the blocked cross-validation and write its files (see the module docstring).

    Returns:
        ``crossval.json``'s dictionary.

    Raises:
        FileExistsError: ``out`` holds a finished cross-validation.
        DatasetError / ValueError: the data cannot make the folds.
    """
    out = Path(config.out)
    if (out / "crossval.json").exists():
        raise FileExistsError(f"{out}/crossval.json exists; choose a new --out")
    started = time.perf_counter()
    samples = load_dataset(config.data)
    folds = cv.blocked_folds(samples, config.k, config.strategy, config.seed)
    out.mkdir(parents=True, exist_ok=True)
    order = [s for fold in folds for s in fold]
    fold_of = np.array([j for j, fold in enumerate(folds) for _ in fold])
    names = [Path(s.path).name for s in order]
    y = np.array([LABELS.index(s.label) for s in order])
    is_all = y == LABELS.index("ALL")
    cv.write_csv(
        out / "folds.csv",
        [
            {
                "name": n,
                "path": str(s.path),
                "label": s.label,
                "group": s.group,
                "subject": s.subject or "",
                "fold": int(f),
            }
            for n, s, f in zip(names, order, fold_of, strict=True)
        ],
        ("name", "path", "label", "group", "subject", "fold"),
    )

    keep = "map" if config.head == "proposed" else "pooled"
    timings: dict[str, float] = {}
    t = time.perf_counter()
    maps = FeatureCache(config.cache, FrontConfig(norm=config.front, keep="map"), config.threads)
    n_aug = max(config.augment_views, config.ood_augment_views if config.ood else 0)
    aug = augment_views(n_aug)

    def features(view: View, pooled: bool) -> np.ndarray:
        # Map views are the cache's unit; the pooled embedding is their mean.
        array = maps.features(order, view)
        return array.astype(np.float32).mean(axis=(1, 2)) if pooled else array

    clean = features(View("clean"), keep == "pooled")
    pooled_clean = clean if keep == "pooled" else clean.astype(np.float32).mean(axis=(1, 2))
    train_views = [clean] + [features(v, keep == "pooled") for v in aug[: config.augment_views]]
    ood_views = [pooled_clean]
    for i in range(config.ood_augment_views if config.ood else 0):
        if i < config.augment_views:  # already loaded for training
            view = train_views[i + 1]
            ood_views.append(
                view if keep == "pooled" else view.astype(np.float32).mean(axis=(1, 2))
            )
        else:
            ood_views.append(features(aug[i], True))
    perturbed = {name: features(View(name), keep == "pooled") for name in config.perturbations}
    perturbed_pooled = {
        name: v if keep == "pooled" else v.astype(np.float32).mean(axis=(1, 2))
        for name, v in perturbed.items()
    }
    for name in config.train_perturbations:  # scored folds' views never train: rows split
        train_views.append(
            perturbed[name] if name in perturbed else features(View(name), keep == "pooled")
        )
    timings["features"] = round(time.perf_counter() - t, 1)
    fit = fit_proposed if config.head == "proposed" else fit_linear

    results: dict[str, Any] = {}
    for scheme in config.schemes:
        plans = cv.kfold_plan(config.k) if scheme == "kfold" else cv.forward_plan(config.k)
        if config.only_folds:
            plans = [plan for plan in plans if plan.fold in config.only_folds]
        t = time.perf_counter()
        p_clean = np.full(len(order), np.nan)
        p_views = {name: np.full(len(order), np.nan) for name in perturbed}
        for plan in plans:
            rows = np.flatnonzero(np.isin(fold_of, plan.train))
            scored = np.flatnonzero(fold_of == plan.fold)
            assert not np.isin(fold_of[rows], [plan.fold]).any()
            predict = fit(train_views, rows, y, config)
            p_clean[scored] = predict(clean[scored])
            for name, view in perturbed.items():
                p_views[name][scored] = predict(view[scored])
            log.info(
                "%s fold %d: fitted on folds %s (%d images), scored %d",
                scheme,
                plan.fold,
                plan.train,
                len(rows),
                len(scored),
            )
        timings[f"fit_{scheme}"] = round(time.perf_counter() - t, 1)
        inner_p: dict[int, np.ndarray] = {}
        if scheme == "forward":  # inner leave-one-block-out for each block's thresholds
            t = time.perf_counter()
            for plan in plans:
                if not plan.calibrate:
                    continue
                inner = np.full(len(order), np.nan)
                for held in plan.calibrate:
                    rows = np.flatnonzero(
                        np.isin(fold_of, [b for b in plan.calibrate if b != held])
                    )
                    assert not np.isin(fold_of[rows], [plan.fold, held]).any()
                    scored = np.flatnonzero(fold_of == held)
                    inner[scored] = fit(train_views, rows, y, config)(clean[scored])
                inner_p[plan.fold] = inner
            timings["fit_forward_inner"] = round(time.perf_counter() - t, 1)
        rows_out, oof_rows = [], []
        for plan in plans:
            scored = np.flatnonzero(fold_of == plan.fold)
            calib = np.flatnonzero(np.isin(fold_of, plan.calibrate))
            p_calib = (
                inner_p[plan.fold][calib] if scheme == "forward" and len(calib) else p_clean[calib]
            )
            row: dict[str, Any] = {
                "scheme": scheme,
                "fold": plan.fold,
                "train_folds": " ".join(map(str, plan.train)),
            }
            complete = len(calib) and not np.isnan(p_calib).any()
            if complete and is_all[calib].any() and (~is_all[calib]).any():
                fitted = fold_thresholds(p_calib, is_all[calib], config)
            else:
                fitted = None
            temperature = fitted["temperature"] if fitted else 1.0
            p_cal = _calibrated(p_clean[scored], temperature)
            ood = None
            ood_views_scored: dict[str, np.ndarray | None] = {name: None for name in perturbed}
            if config.ood and fitted and len(plan.train) >= 2:
                scorer = _fold_ood(plan, fold_of, ood_views, y, config)
                ood = scorer.distances(pooled_clean[scored]) > scorer.spec.threshold
                ood_views_scored = {
                    name: scorer.distances(v[scored]) > scorer.spec.threshold
                    for name, v in perturbed_pooled.items()
                }
            figures = cv.fold_figures(
                is_all[scored],
                p_cal,
                fitted["threshold"] if fitted else None,
                fitted["refer_band"] if fitted else None,
                ood,
                {
                    name: (_calibrated(p_views[name][scored], temperature), ood_views_scored[name])
                    for name in perturbed
                }
                if fitted
                else None,
            )
            if not fitted:  # no outputs to fit a temperature on: its ECE is not comparable
                figures["ece_uncalibrated"] = figures["ece"]
                figures["ece"] = float("nan")
            row |= figures | ({"temperature": temperature} if fitted else {})
            rows_out.append(row)
            band = fitted["refer_band"] if fitted else None
            for i, r in enumerate(scored):
                referred = band is not None and band[0] <= p_cal[i] < band[1]
                status = (
                    "out_of_domain" if ood is not None and ood[i] else "refer" if referred else "ok"
                )
                oof_rows.append(
                    {
                        "name": names[r],
                        "path": str(order[r].path),
                        "label": order[r].label,
                        "fold": plan.fold,
                        "scheme": scheme,
                        "p_all": float(p_clean[r]),
                        "p_all_calibrated": float(p_cal[i]),
                        "call": ("ALL" if p_cal[i] >= fitted["threshold"] else "HEM")
                        if fitted
                        else "",
                        "status": status if fitted else "",
                    }
                )
        oof_rows.sort(key=lambda r: r["name"])
        cv.write_csv(out / f"oof_{scheme}.csv", oof_rows, cv.OOF_COLUMNS)
        # The pooled figures: every image of the scheme, joined to its label by file name.
        truth = {names[r]: order[r].label for r in range(len(order)) if not np.isnan(p_clean[r])}
        _, pooled_truth, pooled_p = cv.join_by_file_name(
            {row["name"]: row["p_all_calibrated"] for row in oof_rows}, truth
        )
        extra = {"pooled_auc": cv.roc_auc(pooled_truth, pooled_p)}
        results[scheme] = cv.write_table(out, scheme, rows_out, extra)
    timings["total"] = round(time.perf_counter() - started, 1)
    report = {
        "config": asdict(config),
        "n": len(order),
        "fold_sizes": [len(f) for f in folds],
        "feature_cache": {"key": maps.key, "stats": maps.stats},
        "timings_s": timings,
        "summary": {
            s: {
                "mean": r["mean"],
                "worst": r["worst"],
                "latest": r["folds"][-1],
                "pooled_auc": r["pooled_auc"],
            }
            for s, r in results.items()
        },
    }
    cv.write_text(out / "crossval.json", json.dumps(report, indent=2, default=float))
    cv.write_text(out / "report.md", _report_markdown(config, results, report))
    return report


def _fold_ood(
    plan: cv.FoldPlan,
    fold_of: np.ndarray,
    ood_views: list[np.ndarray],
    y: np.ndarray,
    config: CrossValConfig,
) -> MahalanobisScorer:
    """The out-of-domain model of one scored fold: fitted on its training folds but the
    last, threshold (97 % accepted) on that last training fold's clean embeddings (and
    its augmentation views with ``config.ood_threshold_views``)."""
    held = plan.train[-1] if plan.scheme == "forward" else (plan.fold + 1) % config.k
    fit_rows = np.flatnonzero(np.isin(fold_of, [f for f in plan.train if f != held]))
    held_rows = np.flatnonzero(fold_of == held)
    x = np.concatenate([v[fit_rows] for v in ood_views])
    spec = fit_mahalanobis(x, np.tile(y[fit_rows], len(ood_views)), LABELS)
    held_x = (
        np.concatenate([v[held_rows] for v in ood_views])
        if config.ood_threshold_views
        else ood_views[0][held_rows]
    )
    spec = set_threshold(spec, held_x, DEFAULT_ACCEPT_QUANTILE, f"fold {held}")
    return MahalanobisScorer(spec)


def _report_markdown(
    config: CrossValConfig, results: dict[str, Any], report: dict[str, Any]
) -> str:
    lines = [
        f"# Blocked cross-validation: {config.head} head, front `{config.front}`, "
        f"{config.augment_views} augmentation view(s), k = {config.k}",
        "",
        f"Data: {config.data} ({report['n']} images, fold sizes {report['fold_sizes']}). "
        "Thresholds of each fold fitted before it was scored (module docstring).",
        "",
    ]
    for scheme, data in results.items():
        lines += [
            f"## {scheme}",
            "",
            cv.markdown_table(data["folds"], data),
            f"Pooled AUC {data['pooled_auc']:.4f}",
            "",
        ]
    lines += [f"Timings (s): {report['timings_s']}", ""]
    return "\n".join(lines)

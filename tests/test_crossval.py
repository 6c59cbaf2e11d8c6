"""Blocked cross-validation (issue 18): the folds, the schemes, outputs joined by file name,
the feature cache, and the whole ``leukedge train crossval`` run on a synthetic front.

The run tests replace the LiteRT front by a synthetic one (each image's feature vector
carries its own identity), so they need neither TensorFlow nor the backbone weights, and
can check that no fitted model ever scores an image it was fitted on."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukedge.evaluation import crossval as cv
from leukedge.evaluation.data import DatasetError, Sample, file_number, load_dataset


def _samples(groups: dict[str, tuple[str, int]], subjects: bool = False) -> list[Sample]:
    """``{group: (label, count)}`` → samples named ``<group>-<NNN>.jpg`` (no files)."""
    out = []
    for group, (label, n) in groups.items():
        for i in range(1, n + 1):
            subject = f"{group}{i % 4}" if subjects else None
            out.append(Sample(Path(f"/d/{group}/{group}-{i:03d}.jpg"), label, subject, group))
    return out


GROUPS = {"Benign": ("HEM", 23), "Early": ("ALL", 41), "Pre": ("ALL", 37), "Pro": ("ALL", 5)}


@pytest.mark.parametrize("k", [5, 3])
def test_blocks_are_contiguous_disjoint_and_cover_every_image(k):
    samples = _samples(GROUPS)
    folds = cv.blocked_folds(samples, k)
    names = [s.path.name for fold in folds for s in fold]
    assert Counter(names) == Counter(s.path.name for s in samples)  # every image, once
    index = cv.fold_index(folds)
    for group in GROUPS:
        numbers = sorted(
            (file_number(s.path), index[s.path.name]) for s in samples if s.group == group
        )
        fold_seq = [f for _, f in numbers]
        assert fold_seq == sorted(fold_seq)  # contiguous: fold never goes back
        assert set(fold_seq) == set(range(k))  # every fold has a block of every group
        sizes = Counter(fold_seq).values()
        assert max(sizes) - min(sizes) <= 1
    # the latest file numbers are in the last fold
    assert index["Benign-023.jpg"] == k - 1 and index["Benign-001.jpg"] == 0


def test_subject_folds_never_split_a_subject():
    samples = _samples(GROUPS, subjects=True)
    folds = cv.blocked_folds(samples, 3)  # auto: subjects known
    where: dict[str, set[int]] = {}
    for j, fold in enumerate(folds):
        for s in fold:
            where.setdefault(s.subject, set()).add(j)
    assert all(len(f) == 1 for f in where.values()), where
    assert sum(len(f) for f in folds) == len(samples)


def test_fold_errors_name_the_problem():
    with pytest.raises(ValueError, match="k must be"):
        cv.blocked_folds(_samples(GROUPS), 1)
    with pytest.raises(DatasetError, match="Pro.*fewer than k=6"):
        cv.blocked_folds(_samples(GROUPS), 6)
    twins = _samples({"A": ("ALL", 5)}) + [Sample(Path("/e/A-001.jpg"), "ALL", None, "B")]
    with pytest.raises(DatasetError, match="share the file name"):
        cv.blocked_folds(twins, 3)
    with pytest.raises(DatasetError, match="in folds 0 and 1"):
        cv.fold_index([[twins[0]], [twins[0]]])


@pytest.mark.parametrize("k", [3, 5, 7])
def test_schemes_never_score_a_block_they_trained_or_calibrated_on(k):
    kfold = cv.kfold_plan(k)
    assert sorted(p.fold for p in kfold) == list(range(k))  # each fold scored once
    for plan in kfold:
        assert plan.fold not in plan.train and plan.fold not in plan.calibrate
        assert set(plan.train) | {plan.fold} == set(range(k))
    forward = cv.forward_plan(k)
    assert [p.fold for p in forward] == list(range(1, k))
    for plan in forward:
        assert all(b < plan.fold for b in plan.train + plan.calibrate)
        assert plan.train == tuple(range(plan.fold))


def test_outputs_join_labels_by_file_name_and_refuse_gaps():
    names, is_all, p = cv.join_by_file_name(
        {"b.jpg": 0.2, "a.jpg": 0.9}, {"a.jpg": "ALL", "b.jpg": "HEM"}
    )
    assert names == ["a.jpg", "b.jpg"] and list(is_all) == [True, False] and list(p) == [0.9, 0.2]
    with pytest.raises(ValueError, match="1 labelled files without prediction"):
        cv.join_by_file_name({"a.jpg": 0.9}, {"a.jpg": "ALL", "b.jpg": "HEM"})
    with pytest.raises(ValueError, match="1 predictions without label"):
        cv.join_by_file_name({"a.jpg": 0.9, "c.jpg": 0.1}, {"a.jpg": "ALL"})


def test_fold_figures_and_worst_fold():
    is_all = np.array([True] * 8 + [False] * 5)
    p = np.array([0.9] * 7 + [0.3] + [0.1, 0.2, 0.6, 0.45, 0.7])
    perturbed = p.copy()
    perturbed[0] = 0.55  # an ALL field moves into the band: an extra refusal, same call
    perturbed[-1] = 0.3  # the benign field called ALL now called HEM: a flip
    figures = cv.fold_figures(is_all, p, 0.5, (0.4, 0.62), None, {"jpeg": (perturbed, None)})
    assert figures["sensitivity"] == 7 / 8 and figures["specificity"] == 3 / 5
    assert figures["refusal_rate"] == 2 / 13  # 0.6 and 0.45 are in the band
    assert figures["hem_called_all_ok"] == 1 / 5  # 0.7 (0.6 is called ALL but referred)
    assert figures["all_called_hem_ok"] == 1 / 8
    assert figures["coverage_hem"] == 3 / 5 and figures["coverage_all"] == 1.0
    assert figures["flip_jpeg"] == 1 / 13
    assert figures["extra_refusal_jpeg"] == pytest.approx(1 / 13)
    summary = cv.summarise(
        [{"fold": 0, "specificity": 0.9, "ece": 0.01}, {"fold": 1, "specificity": 0.8, "ece": 0.03}]
    )
    assert summary["worst"] == {"specificity": 0.8, "ece": 0.03}
    assert summary["mean"]["specificity"] == pytest.approx(0.85)


# ------------------------------------------------------------------ the run, synthetic front


def _dataset(root: Path, counts=(("Benign", 30), ("Early", 40), ("Pre", 30))) -> Path:
    """A Taleqani-like tree of small images, each a distinct colour."""
    rng = np.random.default_rng(0)
    for folder, n in counts:
        (root / folder).mkdir(parents=True)
        for i in range(1, n + 1):
            name = f"WBC-{'Benign' if folder == 'Benign' else 'Malignant-' + folder}-{i:03d}.jpg"
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / name)
    return root


@pytest.fixture
def synthetic_front(monkeypatch, tmp_path):
    """Replace the cached front: a pooled 'embedding' whose first number is the image's
    identity (file-number + class code) and whose others separate the classes with noise;
    record every fit and every prediction."""
    from leukedge.training import crossval as tcv
    from leukedge.training import features

    ident: dict[str, float] = {}
    log: list[tuple[set, set]] = []

    def fake_features(self, samples, view):
        rows = []
        for s in samples:
            key = s.path.name
            ident.setdefault(key, float(len(ident) + 1))
            rng = np.random.default_rng(int(ident[key]) + 7 * len(view.name))
            signal = (1.0 if s.label == "ALL" else -1.0) + rng.normal(0, 0.7, 8)
            rows.append(np.concatenate([[ident[key]], signal]))
        array = np.array(rows, dtype=np.float32)
        self.stats[view.name] = {"computed": 0, "reused": len(samples)}
        return array[:, None, None, :]  # (n, 1, 1, d): a one-token "map"

    monkeypatch.setattr(features.FeatureCache, "features", fake_features)
    monkeypatch.setattr(features, "_weights_sha", lambda front: "synthetic")
    real_fit = tcv.fit_linear

    def recording_fit(views, rows, y, config):
        trained = {float(i) for i in views[0][rows][:, 0]}
        predict = real_fit([v[:, 1:] for v in views], rows, y, config)

        def recording_predict(x):
            log.append((trained, {float(i) for i in x[:, 0]}))
            return predict(x[:, 1:])

        return recording_predict

    monkeypatch.setattr(tcv, "fit_linear", recording_fit)
    return log


def test_crossval_scores_every_image_out_of_fold_exactly_once(
    tmp_path, synthetic_front, monkeypatch
):
    from leukedge.training import crossval as tcv
    from leukedge.training.crossval import CrossValConfig, run_crossval

    calibrated_on: list[int] = []
    real_thresholds = tcv.fold_thresholds

    def recording_thresholds(p_all, is_all, config):
        calibrated_on.append(len(p_all))
        return real_thresholds(p_all, is_all, config)

    monkeypatch.setattr(tcv, "fold_thresholds", recording_thresholds)

    data = _dataset(tmp_path / "data")
    out = tmp_path / "cv"
    report = run_crossval(
        CrossValConfig(
            data=str(data),
            out=str(out),
            k=5,
            head="linear",
            cache=str(tmp_path / "cache"),
            perturbations=("jpeg_q40",),
            ood_augment_views=1,
        )
    )
    # No model ever scored an image it was fitted on (kfold, forward and the inner folds).
    assert synthetic_front and all(not (trained & scored) for trained, scored in synthetic_front)
    # Thresholds from the other folds (kfold: 4 × 20 images) and from the blocks before the
    # scored one (forward blocks 2, 3, 4: 40, 60, 80 images), never from the scored fold.
    assert sorted(calibrated_on) == [40, 60, 80, 80, 80, 80, 80, 80]
    with open(out / "folds.csv", newline="") as handle:
        folds = {r["name"]: int(r["fold"]) for r in csv.DictReader(handle)}
    assert len(folds) == 100
    truth = {s.path.name: s.label for s in load_dataset(data)}
    for scheme, expected in (("kfold", set(range(5))), ("forward", set(range(1, 5)))):
        with open(out / f"oof_{scheme}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        names = [r["name"] for r in rows]
        assert len(names) == len(set(names))  # once
        assert {int(r["fold"]) for r in rows} == expected
        assert all(folds[r["name"]] == int(r["fold"]) for r in rows)  # its own block
        assert all(truth[r["name"]] == r["label"] for r in rows)  # joined by name
        if scheme == "kfold":
            assert set(names) == set(truth)  # every image
        table = json.loads((out / f"{scheme}.json").read_text())
        assert {"mean", "worst", "folds"} <= set(table)
        assert (out / f"{scheme}.md").read_text().count("\n| ") >= len(expected) + 2
    kfold = report["summary"]["kfold"]
    assert kfold["worst"]["specificity"] <= kfold["mean"]["specificity"]
    assert "flip_jpeg_q40" in kfold["mean"] and "ood_rate" in kfold["mean"]
    with pytest.raises(FileExistsError):
        run_crossval(CrossValConfig(data=str(data), out=str(out), head="linear"))


def test_crossval_cli_usage_errors_exit_2(tmp_path):
    from typer.testing import CliRunner

    from leukedge.cli import app

    data = _dataset(tmp_path / "data", (("Benign", 3), ("Early", 3)))
    result = CliRunner().invoke(
        app, ["train", "crossval", "--data", str(data), "--out", str(tmp_path / "o"), "--k", "2"]
    )
    assert result.exit_code == 2
    result = CliRunner().invoke(
        app,
        [
            "train",
            "crossval",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o"),
            "--front",
            "blurry",
        ],
    )
    assert result.exit_code == 2 and "unknown front" in result.output
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ the feature cache


def test_feature_cache_reuses_rows_by_image_sha(tmp_path, monkeypatch):
    from leukedge.training import features

    weights = tmp_path / "w.h5"
    weights.write_bytes(b"weights")
    calls = []

    def fake_run(self, rgb):
        calls.append(1)
        return np.full((2, 2, 4), float(rgb.mean()), dtype=np.float32)

    monkeypatch.setattr(features.FeatureCache, "_run", fake_run)
    data = _dataset(tmp_path / "data", (("Benign", 3), ("Early", 4)))
    samples = load_dataset(data)
    front = features.FrontConfig(weights=str(weights), image_size=16)
    cache = features.FeatureCache(tmp_path / "cache", front)
    first = cache.features(samples, features.View("clean"))
    assert first.shape == (7, 2, 2, 4) and first.dtype == np.float16 and len(calls) == 7
    again = features.FeatureCache(tmp_path / "cache", front).features(
        samples[::-1], features.View("clean")
    )
    assert len(calls) == 7 and np.array_equal(again, first[::-1])  # reused, in the order asked
    Image.new("RGB", (16, 16), (9, 9, 9)).save(samples[0].path)  # new content: new sha
    cache = features.FeatureCache(tmp_path / "cache", front)
    cache.features(samples, features.View("clean"))
    assert len(calls) == 8 and cache.stats["clean"]["computed"] == 1
    jpeg = cache.features(samples, features.View("jpeg_q40"))
    assert len(calls) == 15 and not np.array_equal(
        jpeg, cache.features(samples, features.View("clean"))
    )
    other = features.FeatureCache(
        tmp_path / "cache",
        features.FrontConfig(weights=str(weights), image_size=16, norm="blur-std"),
    )
    assert other.key != cache.key


def test_views_are_deterministic_per_image_content():
    from leukedge.training import features

    rgb = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    aug0, aug1 = features.augment_views(2)
    a = features.view_image(rgb, aug0, "ab" * 32)
    assert np.array_equal(a, features.view_image(rgb, aug0, "ab" * 32))
    assert not np.array_equal(a, features.view_image(rgb, aug1, "ab" * 32))
    assert a.shape == rgb.shape and a.dtype == np.uint8
    assert aug0.key != aug1.key
    with pytest.raises(ValueError, match="unknown view"):
        features.view_image(rgb, features.View("sepia"), "ab" * 32)


@pytest.mark.slow
def test_proposed_head_is_the_full_models_head_and_fits_reproducibly(tmp_path):
    pytest.importorskip("keras")
    from leukedge.modeling.config import HeadConfig
    from leukedge.modeling.models import build_model
    from leukedge.training.crossval import CrossValConfig, build_head, fit_proposed

    config = HeadConfig(attention_key_dim=8)
    full = build_model("proposed-lite", 2, 64, weights=None, head=config)
    head = build_head(4, 1280, config)  # 64 px: a 2×2×1280 map
    weighted = [layer for layer in head.layers if layer.weights]
    assert len(weighted) == 7  # attention, norm, 2 × (dense, BN), predictions
    for layer in weighted:  # same names and shapes: the weights load into the full model
        shapes = [tuple(w.shape) for w in full.get_layer(layer.name).weights]
        assert shapes == [tuple(w.shape) for w in layer.weights]
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 10)
    maps = rng.normal(0, 1, (40, 2, 2, 16)).astype(np.float16)
    maps[:, :, :, 0] += np.where(y == 0, 2.0, -2.0)[:, None, None]
    settings = CrossValConfig(data=str(tmp_path), out=str(tmp_path / "o"), epochs=2, batch_size=8)
    settings.head_config = config
    first = fit_proposed([maps], np.arange(5, 40), y, settings)(maps)
    again = fit_proposed([maps], np.arange(5, 40), y, settings)(maps)
    assert first.shape == (40,) and ((first >= 0) & (first <= 1)).all()
    np.testing.assert_allclose(first, again, atol=1e-5)  # seeded: the same head


def test_only_folds_scores_one_block_without_borrowed_thresholds(tmp_path, synthetic_front):
    from leukedge.training.crossval import CrossValConfig, run_crossval

    data = _dataset(tmp_path / "data")
    out = tmp_path / "cv"
    report = run_crossval(
        CrossValConfig(
            data=str(data),
            out=str(out),
            head="linear",
            cache=str(tmp_path / "cache"),
            perturbations=(),
            ood=False,
            schemes=("kfold",),
            only_folds=(4,),
        )
    )
    with open(out / "oof_kfold.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20 and {r["fold"] for r in rows} == {"4"}
    latest = report["summary"]["kfold"]["latest"]
    assert latest["fold"] == 4 and "auc" in latest and "specificity" not in latest
    with pytest.raises(ValueError, match="only_folds"):
        CrossValConfig(data=".", out=".", only_folds=(5,))


def test_linear_head_folds_into_one_dense_softmax_with_the_same_probabilities():
    """``train final`` ships the fitted scaler + logistic regression as one Dense softmax
    layer; its p(ALL) must be the pipeline's, in either label order."""
    from leukedge.training.crossval import linear_pipeline
    from leukedge.training.final import fold_linear_head

    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 3.0, (200, 12)) * rng.uniform(0.1, 10.0, 12)  # unscaled features
    target = (x[:, 0] / 3 + rng.normal(0, 1.0, 200) > 5 / 3).astype(int)
    for pca in (0, 5):  # with and without the principal-component step
        pipeline = linear_pipeline(0.1, pca).fit(x, target)
        p_pipeline = pipeline.predict_proba(x)[:, 1]
        for labels in (("ALL", "HEM"), ("HEM", "ALL")):
            kernel, bias = fold_linear_head(pipeline, labels)
            assert kernel.shape == (12, 2) and kernel.dtype == np.float32
            logits = x @ kernel.astype(np.float64) + bias
            softmax = np.exp(logits - logits.max(1, keepdims=True))
            softmax /= softmax.sum(1, keepdims=True)
            assert np.abs(softmax[:, labels.index("ALL")] - p_pipeline).max() < 1e-5
    with pytest.raises(ValueError, match="ALL/HEM"):
        fold_linear_head(pipeline, ("A", "B"))


def test_ood_threshold_on_views_accepts_the_held_fold_with_its_camera_views():
    """``ood_threshold_views``: the threshold is placed on the held fold's clean images and
    augmentation views together (camera nuisances in-domain), so 97 % of both together are
    within it; clean-only leaves the (farther) views mostly outside."""
    from leukedge.evaluation.crossval import FoldPlan
    from leukedge.training.crossval import CrossValConfig, _fold_ood

    rng = np.random.default_rng(0)
    n, d, k = 250, 6, 5
    fold_of = np.repeat(np.arange(k), n // k)
    y = rng.integers(0, 2, n)
    clean = rng.normal(0, 1, (n, d)) + y[:, None]
    view = clean + rng.normal(0, 1.5, (n, d))  # a camera view: farther from the clean fit
    plan = FoldPlan(scheme="kfold", fold=0, train=(1, 2, 3, 4), calibrate=(1, 2, 3, 4))
    held = np.flatnonzero(fold_of == 1)  # kfold: the fold after the scored one
    both = np.concatenate([clean[held], view[held]])
    within = {}
    for flag in (False, True):
        config = CrossValConfig(data="x", out="y", head="linear", ood_threshold_views=flag)
        scorer = _fold_ood(plan, fold_of, [clean, view], y, config)
        within[flag] = np.mean(scorer.distances(both) <= scorer.spec.threshold)
    assert within[True] >= 0.97
    assert within[False] < within[True]


def test_train_final_refuses_a_folder_that_is_not_a_finished_crossval(tmp_path):
    """`leukedge train final` on an empty folder or one whose crossval.json is not the
    settings is a usage error (exit 2) naming the file; nothing is written."""
    from typer.testing import CliRunner

    from leukedge.cli import app

    empty, broken, out = tmp_path / "empty", tmp_path / "broken", tmp_path / "out"
    empty.mkdir()
    broken.mkdir()
    for name in ("folds.csv", "oof_kfold.csv", "kfold.json"):
        (broken / name).write_text("")
    (broken / "crossval.json").write_text('{"k": 5}')
    runner = CliRunner()
    first = runner.invoke(app, ["train", "final", str(empty), "--out", str(out)])
    assert first.exit_code == 2 and "not a finished train crossval folder" in first.output
    second = runner.invoke(app, ["train", "final", str(broken), "--out", str(out)])
    assert second.exit_code == 2 and "crossval.json: not the settings" in second.output
    assert not out.exists()

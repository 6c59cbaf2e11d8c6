"""Metrics against hand-computed values; order of predictions cannot change them."""

from __future__ import annotations

import numpy as np
import pytest

from leukedge.evaluation.metrics import evaluate, expected_calibration_error

LABELS = ("ALL", "HEM")


def _fixed_case():
    # Confusion matrix (rows true ALL, HEM; columns predicted ALL, HEM) = [[8, 2], [1, 4]].
    truth, probs = {}, {}
    cells = [("ALL", "ALL", 8), ("ALL", "HEM", 2), ("HEM", "ALL", 1), ("HEM", "HEM", 4)]
    k = 0
    for true, pred, n in cells:
        for _ in range(n):
            path = f"img_{k:02d}.bmp"
            truth[path] = true
            probs[path] = [0.9, 0.1] if pred == "ALL" else [0.2, 0.8]
            k += 1
    return truth, probs


def test_metrics_match_hand_computed_values():
    truth, probs = _fixed_case()
    m = evaluate(probs, truth, LABELS)
    assert m["confusion_matrix"] == [[8, 2], [1, 4]]
    assert m["accuracy"] == pytest.approx(12 / 15)
    p_all, r_all = 8 / 9, 8 / 10
    p_hem, r_hem = 4 / 6, 4 / 5
    f1_all = 2 * p_all * r_all / (p_all + r_all)
    f1_hem = 2 * p_hem * r_hem / (p_hem + r_hem)
    assert m["per_class"]["ALL"] == pytest.approx(
        {"precision": p_all, "recall": r_all, "f1": f1_all, "support": 10}
    )
    assert m["per_class"]["HEM"]["f1"] == pytest.approx(f1_hem)
    assert m["weighted_f1"] == pytest.approx((10 * f1_all + 5 * f1_hem) / 15)
    assert m["balanced_accuracy"] == pytest.approx((r_all + r_hem) / 2)
    assert m["sensitivity"] == pytest.approx(0.8)
    assert m["specificity"] == pytest.approx(0.8)


def test_shuffled_prediction_order_changes_nothing():
    truth, probs = _fixed_case()
    reference = evaluate(probs, truth, LABELS)
    rng = np.random.default_rng(0)
    for _ in range(5):
        keys = list(probs)
        rng.shuffle(keys)
        shuffled = {k: probs[k] for k in keys}
        assert evaluate(shuffled, truth, LABELS) == reference


def test_position_join_bug_would_be_caught():
    """Predictions listed in another order than the labels (as a shuffled data generator
    yields them): paired by position they give other figures (the paper's bug); joined by
    name they give the hand-computed ones."""
    truth, probs = _fixed_case()
    keys = list(probs)
    produced = {k: probs[k] for k in keys[3:] + keys[:3]}  # the same predictions, rotated
    by_position = dict(zip(truth, produced.values(), strict=True))
    assert evaluate(by_position, truth, LABELS)["confusion_matrix"] != [[8, 2], [1, 4]]
    m = evaluate(produced, truth, LABELS)
    assert m["confusion_matrix"] == [[8, 2], [1, 4]]
    assert m == evaluate(probs, truth, LABELS)


def test_missing_or_extra_predictions_raise():
    truth, probs = _fixed_case()
    partial = dict(list(probs.items())[:-1])
    with pytest.raises(ValueError, match="1 labelled files without prediction"):
        evaluate(partial, truth, LABELS)
    with pytest.raises(ValueError, match="1 predictions without label"):
        evaluate(probs | {"other.bmp": [0.5, 0.5]}, truth, LABELS)


def test_subject_level_results():
    truth = {
        "UID_1_1_1_all.bmp": "ALL",
        "UID_1_2_1_all.bmp": "ALL",
        "UID_1_3_1_all.bmp": "ALL",
        "UID_H2_1_1_hem.bmp": "HEM",
    }
    probs = {
        "UID_1_1_1_all.bmp": [0.9, 0.1],
        "UID_1_2_1_all.bmp": [0.8, 0.2],
        "UID_1_3_1_all.bmp": [0.1, 0.9],
        "UID_H2_1_1_hem.bmp": [0.3, 0.7],
    }
    subjects = {
        "UID_1_1_1_all.bmp": "1",
        "UID_1_2_1_all.bmp": "1",
        "UID_1_3_1_all.bmp": "1",
        "UID_H2_1_1_hem.bmp": "H2",
    }
    m = evaluate(probs, truth, LABELS, subjects)
    assert m["subjects"]["1"] == {
        "cells": 3,
        "fraction_positive": pytest.approx(2 / 3),
        "majority": "ALL",
        "label": "ALL",
        "correct": True,
    }
    assert m["subjects"]["H2"]["majority"] == "HEM"


def test_expected_calibration_error_hand_values():
    y = np.array([0, 0, 1, 1])
    perfect = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(y, perfect) == pytest.approx(0.0)
    # All at confidence 0.75, half right: |0.5 - 0.75| = 0.25.
    overconfident = np.array([[0.75, 0.25], [0.25, 0.75], [0.75, 0.25], [0.25, 0.75]])
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.25)


def test_temperature_scaling_recovers_a_known_temperature():
    from leukedge.training.calibration import apply_temperature, fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 2))
    true_probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(2, p=p) for p in true_probs])
    overconfident = apply_temperature(true_probs, 1 / 2.5)  # logits × 2.5
    t = fit_temperature(y, overconfident)
    assert t == pytest.approx(2.5, rel=0.1)
    calibrated = apply_temperature(overconfident, t)
    assert np.array_equal(calibrated.argmax(1), overconfident.argmax(1))
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, overconfident)


def test_comparison_table_reads_runs(tmp_path):
    import json

    from leukedge.evaluation.report import compare_runs, comparison_markdown, metrics_markdown

    truth, probs = _fixed_case()
    m = evaluate(probs, truth, LABELS) | {"best_epoch": 2}
    for name, arch in (("a", "proposed"), ("b", "resnet50")):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics_val.json").write_text(json.dumps(m))
        (run / "config.json").write_text(json.dumps({"arch": arch}))
        (run / "history.csv").write_text("epoch,accuracy,loss\n0,0.5,1.0\n1,0.9,0.3\n")
    rows = compare_runs([tmp_path / "a", tmp_path / "b"])
    assert [r["arch"] for r in rows] == ["proposed", "resnet50"]
    assert rows[0]["train_accuracy"] == 0.9 and rows[0]["accuracy"] == pytest.approx(0.8)
    table = comparison_markdown(rows, "val")
    assert "| a | proposed | 90.00 | 80.00 |" in table and "ALL P" in table
    assert "| ALL | 8 | 2 |" in metrics_markdown(m, "t")
    with pytest.raises(FileNotFoundError, match="metrics_test.json"):
        compare_runs([tmp_path / "a"], split="test")

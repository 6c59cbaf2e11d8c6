"""Operating point and refer band: hand-checked choices on small validation sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leukedge.checks.decision import (
    DecisionSpec,
    choose_refer_band,
    choose_threshold,
    decide,
    fit_decision,
    operating_figures,
    validate_operating_point,
)
from leukedge.engine.metadata import MetadataError, ModelMetadata

# p(ALL) of four ALL and four HEM validation fields.
P = np.array([0.95, 0.9, 0.6, 0.45, 0.55, 0.4, 0.1, 0.05])
IS_ALL = np.array([True, True, True, True, False, False, False, False])


def test_threshold_is_the_highest_reaching_the_target_sensitivity():
    # 3 of 4 ALL fields needed: the third highest ALL probability is 0.6; the next lower
    # probability of any field is 0.55: the midpoint 0.575 keeps the same figures.
    assert choose_threshold(P, IS_ALL, 0.75) == pytest.approx(0.575)
    # All four: down to 0.45, midpoint with 0.4.
    assert choose_threshold(P, IS_ALL, 1.0) == pytest.approx(0.425)
    # 0.98 of 4 still needs all four.
    t = choose_threshold(P, IS_ALL, 0.98)
    assert t == pytest.approx(0.425)
    figures = operating_figures(P, IS_ALL, t, None)
    assert figures["sensitivity"] == 1.0 and figures["specificity"] == 0.75
    with pytest.raises(ValueError, match="positive"):
        choose_threshold(P, np.zeros(8, dtype=bool), 0.9)


def test_band_refers_the_two_errors_at_the_threshold():
    # At 0.5, ALL 0.45 and HEM 0.55 are wrong. Referring both keeps 6 of 8 (75 %) and makes
    # every call right; the band's edges are midpoints to the neighbours 0.4 and 0.6.
    band = choose_refer_band(P, IS_ALL, 0.5, coverage=0.75)
    assert band == pytest.approx([0.425, 0.575])
    figures = operating_figures(P, IS_ALL, 0.5, band)
    assert figures["coverage"] == 0.75 and figures["referred"] == 2
    assert figures["ok_accuracy"] == 1.0
    # Coverage 7/8 allows referring one of them: still 6 of 7 right, better than 6 of 8.
    one = choose_refer_band(P, IS_ALL, 0.5, coverage=0.875)
    assert operating_figures(P, IS_ALL, 0.5, one)["referred"] == 1
    assert operating_figures(P, IS_ALL, 0.5, one)["ok_accuracy"] == pytest.approx(6 / 7)
    # Everything must be called: no band.
    assert choose_refer_band(P, IS_ALL, 0.5, coverage=1.0) is None
    # Nothing to gain when every call is already right.
    assert choose_refer_band(P, P > 0.5, 0.5, coverage=0.5) is None


def test_band_never_splits_tied_probabilities():
    p = np.array([0.3, 0.5, 0.5, 0.5, 0.8])
    truth = np.array([False, True, False, True, True])
    band = choose_refer_band(p, truth, 0.5, coverage=0.4)
    referred = (p >= band[0]) & (p < band[1])
    assert referred[1:4].all() or not referred[1:4].any()
    # Referring only the wrong one of two fields tied at 0.5 would look perfect (3 of 3
    # right) but no band can do it; with 3 of 4 to be called, calling all is the best.
    p = np.array([0.2, 0.5, 0.5, 0.9])
    truth = np.array([False, False, True, True])
    assert choose_refer_band(p, truth, 0.5, coverage=0.75) is None


def test_decide_edges():
    band = [0.4, 0.7]
    assert decide(0.39, 0.5, band).status == "ok" and not decide(0.39, 0.5, band).positive
    assert decide(0.4, 0.5, band).status == "refer"  # low edge is inside
    assert decide(0.69, 0.5, band) == decide(0.5, 0.5, band)
    assert decide(0.7, 0.5, band).status == "ok" and decide(0.7, 0.5, band).positive
    assert decide(0.5, 0.5, None).positive and not decide(0.49, 0.5, None).positive


def test_validate_operating_point():
    validate_operating_point(0.3, [0.1, 0.6])
    for threshold, band in ((1.2, None), (0.5, [0.6, 0.9]), (0.5, [0.2]), (0.5, [0.4, 1.1])):
        with pytest.raises(ValueError):
            validate_operating_point(threshold, band)


def test_fit_decision_records_its_validation_figures_and_round_trips():
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.8
    p = np.clip(np.where(truth, 0.75, 0.25) + rng.normal(0, 0.2, 400), 0, 1)
    spec = fit_decision(p, truth, target_sensitivity=0.98, coverage=0.95)
    op = spec.validation["operating_point"]
    assert op["sensitivity"] >= 0.98 and op["coverage"] >= 0.95
    assert op["ok_accuracy"] >= spec.validation["argmax"]["ok_accuracy"] - 0.05
    assert spec.refer_band[0] <= spec.threshold <= spec.refer_band[1]
    assert spec.source == "validation split, n=400"
    meta = ModelMetadata(name="m", labels=["ALL", "HEM"], decision=spec)
    assert ModelMetadata.from_dict(json.loads(meta.to_json())).decision == spec
    bad = json.loads(meta.to_json())
    bad["decision"]["refer_band"] = [0.9, 0.95]
    with pytest.raises(MetadataError, match="'decision'"):
        ModelMetadata.from_dict(bad)


def test_version_1_metadata_loads_without_the_new_parts():
    v1 = {"name": "old", "labels": ["ALL", "HEM"], "schema_version": 1, "temperature": 0.8}
    meta = ModelMetadata.from_dict(v1)
    assert (meta.quality, meta.ood, meta.decision, meta.schema_version) == (None, None, None, 1)
    assert json.loads(meta.to_json())["schema_version"] == 2
    assert DecisionSpec().threshold == 0.5 and DecisionSpec().refer_band is None

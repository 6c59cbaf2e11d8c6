"""Splits too small for the figures fitted or checked on them: the warnings before
training (:func:`leukedge.evaluation.resolution.split_size_warnings`) and the gate's own
resolution in its messages (:mod:`leukedge.converters.gate`). NumPy only; one test trains
(stopped before its first epoch) to show the warnings come before any fitting."""

from __future__ import annotations

import json
import logging

import pytest

from leukedge.converters.gate import GateConfig, below_resolution, check, resolution
from leukedge.evaluation.resolution import (
    gate_images_needed,
    image_pp,
    images_allowed,
    split_size_warnings,
)

# The 60-image run: 36 train, 12 val (9 ALL, 3 HEM), 12 test; 1,280-d embedding.
TINY = {"train": {"ALL": 27, "HEM": 9}, "val": {"ALL": 9, "HEM": 3}, "test": {"ALL": 9, "HEM": 3}}
# A full Taleqani run (blocks split): every figure has the images it needs.
FULL = {"train": {"ALL": 1500, "HEM": 300}, "val": {"ALL": 400, "HEM": 100}}


def test_resolution_by_hand():
    assert image_pp(12) == pytest.approx(8.333333) and image_pp(0) == float("inf")
    assert images_allowed(0.02, 103) == 2 and images_allowed(0.01, 12) == 0
    assert images_allowed(0.02, 50) == 1  # 0.02 · 50 is 0.999… in floating point
    assert gate_images_needed(1.0, 0.98) == 100 and gate_images_needed(5.0, 0.98) == 50


def test_tiny_splits_get_one_warning_per_figure_they_cannot_carry():
    warnings = split_size_warnings(TINY, 1280)
    assert len(warnings) == 4, warnings
    gate, threshold, covariance, operating = warnings
    assert "12 images (ALL 9, HEM 3)" in gate and "8.3 pp" in gate and "1 pp" in gate
    assert "at least 100 validation images" in gate
    assert "largest distance" in threshold and "at least 34" in threshold
    assert "1280 dimensions" in covariance and "at most 34 independent" in covariance
    assert "9 ALL images" in operating and "at least 50" in operating
    assert split_size_warnings(FULL, 1280) == []
    # Each rule has its own edge: 100 val images meet the gate (1 pp = one image), 99 not.
    assert not any("gate" in w for w in split_size_warnings({"val": {"ALL": 60, "HEM": 40}}))
    assert any("gate" in w for w in split_size_warnings({"val": {"ALL": 60, "HEM": 39}}))
    assert split_size_warnings({"train": {"ALL": 1280}}, 1280) == []
    assert len(split_size_warnings({"train": {"ALL": 1279}}, 1280)) == 1
    assert split_size_warnings({"train": {"ALL": 10}}, None) == []  # no embedding, no OOD


def test_gate_messages_state_the_resolution_and_a_one_image_failure():
    config = GateConfig()
    assert "one image = 8.33 pp of 12" in resolution(12, config)
    assert "allows 0 lost calls" in resolution(12, config)
    assert "allows 1 lost calls, the 98 % agreement bound 2 changed" in resolution(103, config)
    one_flip = {
        "n": 12,
        "delta_pp": 100 / 12,
        "agreement": 11 / 12,
        "mean_abs_prob_diff": 0.01,
        "ece_increase": 0.0,
    }
    reasons = check(one_flip, config)
    assert len(reasons) == 2 and all("(one image = 8.33 pp of 12)" in r for r in reasons)
    assert below_resolution(one_flip, config)
    # Two images, a drift failure, or a split that resolves the bound: a real failure.
    two_flips = one_flip | {"delta_pp": 200 / 12, "agreement": 10 / 12}
    assert not below_resolution(two_flips, config)
    assert not below_resolution(one_flip | {"mean_abs_prob_diff": 0.2}, config)
    one_of_many = one_flip | {"n": 103, "delta_pp": 100 / 103 * 2, "agreement": 100 / 103}
    assert not below_resolution(one_of_many, config)
    assert not below_resolution(one_flip | {"delta_pp": 0.0, "agreement": 1.0}, config)
    accuracy_only = GateConfig(min_agreement=0.5)  # each bound is judged by itself
    assert below_resolution(one_flip, accuracy_only)
    assert not below_resolution(two_flips, accuracy_only)
    agreement_only = GateConfig(max_delta=50.0)
    assert below_resolution(one_flip, agreement_only)
    assert not below_resolution(two_flips, agreement_only)


@pytest.mark.slow
def test_training_warns_about_small_splits_before_fitting(tiny_config, tmp_path, caplog):
    keras = pytest.importorskip("keras")
    from leukedge.training.train import train

    class StopBeforeFitting(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise KeyboardInterrupt("stopped before the first epoch")

    config = tiny_config(tmp_path / "run", image_size=32, max_per_split=8)
    with caplog.at_level(logging.INFO, logger="leukedge"), pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[StopBeforeFitting()])
    small = [r.getMessage() for r in caplog.records if "small split" in r.getMessage()]
    assert any("validation split of" in m and "pp" in m for m in small), small
    assert any("1280 dimensions" in m for m in small), small
    # Stopped before the first epoch, the warnings were given; config.json keeps them.
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["split_warnings"] == [m.removeprefix("small split: ") for m in small]


def test_a_one_image_int8_failure_is_not_sent_to_auto_keep_float(monkeypatch, caplog):
    """The converter's advice after a failed int8 gate: below the split's resolution it
    says so (and how many images the bounds need), otherwise it points to the float
    options. (The debugger is replaced: this checks the advice, not the ranking.)"""
    from leukedge.converters import debug
    from leukedge.converters.convert import ConvertConfig, Converter

    monkeypatch.setattr(debug, "layer_errors", lambda model, images: [])
    converter = Converter(ConvertConfig(model="m.keras"))
    converter.export_model = converter.representative = None
    one_flip = {
        "n": 12,
        "delta_pp": 100 / 12,
        "agreement": 11 / 12,
        "mean_abs_prob_diff": 0.01,
        "ece_increase": 0.0,
    }
    one_flip["gate_failures"] = check(one_flip, GateConfig())
    with caplog.at_level(logging.INFO, logger="leukedge"):
        _, figures = converter.diagnose_int8(b"", dict(one_flip))
    assert figures["below_resolution"] is True
    assert "failed by one image of 12" in caplog.text and "at least 100" in caplog.text
    assert "retry with" not in caplog.text  # the --keep-float / --auto-keep-float advice
    caplog.clear()
    two_flips = one_flip | {"delta_pp": 200 / 12, "agreement": 10 / 12}
    with caplog.at_level(logging.INFO, logger="leukedge"):
        _, figures = converter.diagnose_int8(b"", two_flips)
    assert "below_resolution" not in figures and "retry with" in caplog.text

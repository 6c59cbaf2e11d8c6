"""Input quality checks: each one on a real field degraded to just past its threshold, and to
just inside it, through the check function and through the Classifier (status and reason);
the statistics on hand-made images; thresholds derived from statistics. ``scale`` and
``segmented_cell`` are tested on drawn fields in ``test_scale.py``.

No TensorFlow, no ../shared/data: the real image is ``examples/images/``'s Taleqani benign
field (224×224), the model the embedded one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from leukedge.checks.quality import (
    QUALITY_REASONS,
    QualityStatistics,
    QualityThresholds,
    check_quality,
    derive_thresholds,
    image_statistics,
)
from leukedge.engine.preprocess import load_rgb, resize_rgb

FIELD = Path(__file__).resolve().parents[1] / "examples" / "images" / "WBC-Benign-420.jpg"
SIZE = (224, 224)

# Thresholds of the order derive_thresholds gives on the Taleqani training split (README):
# explicit here so the tests need neither the data nor a model.
THRESHOLDS = {
    "too_small": ("min_side", 112),
    "blank": ("blank_std_max", 7.3),
    "underexposed": ("dark_mean_min", 93.0),
    "saturated": ("saturated_fraction_max", 0.71),
    "out_of_focus": ("focus_min", 38.0),
    "not_stained": ("stain_min", 6.5),
}


@pytest.fixture(scope="module")
def field() -> np.ndarray:
    return resize_rgb(load_rgb(FIELD), SIZE)


def _scale_around(image: np.ndarray, centre: np.ndarray, factor: float) -> np.ndarray:
    out = centre + (image.astype(np.float64) - centre) * factor
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None].astype(np.float64)


# reason -> (degradation(image, parameter) -> the image as decoded, parameter range
#            (inside, past))
DEGRADATIONS: dict[str, tuple[Callable, tuple[float, float]]] = {
    # Downscaled: the decoded image is small; the model sees it upsampled.
    "too_small": (lambda x, s: resize_rgb(x, (round(s), round(s))), (200, 20)),
    # Contrast lowered towards the mean grey: a nearly uniform picture.
    "blank": (lambda x, c: _scale_around(x, x.mean(), c), (1.0, 0.0)),
    # Exposure lowered.
    "underexposed": (lambda x, k: _scale_around(x, 0.0, k), (1.0, 0.05)),
    # Exposure raised until the background clips to white.
    "saturated": (lambda x, k: _scale_around(x, 0.0, k), (1.0, 3.0)),
    # Defocus: Gaussian blur of growing sigma (pixels at the model's input size).
    "out_of_focus": (lambda x, s: cv2.GaussianBlur(x, (0, 0), s), (0.3, 8.0)),
    # Colour removed: blended towards the image's own grey (0 = greyscale).
    "not_stained": (lambda x, c: _scale_around(x, _grey(x), c), (1.0, 0.0)),
}


def _stats(decoded: np.ndarray):
    """As the Classifier measures: at the model's input size, with the decoded size."""
    return image_statistics(resize_rgb(decoded, SIZE), decoded.shape[:2])


def _fails(reason: str, image: np.ndarray, thresholds: QualityThresholds) -> bool:
    return reason in [f.reason for f in check_quality(_stats(image), thresholds)]


def _just_around(reason: str, field: np.ndarray, thresholds: QualityThresholds):
    """Bisect the degradation parameter to the point where the check flips: the last
    parameter still inside the threshold and the first past it."""
    degrade, (inside, past) = DEGRADATIONS[reason]
    assert not _fails(reason, degrade(field, inside), thresholds), "undegraded image fails"
    assert _fails(reason, degrade(field, past), thresholds), "fully degraded image passes"
    integer = reason == "too_small"
    for _ in range(40):
        if integer and abs(past - inside) <= 1:
            break
        mid = round((inside + past) / 2) if integer else (inside + past) / 2
        if _fails(reason, degrade(field, mid), thresholds):
            past = mid
        else:
            inside = mid
    return degrade(field, inside), degrade(field, past)


STAT_OF = {
    "blank": "grey_std",
    "underexposed": "grey_mean",
    "saturated": "saturated_fraction",
    "out_of_focus": "laplacian_variance",
    "not_stained": "colourfulness",
}


@pytest.fixture(scope="module")
def classifiers():
    """One Classifier per reason, with only that check on (the embedded model): its
    out-of-domain check and refer band are switched off, since a degraded field may leave
    the training domain or the band before it crosses the quality threshold."""
    from leukedge.classifier import Classifier, ClassifierOptions
    from leukedge.errors import LeukedgeWarning

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeukedgeWarning)  # every check is there to turn off
        for reason, (attr, value) in THRESHOLDS.items():
            options = ClassifierOptions(
                quality=QualityThresholds(**{attr: value}),
                ood_threshold=math.inf,
                refer_band=(0.0, 0.0),
            )
            out[reason] = Classifier(options)
    return out


@pytest.mark.parametrize("reason", [r for r in QUALITY_REASONS if r in THRESHOLDS])
def test_each_check_just_past_and_just_inside_its_threshold(field, classifiers, reason):
    attr, value = THRESHOLDS[reason]
    thresholds = QualityThresholds(**{attr: value})
    inside, past = _just_around(reason, field, thresholds)
    ok_stats, bad_stats = _stats(inside), _stats(past)
    # Through the Classifier: the status and reason a user sees.
    rejected = classifiers[reason].classify(past)
    assert (rejected.status, rejected.reason, rejected.label) == ("rejected", reason, None)
    assert rejected.model_label in ("ALL", "HEM") and rejected.probabilities is None
    accepted = classifiers[reason].classify(inside)
    assert accepted.status == "ok" and accepted.reason is None and accepted.label is not None
    assert check_quality(ok_stats, thresholds) == []
    failures = check_quality(bad_stats, thresholds)
    assert [f.reason for f in failures] == [reason]
    if reason == "too_small":
        assert (min(ok_stats.height, ok_stats.width), min(bad_stats.height, bad_stats.width)) == (
            112,
            111,
        )
        assert "shorter side 111 < 112" in failures[0].message
        return
    # "Just": both statistics lie within 3 % of the threshold, on either side of it.
    ok_value, bad_value = getattr(ok_stats, STAT_OF[reason]), getattr(bad_stats, STAT_OF[reason])
    assert ok_value == pytest.approx(value, rel=0.03)
    assert bad_value == pytest.approx(value, rel=0.03)
    if reason == "saturated":
        assert bad_value > value >= ok_value
    else:
        assert bad_value < value <= ok_value
    shown = f"{100 * value:.1f} %" if reason == "saturated" else f"{value:.3g}"
    assert shown in failures[0].message


def test_real_fields_pass_every_check(field):
    thresholds = QualityThresholds(**dict(THRESHOLDS.values()))
    assert check_quality(image_statistics(field), thresholds) == []
    other = resize_rgb(load_rgb(FIELD.with_name("WBC-Malignant-Pre-810.jpg")), SIZE)
    assert check_quality(image_statistics(other), thresholds) == []


def test_failures_come_in_documented_order():
    """A small black image fails several checks; they are listed in QUALITY_REASONS order."""
    black = np.zeros((8, 8, 3), dtype=np.uint8)
    thresholds = QualityThresholds(**dict(THRESHOLDS.values()))
    stats = image_statistics(resize_rgb(black, SIZE), (8, 8))
    reasons = [f.reason for f in check_quality(stats, thresholds)]
    assert reasons == ["too_small", "blank", "underexposed", "out_of_focus", "not_stained"]


def test_statistics_hand_values():
    flat = np.full((10, 10, 3), 100, dtype=np.uint8)
    s = image_statistics(flat)
    assert (s.height, s.width, s.grey_mean, s.grey_std) == (10, 10, 100.0, 0.0)
    assert s.laplacian_variance == 0.0 and s.colourfulness == 0.0 and s.saturated_fraction == 0.0
    # Left half pure red (255, 0, 0), right half white: half the pixels clipped to white.
    half = np.full((4, 4, 3), 255, dtype=np.uint8)
    half[:, :2] = (255, 0, 0)
    s = image_statistics(half, source_size=(40, 30))
    assert (s.height, s.width) == (40, 30)
    assert s.saturated_fraction == 0.5
    # rg = R - G: 255 on red, 0 on white; yb = (R + G)/2 - B: 127.5 on red, 0 on white.
    expected = np.hypot(127.5, 63.75) + 0.3 * np.hypot(127.5, 63.75)
    assert s.colourfulness == pytest.approx(expected, rel=1e-6)
    grey_red = 0.299 * 255  # BT.601 luma of pure red
    assert s.grey_mean == pytest.approx((grey_red + 255) / 2, abs=0.6)
    with pytest.raises(ValueError, match="uint8"):
        image_statistics(flat.astype(np.float32))


def test_derive_thresholds_quantile_times_margin():
    stats = [
        QualityStatistics(224, 224, float(m), float(m) / 10, f, float(m) * 2, float(m) / 4)
        for m, f in zip(range(1, 1001), np.linspace(0.0, 0.5, 1000), strict=True)
    ]
    t = derive_thresholds(stats, input_side=224, quantile=0.01, margin=0.5)
    q_mean = np.quantile(np.arange(1, 1001), 0.01)
    assert t.min_side == 112
    assert t.dark_mean_min == pytest.approx(q_mean * 0.5)
    assert t.blank_std_max == pytest.approx(q_mean / 10 * 0.5)
    assert t.focus_min == pytest.approx(q_mean * 2 * 0.5)
    assert t.stain_min == pytest.approx(q_mean / 4 * 0.5)
    q_sat = np.quantile(np.linspace(0.0, 0.5, 1000), 0.99)
    assert t.saturated_fraction_max == pytest.approx(q_sat + 0.5 * (1 - q_sat))
    assert t.source == "training split, n=1000" and (t.quantile, t.margin) == (0.01, 0.5)
    assert t.unchecked() == []
    # Only training images below half the 1 % quantile fail (means 1..5 of 1..1000).
    failing = [s.grey_mean for s in stats if check_quality(s, t)]
    assert failing == [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="zero images"):
        derive_thresholds([], 224)
    with pytest.raises(ValueError, match="quantile"):
        derive_thresholds(stats, 224, quantile=0.7)


def test_generic_thresholds_check_only_size_and_blank():
    t = QualityThresholds.generic(224)
    assert (t.min_side, t.blank_std_max) == (112, 2.0)
    assert t.unchecked() == ["underexposed", "saturated", "out_of_focus", "not_stained"]
    assert "built-in" in t.source
    assert QualityThresholds.from_dict(asdict(t) | {"future_key": 1}) == t
    black = image_statistics(np.zeros((224, 224, 3), dtype=np.uint8))
    assert [f.reason for f in check_quality(black, t)] == ["blank"]

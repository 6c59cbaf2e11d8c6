"""Magnification from the red cells (``scale``) and segmented cells on black
(``segmented_cell``): the estimate on drawn fields of known red-cell size, the checks, their
precedence over the exposure and focus checks, and a model without them.

No TensorFlow, no ../shared/data: fields are drawn with OpenCV; the model is the embedded
one, with the range added to a copy of its metadata (``add_scale_checks``).
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from leukedge.checks.quality import (
    QualityStatistics,
    QualityThresholds,
    check_quality,
    derive_thresholds,
    image_statistics,
)
from leukedge.checks.scale import (
    black_background,
    estimate_red_cell_diameter,
    fit_diameter_range,
)
from leukedge.engine.metadata import add_scale_checks

BACKGROUND = (236, 234, 240)
RED_CELL = (205, 172, 208)  # pale lavender, as in the Taleqani fields
NUCLEUS = (110, 60, 170)


def drawn_field(
    diameter: float, coverage: float = 0.25, seed: int = 0, size: int = 224, nuclei: int = 0
) -> np.ndarray:
    """A smear-like field: red cells of ``diameter`` px at random places covering about
    ``coverage`` of it (overlaps allowed), each with a paler centre (central pallor), and
    ``nuclei`` dark purple white cells twice as wide."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), BACKGROUND, dtype=np.uint8)
    radius = diameter / 2
    count = max(3, round(coverage * size * size / (np.pi * radius**2)))
    for x, y in rng.integers(0, size, (count, 2)):
        centre = (int(x), int(y))
        cv2.circle(image, centre, round(radius), RED_CELL, -1, cv2.LINE_AA)
        cv2.circle(image, centre, max(1, round(radius / 3)), (222, 205, 225), -1, cv2.LINE_AA)
    for x, y in rng.integers(diameter, size - diameter, (nuclei, 2)):
        cv2.circle(image, (int(x), int(y)), round(diameter), NUCLEUS, -1, cv2.LINE_AA)
    return image


def segmented_cell(size: int = 224) -> np.ndarray:
    """One stained cell cut out onto black, as in C-NMC."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    cv2.ellipse(image, (size // 2, size // 2), (70, 60), 20, 0, 360, (150, 110, 170), -1)
    cv2.ellipse(image, (size // 2 + 8, size // 2), (45, 38), 0, 0, 360, (90, 50, 130), -1)
    return image


RANGE = [12.0, 22.0]  # of the order fitted on the Taleqani fields (README, Statuses)


@pytest.mark.parametrize("diameter", [8, 12, 16, 20, 26, 32, 40, 50])
def test_diameter_of_drawn_red_cells(diameter):
    """Within ±20 % of the drawn size for 8–50 px, with a count of cells (measured: within
    −16 % / +17 % over 3 seeds × 15–35 % coverage); up to 20 px also with a white cell
    twice as wide in the field (as a blast among Taleqani red cells: −16 % / +8 %)."""
    for seed, coverage in ((0, 0.15), (1, 0.25), (2, 0.35)):
        for nuclei in (0, 1) if diameter <= 20 else (0,):
            size = estimate_red_cell_diameter(drawn_field(diameter, coverage, seed, nuclei=nuclei))
            assert size is not None
            assert size.diameter_px == pytest.approx(diameter, rel=0.20), (seed, coverage, nuclei)
            assert size.cells >= 2 and size.peak_ratio > 1


def test_too_few_red_cells_give_no_estimate():
    blank = np.full((224, 224, 3), BACKGROUND, dtype=np.uint8)
    assert estimate_red_cell_diameter(blank) is None
    one = blank.copy()
    cv2.circle(one, (112, 112), 10, RED_CELL, -1)
    assert estimate_red_cell_diameter(one) is None  # 0.6 % covered: no ruler
    with pytest.raises(ValueError, match="uint8"):
        estimate_red_cell_diameter(blank.astype(np.float32))


def test_scale_fires_outside_the_range_and_not_inside():
    thresholds = QualityThresholds(red_cell_diameter_range=RANGE)
    for diameter in (14, 17, 20):
        assert check_quality(image_statistics(drawn_field(diameter)), thresholds) == []
    for diameter in (7, 36, 50):
        stats = image_statistics(drawn_field(diameter))
        failures = check_quality(stats, thresholds)
        assert [f.reason for f in failures] == ["scale"], diameter
        assert f"red cells {stats.red_cell_diameter:.0f} px across" in failures[0].message
        assert "trained at 12–22 px: another magnification" in failures[0].message
    # No estimate (None, or NaN as from a float array): no scale check.
    for missing in (None, float("nan")):
        stats = QualityStatistics(224, 224, 180.0, 40.0, 0.01, 300.0, 30.0, missing)
        assert check_quality(stats, thresholds) == []


def test_scale_comes_before_focus_and_exposure():
    """A field at another magnification also looks blurred and may be darker: ``scale`` is
    the reason, the others follow in failed_checks."""
    thresholds = QualityThresholds(
        red_cell_diameter_range=RANGE, focus_min=1e9, dark_mean_min=250.0
    )
    reasons = [f.reason for f in check_quality(image_statistics(drawn_field(45)), thresholds)]
    assert reasons == ["scale", "underexposed", "out_of_focus"]


def test_segmented_cell_on_black_is_its_own_reason():
    thresholds = QualityThresholds(black_background_max=0.5, dark_mean_min=93.0)
    stats = image_statistics(segmented_cell())
    assert stats.black_background_fraction > 0.5 and stats.black_background_objects == 1
    failures = check_quality(stats, thresholds)
    assert [f.reason for f in failures] == ["segmented_cell", "underexposed"]
    assert "expects whole smear fields" in failures[0].message
    # A smear field, a black image and a dark field are not segmented cells.
    assert black_background(drawn_field(16)) == (0.0, 1)
    black = image_statistics(np.zeros((224, 224, 3), dtype=np.uint8))
    assert "segmented_cell" not in [f.reason for f in check_quality(black, thresholds)]
    dark = (drawn_field(16) * 0.3).astype(np.uint8)
    assert "segmented_cell" not in [
        f.reason for f in check_quality(image_statistics(dark), thresholds)
    ]


def test_fit_diameter_range_and_derive_thresholds():
    diameters = list(np.linspace(15.0, 25.0, 101)) + [None] * 5
    low, high = fit_diameter_range(diameters, quantile=0.01, margin=0.15)
    assert (low, high) == pytest.approx((15.1 / 1.15, 24.9 * 1.15))
    assert fit_diameter_range([16.0] * 19 + [float("nan")] * 5) is None  # too few: no check
    with pytest.raises(ValueError, match="quantile"):
        fit_diameter_range(diameters, quantile=0.6)
    stats = [
        QualityStatistics(224, 224, 180.0, 40.0, 0.01, 300.0, 30.0, d, 20.0, 0.0, 1)
        for d in diameters
    ]
    t = derive_thresholds(stats, input_side=224)
    assert t.red_cell_diameter_range == pytest.approx(fit_diameter_range(diameters))
    assert t.black_background_max == pytest.approx(0.5)
    assert t.unchecked() == []
    no_red = derive_thresholds(stats[:10], input_side=224)
    assert no_red.red_cell_diameter_range is None


@pytest.fixture(scope="module")
def model_with_range() -> bytes:
    from leukedge.classifier import default_model_path

    return add_scale_checks(default_model_path().read_bytes(), RANGE, 0.5, source="test")


def test_classifier_says_scale_and_segmented_cell(model_with_range):
    """Through the Classifier on a copy of the embedded model with the range added to its
    metadata (no TensorFlow): the status and reason a user sees; the range and the
    threshold round-trip through the metadata."""
    from leukedge import Classifier, ClassifierOptions
    from leukedge.engine.metadata import read_metadata

    quality = read_metadata(model_with_range).quality
    assert quality.red_cell_diameter_range == RANGE and quality.black_background_max == 0.5
    assert quality.source.endswith("scale checks: test")
    classifier = Classifier(ClassifierOptions(model_content=model_with_range))
    wide = classifier.classify(drawn_field(45))
    assert (wide.status, wide.reason, wide.label) == ("rejected", "scale", None)
    assert "another magnification" in wide.message and wide.model_label in ("ALL", "HEM")
    assert wide.quality["red_cell_diameter"] == pytest.approx(45, rel=0.2)
    cell = classifier.classify(segmented_cell())
    assert (cell.status, cell.reason) == ("rejected", "segmented_cell")


def test_model_without_the_range_has_no_scale_check():
    """A model converted before the range existed (model v2's metadata; v3 carries it): no
    scale or segmented-cell check, none listed as unchecked, no red-cell estimate, no
    warning."""
    import dataclasses

    from leukedge import Classifier, ClassifierOptions
    from leukedge.classifier import default_model_path
    from leukedge.engine.metadata import read_metadata, write_metadata
    from leukedge.errors import LeukedgeWarning

    content = default_model_path().read_bytes()
    meta = read_metadata(content)
    assert meta.quality.red_cell_diameter_range is not None  # the embedded v3 has it
    old = dataclasses.replace(
        meta,
        quality=dataclasses.replace(
            meta.quality, red_cell_diameter_range=None, black_background_max=None
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeukedgeWarning)
        classifier = Classifier(ClassifierOptions(model_content=write_metadata(content, old)))
    assert classifier.quality_thresholds.red_cell_diameter_range is None
    result = classifier.classify(drawn_field(45))
    assert "scale" not in result.failed_checks and "scale" not in result.unchecked
    assert result.quality["red_cell_diameter"] is None
    cell = classifier.classify(segmented_cell())
    assert "segmented_cell" not in cell.failed_checks


def test_info_prints_the_scale_checks(model_with_range, tmp_path):
    from typer.testing import CliRunner

    from leukedge.cli import app

    path = tmp_path / "with_range.tflite"
    path.write_bytes(model_with_range)
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "scale: red cells outside 12.0-22.0 px" in result.output
    assert "segmented_cell: black surround > 0.50" in result.output

"""Out-of-domain scoring: the compact Mahalanobis form against the textbook formula, its
threshold, and its round trip through the model metadata. NumPy only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leukedge.checks.ood import (
    THRESHOLD_ROUNDING_MARGIN,
    EncodedArray,
    MahalanobisScorer,
    OODSpec,
    fit_mahalanobis,
    set_threshold,
)
from leukedge.engine.metadata import MetadataError, ModelMetadata

LABELS = ["ALL", "HEM"]


@pytest.fixture(scope="module")
def data():
    """Two classes in 24 dimensions with a strongly anisotropic shared covariance."""
    rng = np.random.default_rng(0)
    dim = 24
    mix = rng.normal(size=(dim, dim)) * np.linspace(3.0, 0.1, dim)
    y = np.repeat([0, 1], [300, 100])
    means = np.stack([np.zeros(dim), np.full(dim, 0.8)])
    x = means[y] + rng.normal(size=(400, dim)) @ mix.T
    val_y = np.repeat([0, 1], [90, 30])
    val = means[val_y] + rng.normal(size=(120, dim)) @ mix.T
    return x, y, val, means


def _textbook(x, y, queries, alpha):
    """min_c (q − μ_c)ᵀ Σ⁻¹ (q − μ_c) with Σ the shrunk pooled within-class covariance."""
    means = np.stack([x[y == c].mean(0) for c in (0, 1)])
    centred = x - means[y]
    cov = centred.T @ centred / len(x)
    dim = x.shape[1]
    cov = (1 - alpha) * cov + alpha * np.trace(cov) / dim * np.eye(dim)
    inv = np.linalg.inv(cov)
    diffs = queries[:, None, :] - means[None]
    return np.einsum("nkd,de,nke->nk", diffs, inv, diffs).min(axis=1), cov


def test_full_rank_equals_the_textbook_distance(data):
    x, y, val, _ = data
    spec = fit_mahalanobis(x, y, LABELS, shrinkage=0.1, rank=None)
    expected, _ = _textbook(x, y, val, 0.1)
    assert spec.rank == 24 and spec.n_fit == 400
    # Means and eigenpairs are stored as float32.
    np.testing.assert_allclose(MahalanobisScorer(spec).distances(val), expected, rtol=1e-6)
    # One embedding in, one float out.
    assert MahalanobisScorer(spec).distances(val[0]) == pytest.approx(expected[0], rel=1e-6)


def test_low_rank_equals_its_stated_covariance(data):
    """r eigenpairs + the mean residual eigenvalue: d² with Σ_r = VΛVᵀ + σ²(I − VVᵀ)."""
    x, y, val, _ = data
    spec = fit_mahalanobis(x, y, LABELS, shrinkage=0.1, rank=6)
    _, cov = _textbook(x, y, val, 0.1)
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[::-1], vectors[:, ::-1]
    v, lam = vectors[:, :6], values[:6]
    sigma2 = values[6:].mean()
    assert spec.rank == 6 and spec.residual_variance == pytest.approx(sigma2)
    cov_r = v @ np.diag(lam) @ v.T + sigma2 * (np.eye(24) - v @ v.T)
    means = np.stack([x[y == c].mean(0) for c in (0, 1)])
    diffs = val[:, None, :] - means[None]
    expected = np.einsum("nkd,de,nke->nk", diffs, np.linalg.inv(cov_r), diffs).min(axis=1)
    # Eigenvectors are stored as float16: about 3 significant digits.
    np.testing.assert_allclose(MahalanobisScorer(spec).distances(val), expected, rtol=2e-2)


def test_threshold_lets_the_quantile_pass_and_refuses_far_points(data):
    x, y, val, means = data
    spec = set_threshold(fit_mahalanobis(x, y, LABELS, rank=8), val, quantile=0.97)
    distances = MahalanobisScorer(spec).distances(val)
    assert np.mean(distances <= spec.threshold) >= 0.97
    # The 117th of 120 distances (0.97 · 119 rounded up, 0-based), raised by the rounding
    # margin, which keeps it below the next distance.
    ranked = np.sort(distances)
    picked = ranked[int(np.ceil(0.97 * 119))]
    assert spec.threshold == pytest.approx(picked * (1 + THRESHOLD_ROUNDING_MARGIN), rel=1e-15)
    assert picked < spec.threshold < ranked[int(np.ceil(0.97 * 119)) + 1]
    assert spec.validation["accepted"] == np.mean(ranked <= picked)


def test_threshold_margin_lets_the_picked_image_pass_under_rounding(data, monkeypatch):
    """The validation image that sets the threshold passes even when scored with a
    relative rounding difference of 1e-12 (batched against one-by-one scoring differs by
    about 1e-14), and the margin never reaches the next distance."""
    x, y, val, _ = data
    spec = set_threshold(fit_mahalanobis(x, y, LABELS, rank=8), val, quantile=0.97)
    distances = MahalanobisScorer(spec).distances(val)
    picked = np.sort(distances)[int(np.ceil(0.97 * 119))]
    assert not MahalanobisScorer(spec).is_out_of_domain(picked * (1 + 1e-12))
    # Two distances closer than the margin: the threshold stops halfway between them.
    close = np.array([1.0, 2.0, 3.0, 3.0 * (1 + 1e-7)])
    monkeypatch.setattr(MahalanobisScorer, "distances", lambda self, embeddings: close)
    set_threshold(spec, val[:4], quantile=0.6)  # the third of four: 3.0
    assert 3.0 < spec.threshold < 3.0 * (1 + 1e-7) and spec.validation["accepted"] == 0.75


def test_round_trip_through_metadata_json(data):
    x, y, val, _ = data
    spec = set_threshold(fit_mahalanobis(x, y, LABELS, rank=8), val)
    spec.embedding_output = "embedding"
    meta = ModelMetadata(name="m", labels=LABELS, ood=spec)
    back = ModelMetadata.from_dict(json.loads(meta.to_json()))
    assert back.ood == spec and back.schema_version == 2
    np.testing.assert_array_equal(
        MahalanobisScorer(back.ood).distances(val), MahalanobisScorer(spec).distances(val)
    )


def test_encoded_array_round_trip_and_dtype():
    a = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    enc = EncodedArray.encode(a, "float16")
    assert enc.dtype == "float16" and enc.shape == [3, 4]
    np.testing.assert_allclose(enc.decode(), a, rtol=1e-3)
    np.testing.assert_array_equal(EncodedArray.encode(a).decode(), a.astype(np.float32))


def test_bad_fits_and_specs(data):
    x, y, _, _ = data
    with pytest.raises(ValueError, match="no training embedding"):
        fit_mahalanobis(x, np.zeros_like(y), LABELS)
    with pytest.raises(ValueError, match="shrinkage"):
        fit_mahalanobis(x, y, LABELS, shrinkage=1.5)
    with pytest.raises(ValueError, match="embeddings"):
        fit_mahalanobis(x[:, 0], y, LABELS)
    spec = fit_mahalanobis(x, y, LABELS, rank=4)
    bad = json.loads(ModelMetadata(name="m", labels=LABELS, ood=spec).to_json())
    del bad["ood"]["eigenvalues"]
    with pytest.raises(MetadataError, match="'ood'"):
        ModelMetadata.from_dict(bad)
    bad["ood"] = {"method": "energy"}
    with pytest.raises(MetadataError, match="unknown out-of-domain method"):
        ModelMetadata.from_dict(bad)
    wrong = OODSpec(**{**spec.__dict__, "embedding_dim": 5})
    with pytest.raises(ValueError, match="embedding_dim 5"):
        MahalanobisScorer(wrong)
    with pytest.raises(ValueError, match="positive"):
        MahalanobisScorer(OODSpec(**{**spec.__dict__, "residual_variance": 0.0}))


def test_constant_embeddings_keep_distances_finite():
    """A broken model whose embedding is constant: no variance, yet finite distances."""
    x = np.ones((10, 6))
    spec = fit_mahalanobis(x, np.repeat([0, 1], 5), LABELS, rank=2)
    d = MahalanobisScorer(spec).distances(np.vstack([x[0], x[0] + 1.0]))
    assert d[0] == 0.0 and np.isfinite(d[1]) and d[1] > 1e6

"""The call: an operating point on p(ALL) and a *refer* band around it.

A two-class model's calibrated probability of the positive class ``p`` (ALL) becomes:

- ``ALL`` when ``p ≥ threshold`` and ``p`` is outside the refer band;
- the other class (``HEM``) when ``p < threshold`` and outside the band;
- ``refer`` (no call; a person should look) when ``low ≤ p < high``.

The threshold is an **operating point** chosen on the validation split for a target
sensitivity for ALL (missing a leukaemia costs more than a second look at a benign field):
the highest threshold whose validation sensitivity still reaches the target, i.e. the one
that keeps the most specificity (:func:`choose_threshold`). The band is chosen on the same
probabilities to maximise the accuracy of the calls that are made (``ok``) while at least a
target fraction of images still get a call (coverage; :func:`choose_refer_band`): selective
classification with a reject option (Chow, "On optimum recognition error and reject
tradeoff", IEEE Trans. Inf. Theory 16, 1970; Geifman & El-Yaniv, "Selective classification
for deep neural networks", NeurIPS 2017).

Without a :class:`DecisionSpec` (models converted before these existed) the threshold is
0.5 — the arg-max for two classes — and there is no band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from leukedge.errors import LeukedgeError

DEFAULT_TARGET_SENSITIVITY = 0.98
"""Validation sensitivity for ALL that the operating point must reach."""

DEFAULT_COVERAGE = 0.95
"""Fraction of validation images that must still get a call (``ok``) with the band."""


@dataclass
class DecisionSpec:
    """Operating point and refer band (stored in the model's metadata).

    Attributes:
        positive_label: the class ``p`` refers to (``"ALL"``).
        threshold: call ``positive_label`` when its calibrated probability is ≥ this.
        refer_band: ``[low, high]``: ``low ≤ p < high`` → ``refer``; ``None``: no band.
        target_sensitivity: what ``threshold`` was chosen for (validation).
        coverage_target: what ``refer_band`` was chosen for (validation).
        source: the data behind the choice, in words.
        validation: figures at this operating point on the validation split
            (:func:`operating_figures`), and at 0.5 without a band (``"argmax"``).
    """

    threshold: float = 0.5
    refer_band: list[float] | None = None
    positive_label: str = "ALL"
    target_sensitivity: float | None = None
    coverage_target: float | None = None
    source: str = ""
    validation: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionSpec:
        """Build from parsed JSON (unknown keys ignored).

        Raises:
            ValueError: the threshold or band is not within [0, 1] / not around the threshold.
        """
        known = {f.name for f in fields(cls)}
        spec = cls(**{k: v for k, v in data.items() if k in known})
        validate_operating_point(spec.threshold, spec.refer_band)
        return spec


class OperatingPointError(LeukedgeError, ValueError):
    """A decision threshold or refer band that cannot be used (out of [0, 1], or a band that
    does not contain the threshold); still a ``ValueError``."""


def validate_operating_point(threshold: float, band: Sequence[float] | None) -> None:
    """Check a threshold and band.

    Raises:
        OperatingPointError: ``threshold`` not in [0, 1], or ``band`` is not
            ``[low, high]`` with ``0 ≤ low ≤ threshold ≤ high ≤ 1``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise OperatingPointError(f"decision threshold must be in [0, 1], got {threshold}")
    if band is None:
        return
    if len(band) != 2:
        raise OperatingPointError(f"refer band must be [low, high], got {band!r}")
    low, high = float(band[0]), float(band[1])
    if not 0.0 <= low <= threshold <= high <= 1.0:
        raise OperatingPointError(
            f"refer band [{low:g}, {high:g}] must lie in [0, 1] and contain the threshold "
            f"{threshold:.4g}"
        )


@dataclass(frozen=True)
class Decision:
    """The outcome for one image: ``status`` ``"ok"`` (``positive`` says which call) or
    ``"refer"`` (``positive`` is what the threshold alone would have said)."""

    status: str
    positive: bool


def decide(p_positive: float, threshold: float, band: Sequence[float] | None) -> Decision:
    """Apply an operating point and band to one calibrated probability of the positive class."""
    positive = p_positive >= threshold
    if band is not None and band[0] <= p_positive < band[1]:
        return Decision("refer", positive)
    return Decision("ok", positive)


def choose_threshold(p_positive: np.ndarray, is_positive: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity on these images reaches ``target``.

    With the ``k = ⌈target · n_pos⌉``-th highest positive probability ``s_k``, any threshold in
    ``(s', s_k]`` (``s'`` the next lower probability of any image) has the same figures; the
    midpoint of that interval is returned, so a small change in a probability does not flip
    a validation image.

    Args:
        p_positive: ``(n,)`` calibrated probabilities of the positive class.
        is_positive: ``(n,)`` bool truth.
        target: sensitivity in (0, 1].

    Raises:
        ValueError: no positive image, or ``target`` outside (0, 1].
    """
    p = np.asarray(p_positive, dtype=np.float64)
    pos = np.asarray(is_positive, dtype=bool)
    if not pos.any() or not 0.0 < target <= 1.0:
        raise ValueError("need at least one positive image and a target in (0, 1]")
    k = math.ceil(target * pos.sum() - 1e-9)
    s_k = np.sort(p[pos])[::-1][k - 1]
    below = p[p < s_k]
    return float((s_k + below.max()) / 2.0) if below.size else float(s_k)


def choose_refer_band(
    p_positive: np.ndarray, is_positive: np.ndarray, threshold: float, coverage: float
) -> list[float] | None:
    """The band ``[low, high]`` around ``threshold`` that maximises the accuracy of the calls
    made, keeping at least ``coverage`` of the images called.

    Every split of the sorted probabilities is tried (boundaries at midpoints between
    distinct values, never inside a tie); among bands of equal accuracy the one with the
    highest coverage wins. ``None`` when no band improves on calling every image.

    Args:
        p_positive: ``(n,)`` calibrated probabilities of the positive class.
        is_positive: ``(n,)`` bool truth.
        threshold: the operating point (:func:`choose_threshold`).
        coverage: minimum fraction of images called, in (0, 1].

    Raises:
        ValueError: empty input or ``coverage`` outside (0, 1].
    """
    p = np.asarray(p_positive, dtype=np.float64)
    pos = np.asarray(is_positive, dtype=bool)
    n = len(p)
    if n == 0 or not 0.0 < coverage <= 1.0:
        raise ValueError("need images and a coverage in (0, 1]")
    order = np.argsort(p, kind="stable")
    s, truth = p[order], pos[order]
    # cut index i: images [0, i) lie below the cut. Allowed cuts: not inside a tie.
    cuts = np.array([i for i in range(n + 1) if i in (0, n) or s[i - 1] < s[i]])
    t_cut = int(np.searchsorted(s, threshold, side="left"))  # images below the threshold
    neg_below = np.concatenate([[0], np.cumsum(~truth)])  # negatives among [0, i)
    pos_from = pos.sum() - np.concatenate([[0], np.cumsum(truth)])  # positives among [i, n)
    # s[t_cut - 1] < threshold <= s[t_cut]: the threshold's own cut is always allowed.
    lows = cuts[cuts <= t_cut]
    highs = cuts[cuts >= t_cut]
    lo_grid, hi_grid = np.meshgrid(lows, highs, indexing="ij")
    called = lo_grid + (n - hi_grid)
    correct = neg_below[lo_grid] + pos_from[hi_grid]
    feasible = called >= coverage * n - 1e-9
    accuracy = np.where(feasible & (called > 0), correct / np.maximum(called, 1), -1.0)
    best = accuracy.max()
    base = accuracy[np.searchsorted(lows, t_cut), np.searchsorted(highs, t_cut)]
    if best <= base + 1e-12:
        return None
    candidates = np.argwhere(accuracy >= best - 1e-12)
    i, j = max(candidates, key=lambda ij: (called[ij[0], ij[1]], -ij[0]))
    lo_i, hi_j = int(lows[i]), int(highs[j])

    def boundary(cut: int) -> float:
        if cut == t_cut:
            return float(threshold)
        if cut == 0:
            return 0.0
        if cut == n:
            return 1.0
        return float((s[cut - 1] + s[cut]) / 2.0)

    return [boundary(lo_i), boundary(hi_j)]


def operating_figures(
    p_positive: np.ndarray,
    is_positive: np.ndarray,
    threshold: float,
    band: Sequence[float] | None,
) -> dict[str, float | int]:
    """Figures of an operating point on labelled images.

    Returns:
        ``n``; ``sensitivity`` and ``specificity`` of the threshold alone (every image);
        ``coverage`` (fraction called ``ok``), ``referred`` (count), and on the ``ok``
        images ``ok_accuracy``, ``ok_sensitivity``, ``ok_specificity`` (NaN-free: 0.0 when
        a class has no ``ok`` image).
    """
    p = np.asarray(p_positive, dtype=np.float64)
    pos = np.asarray(is_positive, dtype=bool)
    called_pos = p >= threshold
    ok = np.ones_like(pos) if band is None else ~((p >= band[0]) & (p < band[1]))

    def rate(hit: np.ndarray, among: np.ndarray) -> float:
        return float(hit[among].mean()) if among.any() else 0.0

    return {
        "n": int(len(p)),
        "threshold": float(threshold),
        "sensitivity": rate(called_pos, pos),
        "specificity": rate(~called_pos, ~pos),
        "coverage": float(ok.mean()) if len(p) else 0.0,
        "referred": int((~ok).sum()),
        "ok_accuracy": rate(called_pos == pos, ok),
        "ok_sensitivity": rate(called_pos, pos & ok),
        "ok_specificity": rate(~called_pos, ~pos & ok),
    }


def fit_decision(
    p_positive: np.ndarray,
    is_positive: np.ndarray,
    positive_label: str = "ALL",
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    coverage: float = DEFAULT_COVERAGE,
    source: str = "validation split",
) -> DecisionSpec:
    """Operating point (:func:`choose_threshold`) and band (:func:`choose_refer_band`) with
    their validation figures, and those of the plain arg-max (0.5, no band) beside them."""
    threshold = choose_threshold(p_positive, is_positive, target_sensitivity)
    band = choose_refer_band(p_positive, is_positive, threshold, coverage)
    return DecisionSpec(
        threshold=threshold,
        refer_band=band,
        positive_label=positive_label,
        target_sensitivity=target_sensitivity,
        coverage_target=coverage,
        source=f"{source}, n={len(p_positive)}",
        validation={
            "operating_point": operating_figures(p_positive, is_positive, threshold, band),
            "argmax": operating_figures(p_positive, is_positive, 0.5, None),
        },
    )


# ------------------------------------------- the fraction of calls that are positive
Z_95 = 1.959963984540054
"""Standard normal quantile for a two-sided 95 % interval, Φ⁻¹(0.975)."""


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    With p̂ = k/n: centre (p̂ + z²/2n) / (1 + z²/n), half-width
    z / (1 + z²/n) · √(p̂(1 − p̂)/n + z²/4n²).

    Args:
        successes: k, 0 ≤ k ≤ n.
        n: trials; ``n == 0`` gives ``(0.0, 1.0)`` (nothing is known).
        z: normal quantile (default: 95 %, two-sided).

    Returns:
        ``(low, high)`` within [0, 1].

    Raises:
        ValueError: k outside [0, n].
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)

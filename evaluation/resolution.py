"""How finely a split of ``n`` images measures the figures fitted or checked on it.

One image of a split of ``n`` is ``100 / n`` percentage points of any fraction measured on
it (accuracy, agreement, recall, the fraction of images within a threshold). A bound finer
than that step cannot be met "a little": with 12 validation images one changed call is
8.3 pp, so the conversion gate's 1 pp accuracy bound then allows no changed call at all,
and a failure by one image says nothing a CPU's rounding could not have caused.

:func:`split_size_warnings` names, before training, each figure whose split is too small
for it; the conversion gate (:mod:`leukedge.converters.gate`) states its resolution with
:func:`image_pp` and :func:`images_allowed`. The gate's default bounds live here, so that
training (which must not import the converters) warns against the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from leukedge.checks.decision import DEFAULT_TARGET_SENSITIVITY
from leukedge.checks.ood import DEFAULT_ACCEPT_QUANTILE

DEFAULT_MAX_DELTA_PP = 1.0
"""The gate's largest allowed accuracy loss, percentage points (``GateConfig.max_delta``)."""

DEFAULT_MIN_AGREEMENT = 0.98
"""The gate's smallest allowed label agreement with the float model
(``GateConfig.min_agreement``)."""

_EPS = 1e-9
"""Slack for fractions that are whole numbers of images up to float rounding (0.98 · 50)."""


def image_pp(n: int) -> float:
    """Percentage points one image is of a split of ``n`` images (``inf`` when ``n`` is 0)."""
    return 100.0 / n if n > 0 else math.inf


def images_allowed(fraction: float, n: int) -> int:
    """How many of ``n`` images a bound of ``fraction`` (0–1) of them allows, rounded down:
    ``images_allowed(0.02, 103) == 2``, ``images_allowed(0.01, 12) == 0``."""
    return int(math.floor(fraction * n + _EPS))


def gate_images_needed(
    max_delta_pp: float = DEFAULT_MAX_DELTA_PP, min_agreement: float = DEFAULT_MIN_AGREEMENT
) -> int:
    """Fewest held-out images on which both of the gate's label bounds allow one changed
    call: ``max(100 / max_delta_pp, 1 / (1 − min_agreement))`` rounded up (100 for the
    default 1 pp and 98 %)."""
    return max(math.ceil(100 / max_delta_pp - _EPS), math.ceil(1 / (1 - min_agreement) - _EPS))


def split_size_warnings(
    counts: Mapping[str, Mapping[str, int]],
    embedding_dim: int | None = None,
    *,
    positive_label: str = "ALL",
    max_delta_pp: float = DEFAULT_MAX_DELTA_PP,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    ood_accept_quantile: float = DEFAULT_ACCEPT_QUANTILE,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
) -> list[str]:
    """One sentence per figure that its split is too small to fit or check.

    Args:
        counts: ``{split: {label: images}}`` (``train`` and ``val`` are read).
        embedding_dim: D, the width of the embedding the out-of-domain model is fitted on
            (``None``: the model has none; that check is skipped).
        positive_label: the class whose sensitivity the operating point targets.
        max_delta_pp, min_agreement: the conversion gate's bounds on the val split.
        ood_accept_quantile: fraction of val images the out-of-domain threshold lets pass.
        target_sensitivity: val sensitivity the operating point must reach.

    Returns:
        Sentences (empty when every split is large enough):

        - **gate**: one val image is more than ``max_delta_pp`` (needs ``100 /
          max_delta_pp`` images), or the agreement bound allows no changed call (needs
          ``1 / (1 − min_agreement)``);
        - **out-of-domain threshold**: fewer than ``1 / (1 − quantile)`` val images: the
          threshold is the largest val distance;
        - **out-of-domain fit**: fewer train images than D: the shared covariance has rank
          at most ``n − k``, the rest is its shrinkage towards the identity;
        - **operating point**: fewer than ``1 / (1 − target)`` positive val images: the
          target allows no missed one, so the threshold is the lowest positive's p.
    """
    val, train = counts.get("val", {}), counts.get("train", {})
    n_val, n_train = sum(val.values()), sum(train.values())
    warnings = []
    if n_val and (
        image_pp(n_val) > max_delta_pp + _EPS or images_allowed(1 - min_agreement, n_val) == 0
    ):
        per_class = ", ".join(f"{label} {n}" for label, n in sorted(val.items()))
        needed = gate_images_needed(max_delta_pp, min_agreement)
        warnings.append(
            f"validation split of {n_val} images ({per_class}): one image is "
            f"{image_pp(n_val):.2g} pp, so the conversion gate's {max_delta_pp:g} pp accuracy "
            f"bound allows {images_allowed(max_delta_pp / 100, n_val)} changed calls and its "
            f"{100 * min_agreement:g} % agreement bound "
            f"{images_allowed(1 - min_agreement, n_val)}: a converted model that changes one "
            f"call fails it (at least {needed} validation images for those bounds)"
        )
    if n_val and images_allowed(1 - ood_accept_quantile, n_val) == 0:
        warnings.append(
            f"validation split of {n_val} images: the out-of-domain threshold "
            f"({100 * ood_accept_quantile:g} % of them within) is their largest distance "
            f"(at least {math.ceil(1 / (1 - ood_accept_quantile) - _EPS)} validation images "
            "for that quantile)"
        )
    if embedding_dim and n_train and n_train < embedding_dim:
        warnings.append(
            f"training split of {n_train} images: the out-of-domain model's covariance is "
            f"fitted in {embedding_dim} dimensions from at most {n_train - len(train)} "
            "independent directions; the rest is its shrinkage (at least "
            f"{embedding_dim} training images for a full-rank estimate)"
        )
    n_pos = val.get(positive_label, 0)
    if n_pos and images_allowed(1 - target_sensitivity, n_pos) == 0:
        warnings.append(
            f"validation split has {n_pos} {positive_label} images: the operating point's "
            f"{100 * target_sensitivity:g} % sensitivity target misses none of them, so its "
            f"threshold is their lowest p({positive_label}) (at least "
            f"{math.ceil(1 / (1 - target_sensitivity) - _EPS)} {positive_label} validation images)"
        )
    return warnings

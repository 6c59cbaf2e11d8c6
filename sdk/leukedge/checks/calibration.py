"""Temperature scaling applied at inference (the one implementation; training fits ``T``).

Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017, section 4.2. The fitted
temperature travels in the model's metadata; :class:`leukedge.Classifier` applies it here, and
:mod:`leukedge.training.calibration` fits it with this same function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale probabilities as ``softmax(log p / T)``; ``T = 1`` returns them unchanged.

    Args:
        probs: ``(k,)`` or ``(n, k)`` probabilities, floats in [0, 1] (zeros are clipped to
            1e-12 before the logarithm, so quantized outputs of exactly 0 are fine).
        temperature: ``T > 0``; ``T > 1`` softens, ``T < 1`` sharpens. The arg-max never
            changes.

    Returns:
        Float64 array of the same shape, rows summing to 1.
    """
    if temperature == 1.0:
        return np.asarray(probs, dtype=np.float64)
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


def temperature_scaled(probs: Sequence[float], temperature: float) -> list[float]:
    """:func:`apply_temperature` for one image's few probabilities, in plain Python.

    The same formula (clip to [1e-12, 1], ``softmax(log p / T)``, max subtracted before
    ``exp``), so the same values to rounding (tested to 1e-12). The
    :class:`~leukedge.Classifier` calls this once per image, right after an invoke, where
    each NumPy call on a 2-vector costs about 20 µs and these few float operations about 1.

    Args:
        probs: ``k`` probabilities in [0, 1].
        temperature: ``T > 0``.

    Returns:
        ``k`` floats summing to 1 (``probs`` as floats when ``T = 1``).
    """
    if temperature == 1.0:
        return [float(p) for p in probs]
    logits = [math.log(min(max(float(p), 1e-12), 1.0)) / temperature for p in probs]
    top = max(logits)
    exp = [math.exp(v - top) for v in logits]
    total = sum(exp)
    return [v / total for v in exp]

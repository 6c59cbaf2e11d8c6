"""Temperature scaling applied at inference (the one implementation; training fits ``T``).

Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017, section 4.2. The fitted
temperature travels in the model's metadata; :class:`leukedge.Classifier` applies it here, and
:mod:`leukedge.training.calibration` fits it with this same function.
"""

from __future__ import annotations

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

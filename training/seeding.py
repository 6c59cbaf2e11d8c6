"""Random streams that are a pure function of ``(seed, epoch, batch)``.

Keras keeps the state of every random layer (``Dropout``, EfficientNet's stochastic depth,
the augmentation layers) in ``SeedGenerator`` variables that advance with each call. Those
variables are not among ``model.weights``, so a checkpoint does not carry them, and anything
that calls a layer an extra time (Keras peeks at the first batches of a ``PyDataset`` to
infer its shapes) shifts every later random draw. Resetting the states from a key before
each epoch (model) or each batch (augmentation) makes the draws independent of what ran
before, so a run resumed after an interruption replays exactly the masks and transforms the
uninterrupted run would have used.
"""

from __future__ import annotations

import numpy as np

SEED_STATE_NAME = "seed_generator_state"


def seed_states(layer) -> list:
    """The ``SeedGenerator`` state variables of a Keras layer or model, in a fixed order.

    Args:
        layer: a built ``keras.layers.Layer`` (a model, a ``Sequential``…).

    Returns:
        Variables of shape ``(2,)``, integer dtype (``[seed, counter]``); empty if the layer
        has no random sub-layers.
    """
    return [v for v in layer.variables if v.name == SEED_STATE_NAME]


def reseed(layer, *key: int) -> None:
    """Set every random state in ``layer`` to a pure function of ``key``.

    State ``i`` becomes ``[s_i, 0]`` with ``s_i`` drawn from
    ``numpy.random.SeedSequence([*key, i])`` (31 bits, valid for every backend's seed dtype);
    the counter then advances with each draw as usual, so the random numbers within one
    epoch or batch still differ from call to call.

    Args:
        layer: a built Keras layer or model.
        *key: non-negative integers, e.g. ``(seed, epoch)`` or ``(seed, epoch, batch)``.

    Raises:
        ValueError: a negative key (``SeedSequence`` refuses them).
    """
    states = seed_states(layer)
    if not states:
        return
    words = np.random.SeedSequence(list(key)).generate_state(len(states))
    for variable, word in zip(states, words, strict=True):
        variable.assign(np.array([int(word) & 0x7FFFFFFF, 0], dtype=variable.dtype))

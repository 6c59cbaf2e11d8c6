"""Several GPUs or machines: each backend's own data parallelism, chosen by a flag.

=============  ==========  ==============================================================
``--distribute`` backend   what it uses
=============  ==========  ==============================================================
``none``       any         one device (the default)
``mirrored``   tensorflow  ``tf.distribute.MirroredStrategy``: all GPUs of one machine
``multiworker`` tensorflow ``tf.distribute.MultiWorkerMirroredStrategy``: several machines,
                           configured by the ``TF_CONFIG`` environment variable
``data-parallel`` jax      ``keras.distribution.DataParallel`` over all local devices
                           (several hosts: call ``keras.distribution.initialize`` first)
=============  ==========  ==============================================================

The global batch is ``--batch-size``; each replica gets an equal share. With one device
every mode runs one replica, which is how the tests exercise these code paths on a CPU.
"""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

Distribution = Literal["none", "mirrored", "multiworker", "data-parallel"]
"""``--distribute`` values (the table above)."""

DISTRIBUTIONS: tuple[str, ...] = get_args(Distribution)


def distribution_scope(mode: str):
    """A context manager under which the model is built and compiled.

    Args:
        mode: one of :data:`DISTRIBUTIONS`.

    Returns:
        ``(scope, number of replicas)``: ``scope()`` returns a fresh context manager each
        time (a strategy's scope cannot be entered twice from one object).

    Raises:
        ValueError: unknown mode, or one that the active Keras backend does not support.
    """
    import keras

    backend = keras.backend.backend()
    if mode == "none":
        return contextlib.nullcontext, 1
    if mode in ("mirrored", "multiworker"):
        if backend != "tensorflow":
            raise ValueError(
                f"--distribute {mode} needs KERAS_BACKEND=tensorflow "
                f"(active: {backend}); on JAX use data-parallel"
            )
        import tensorflow as tf

        strategy = (
            tf.distribute.MirroredStrategy()
            if mode == "mirrored"
            else tf.distribute.MultiWorkerMirroredStrategy()
        )
        return strategy.scope, strategy.num_replicas_in_sync
    if mode == "data-parallel":
        if backend != "jax":
            raise ValueError(
                f"--distribute data-parallel needs KERAS_BACKEND=jax "
                f"(active: {backend}); on TensorFlow use mirrored"
            )
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext, len(devices)
    raise ValueError(f"unknown distribution {mode!r}; choose one of {DISTRIBUTIONS}")

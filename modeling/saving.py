"""Loading a leukedge ``.keras`` file: TensorFlow backend, leukedge's layers registered.

Training, evaluation and conversion all read ``model.keras`` through
:func:`load_keras_model`, so a file that holds leukedge's own layers
(:class:`~leukedge.modeling.layers.PerImageStandardization`) loads everywhere. Models
trained under any Keras backend load: the ``.keras`` format is backend-neutral.
"""

from __future__ import annotations

import os
from pathlib import Path


def require_tensorflow_backend():
    """Import Keras under the TensorFlow backend (set ``KERAS_BACKEND`` if unset).

    Returns:
        The ``keras`` module.

    Raises:
        RuntimeError: Keras was already imported under another backend in this process.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"conversion needs the TensorFlow backend, but Keras runs on "
            f"{keras.backend.backend()!r}; run with KERAS_BACKEND=tensorflow"
        )
    return keras


def load_keras_model(path: str | os.PathLike):
    """Load a ``.keras`` model (TensorFlow backend, not compiled).

    Args:
        path: a ``.keras`` archive written by Keras 3 (``leukedge train`` writes
            ``RUN/model.keras``).

    Returns:
        The uncompiled ``keras.Model``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a loadable ``.keras`` archive (message names it).
        RuntimeError: Keras already runs on another backend in this process.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Keras model file not found")
    keras = require_tensorflow_backend()
    import leukedge.modeling.layers  # noqa: F401 - registers leukedge's custom layers

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError… all mean "corrupt"
        raise ValueError(
            f"{path}: not a loadable .keras model ({type(exc).__name__}: {exc})"
        ) from exc

"""Run a model over a list of images: ``{path: probabilities}``, keyed by file name.

The one place where training (the best-epoch check, the validation files), evaluation and
conversion (the gate's float reference and candidates, the fitted checks) turn a model and
some images into probabilities:

- :func:`predict_keras`: a Keras model (in memory), images decoded and resized by
  :func:`leukedge.engine.preprocess.load_and_resize` and fed as float32 RGB 0–255, in batches;
- :func:`infer_tflite` / :func:`predict_tflite`: a ``.tflite`` through
  :class:`leukedge.engine.interpreter.TFLiteEngine`, the very code the SDK uses, one invoke
  per image.

Each output row is attached to its own path as it is produced, so a result is keyed by
file name, never by position (the source paper's misaligned confusion matrix came from
reading a shuffled generator in position order).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from leukedge.engine.preprocess import load_and_resize
from leukedge.evaluation.data import Sample


def predict_keras(
    model, samples: Sequence[Sample], image_size: int, batch_size: int = 32
) -> dict[str, list[float]]:
    """Run a Keras ``model`` on ``samples`` (no augmentation) → ``{path: probabilities}``.

    Args:
        model: a Keras classifier, ``(batch, size, size, 3)`` RGB 0–255 →
            ``(batch, n_classes)`` probabilities (any backend).
        samples: the images; only ``path`` is read.
        image_size: square input side, pixels.
        batch_size: images per ``predict_on_batch`` call.

    Returns:
        ``{str(path): [p_0, …, p_{n_classes-1}]}`` (float64 values), one entry per sample.

    Raises:
        ValueError: no samples.
        leukedge.engine.preprocess.ImageDecodeError / FileNotFoundError: an unreadable image.
    """
    if not samples:
        raise ValueError("empty split: no samples to serve")
    size = (image_size, image_size)
    out: dict[str, list[float]] = {}
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        x = np.stack([load_and_resize(s.path, size) for s in batch]).astype(np.float32)
        probs = np.asarray(model.predict_on_batch(x), dtype=np.float64)
        for sample, row in zip(batch, probs, strict=True):
            out[str(sample.path)] = row.tolist()
    return out


def infer_tflite(
    model: bytes | str | os.PathLike, paths: Sequence[str], num_threads: int | None = None
) -> tuple[dict[str, list[float]], dict[str, np.ndarray] | None]:
    """Probabilities and embeddings of a ``.tflite`` on image files (SDK engine).

    Args:
        model: the ``.tflite`` bytes or path.
        paths: image files; decoded and resized to the model's input by
            :func:`leukedge.engine.preprocess.load_and_resize`.
        num_threads: interpreter threads (``None``: LiteRT's default).

    Returns:
        ``({path: probabilities}, {path: float32 embedding (D,)})``; the second is ``None``
        when the model has no embedding output.

    Raises:
        leukedge.engine.interpreter.ModelLoadError: not a usable ``.tflite``.
        leukedge.engine.preprocess.ImageDecodeError / FileNotFoundError: an unreadable image.
    """
    from leukedge.engine.interpreter import TFLiteEngine

    engine = TFLiteEngine(model, num_threads=num_threads)
    probabilities, embeddings = {}, {}
    for p in paths:
        probs, embedding = engine.run_with_embedding(load_and_resize(p, engine.input_size))
        probabilities[p] = probs.astype(float).tolist()
        embeddings[p] = embedding
    return probabilities, (embeddings if engine.embedding_dim is not None else None)


def predict_tflite(
    model: bytes | str | os.PathLike, paths: Sequence[str], num_threads: int | None = None
) -> dict[str, list[float]]:
    """``{path: probabilities}`` of a ``.tflite`` on image files (:func:`infer_tflite`
    without the embeddings)."""
    return infer_tflite(model, paths, num_threads)[0]

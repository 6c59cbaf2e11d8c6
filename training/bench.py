"""Training throughput benchmark (a command, not a test): ``leukedge train bench``.

Measures, on whatever device the Keras backend uses:

- **pipeline** images/s: decoding, resizing and augmenting training batches alone
  (:class:`~leukedge.training.pipeline.ImageSequence`), which must stay well above the
  training rate (the issue asks for at least 3×) so the accelerator never waits for data;
- **training** images/s: ``train_on_batch`` of the proposed model at 224 px, batch 32, top
  20 backbone layers unfrozen (the paper's fine-tuning phase), after warm-up steps.
"""

from __future__ import annotations

import os
import time
from typing import Any


def benchmark(
    data: str | os.PathLike,
    arch: str = "proposed",
    image_size: int = 224,
    batch_size: int = 32,
    steps: int = 10,
    warmup: int = 2,
    unfreeze_top: int = 20,
) -> dict[str, Any]:
    """Run both measurements and return them (images per second, settings, backend).

    Args:
        data: a dataset folder (real images, so decoding costs are real).
        arch: architecture to train (random initialisation: speed does not depend on it).
        image_size, batch_size: as in training.
        steps: timed steps (batches) for each measurement.
        warmup: untimed steps first (graph tracing, XLA compilation).
        unfreeze_top: backbone layers trainable.
    """
    import keras
    import numpy as np

    from leukedge.evaluation.data import LABELS, load_dataset
    from leukedge.modeling.models import build_model, set_trainable_backbone_layers
    from leukedge.training.augment import AugmentConfig
    from leukedge.training.pipeline import ImageSequence, build_augmenter

    samples = load_dataset(data)
    seq = ImageSequence(
        samples,
        LABELS,
        image_size,
        batch_size,
        shuffle=True,
        augmenter=build_augmenter(AugmentConfig()),
    )
    n_batches = min(len(seq), warmup + steps)
    for i in range(warmup):
        seq[i]
    start = time.perf_counter()
    batches = [seq[i] for i in range(warmup, n_batches)]
    pipeline_rate = sum(len(x) for x, _ in batches) / (time.perf_counter() - start)

    model = build_model(arch, len(LABELS), image_size, weights=None, frozen_batchnorm=True)
    set_trainable_backbone_layers(model, unfreeze_top)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
    x, y = batches[0] if batches else seq[0]
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    train_rate = steps * len(x) / (time.perf_counter() - start)
    return {
        "backend": keras.backend.backend(),
        "arch": arch,
        "image_size": image_size,
        "batch_size": batch_size,
        "unfreeze_top": unfreeze_top,
        "steps": steps,
        "pipeline_images_per_s": round(pipeline_rate, 1),
        "train_images_per_s": round(train_rate, 1),
        "pipeline_to_train_ratio": round(pipeline_rate / train_rate, 2),
        "devices": [str(d) for d in keras.distribution.list_devices()]
        if keras.backend.backend() == "jax"
        else None,
        "numpy": np.__version__,
    }

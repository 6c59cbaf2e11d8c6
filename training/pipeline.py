"""Backend-neutral input pipeline: ``keras.utils.PyDataset`` over :class:`Sample` lists.

Images are decoded and resized by :func:`leukedge.engine.preprocess.load_and_resize`, the same
function the runtime uses, and fed as float32 RGB 0–255 (the model normalises in-graph).
Augmentation is applied to training batches only: the geometric part (paper, section IV.C:
rotation 20°, zoom 20 %, width/height shift 20 %, shear, horizontal flip, nearest fill) is a
stack of Keras preprocessing layers; the photometric part (stain, colour, exposure, blur,
noise, JPEG; :mod:`leukedge.training.augment`) is drawn per image after it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import keras
import numpy as np

from leukedge.engine.preprocess import load_and_resize
from leukedge.evaluation.data import Sample
from leukedge.training.augment import AugmentConfig, PhotometricConfig, photometric
from leukedge.training.seeding import reseed


def build_augmenter(config: AugmentConfig, seed: int = 0) -> keras.Sequential | None:
    """A ``keras.Sequential`` of random layers for ``config``, or ``None`` when disabled.

    Input and output: float32 ``(batch, H, W, 3)`` RGB 0–255.
    """
    if not config.enabled:
        return None
    fill = config.fill_mode
    stack: list[keras.layers.Layer] = []
    flip = {
        (True, False): "horizontal",
        (False, True): "vertical",
        (True, True): "horizontal_and_vertical",
    }
    mode = flip.get((config.horizontal_flip, config.vertical_flip))
    if mode:
        stack.append(keras.layers.RandomFlip(mode, seed=seed))
    if config.rotation_degrees:
        stack.append(
            keras.layers.RandomRotation(
                config.rotation_degrees / 360.0, fill_mode=fill, seed=seed + 1
            )
        )
    if config.zoom:
        # Keras: a negative factor zooms in, a positive one out.
        factor = (-config.zoom, 0.0) if config.zoom_in_only else config.zoom
        stack.append(keras.layers.RandomZoom(factor, fill_mode=fill, seed=seed + 2))
    if config.shift:
        stack.append(
            keras.layers.RandomTranslation(
                config.shift, config.shift, fill_mode=fill, seed=seed + 3
            )
        )
    if config.shear:
        stack.append(
            keras.layers.RandomShear(config.shear, config.shear, fill_mode=fill, seed=seed + 4)
        )
    if not stack:
        return None
    return keras.Sequential(stack, name="augmentation")


class ImageSequence(keras.utils.PyDataset):
    """Batches of ``(images, one-hot labels)`` from samples, optionally shuffled and augmented.

    Args:
        samples: the split to serve.
        labels: class names in output order (``("ALL", "HEM")``).
        image_size: square side in pixels.
        batch_size: images per batch (the last batch may be smaller).
        shuffle: reshuffle every epoch (training); off keeps ``samples`` order, which
            :meth:`paths` reports, so predictions can be joined to files by name.
        augmenter: from :func:`build_augmenter`, or ``None``. Batch ``i`` of epoch ``e`` is
            augmented with random states reset from ``(seed, e, i)``, so the transforms
            depend on nothing but the seed, the epoch and the batch (resume replays them).
        photometric: :class:`~leukedge.training.augment.PhotometricConfig` drawn per image
            after the geometric augmenter, from a generator seeded with ``(seed, e, i)``;
            ``None`` = none.
        rot90: rotate each training image by a random multiple of 90° (same generator).
        seed: shuffling seed (epoch ``e`` uses ``seed + e``).
        with_labels: yield ``(x, y)``; otherwise ``x`` alone (prediction).

    Yields:
        ``x``: float32 ``(batch, size, size, 3)`` RGB 0–255; ``y``: float32
        ``(batch, n_classes)`` one-hot.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        labels: Sequence[str],
        image_size: int,
        batch_size: int = 32,
        shuffle: bool = False,
        augmenter: keras.Sequential | None = None,
        seed: int = 0,
        photometric: PhotometricConfig | None = None,
        rot90: bool = False,
        with_labels: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        unknown = {s.label for s in samples} - set(labels)
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not among the classes {list(labels)}")
        if not samples:
            raise ValueError("empty split: no samples to serve")
        self.samples = list(samples)
        self.labels = list(labels)
        self.image_size = image_size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augmenter = augmenter
        self.photometric = photometric if photometric is not None and photometric.enabled else None
        self.rot90 = rot90
        self.seed = seed
        self.with_labels = with_labels
        self._order = np.arange(len(self.samples))
        self._epoch = 0
        self._augment_lock = threading.Lock()  # the augmenter's random state is shared
        if shuffle:
            self._reshuffle()

    def __len__(self) -> int:
        return math.ceil(len(self.samples) / self.batch_size)

    def _reshuffle(self) -> None:
        self._order = np.random.default_rng(self.seed + self._epoch).permutation(len(self.samples))

    def on_epoch_end(self) -> None:
        self.set_epoch(self._epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        """Order batches for ``epoch`` (a pure function of ``seed`` and ``epoch``)."""
        self._epoch = epoch
        if self.shuffle:
            self._reshuffle()

    def batch_samples(self, index: int) -> list[Sample]:
        """The samples of batch ``index`` in the order they are served."""
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return [self.samples[i] for i in idx]

    def __getitem__(self, index: int):
        batch = self.batch_samples(index)
        size = (self.image_size, self.image_size)
        x = np.stack([load_and_resize(s.path, size) for s in batch]).astype(np.float32)
        if self.augmenter is not None:
            with self._augment_lock:
                reseed(self.augmenter, self.seed, self._epoch, index)
                x = keras.ops.convert_to_numpy(self.augmenter(x, training=True))
            x = x.astype(np.float32)
            np.clip(x, 0.0, 255.0, out=x)
        if self.photometric is not None or self.rot90:
            rng = np.random.default_rng((self.seed, self._epoch, index))
            if self.rot90:
                x = np.stack([np.rot90(image, int(rng.integers(4))) for image in x])
            if self.photometric is not None:
                x = np.stack([photometric(image, rng, self.photometric) for image in x])
            x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.with_labels:
            return x
        y = np.zeros((len(batch), len(self.labels)), dtype=np.float32)
        y[np.arange(len(batch)), [self.labels.index(s.label) for s in batch]] = 1.0
        return x, y

    def paths(self) -> list[str]:
        """File paths in serving order (only meaningful without shuffling)."""
        return [str(self.samples[i].path) for i in self._order]

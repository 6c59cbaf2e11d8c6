"""A cache of the frozen front's outputs, computed once per image and per view.

When the backbone is frozen (the ``camera`` recipe), everything before the head, the
in-graph input normalisation and the ImageNet backbone (the **front**), gives the same
output every epoch and every fold. Cross-validation (:mod:`leukedge.training.crossval`)
fits heads on these outputs instead of running the backbone again: a round of blocked
cross-validation takes minutes on a CPU rather than hours.

What is cached, per image and per **view** (:class:`View`):

- the backbone's last feature map, ``(7, 7, 1280)`` float16 at 224 px (the proposed
  head's attention tokens), or only its average pool ``(1280,)`` float32 (``keep="pooled"``,
  enough for a linear head); the pooled embedding is always derivable from the map.

Views are the clean image, the fixed camera perturbations of
:mod:`leukedge.evaluation.robustness` (for flip rates: JPEG 40 and 75, noise σ 4, exposure
−10 %, stain shift, 5 % zoom), and seeded training augmentations (``aug0``, ``aug1``…:
the camera recipe's flips, 90° rotations, zoom in ≤ 10 % and photometric ranges, which
include the camera nuisances JPEG 30–95, sensor noise, exposure, slight blur and stain).
Every random draw is seeded from the view's seed and the image's sha256, so a view of an
image is the same whatever dataset or order it comes in.

Where: ``<root>/<front key>/<view key>.npy`` plus ``.sha.txt`` (one image sha256 a row,
the rows of the array), written atomically. The front key hashes the architecture, the
backbone weights file's sha256, the input size and the input normalisation; the view key
hashes the view's definition. A rerun reuses every row whose image sha256 is there and
computes only the rest.

The front runs as a float32 LiteRT file converted from the Keras front, one image per
invoke (measured on this project's shared 2-core CPU: 23–27 images/s for a view, against
about 20 images/s for Keras' own batched predict of the same front in a quick check; the
gain is modest, the point is that each image and view is computed once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from leukedge.engine.preprocess import RESAMPLING, load_and_resize
from leukedge.evaluation import robustness
from leukedge.evaluation.data import Sample
from leukedge.modeling.config import IMAGENET_MEAN, IMAGENET_STD, InputNormConfig
from leukedge.training.augment import PhotometricConfig, photometric

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bumped when what a cached row means changes (part of every key)."""

FRONTS: dict[str, InputNormConfig] = {
    "blur-std": InputNormConfig(
        blur_sigma=1.0, standardize=True, target_mean=IMAGENET_MEAN, target_std=IMAGENET_STD
    ),
    "std": InputNormConfig(
        blur_sigma=0.0, standardize=True, target_mean=IMAGENET_MEAN, target_std=IMAGENET_STD
    ),
    "none": InputNormConfig(),
}
"""Named input normalisations before the backbone: ``blur-std`` is model v2's (Gaussian
σ 1 px, reflected borders, then per-image standardisation to ImageNet's statistics; the
blur's MIRROR_PAD runs outside XNNPACK and costs about 2.1 ms of v2's 5.2 ms int8 invoke),
``std`` the standardisation alone, ``none`` nothing (v1)."""


@dataclass(frozen=True)
class FrontConfig:
    """The frozen front whose outputs are cached.

    Attributes:
        arch: backbone architecture (``proposed-lite``: ImageNet EfficientNet-Lite0).
        weights: ``imagenet`` or a local weights file (as ``build_backbone``).
        image_size: square input side, pixels.
        norm: a key of :data:`FRONTS`.
        keep: ``map`` (the last feature map, float16) or ``pooled`` (its average, float32).
    """

    arch: str = "proposed-lite"
    weights: str = "imagenet"
    image_size: int = 224
    norm: str = "std"
    keep: Literal["map", "pooled"] = "map"

    def __post_init__(self) -> None:
        if self.norm not in FRONTS:
            raise ValueError(f"unknown front normalisation {self.norm!r}; choose {sorted(FRONTS)}")
        if self.keep not in ("map", "pooled"):
            raise ValueError(f"keep must be 'map' or 'pooled', got {self.keep!r}")

    @property
    def input_norm(self) -> InputNormConfig:
        """The :class:`InputNormConfig` of ``norm``."""
        return FRONTS[self.norm]


@dataclass(frozen=True)
class View:
    """One deterministic version of every image.

    Attributes:
        name: ``clean``; a perturbation of :data:`PERTURBATION_VIEWS`; or ``aug<i>``.
        seed: the augmentation seed (``aug`` views).
        photometric: the photometric ranges of an ``aug`` view (the camera recipe's).
    """

    name: str
    seed: int = 0
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)

    @property
    def key(self) -> str:
        """Short hash of the view's definition (file name of its cache)."""
        spec = {"name": self.name, "seed": self.seed, "photometric": asdict(self.photometric)}
        if self.name in PERTURBATION_VIEWS:
            spec["perturbation"] = repr(PERTURBATION_VIEWS[self.name][1])
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.name}-{digest}"


PERTURBATION_VIEWS: dict[str, tuple[Callable[..., np.ndarray], dict]] = {
    "jpeg_q40": (robustness.jpeg, {"quality": 40}),
    "jpeg_q75": (robustness.jpeg, {"quality": 75}),
    "noise_sigma4": (robustness.gaussian_noise, {"sigma": robustness.NOISE_SIGMA}),
    "exposure_minus10pct": (robustness.exposure, {"factor": robustness.EXPOSURE}),
    "stain_shift": (robustness.stain_shift, {"factors": robustness.STAIN_SHIFT}),
    "zoom_5pct": (robustness.zoom, {"factor": robustness.ZOOM}),
}
"""The issue's camera perturbations (:mod:`leukedge.evaluation.robustness`'s functions and
figures, plus JPEG quality 75, Pillow's default): ``{view name: (function, arguments)}``."""


def camera_photometric() -> PhotometricConfig:
    """The camera recipe's photometric ranges (:data:`leukedge.training.recipes.RECIPES`)."""
    from leukedge.training.recipes import recipe

    return recipe("camera")["augment"].photometric


def augment_views(n: int) -> list[View]:
    """``aug0`` … ``aug<n-1>``: seeded camera-recipe augmentations."""
    ranges = camera_photometric()
    return [View(f"aug{i}", seed=1000 + i, photometric=ranges) for i in range(n)]


def _seed_of(sha: str, seed: int) -> int:
    return (int(sha[:12], 16) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF


def view_image(rgb: np.ndarray, view: View, sha: str) -> np.ndarray:
    """The ``view`` of one decoded, resized image.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB at the model's input size.
        view: which view.
        sha: the image file's sha256 (hex): seeds every random draw.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: an unknown view name.
    """
    if view.name == "clean":
        return rgb
    if view.name in PERTURBATION_VIEWS:
        function, kwargs = PERTURBATION_VIEWS[view.name]
        return function(rgb, _seed_of(sha, 0), **kwargs)
    if view.name.startswith("aug"):
        rng = np.random.default_rng(_seed_of(sha, view.seed))
        x = np.rot90(rgb, int(rng.integers(4)))
        if rng.random() < 0.5:
            x = x[:, ::-1]
        if rng.random() < 0.5:
            x = x[::-1]
        h, w = x.shape[:2]
        factor = 1.0 + rng.uniform(0.0, 0.1)  # the camera recipe's zoom in ≤ 10 %
        ch, cw = round(h / factor), round(w / factor)
        top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        crop = np.ascontiguousarray(x[top : top + ch, left : left + cw])
        from PIL import Image

        x = np.asarray(Image.fromarray(crop).resize((w, h), RESAMPLING), dtype=np.uint8)
        return photometric(x, rng, view.photometric)
    raise ValueError(f"unknown view {view.name!r}")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_front(config: FrontConfig):
    """The Keras front: RGB 0–255 ``(batch, S, S, 3)`` → the backbone's last feature map
    ``(batch, S/32, S/32, channels)``, input normalisation included (frozen)."""
    import keras

    from leukedge.modeling.architectures import architecture
    from leukedge.modeling.layers import input_norm_layers, preprocessing_layers
    from leukedge.modeling.models import build_backbone

    backbone = build_backbone(config.arch, config.image_size, config.weights)
    backbone.trainable = False
    inputs = keras.Input((config.image_size, config.image_size, 3), name="image")
    x = inputs
    stack = [
        *input_norm_layers(config.input_norm),
        *preprocessing_layers(architecture(config.arch).preprocessing),
    ]
    for layer in stack:
        x = layer(x)
    return keras.Model(inputs, backbone(x, training=False), name="front")


def _weights_sha(config: FrontConfig) -> str:
    from leukedge.modeling.models import default_lite0_weights_path

    if config.weights == "imagenet" and config.arch == "proposed-lite":
        path = default_lite0_weights_path()
        if path.is_file():
            return sha256_file(path)
        raise RuntimeError(
            f"ImageNet weights for EfficientNet-Lite0 not found at {path}; run "
            "`leukedge convert import-weights` first"
        )
    if config.weights != "imagenet" and os.path.isfile(config.weights):
        return sha256_file(config.weights)
    return str(config.weights)


class FeatureCache:
    """Front outputs on disk, keyed by front, view and image sha256.

    Args:
        root: cache folder (under ``runs/``, which git ignores).
        front: the :class:`FrontConfig`.
        threads: interpreter threads.

    Attributes:
        key: the front's key (its sub-folder).
        stats: ``{view name: {"computed", "reused", "seconds", "images_per_s"}}`` of this
            object's calls.
    """

    def __init__(self, root: str | os.PathLike, front: FrontConfig, threads: int = 2):
        self.front = front
        self.threads = threads
        spec = asdict(front) | {
            "weights_sha256": _weights_sha(front),
            "format": CACHE_FORMAT,
            "engine": "litert-fp32",
        }
        spec.pop("keep")
        spec.pop("weights")
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        self.key = f"{front.norm}-{digest[:12]}"
        self.folder = Path(root) / self.key
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "front.json").write_text(json.dumps(spec, indent=2))
        self._engine = None
        self._shas: dict[str, str] = {}
        self.stats: dict[str, dict[str, float]] = {}

    # --------------------------------------------------------------------- engine
    def _interpreter(self):
        if self._engine is None:
            import tensorflow as tf
            from ai_edge_litert.interpreter import Interpreter

            tflite = self.folder / "front_fp32.tflite"
            if not tflite.is_file():
                converter = tf.lite.TFLiteConverter.from_keras_model(build_front(self.front))
                tmp = tflite.with_suffix(".partial")
                tmp.write_bytes(converter.convert())
                os.replace(tmp, tflite)
            interpreter = Interpreter(model_path=str(tflite), num_threads=self.threads)
            interpreter.allocate_tensors()
            self._engine = interpreter
        return self._engine

    def _run(self, rgb: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter()
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        interpreter.set_tensor(inp["index"], rgb[None].astype(np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])[0]

    # --------------------------------------------------------------------- cache
    def sha(self, path: str | os.PathLike) -> str:
        """The image's sha256 (memoised per path)."""
        key = str(path)
        if key not in self._shas:
            self._shas[key] = sha256_file(path)
        return self._shas[key]

    def _files(self, view: View) -> tuple[Path, Path]:
        stem = self.folder / f"{view.key}.{self.front.keep}"
        return stem.with_suffix(stem.suffix + ".npy"), stem.with_suffix(stem.suffix + ".sha.txt")

    def _load(self, view: View) -> tuple[list[str], np.ndarray | None]:
        array_file, sha_file = self._files(view)
        if not (array_file.is_file() and sha_file.is_file()):
            return [], None
        shas = sha_file.read_text().split()
        array = np.load(array_file, mmap_mode="r")
        if len(shas) != len(array):
            log.warning("%s: %d rows for %d shas; recomputing", array_file, len(array), len(shas))
            return [], None
        return shas, array

    def features(self, samples: Sequence[Sample], view: View) -> np.ndarray:
        """The front's output for every sample under ``view``, in ``samples`` order.

        Returns:
            ``(n, h, w, c)`` float16 maps (``keep="map"``) or ``(n, c)`` float32 pooled
            embeddings (``keep="pooled"``).

        Raises:
            OSError / PIL errors: an unreadable image (names the file).
        """
        shas = [self.sha(s.path) for s in samples]
        cached, array = self._load(view)
        index = {sha: i for i, sha in enumerate(cached)}
        missing = [(sha, s) for sha, s in zip(shas, samples, strict=True) if sha not in index]
        missing = list({sha: s for sha, s in missing}.items())
        start = time.perf_counter()
        if missing:
            size = (self.front.image_size, self.front.image_size)
            rows = []
            for i, (sha, sample) in enumerate(missing):
                rgb = view_image(load_and_resize(sample.path, size), view, sha)
                out = self._run(rgb)
                rows.append(out.mean(axis=(0, 1)) if self.front.keep == "pooled" else out)
                if (i + 1) % 500 == 0:
                    rate = (i + 1) / (time.perf_counter() - start)
                    log.info(
                        "%s/%s: %d of %d images, %.1f images/s",
                        self.key,
                        view.name,
                        i + 1,
                        len(missing),
                        rate,
                    )
            dtype = np.float32 if self.front.keep == "pooled" else np.float16
            new = np.stack(rows).astype(dtype)
            merged = new if array is None else np.concatenate([np.asarray(array), new])
            all_shas = cached + [sha for sha, _ in missing]
            array_file, sha_file = self._files(view)
            tmp = array_file.with_name(array_file.name + ".partial.npy")
            np.save(tmp, merged)
            tmp_sha = sha_file.with_name(sha_file.name + ".partial")
            tmp_sha.write_text("\n".join(all_shas) + "\n")
            os.replace(tmp, array_file)
            os.replace(tmp_sha, sha_file)
            cached, array = all_shas, merged
            index = {sha: i for i, sha in enumerate(cached)}
        seconds = time.perf_counter() - start
        self.stats[view.name] = {
            "computed": len(missing),
            "reused": len(samples) - len(missing),
            "seconds": round(seconds, 1),
            "images_per_s": round(len(missing) / seconds, 1) if missing else None,
        }
        if missing:
            log.info(
                "%s/%s: computed %d, reused %d (%.1f images/s)",
                self.key,
                view.name,
                len(missing),
                len(samples) - len(missing),
                len(missing) / seconds,
            )
        return np.asarray(array[[index[sha] for sha in shas]])

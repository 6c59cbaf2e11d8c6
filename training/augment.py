"""Augmentation settings (:class:`AugmentConfig`) and the photometric transforms.

The geometric part of :class:`AugmentConfig` is built as Keras layers by
:func:`leukedge.training.pipeline.build_augmenter`; this module holds no Keras import, so
the settings can be read (command-line help, ``config.json``) before a backend is loaded.

Photometric augmentation: what differs between labs and cameras, drawn per image.

The paper's augmentation (section IV.C) is geometric only (rotation, zoom, shift, shear,
flip), so a model trained with it meets every new stain batch, lamp and camera sensor
unprepared. These transforms model those differences, in the order light takes through a
microscope to a file:

1. stain amount: haematoxylin / eosin / DAB optical densities scaled and shifted after colour
   deconvolution (Ruifrok & Johnston 2001; "HED jitter" as in Tellez et al., *Quantifying
   the effects of data augmentation and stain color normalization in convolutional neural
   networks for computational pathology*, Med. Image Anal. 2019, whose "HED-light" range
   ±0.05 is the default here);
2. hue and saturation (white balance, stain hue);
3. brightness, contrast and gamma (lamp, exposure, camera tone curve);
4. defocus blur (Gaussian);
5. sensor noise (Gaussian);
6. JPEG re-compression (the camera's or a PACS's encoder).

Each image draws its own parameters from a :class:`numpy.random.Generator` that the caller
seeds (the pipeline seeds it from ``(seed, epoch, batch)``, so a resumed run replays the
same draws). A fraction ``p_clean`` of images is left untouched so the clean appearance
stays in the training distribution. Input and output: ``(H, W, 3)`` uint8 RGB.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter


@dataclass
class PhotometricConfig:
    """Ranges of the photometric augmentation (all 0 = off, the paper's setting).

    Attributes:
        stain: HED jitter: each optical density is multiplied by ``1 + U(-stain, stain)``
            and shifted by ``U(-stain, stain) × 0.1 ×`` its range in the image (0.05).
        hue: hue shift, fraction of the hue circle, ``U(-hue, hue)`` (0.02).
        saturation: saturation factor ``1 + U(-saturation, saturation)`` (0.04).
        brightness: brightness factor ``1 + U(-brightness, brightness)`` (0.15).
        contrast: contrast factor about the image mean, ``1 + U(-contrast, contrast)`` (0.1).
        gamma: gamma ``exp(U(-gamma, gamma))`` on values scaled to [0, 1] (0.1).
        blur_sigma: largest Gaussian blur sigma, pixels; applied with probability ``blur_p``.
        blur_p: probability that an image is blurred (0.3).
        noise_sigma: largest Gaussian noise sigma, grey levels; probability ``noise_p``.
        noise_p: probability that an image gets sensor noise (0.5).
        jpeg_quality: lowest JPEG quality of a re-save (0 = off); probability ``jpeg_p``;
            qualities are drawn from ``[jpeg_quality, 95]``.
        jpeg_p: probability that an image is re-saved as JPEG (0.5).
        p_clean: probability that an image gets no photometric change at all.
    """

    stain: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0
    blur_sigma: float = 0.0
    blur_p: float = 0.3
    noise_sigma: float = 0.0
    noise_p: float = 0.5
    jpeg_quality: int = 0
    jpeg_p: float = 0.5
    p_clean: float = 0.2

    @property
    def enabled(self) -> bool:
        """Whether any transform is switched on."""
        return any(
            (
                self.stain,
                self.hue,
                self.saturation,
                self.brightness,
                self.contrast,
                self.gamma,
                self.blur_sigma,
                self.noise_sigma,
                self.jpeg_quality,
            )
        )


@dataclass
class AugmentConfig:
    """Training-time augmentation (paper, section IV.C; Keras ``ImageDataGenerator`` terms).

    Attributes:
        rotation_degrees: maximum rotation, ± degrees (20).
        zoom: maximum zoom in/out fraction (0.2).
        shift: maximum width/height shift as a fraction of the side (0.2).
        shear: maximum shear factor (0.2).
        horizontal_flip: random left-right flips.
        vertical_flip: random up-down flips (a smear field has no up; off in the paper).
        rot90: random rotations by 0, 90, 180 or 270 degrees (exact: no pixel is invented,
            unlike an arbitrary angle, whose corners must be filled).
        zoom_in_only: draw zooms in ``[1, 1 + zoom]`` only, so no border is filled.
        fill_mode: how new pixels are filled (``"nearest"``; ``"reflect"`` keeps fields
            looking like fields).
        photometric: :class:`PhotometricConfig` (off in the
            paper's setting).
        enabled: master switch (``--no-augment``).
    """

    rotation_degrees: float = 20.0
    zoom: float = 0.2
    shift: float = 0.2
    shear: float = 0.2
    horizontal_flip: bool = True
    vertical_flip: bool = False
    rot90: bool = False
    zoom_in_only: bool = False
    fill_mode: str = "nearest"
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    enabled: bool = True

    @classmethod
    def from_dict(cls, data: dict) -> AugmentConfig:
        """Inverse of ``dataclasses.asdict`` (``photometric`` may be absent: older runs)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["photometric"] = PhotometricConfig(**known.get("photometric", {}))
        return cls(**known)


def _stain(x: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(np.clip(x, 0.0, 255.0) / 255.0)
    scale = 1.0 + rng.uniform(-amount, amount, 3)
    spread = hed.max(axis=(0, 1)) - hed.min(axis=(0, 1))
    shift = rng.uniform(-amount, amount, 3) * 0.1 * spread
    return hed2rgb(hed * scale + shift) * 255.0


def _hue_saturation(
    x: np.ndarray, rng: np.random.Generator, hue: float, saturation: float
) -> np.ndarray:
    hsv = np.asarray(Image.fromarray(_to_uint8(x)).convert("HSV"), dtype=np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue, hue) * 256.0) % 256.0
    hsv[..., 1] = np.clip(hsv[..., 1] * (1.0 + rng.uniform(-saturation, saturation)), 0, 255)
    return np.asarray(Image.fromarray(_to_uint8(hsv), "HSV").convert("RGB"), dtype=np.float32)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def photometric(rgb: np.ndarray, rng: np.random.Generator, config: PhotometricConfig) -> np.ndarray:
    """Apply :class:`PhotometricConfig`'s transforms to one image.

    Args:
        rgb: ``(H, W, 3)`` uint8 (or float in 0–255) RGB.
        rng: the random source (seeded by the caller).
        config: the ranges.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if not config.enabled or rng.random() < config.p_clean:
        return _to_uint8(rgb)
    x = np.asarray(rgb, dtype=np.float32)
    if config.stain:
        x = _stain(x, rng, config.stain)
    if config.hue or config.saturation:
        x = _hue_saturation(x, rng, config.hue, config.saturation)
    if config.brightness:
        x = x * (1.0 + rng.uniform(-config.brightness, config.brightness))
    if config.contrast:
        mean = x.mean()
        x = (x - mean) * (1.0 + rng.uniform(-config.contrast, config.contrast)) + mean
    if config.gamma:
        x = 255.0 * (np.clip(x, 0.0, 255.0) / 255.0) ** np.exp(
            rng.uniform(-config.gamma, config.gamma)
        )
    if config.blur_sigma and rng.random() < config.blur_p:
        radius = rng.uniform(0.2, config.blur_sigma)
        x = np.asarray(
            Image.fromarray(_to_uint8(x)).filter(ImageFilter.GaussianBlur(radius)),
            dtype=np.float32,
        )
    if config.noise_sigma and rng.random() < config.noise_p:
        x = x + rng.normal(0.0, rng.uniform(0.0, config.noise_sigma), x.shape)
    out = _to_uint8(x)
    if config.jpeg_quality and rng.random() < config.jpeg_p:
        buffer = io.BytesIO()
        Image.fromarray(out).save(
            buffer, format="JPEG", quality=int(rng.integers(config.jpeg_quality, 96))
        )
        with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
            out = np.asarray(decoded.convert("RGB"), dtype=np.uint8)
    return out

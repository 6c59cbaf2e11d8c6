"""How steady a model's call is under what differs between cameras and labs.

Five fixed, documented perturbations of a decoded RGB image, each mild enough that a
haematologist would give the same answer: sensor noise, a small zoom, an exposure change, a
slight stain shift and a JPEG re-save. :func:`flip_rates` runs a model on the clean and the
perturbed images of one split and reports the fraction of **calls** that change (the label
at the model's operating threshold, :mod:`leukedge.checks.decision` when the model carries one).

The same perturbation functions are the ones training may use as augmentation ranges
(:mod:`leukedge.training.augment`), so what is trained for and what is measured are defined
in one place. Each perturbation is deterministic given ``(image, seed)``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from leukedge.engine.preprocess import RESAMPLING

NOISE_SIGMA = 4.0
"""Gaussian sensor noise, standard deviation in 8-bit grey levels."""

ZOOM = 1.05
"""Zoom factor: the central ``1 / ZOOM`` of each side, resized back (5 % zoom in)."""

EXPOSURE = 0.9
"""Exposure factor on the 8-bit pixel values (−10 %)."""

STAIN_SHIFT = (1.05, 0.95, 1.0)
"""Multipliers of the haematoxylin, eosin and DAB optical densities (Ruifrok & Johnston,
*Quantification of histochemical staining by color deconvolution*, Anal. Quant. Cytol.
Histol. 2001): 5 % more haematoxylin, 5 % less eosin."""

JPEG_QUALITY = 40
"""Quality of the JPEG re-save (Pillow, 4:2:0 chroma subsampling)."""


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def gaussian_noise(rgb: np.ndarray, seed: int = 0, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """Add Gaussian noise of ``sigma`` grey levels; ``(H, W, 3)`` uint8 in and out."""
    rng = np.random.default_rng(seed)
    return _to_uint8(rgb.astype(np.float32) + rng.normal(0.0, sigma, rgb.shape))


def zoom(rgb: np.ndarray, seed: int = 0, factor: float = ZOOM) -> np.ndarray:
    """Zoom in by ``factor`` about the centre (crop, then bilinear resize back to the size)."""
    height, width = rgb.shape[:2]
    crop_h, crop_w = round(height / factor), round(width / factor)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = Image.fromarray(rgb[top : top + crop_h, left : left + crop_w])
    return np.asarray(crop.resize((width, height), RESAMPLING), dtype=np.uint8)


def exposure(rgb: np.ndarray, seed: int = 0, factor: float = EXPOSURE) -> np.ndarray:
    """Scale the pixel values by ``factor`` (0.9 = 10 % darker), clipped to 0–255."""
    return _to_uint8(rgb.astype(np.float32) * factor)


def stain_shift(
    rgb: np.ndarray, seed: int = 0, factors: Sequence[float] = STAIN_SHIFT
) -> np.ndarray:
    """Scale the haematoxylin/eosin/DAB optical densities by ``factors`` (colour
    deconvolution with scikit-image's ``rgb2hed`` / ``hed2rgb``)."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(rgb) * np.asarray(factors, dtype=np.float64)
    return _to_uint8(hed2rgb(hed) * 255.0)


def jpeg(rgb: np.ndarray, seed: int = 0, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Re-save as JPEG at ``quality`` and decode again."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8)


PERTURBATIONS: dict[str, Callable[..., np.ndarray]] = {
    "noise_sigma4": gaussian_noise,
    "zoom_5pct": zoom,
    "exposure_minus10pct": exposure,
    "stain_shift": stain_shift,
    "jpeg_q40": jpeg,
}
"""The perturbations :func:`flip_rates` reports, by name."""


def flip_rates(
    predict: Callable[[np.ndarray], int],
    images: Mapping[str, np.ndarray],
    perturbations: Mapping[str, Callable[..., np.ndarray]] | None = None,
) -> dict[str, dict[str, float | int]]:
    """Fraction of calls that change under each perturbation.

    Args:
        predict: ``rgb (H, W, 3) uint8 → class index`` (the call at the model's operating
            threshold).
        images: ``{path: decoded RGB image}`` of one split, at their original size.
        perturbations: ``{name: function}``; default :data:`PERTURBATIONS`. Each is called
            as ``f(rgb, seed)`` with a seed derived from the image's position in sorted
            path order, so a rerun draws the same noise.

    Returns:
        ``{name: {"n": images, "flips": changed calls, "flip_rate": flips / n}}``.

    Raises:
        ValueError: ``images`` is empty.
    """
    if not images:
        raise ValueError("no images to measure flip rates on")
    perturbations = PERTURBATIONS if perturbations is None else perturbations
    paths = sorted(images)
    clean = {path: predict(images[path]) for path in paths}
    out: dict[str, dict[str, float | int]] = {}
    for name, perturb in perturbations.items():
        flips = sum(
            int(predict(perturb(images[path], seed)) != clean[path])
            for seed, path in enumerate(paths)
        )
        out[name] = {"n": len(paths), "flips": flips, "flip_rate": flips / len(paths)}
    return out

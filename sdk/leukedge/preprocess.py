"""Image decoding and resizing: the one preprocessing path shared by training and the runtime.

Data flows one way: image → :func:`load_rgb` → :func:`resize_rgb` → model input. Intensity
normalisation is *not* done here: every leukedge model takes RGB 0–255 and normalises inside
its own graph (Keras applications' convention), so training, conversion and inference can
never disagree about it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = str | os.PathLike | Image.Image | np.ndarray
"""What the SDK accepts as one image: a file path, a PIL image or an RGB ``uint8`` array."""

RESAMPLING = Image.Resampling.BILINEAR
"""Resampling filter used everywhere (training, representative dataset, runtime)."""


class ImageDecodeError(ValueError):
    """Raised when an input cannot be decoded as an image; the message names the source."""


def load_rgb(image: ImageInput) -> np.ndarray:
    """Decode one image to an RGB ``uint8`` array.

    Args:
        image: a path (any format Pillow reads: BMP, JPEG, PNG, TIFF, …), a ``PIL.Image``
            of any mode, or a numpy array of shape ``(H, W, 3)`` (RGB) or ``(H, W)``
            (grayscale, replicated to 3 channels), dtype ``uint8``. EXIF orientation of
            files is applied; an alpha channel is dropped; 16-bit and float images are
            scaled to 8 bits (:func:`_pil_to_rgb`).

    Returns:
        Array of shape ``(H, W, 3)``, dtype ``uint8``, values 0–255, RGB channel order.

    Raises:
        FileNotFoundError: the path does not exist (or is empty).
        ImageDecodeError: the file is not a readable image, is too large to decode safely
            (Pillow's decompression-bomb limit), is empty, or the array has the wrong
            shape or dtype. The message names the file and the problem.
        TypeError: ``image`` is none of the accepted types.
    """
    if isinstance(image, np.ndarray):
        return _check_size(_array_to_rgb(image), "array input")
    if isinstance(image, Image.Image):
        return _check_size(_pil_to_rgb(image), "PIL image")
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(
            f"unsupported image input {type(image).__name__}: give a path, a PIL image or an "
            "RGB uint8 numpy array"
        )
    if not str(image):
        raise FileNotFoundError("empty path: no image file given")
    path = Path(image)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ImageDecodeError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as pil:
            pil = ImageOps.exif_transpose(pil)
            rgb = _pil_to_rgb(pil)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{path}: not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"{path}: image too large to decode safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated or corrupt files surface as OSError from the decoder.
        raise ImageDecodeError(f"{path}: corrupt or truncated image ({exc})") from exc
    return _check_size(rgb, str(path))


def _pil_to_rgb(pil: Image.Image) -> np.ndarray:
    """RGB uint8 from any PIL mode; 16-bit and float images are scaled, not clipped.

    16-bit integer images (``I;16``, ``I``) keep their top 8 bits (value / 257, so 65535 →
    255); float images (``F``) in [0, 1] are scaled by 255, others clipped to 0–255.
    """
    if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(pil, dtype=np.float64)
        gray = np.clip(np.round(array / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if pil.mode == "F":
        array = np.asarray(pil, dtype=np.float64)
        scale = 255.0 if array.size and np.nanmax(array) <= 1.0 else 1.0
        gray = np.clip(np.round(np.nan_to_num(array) * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(pil.convert("RGB"), dtype=np.uint8)


def _check_size(rgb: np.ndarray, source: str) -> np.ndarray:
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageDecodeError(f"{source}: empty image ({rgb.shape[1]}x{rgb.shape[0]} pixels)")
    return rgb


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageDecodeError(f"array input: expected dtype uint8 (RGB 0-255), got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    if array.ndim == 3 and array.shape[2] == 4:
        return np.ascontiguousarray(array[:, :, :3])
    raise ImageDecodeError(
        f"array input: expected shape (H, W, 3) RGB or (H, W), got {array.shape}"
    )


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB ``uint8`` image to the model's input size.

    The whole image is resized (no crop), with bilinear filtering and Pillow's antialiasing,
    so a 450×450 C-NMC cell and a 224×224 Taleqani field both keep their full field of view.

    Args:
        rgb: array ``(H, W, 3)``, ``uint8``.
        size: ``(height, width)`` in pixels.

    Returns:
        Array ``(height, width, 3)``, ``uint8``. Returned unchanged (no copy) when it is
        already that size.
    """
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    resized = Image.fromarray(rgb).resize((width, height), RESAMPLING)
    return np.asarray(resized, dtype=np.uint8)


def load_and_resize(image: ImageInput, size: tuple[int, int]) -> np.ndarray:
    """:func:`load_rgb` then :func:`resize_rgb`: ``(height, width, 3)`` ``uint8`` RGB 0–255."""
    return resize_rgb(load_rgb(image), size)

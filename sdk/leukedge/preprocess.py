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
            files is applied; an alpha channel is dropped.

    Returns:
        Array of shape ``(H, W, 3)``, dtype ``uint8``, values 0–255, RGB channel order.

    Raises:
        FileNotFoundError: the path does not exist.
        ImageDecodeError: the file is not a readable image, or the array has the wrong
            shape or dtype. The message names the file and the problem.
    """
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    path = Path(image)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ImageDecodeError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as pil:
            pil = ImageOps.exif_transpose(pil)
            return np.asarray(pil.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{path}: not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated or corrupt files surface as OSError from the decoder.
        raise ImageDecodeError(f"{path}: corrupt or truncated image ({exc})") from exc


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

"""Image decoding and resizing: the one preprocessing path shared by training and the runtime.

Data flows one way: image → :func:`load_rgb` (decode, channel order, bit depth, size checks)
→ :func:`resize_rgb` → model input; :func:`load_and_resize` is both, as training, conversion
and the :class:`~leukedge.Classifier` call them. Intensity normalisation is *not* done here:
every leukedge model takes RGB 0–255 and normalises inside its own graph (Keras
applications' convention), so training, conversion and inference can never disagree about it.

Over 400 lines on purpose: it is the one decode path, and each of its guards (the pixel
cap read from the header, the pixel budget shared by threads, reduced-size JPEG decoding,
EXIF orientation, 16-bit scaling by the declared bit depth, several frames) is a step of
that path and is used by it alone. Kept together, the order of the steps reads in one
place; the memory guards (:class:`PixelBudget` and Pillow's process-wide settings) and the
16-bit decoding are the seams to cut if either grows.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from leukedge.errors import LeukedgeError, LeukedgeWarning

ImageInput = str | os.PathLike | Image.Image | np.ndarray
"""What the SDK accepts as one image: a file path, a PIL image or a ``uint8`` numpy array."""

PixelFormat = Literal["RGB", "BGR", "RGBA", "BGRA", "RGBX", "BGRX"]
"""Channel order of a numpy array, first byte of each pixel first (see :func:`array_to_rgb`)."""

PIXEL_FORMATS: dict[str, tuple[int, list[int]]] = {
    "RGB": (3, [0, 1, 2]),
    "BGR": (3, [2, 1, 0]),
    "RGBA": (4, [0, 1, 2]),
    "BGRA": (4, [2, 1, 0]),
    "RGBX": (4, [0, 1, 2]),
    "BGRX": (4, [2, 1, 0]),
}
"""``pixel_format → (channels, positions of R, G, B within a pixel)``."""

RESAMPLING = Image.Resampling.BILINEAR
"""Resampling filter used everywhere (training, representative dataset, runtime)."""

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image decoded, in pixels (width × height; 50 MP). Microscope cameras deliver
2–20 MP (a 12 MP 4000×3000 sensor is common, 45 MP full-frame the high end); anything larger
is refused per file before it is decoded, so memory stays bounded (a 50 MP RGB image is
150 MB decoded). Configurable as ``ClassifierOptions.max_pixels``; ``None`` turns the cap off
(Pillow's own decompression-bomb limit, ``PIL.Image.MAX_IMAGE_PIXELS``, still applies)."""

DRAFT_SAFETY_FACTOR = 2
"""A JPEG may be decoded at reduced scale (libjpeg's DCT scaling by 1/2, 1/4 or 1/8) only while
the result stays at least this many times the model's input on both axes, so the bilinear,
antialiased :func:`resize_rgb` still averages over at least 2×2 source pixels per output
pixel.

Measured with ``tools/measure_draft.py`` (README, "Performance"): the 410 Taleqani
validation fields upscaled to 1920×1080, 2592×1944 and 4056×3040 JPEGs, with and without
sensor-like noise, classified from the full decode and from the reduced one. Factor 2 agrees
with the full decode on 98.8–100 % of labels (mean |Δp| 0.006–0.008, accuracy within
±1 pp), inside the int8 gate's bounds; factor 1 left them once (−1.2 pp on 2592×1944);
factor 4 lowers the mean |Δp| a little but not the label agreement on the noisy images,
at 1.4–1.9× the decode time and 4× the memory."""

UNDECLARED_BITS_WARNING = 14
"""A 16-bit image without a declared bit depth whose values all fit in this many bits or fewer
(maximum ≤ 16383: 10-, 12- and 14-bit camera data) gets a :class:`LeukedgeWarning`."""

SCALE_BAND_PIXELS = 1 << 20
"""16-bit and float samples scaled to 8 bits at a time (1 Mi samples: 4–8 MiB of floats),
so scaling a large image needs no full-size float copy (a 48 MP 16-bit colour PNG peaked
at 1.65 GB of RSS with them)."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation → the transpose that shows the image upright (``ImageOps.exif_transpose``)."""


class ImageDecodeError(LeukedgeError, ValueError):
    """An input cannot be used as an image.

    Attributes:
        problem: what is wrong, without the file name (``"not a recognised image format"``).
        source: the file path, or ``"array input"`` / ``"PIL image"``; ``None`` if unknown.
        reason: machine-readable: ``"too_large"`` (over the pixel cap or Pillow's
            decompression-bomb limit) or ``"decode_error"`` (anything else); the
            ``reason`` of the ``"error"`` result the CLI reports.

    ``str(error)`` is ``"<source>: <problem>"``. Still a ``ValueError`` for older code.
    """

    def __init__(
        self,
        problem: str,
        source: str | os.PathLike | None = None,
        reason: str = "decode_error",
    ):
        self.problem = problem
        self.reason = reason
        self.source = None if source is None else str(source)
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


LARGE_DECODE_BLOCK_BYTES = 64 << 20
"""Pillow's image memory block (64 MiB) in leukedge's command-line processes
(:func:`return_large_decodes_to_the_system`). Pillow allocates a decoded image in blocks of
16 MiB by default; glibc serves such blocks from a thread's malloc arena once it has freed
one (its mmap threshold rises to the freed size, up to 32 MiB), and an arena keeps freed
memory: each worker thread of a folder run held on to its last large decode (six 48 MP
PNGs, 6 workers: 1.07 GB peak RSS with the pixel budget). Blocks above 32 MiB are always
mmapped and go back to the system when freed (the same run: 0.33 GB). Images under 64 MiB
decoded are one block of their own size, as before."""


def return_large_decodes_to_the_system() -> None:
    """Make Pillow allocate large images in :data:`LARGE_DECODE_BLOCK_BYTES` blocks, so
    their memory is returned to the system when freed; a no-op when the user set
    ``PILLOW_BLOCK_SIZE``. Process-wide, so the SDK leaves it to programs: the ``leukedge``
    command calls it; an application decoding large images in several threads may too."""
    if "PILLOW_BLOCK_SIZE" not in os.environ:
        Image.core.set_block_size(LARGE_DECODE_BLOCK_BYTES)


def leave_the_pixel_cap_to_leukedge() -> None:
    """Turn off Pillow's own decompression-bomb check (``PIL.Image.MAX_IMAGE_PIXELS``),
    for a program whose every decode goes through a leukedge pixel cap (``max_pixels``,
    checked from the file's header before decoding): the ``leukedge`` command, whose
    ``--max-pixels`` is always set. Pillow would otherwise print a
    ``DecompressionBombWarning`` for any image over 89 MP, even one leukedge refuses, and
    refuse anything over 179 MP with its own wording, whatever ``--max-pixels`` says.
    Process-wide, so the SDK leaves it to programs."""
    Image.MAX_IMAGE_PIXELS = None


class PixelBudget:
    """Decoded pixels that all threads decoding through one budget may hold at once.

    A folder of large images classified by several worker threads would otherwise hold
    one full-size decode per worker: three 48 MP PNGs with 3 workers peaked at 2.6 GB of
    RSS, one at a time at 0.95 GB (README, "Folders at the machine's limit"). The
    :class:`~leukedge.Classifier` holds one budget of ``max_pixels`` for all its threads:
    each decode claims its size (from the file's header, before decoding) and gives it
    back once the image is resized to the model's input, so the decodes in flight never
    hold more than ``limit`` pixels together, whatever the number of workers. Small images
    (a 224×224 field is 0.05 MP) still decode in parallel.

    Args:
        limit: most pixels (width × height) held at once; ≥ 1.

    Claims are served first come, first served (a large image is not starved by small
    ones); one claim larger than ``limit`` proceeds alone, when nothing else is held.
    Thread-safe.

    Attributes:
        limit: as given.
        in_use: pixels held now.
        peak: most pixels held at once so far.
    """

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"pixel budget must be >= 1, got {limit}")
        self.limit = int(limit)
        self.in_use = 0
        self.peak = 0
        self._changed = threading.Condition()
        self._waiting: deque[object] = deque()

    @contextmanager
    def claim(self) -> Iterator[Callable[[int], None]]:
        """``with budget.claim() as reserve:`` ``reserve(pixels)`` blocks until ``pixels``
        fit; everything reserved in the block is given back when it ends (also on an
        exception)."""
        held = 0

        def reserve(pixels: int) -> None:
            nonlocal held
            self._acquire(int(pixels))
            held += int(pixels)

        try:
            yield reserve
        finally:
            if held:
                with self._changed:
                    self.in_use -= held
                    self._changed.notify_all()

    def _acquire(self, pixels: int) -> None:
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            try:
                while self._waiting[0] is not ticket or (
                    self.in_use > 0 and self.in_use + pixels > self.limit
                ):
                    self._changed.wait()
            except BaseException:
                self._waiting.remove(ticket)
                self._changed.notify_all()
                raise
            self._waiting.popleft()
            self.in_use += pixels
            self.peak = max(self.peak, self.in_use)
            self._changed.notify_all()  # the next in line may fit too


def decode_size(model_size: tuple[int, int], factor: int | None = None) -> tuple[int, int]:
    """Smallest decoded size that still feeds ``model_size`` well: the draft rule.

    A large JPEG is decoded at the smallest libjpeg scale (1/1, 1/2, 1/4, 1/8) that keeps it
    at least :data:`DRAFT_SAFETY_FACTOR` × the model's input on both axes (Pillow's
    ``Image.draft``). A 4056×3040 camera JPEG for a 224×224 model decodes at 1/4, 1014×760:
    1/16 of the memory and, measured, 1/8–1/13 of the decode and resize time (15–25 ms
    instead of 190–210 ms of CPU), and the resize to 224×224 still averages over ≥ 2×2
    decoded pixels per output pixel. Images smaller than that decode at full size; other
    formats always do.

    Args:
        model_size: ``(height, width)`` of the model's input, pixels.
        factor: the safety factor; ``None`` = :data:`DRAFT_SAFETY_FACTOR` (other values are
            for measuring the rule, as ``tools/measure_draft.py`` does).

    Returns:
        ``(height, width)`` the decoded image must at least have, pixels.
    """
    factor = DRAFT_SAFETY_FACTOR if factor is None else factor
    if factor < 1:
        raise ValueError(f"draft safety factor must be >= 1, got {factor}")
    height, width = model_size
    return factor * height, factor * width


def load_rgb(
    image: ImageInput,
    *,
    pixel_format: PixelFormat | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | None = None,
    reserve: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Decode one image to an RGB ``uint8`` array.

    Args:
        image: a path (any format Pillow reads: BMP, JPEG, PNG, TIFF, GIF, …), a
            ``PIL.Image`` of any mode, or a ``uint8`` numpy array ``(H, W, 3)``,
            ``(H, W, 4)`` or ``(H, W)`` (grey); see :func:`array_to_rgb`.
        pixel_format: channel order of an array input (:data:`PIXEL_FORMATS`); ``None``
            means RGB for 3 channels and is refused for 4. Only for arrays: a file or PIL
            image carries its own mode.
        max_pixels: refuse images of more pixels (width × height) than this, before
            decoding them (:data:`DEFAULT_MAX_PIXELS`; ``None``: no cap).
        min_size: ``(height, width)``; when given, a large JPEG is decoded at reduced scale
            down to no less than this (see :func:`decode_size`); ``None``: full size.
        reserve: for files, called with the pixels the decode will hold (width × height
            after any reduced JPEG decode) after the header is read and before decoding;
            it may block, as :meth:`PixelBudget.claim`'s callable does until they fit in
            the budget. Not called for arrays and PIL images (already in memory).

    Files: the EXIF orientation is applied; an alpha channel is dropped; 16-bit images are
    scaled to 8 bits by their declared bit depth (PNG ``sBIT``, TIFF ``MaxSampleValue`` or
    ``BitsPerSample``), else as 16-bit data, with a :class:`~leukedge.errors.LeukedgeWarning`
    when every value fits in :data:`UNDECLARED_BITS_WARNING` bits; float images in [0, 1]
    are scaled by 255; of a multi-page TIFF or animated GIF/PNG/WebP, frame 0 is used and a
    warning says so.

    Returns:
        Array of shape ``(H, W, 3)``, dtype ``uint8``, values 0–255, RGB channel order.

    Raises:
        FileNotFoundError: the path does not exist (``filename`` holds it) or is empty.
        ImageDecodeError: the file is not a readable image, is larger than ``max_pixels``
            (or Pillow's decompression-bomb limit), is empty, or the array has the wrong
            shape or dtype; ``source`` and the message name the file.
        ValueError: an unknown ``pixel_format``, one that does not fit the array's channels,
            a 4-channel array without one, or a ``pixel_format`` for a file or PIL image.
        TypeError: ``image`` is none of the accepted types.
    """
    if isinstance(image, np.ndarray):
        if image.ndim >= 2:
            _check_pixels(image.shape[1], image.shape[0], "array input", max_pixels)
        return _check_size(array_to_rgb(image, pixel_format), "array input")
    if pixel_format is not None:
        raise ValueError(
            f"pixel_format={pixel_format!r} describes the channels of a numpy array; a file "
            "or PIL image carries its own mode: leave pixel_format out"
        )
    if isinstance(image, Image.Image):
        _check_pixels(*image.size, "PIL image", max_pixels)
        return _check_size(_pil_to_rgb(image, "PIL image", None), "PIL image")
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(
            f"unsupported image input {type(image).__name__}: give a path, a PIL image or a "
            "uint8 numpy array"
        )
    return _load_file(image, max_pixels, min_size, reserve, None)[0]


def load_resized(
    image: ImageInput,
    size: tuple[int, int],
    *,
    pixel_format: PixelFormat | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | None = None,
    reserve: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_rgb` then :func:`resize_rgb` (the same pixels), and the decoded size.

    An 8-bit file is resized from the image Pillow decoded, without the full-size array
    and the full-size copy :func:`resize_rgb` makes of it: a 48 MP PNG then holds one
    decoded image (190 MB) instead of three (README, "Folders at the machine's limit").
    16-bit and float files, arrays and PIL images take :func:`load_rgb`'s path.

    Args:
        image, pixel_format, max_pixels, min_size, reserve: as in :func:`load_rgb`.
        size: ``(height, width)`` of the result, pixels.

    Returns:
        ``(rgb, (height, width))``: ``uint8`` RGB ``(size[0], size[1], 3)``, and the size
        the image was decoded at (after any reduced JPEG decode).

    Raises:
        As :func:`load_rgb`.
    """
    if pixel_format is None and isinstance(image, (str, os.PathLike)):
        rgb, decoded = _load_file(image, max_pixels, min_size, reserve, size)
    else:
        rgb = load_rgb(
            image,
            pixel_format=pixel_format,
            max_pixels=max_pixels,
            min_size=min_size,
            reserve=reserve,
        )
        decoded = rgb.shape[:2]
    return resize_rgb(rgb, size), decoded


def _load_file(
    image: str | os.PathLike,
    max_pixels: int | None,
    min_size: tuple[int, int] | None,
    reserve: Callable[[int], None] | None,
    size: tuple[int, int] | None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """A file as :func:`load_rgb` decodes it, resized to ``size`` from Pillow's image when
    it is 8-bit (``size`` ``None``: full size); also the decoded ``(height, width)``."""
    if not str(image):
        raise FileNotFoundError("empty path: no image file given")
    path = Path(image)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
    if path.is_dir():
        raise ImageDecodeError("is a directory, not an image", path)
    if not path.is_file():  # a FIFO, socket or device: reading it could block forever
        raise ImageDecodeError("is not a regular file (a pipe, socket or device)", path)
    try:
        with Image.open(path) as pil:
            # The header's size, before a reduced-size JPEG decode shrinks it: the cap is
            # on the file, whatever its decoder can do.
            _check_pixels(*pil.size, path, max_pixels)  # header only: nothing decoded yet
            _draft(pil, min_size)
            _warn_if_several_frames(pil, path)
            if reserve is not None:
                reserve(pil.width * pil.height)  # the decode's size, after any draft
            if size is not None and _is_8bit(pil):
                rgb, decoded = _decode_resized(pil, path, size)
            else:
                rgb = _decode_file(pil, path)
                decoded = rgb.shape[:2]
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image format", path) from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"image too large to decode safely ({exc})", path, reason="too_large"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated or corrupt files surface as OSError from the decoder.
        raise ImageDecodeError(f"corrupt or truncated image ({exc})", path) from exc
    return _check_size(rgb, path), decoded


def _is_8bit(pil: Image.Image) -> bool:
    """Decoded by Pillow to 8 bits per channel (not 16-bit or float data)."""
    return pil.mode not in (*_SIXTEEN_BIT_MODES, "F") and not _is_16bit_colour(pil)


def _decode_resized(
    pil: Image.Image, path: Path, size: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """An 8-bit image upright, in RGB and resized as :func:`resize_rgb` would, without a
    full-size array; also its decoded ``(height, width)``."""
    if _orientation(pil) in _EXIF_TRANSPOSE:
        pil = ImageOps.exif_transpose(pil)
    rgb = pil if pil.mode == "RGB" else pil.convert("RGB")
    decoded = (rgb.height, rgb.width)
    if 0 in decoded:
        raise ImageDecodeError(f"empty image ({rgb.width}x{rgb.height} pixels)", path)
    height, width = size
    if decoded != (height, width):
        rgb = rgb.resize((width, height), RESAMPLING)
    return np.asarray(rgb, dtype=np.uint8), decoded


def array_to_rgb(array: np.ndarray, pixel_format: PixelFormat | None = None) -> np.ndarray:
    """RGB ``uint8`` ``(H, W, 3)`` from a camera or OpenCV array, by its declared channel order.

    Args:
        array: ``uint8``, shape ``(H, W)`` (grey, replicated to 3 channels), ``(H, W, 3)``
            or ``(H, W, 4)``.
        pixel_format: the order of the channels in memory, first byte first:

            - ``"RGB"`` (default for 3 channels): Pillow, scikit-image, imageio.
            - ``"BGR"``: OpenCV (``cv2.imread``, ``VideoCapture.read``).
            - ``"RGBA"``, ``"BGRA"``, ``"RGBX"``, ``"BGRX"``: 4 channels; the 4th (alpha or
              padding) is dropped. A 4-channel array must say which: leukedge does not guess.

            Picamera2 names formats after the 32-bit word (libcamera/DRM convention), so its
            byte order is the reverse of the name: ``"RGB888"`` is ``[B, G, R]`` in memory
            (``pixel_format="BGR"``), ``"BGR888"`` is ``[R, G, B]`` (``"RGB"``),
            ``"XRGB8888"`` is ``[B, G, R, 255]`` (``"BGRX"``) and ``"XBGR8888"`` is
            ``[R, G, B, 255]`` (``"RGBX"``); see the Picamera2 manual's image formats and
            raspberrypi/picamera2 issues #191 (XRGB8888 is ``[B, G, R, X]`` in numpy) and
            #843 (ask for BGR888 to get RGB).

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB; the input itself (no copy) when it already is that.

    Raises:
        ImageDecodeError: not ``uint8``, or a shape other than the three above.
        ValueError: an unknown ``pixel_format``; a 4-channel array without one; a
            ``pixel_format`` whose channel count differs from the array's, or any
            ``pixel_format`` for a 2-D (grey) array.
    """
    if array.dtype != np.uint8:
        raise ImageDecodeError(
            f"expected dtype uint8 (RGB 0-255), got {array.dtype}", "array input"
        )
    resolved = resolve_pixel_format(array.shape, pixel_format)
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if resolved is None:
        raise ImageDecodeError(
            f"expected shape (H, W, 3), (H, W, 4) or (H, W) (grey), got {array.shape}",
            "array input",
        )
    if resolved == "RGB":
        return array
    return array[:, :, PIXEL_FORMATS[resolved][1]]  # fancy indexing: a contiguous copy


def resolve_pixel_format(shape: tuple[int, ...], pixel_format: str | None) -> str | None:
    """The pixel format an array of ``shape`` is read with; checks ``pixel_format`` against it.

    Returns:
        A key of :data:`PIXEL_FORMATS`, or ``None`` for a 2-D (grey) array and for shapes
        that are no image at all (those are left to :func:`array_to_rgb`'s
        :class:`ImageDecodeError`).

    Raises:
        ValueError: as described in :func:`array_to_rgb`.
    """
    if pixel_format is None and len(shape) == 3 and shape[2] == 3:
        return "RGB"  # the common case, first: this runs on every array's path
    choices = ", ".join(repr(name) for name in PIXEL_FORMATS)
    if pixel_format is not None and pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"unknown pixel_format {pixel_format!r}; choose one of {choices}")
    if len(shape) == 2:
        if pixel_format is not None:
            raise ValueError(
                f"a 2-D array {shape} is read as grey; pixel_format={pixel_format!r} does not "
                "apply (leave it out, or give an (H, W, 3) array)"
            )
        return None
    if len(shape) != 3 or shape[2] not in (3, 4):
        return None
    channels = shape[2]
    if pixel_format is None:
        if channels == 4:
            raise ValueError(
                f"a 4-channel array {shape} needs pixel_format= one of 'RGBA', 'BGRA', "
                "'RGBX', 'BGRX' (Picamera2's XRGB8888 is 'BGRX', XBGR8888 is 'RGBX'); "
                f"leukedge does not guess the channel order. All choices: {choices}"
            )
        return "RGB"
    expected = PIXEL_FORMATS[pixel_format][0]
    if channels != expected:
        raise ValueError(
            f"pixel_format={pixel_format!r} has {expected} channels but the array {shape} "
            f"has {channels}; choose one of {choices}"
        )
    return pixel_format


def _check_pixels(width: int, height: int, source: str | os.PathLike, cap: int | None) -> None:
    if cap is not None and width * height > cap:
        raise ImageDecodeError(
            f"{width}x{height} pixels ({width * height / 1e6:.1f} MP) is more than the "
            f"{cap / 1e6:g} MP limit (max_pixels={cap}); refused before decoding",
            source,
            reason="too_large",
        )


def _check_size(rgb: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageDecodeError(f"empty image ({rgb.shape[1]}x{rgb.shape[0]} pixels)", source)
    return rgb


def _orientation(pil: Image.Image) -> int:
    return int(pil.getexif().get(ExifTags.Base.Orientation, 1) or 1)


def _draft(pil: Image.Image, min_size: tuple[int, int] | None) -> None:
    """Ask the JPEG decoder for the smallest DCT scale that keeps ``min_size`` (a no-op for
    other formats and small images); ``min_size`` is in upright orientation."""
    if min_size is None or pil.format not in ("JPEG", "MPO"):
        return
    if min(pil.size) < 2 * min(min_size):  # cannot halve in any orientation
        return
    height, width = min_size
    if _orientation(pil) in (5, 6, 7, 8):  # stored rotated by 90°: axes swap
        height, width = width, height
    if pil.width >= 2 * width and pil.height >= 2 * height:
        pil.draft(pil.mode, (width, height))


def _warn_if_several_frames(pil: Image.Image, path: Path) -> None:
    # MPO (a camera JPEG with a Multi-Picture index) holds the primary image first and
    # previews after it: frame 0 is the photograph, nothing to warn about.
    frames = getattr(pil, "n_frames", 1)
    if frames > 1 and pil.format != "MPO":
        warnings.warn(
            f"{path}: {frames} frames ({pil.format} with several pages or frames); "
            "classified frame 0 only",
            LeukedgeWarning,
            stacklevel=4,
        )


def _decode_file(pil: Image.Image, path: Path) -> np.ndarray:
    if _is_16bit_colour(pil):
        return _decode_16bit_colour(pil, path, _declared_max(pil, path))
    declared = _declared_max(pil, path) if pil.mode in _SIXTEEN_BIT_MODES else None
    if _orientation(pil) in _EXIF_TRANSPOSE:  # exif_transpose copies even when upright
        pil = ImageOps.exif_transpose(pil)
    return _pil_to_rgb(pil, path, declared)


def _pil_to_rgb(
    pil: Image.Image, source: str | os.PathLike, declared_max: int | None
) -> np.ndarray:
    """RGB uint8 from any PIL mode; 16-bit and float images are scaled, not clipped.

    16-bit integer images (``I;16``, ``I``) are scaled by ``declared_max`` (the largest value
    the file declares) or else by 65535 (:func:`_scale_16bit`); float images (``F``) in
    [0, 1] are scaled by 255, others clipped to 0–255.
    """
    if pil.mode in _SIXTEEN_BIT_MODES:
        gray = _scale_16bit(np.asarray(pil), declared_max, source)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if pil.mode == "F":
        array = np.asarray(pil)  # float32, as stored
        scale = 255.0 if array.size and np.nanmax(array) <= 1.0 else 1.0
        gray = np.empty(array.shape, np.uint8)
        for band in _row_bands(array):  # no full-size float64 copies
            values = np.nan_to_num(array[band].astype(np.float64)) * scale
            gray[band] = np.clip(np.round(values), 0, 255)
        return np.repeat(gray[:, :, None], 3, axis=2)
    # convert() copies even an RGB image: a 48 MP image's 190 MB spared
    return np.asarray(pil if pil.mode == "RGB" else pil.convert("RGB"), dtype=np.uint8)


def _scale_16bit(
    array: np.ndarray, declared_max: int | None, source: str | os.PathLike
) -> np.ndarray:
    """``uint8`` from 16-bit samples: ``round(v · 255 / max)``, ``max`` = the declared maximum
    (4095 for 12-bit data), else 65535; undeclared data that fit in
    :data:`UNDECLARED_BITS_WARNING` bits get a warning naming ``source``."""
    top = float(declared_max or 65535)
    if declared_max is None and array.size:
        largest = int(array.max())
        bits = max(largest.bit_length(), 1)
        if bits <= UNDECLARED_BITS_WARNING:
            warnings.warn(
                f"{source}: 16-bit image whose values all fit in {bits} bits (maximum "
                f"{largest}): {bits}-bit camera data? Scaled as 16-bit (65535 = white), so it "
                f"is {65535 / (2**bits - 1):.0f}x darker than its own range; declare the bit "
                "depth (PNG sBIT chunk, TIFF MaxSampleValue) or convert to 8-bit",
                LeukedgeWarning,
                stacklevel=5,
            )
    # In bands of rows: a 48 MP colour image in float32 at once would be 580 MB, twice.
    out = np.empty(array.shape, np.uint8)
    factor = np.float32(255.0 / top)
    for band in _row_bands(array):
        values = array[band].astype(np.float32)
        values *= factor
        np.round(values, out=values)
        out[band] = np.clip(values, 0, 255, out=values)
    return out


def _row_bands(array: np.ndarray) -> Iterator[slice]:
    """Slices of ``array``'s rows holding about :data:`SCALE_BAND_PIXELS` samples each."""
    rows = max(1, SCALE_BAND_PIXELS // max(1, int(np.prod(array.shape[1:]))))
    for start in range(0, array.shape[0], rows):
        yield slice(start, start + rows)


def _declared_max(pil: Image.Image, path: Path) -> int | None:
    """The largest sample value a 16-bit file declares, if it declares one below 65535.

    PNG: the ``sBIT`` chunk (significant bits per channel; PNG spec §11.3.3.4), which Pillow
    does not expose, read from the chunks before the image data. TIFF: ``MaxSampleValue``
    (tag 281), else ``BitsPerSample`` (tag 258) between 9 and 15.
    """
    if pil.format == "PNG":
        bits = _png_significant_bits(path)
        return 2**bits - 1 if bits and bits < 16 else None
    tags = getattr(pil, "tag_v2", None)
    if pil.format != "TIFF" or tags is None:
        return None
    colour = 3 if pil.mode in ("RGB", "RGBA") else 1
    max_value = tags.get(281)
    if max_value:
        values = max_value if isinstance(max_value, tuple) else (max_value,)
        largest = int(max(values[:colour]))
        return largest if 0 < largest < 65535 else None
    bits_per_sample = tags.get(258)
    if bits_per_sample:
        values = bits_per_sample if isinstance(bits_per_sample, tuple) else (bits_per_sample,)
        bits = int(max(values[:colour]))
        return 2**bits - 1 if 8 < bits < 16 else None
    return None


def _png_significant_bits(path: Path) -> int | None:
    """Significant bits of the colour channels from a PNG's ``sBIT`` chunk, or ``None``."""
    channels = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}  # colour type → colour (non-alpha) channels
    colour_type = None
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while len(head := f.read(8)) == 8:
            length, chunk = struct.unpack(">I4s", head)
            if chunk == b"IHDR":
                colour_type = f.read(length)[9]
                f.seek(4, os.SEEK_CUR)
            elif chunk == b"sBIT" and colour_type in channels:
                data = f.read(length)[: channels[colour_type]]
                return max(data) if data and 0 < max(data) <= 16 else None
            elif chunk in (b"IDAT", b"IEND"):  # sBIT must come before the image data
                return None
            else:
                f.seek(length + 4, os.SEEK_CUR)
    return None


def _is_16bit_colour(pil: Image.Image) -> bool:
    """A PNG or TIFF with 16-bit colour samples, which Pillow would cut to their top 8 bits."""
    if pil.mode not in ("RGB", "RGBA", "LA") or pil.format not in ("PNG", "TIFF"):
        return False
    if pil.format == "TIFF":
        bits = pil.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) == 16
    args = pil.tile[0].args if pil.tile else None
    rawmode = args if isinstance(args, str) else (args[0] if args else "")
    return rawmode.endswith(";16B")  # PNG's 16-bit raw modes: RGB;16B, RGBA;16B, LA;16B


def _decode_16bit_colour(pil: Image.Image, path: Path, declared_max: int | None) -> np.ndarray:
    """Decode a 16-bit colour PNG/TIFF with OpenCV (Pillow has no 16-bit RGB mode)."""
    import cv2  # a runtime dependency; imported only for these files

    array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16:
        raise ImageDecodeError("16-bit colour image that OpenCV cannot decode", path)
    if array.ndim == 3 and array.shape[2] >= 3:
        array = array[:, :, 2::-1]  # OpenCV: BGR(A); alpha dropped (a view, no copy)
    elif array.ndim == 3:
        array = array[:, :, 0]  # grey + alpha
    rgb = _scale_16bit(array, declared_max, path)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    method = _EXIF_TRANSPOSE.get(_orientation(pil))
    if method is not None:
        rgb = np.asarray(Image.fromarray(rgb).transpose(method))
    return rgb


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


def centre_square(frame: np.ndarray) -> tuple[int, int, int]:
    """``(x0, y0, side)`` of the largest centred square of a camera frame: the region that
    leukedge classifies from every live frame (``leukedge camera`` and the Raspberry Pi
    example, through :func:`crop_centre_square`).

    Why a crop, not the whole frame: the models take square inputs and were trained on
    square smear fields; :func:`resize_rgb` of a 4:3 or 16:9 frame would squash every cell
    by 25–44 % horizontally, a shape the model never saw. The centre of a microscope's field
    is also its sharpest, evenly lit part. Still images (files) are resized whole: they are
    fields as the training images were.

    Args:
        frame: array ``(H, W)`` or ``(H, W, C)``.

    Returns:
        Left and top offsets and side length, in pixels; ``side = min(H, W)``, offsets
        ``(W - side) // 2`` and ``(H - side) // 2``.
    """
    height, width = frame.shape[:2]
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side


def crop_centre_square(frame: np.ndarray) -> np.ndarray:
    """The :func:`centre_square` of ``frame``: a view (no copy), any channel order, any
    dtype. A square frame is returned whole."""
    x0, y0, side = centre_square(frame)
    return frame[y0 : y0 + side, x0 : x0 + side]


def load_and_resize(
    image: ImageInput,
    size: tuple[int, int],
    *,
    pixel_format: PixelFormat | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """:func:`load_rgb` (large JPEGs drafted to :func:`decode_size`) then :func:`resize_rgb`,
    as :func:`load_resized` does them.

    The path every image takes into a model: training, calibration, the accuracy gate and
    the :class:`~leukedge.Classifier`. Returns ``(height, width, 3)`` ``uint8`` RGB 0–255.
    """
    return load_resized(
        image, size, pixel_format=pixel_format, max_pixels=max_pixels, min_size=decode_size(size)
    )[0]

"""Decoding and resizing: values, shapes and the errors bad files get (no ../shared/data)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from leukedge.engine.preprocess import ImageDecodeError, load_and_resize, load_rgb, resize_rgb


def test_load_rgb_from_path_pil_and_array_agree(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    assert np.array_equal(load_rgb(path), rgb)
    assert np.array_equal(load_rgb(Image.open(path)), rgb)
    assert np.array_equal(load_rgb(rgb), rgb)


def test_grayscale_and_rgba_become_rgb(tmp_path):
    gray = np.full((5, 6), 77, dtype=np.uint8)
    out = load_rgb(gray)
    assert out.shape == (5, 6, 3) and (out == 77).all()
    rgba = np.zeros((5, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    with pytest.raises(ValueError, match="pixel_format"):  # 4 channels: order must be declared
        load_rgb(rgba)
    assert load_rgb(rgba, pixel_format="RGBA")[0, 0].tolist() == [200, 0, 0]
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert load_rgb(tmp_path / "a.png")[0, 0].tolist() == [200, 0, 0]


def test_bmp_cell_is_read_at_full_size(example_images):
    rgb = load_rgb(example_images / "UID_3_4_2_all.bmp")  # a C-NMC cell
    assert rgb.shape == (450, 450, 3) and rgb.dtype == np.uint8
    # C-NMC cells are segmented onto black: most corner pixels are 0.
    assert rgb[:10, :10].max() == 0


# EXIF Orientation (tag 0x0112) → how the stored pixels turn to stand upright: 3 = 180°,
# 6 = 90° clockwise, 8 = 90° counter-clockwise (np.rot90 turns counter-clockwise).
EXIF_TURNS = {1: 0, 3: 2, 6: -1, 8: 1}


@pytest.mark.parametrize("orientation", sorted(EXIF_TURNS))
def test_exif_orientation_is_applied(tmp_path, example_images, orientation):
    """A camera that stores a portrait photo sideways tags it; the decoder turns it upright."""
    stored = np.asarray(Image.open(example_images / "WBC-Benign-420.jpg").convert("RGB"))
    stored = np.ascontiguousarray(stored[:160])  # not square, so a turn changes the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"orientation{orientation}.png"  # lossless, so pixels compare exactly
    Image.fromarray(stored).save(path, exif=exif)
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), stored)
    upright = np.rot90(stored, EXIF_TURNS[orientation])
    assert np.array_equal(load_rgb(path), upright)
    assert load_rgb(path).shape == ((160, 224, 3) if orientation in (1, 3) else (224, 160, 3))


def test_resize_keeps_whole_field_and_skips_same_size():
    rgb = np.zeros((450, 450, 3), dtype=np.uint8)
    rgb[:, 225:] = 255  # right half white
    out = resize_rgb(rgb, (224, 224))
    assert out.shape == (224, 224, 3)
    assert out[:, :100].max() == 0 and out[:, 124:].min() == 255
    same = np.zeros((224, 224, 3), dtype=np.uint8)
    assert resize_rgb(same, (224, 224)) is same
    assert load_and_resize(rgb, (64, 32)).shape == (64, 32, 3)


def test_resize_is_bilinear_over_the_whole_image():
    """README: any image is resized whole, bilinear (Pillow's, with its antialiasing)."""
    rgb = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    out = resize_rgb(rgb, (64, 48))
    pil = Image.fromarray(rgb)
    bilinear = np.asarray(pil.resize((48, 64), Image.Resampling.BILINEAR))
    assert out.shape == (64, 48, 3) and np.array_equal(out, bilinear)
    for other in (Image.Resampling.BICUBIC, Image.Resampling.NEAREST):
        assert not np.array_equal(out, np.asarray(pil.resize((48, 64), other)))


def test_bad_inputs_name_the_file(tmp_path, example_images):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageDecodeError, match="notes.txt.*not a recognised image"):
        load_rgb(text)
    data = (example_images / "WBC-Malignant-Pre-810.jpg").read_bytes()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageDecodeError, match="cut.jpg.*corrupt or truncated"):
        load_rgb(truncated)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_rgb(tmp_path / "missing.png")
    with pytest.raises(ImageDecodeError, match="directory"):
        load_rgb(tmp_path)
    with pytest.raises(ImageDecodeError, match="dtype uint8"):
        load_rgb(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ImageDecodeError, match="shape"):
        load_rgb(np.zeros((4, 4, 2), dtype=np.uint8))


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 256 * 4).reshape(4, 256).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    rgb = load_rgb(tmp_path / "g16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 256, 3)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert 120 <= rgb.mean() <= 135  # a ramp stays a ramp, not a white image
    unit = Image.fromarray(np.full((3, 3), 0.5, dtype=np.float32), mode="F")
    assert (load_rgb(unit) == 128).all()
    # Every 16-bit layout and 32-bit "I" keep the top 8 bits; float in [0, 1] is × 255,
    # other floats are clipped to 0-255; grey becomes three equal channels.
    for dtype in ("<u2", ">u2", "<i4"):
        pil = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=dtype))
        assert load_rgb(pil).tolist() == [[[0] * 3, [100] * 3, [255] * 3]], (dtype, pil.mode)
    floats = (([0.0, 0.6, 1.0], [0, 153, 255]), ([0, 1.5], [0, 2]), ([0, 200, 300], [0, 200, 255]))
    for values, expected in floats:
        rgb = load_rgb(Image.fromarray(np.array([values], dtype=np.float32), mode="F"))
        assert rgb.shape == (1, len(values), 3) and rgb[0, :, 0].tolist() == expected
        assert (rgb == rgb[:, :, :1]).all()


def test_empty_huge_and_wrong_type_inputs(tmp_path, monkeypatch):
    for shape in ((0, 10, 3), (10, 0, 3)):
        with pytest.raises(ImageDecodeError, match="empty image"):
            load_rgb(np.zeros(shape, dtype=np.uint8))
    assert load_rgb(np.zeros((1, 1, 3), dtype=np.uint8)).shape == (1, 1, 3)
    with pytest.raises(ImageDecodeError, match="empty image"):
        load_rgb(Image.new("RGB", (0, 0)))
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 > 2 x limit: a "bomb"
    with pytest.raises(ImageDecodeError, match="big.png: image too large"):
        load_rgb(tmp_path / "big.png")
    with pytest.raises(TypeError, match="unsupported image input int"):
        load_rgb(42)
    with pytest.raises(FileNotFoundError, match="empty path"):
        load_rgb("")

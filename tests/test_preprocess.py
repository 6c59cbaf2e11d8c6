"""Decoding and resizing: values, shapes and the errors bad files get."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from leukedge.preprocess import ImageDecodeError, load_and_resize, load_rgb, resize_rgb


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


def test_bmp_cell_is_read_at_full_size(cnmc):
    rgb = load_rgb(cnmc / "all" / "UID_1_1_1_all.bmp")
    assert rgb.shape == (450, 450, 3) and rgb.dtype == np.uint8
    # C-NMC cells are segmented onto black: most corner pixels are 0.
    assert rgb[:10, :10].max() == 0


def test_resize_keeps_whole_field_and_skips_same_size():
    rgb = np.zeros((450, 450, 3), dtype=np.uint8)
    rgb[:, 225:] = 255  # right half white
    out = resize_rgb(rgb, (224, 224))
    assert out.shape == (224, 224, 3)
    assert out[:, :100].max() == 0 and out[:, 124:].min() == 255
    same = np.zeros((224, 224, 3), dtype=np.uint8)
    assert resize_rgb(same, (224, 224)) is same
    assert load_and_resize(rgb, (64, 32)).shape == (64, 32, 3)


def test_bad_inputs_name_the_file(tmp_path, taleqani):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageDecodeError, match="notes.txt.*not a recognised image"):
        load_rgb(text)
    data = (taleqani / "Pre" / "WBC-Malignant-Pre-001.jpg").read_bytes()
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


def test_empty_huge_and_wrong_type_inputs(tmp_path, monkeypatch):
    with pytest.raises(ImageDecodeError, match="empty image"):
        load_rgb(np.zeros((0, 10, 3), dtype=np.uint8))
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

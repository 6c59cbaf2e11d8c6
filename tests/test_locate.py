"""Locating white cells in a field (:mod:`leukedge.cells.locate`), on drawn fields whose cells
are known: no TensorFlow, no data. The real-data figures (BCCD boxes, wbc-normal masks)
come from ``tools/locate_study.py``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from leukedge.cells.locate import (
    LocateError,
    LocateOptions,
    cell_crop,
    locate_cells,
    red_cell_diameter,
)

BACKGROUND = (232, 226, 228)
RED_CELL = (205, 140, 150)
CYTOPLASM = (200, 180, 215)
NUCLEUS = (105, 60, 165)


def drawn_field(
    d: float, size=(640, 480), wbcs=((200, 180), (470, 300)), platelets=((100, 400),), seed=0
):
    """A field at red-cell diameter ``d`` px: red cells on a grid, white cells (nucleus 0.8 d,
    cytoplasm 1.4 d across) at ``wbcs``, platelets (0.2 d) at ``platelets``.

    Returns:
        (RGB uint8 field, list of the white cells' true boxes (x0, y0, x1, y1), list of their
        true masks over the whole field).
    """
    rng = np.random.default_rng(seed)
    w, h = size
    field = np.empty((h, w, 3), np.uint8)
    field[:] = BACKGROUND
    step = int(1.3 * d)
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            if min(np.hypot(x - cx, y - cy) for cx, cy in wbcs) < 1.4 * d:
                continue
            jitter = rng.integers(-2, 3, 2)
            cv2.circle(field, (x + int(jitter[0]), y + int(jitter[1])), int(d / 2), RED_CELL, -1)
    boxes, masks = [], []
    for cx, cy in wbcs:
        r = int(0.7 * d)
        cv2.circle(field, (cx, cy), r, CYTOPLASM, -1)
        cv2.circle(field, (cx, cy), int(0.4 * d), NUCLEUS, -1)
        boxes.append((cx - r, cy - r, cx + r + 1, cy + r + 1))
        mask = np.zeros((h, w), np.uint8)
        cv2.circle(mask, (cx, cy), r, 1, -1)
        masks.append(mask.astype(bool))
    for x, y in platelets:
        cv2.circle(field, (x, y), max(1, int(0.1 * d)), NUCLEUS, -1)
    noise = rng.normal(0, 3, field.shape)
    return np.clip(field + noise, 0, 255).astype(np.uint8), boxes, masks


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("d", [20.0, 45.0, 90.0])
def test_finds_each_white_cell_and_drops_platelets_at_any_magnification(d):
    scale = d / 45.0
    wbcs = [(int(200 * scale), int(180 * scale)), (int(470 * scale), int(300 * scale))]
    field, boxes, _ = drawn_field(
        d,
        size=(int(640 * scale), int(480 * scale)),
        wbcs=wbcs,
        platelets=[(int(100 * scale), int(400 * scale))],
    )
    cells = locate_cells(field, LocateOptions(red_cell_diameter_px=d, masks=False))
    assert len(cells) == 2, [c.box for c in cells]  # the platelet is not a cell
    for cell, box in zip(sorted(cells, key=lambda c: c.box[0]), boxes, strict=True):
        assert iou(cell.box, box) >= 0.5, (cell.box, box)
        assert not cell.touches_border
        assert cell.red_cell_diameter_px == d


def test_cells_are_ordered_top_to_bottom_and_in_the_field():
    field, _, _ = drawn_field(45.0, wbcs=((470, 120), (150, 350)))
    cells = locate_cells(field, LocateOptions(red_cell_diameter_px=45.0, masks=False))
    assert [c.box[1] < 240 for c in cells] == [True, False]
    for c in cells:
        x0, y0, x1, y1 = c.box
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
        assert c.mask.shape == (c.mask_box[3] - c.mask_box[1], c.mask_box[2] - c.mask_box[0])


def test_a_field_without_white_cells_is_an_empty_list():
    field, _, _ = drawn_field(45.0, wbcs=((-500, -500),), platelets=())
    assert locate_cells(field, LocateOptions(red_cell_diameter_px=45.0)) == []


def test_cells_cut_by_the_border_are_flagged_and_can_be_dropped():
    field, _, _ = drawn_field(45.0, wbcs=((5, 200), (400, 250)))
    options = LocateOptions(red_cell_diameter_px=45.0, masks=False)
    cells = locate_cells(field, options)
    assert sorted(c.touches_border for c in cells) == [False, True]
    kept = locate_cells(field, LocateOptions(red_cell_diameter_px=45.0, drop_border_cells=True))
    assert len(kept) == 1 and not kept[0].touches_border


def test_mask_covers_nucleus_and_cytoplasm():
    field, _, masks = drawn_field(45.0)
    cells = locate_cells(field, LocateOptions(red_cell_diameter_px=45.0, masks=True))
    assert len(cells) == 2
    for cell, truth in zip(sorted(cells, key=lambda c: c.box[0]), masks, strict=True):
        found = np.zeros(truth.shape, bool)
        x0, y0, x1, y1 = cell.mask_box
        found[y0:y1, x0:x1] = cell.mask
        dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
        # The drawn cytoplasm is 1.75× the nucleus' diameter: a nucleus-only mask would
        # score 2·0.33/(1.33) ≈ 0.49; GrabCut reaches ~0.95 on these fields.
        assert dice >= 0.85, dice


def test_crop_puts_the_cell_on_black_at_the_size_asked():
    field, _, _ = drawn_field(45.0)
    cell = locate_cells(field, LocateOptions(red_cell_diameter_px=45.0))[0]
    crop = cell_crop(field, cell, 128)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    assert (crop[:4] == 0).all() and (crop[:, :4] == 0).all()  # black surround
    # Inside the mask's box but outside the round cell (the box's corner): black too.
    assert (crop[8:12, 8:12] == 0).all() and (crop[-12:-8, -12:-8] == 0).all()
    centre = crop[54:74, 54:74].reshape(-1, 3).mean(0)
    assert np.abs(centre - NUCLEUS).max() < 20  # the nucleus in the middle
    # In red-cell diameters: 4 diameters across puts the 1.4-diameter cell in 35 % of it.
    wide = cell_crop(field, cell, 128, diameters=4.0)
    cell_width = np.nonzero(wide.max(axis=(0, 2)) > 0)[0]
    assert abs((cell_width[-1] - cell_width[0] + 1) / 128 - 1.4 / 4.0) < 0.06


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        np.zeros((8, 8, 3), np.uint8),
        "field.png",
    ],
)
def test_bad_fields_raise_locate_error(bad):
    with pytest.raises(LocateError):
        locate_cells(bad, LocateOptions(red_cell_diameter_px=20.0))


def test_bad_options_raise_value_error():
    for kwargs in ({"red_cell_diameter_px": 0}, {"closing": 0}, {"box_margin": -0.1}):
        with pytest.raises(ValueError):
            LocateOptions(**kwargs)


def test_scale_is_estimated_when_not_given():
    field, boxes, _ = drawn_field(30.0, size=(448, 336), wbcs=((140, 120), (330, 220)))
    cells = locate_cells(field, LocateOptions(masks=False))
    assert len(cells) == 2
    estimate = red_cell_diameter(field, LocateOptions())
    assert all(c.red_cell_diameter_px == estimate for c in cells)


def test_no_red_cells_to_measure_is_a_locate_error():
    blank = np.full((224, 224, 3), 230, np.uint8)
    with pytest.raises(LocateError, match="red_cell_diameter_px"):
        locate_cells(blank)

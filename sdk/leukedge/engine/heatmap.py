"""Where the model looked: a heat map of one call, from the ``.tflite`` alone (no gradient).

Two methods, chosen by what the model file holds:

- **class activation map** (Zhou et al. 2016, "Learning Deep Features for Discriminative
  Localization", CVPR): models whose head is global average pooling followed by one Dense
  layer (model v3, the baselines) export that Dense layer applied at every cell of the
  backbone's last feature map as a third output
  (:data:`leukedge.converters.tflite.CAM_LAYER`). Because pooling and Dense are linear, the
  mean of those per-cell logits *is* the model's logit: the map is an exact split of the
  call's evidence over the image, from the same invoke (cost: one 1,280 × 2 product per
  cell, microseconds).
- **occlusion** (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional
  Networks"): for any other model, each cell of a ``grid × grid`` partition is replaced by
  a blurred copy of itself (blurred, not blacked out: a black square is itself unlike any
  field) and the drop in the called class's probability is that cell's heat; ``grid²``
  extra invokes (49 by default), the slow fallback.

Both return ``(H, W)`` float32 in [0, 1] at the size asked (the decoded image's, so that it
lies on the image), 1 where the evidence for the class is strongest; a map with no
contrast is all zeros.

Imports: NumPy and OpenCV only (the engine room).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["HEATMAP_METHODS", "cam_heatmap", "occlusion_heatmap", "upsample"]

HEATMAP_METHODS = ("class_activation_map", "occlusion")
"""How a result's ``heatmap`` was made (``ClassificationResult.heatmap_method``)."""

OCCLUSION_GRID = 7
"""Cells per side of the occlusion partition (7: the 7×7 feature map of a 224 px input)."""


def upsample(cells: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``(h, w)`` map of cell values → ``(H, W)`` float32, bilinear between cell centres
    (OpenCV's pixel-centre convention: the map covers the whole image).

    Args:
        cells: ``(h, w)`` float.
        size: ``(H, W)`` in pixels, each ≥ 1.

    Raises:
        ValueError: a size below 1 or a map that is not 2-d.
    """
    import cv2

    if cells.ndim != 2:
        raise ValueError(f"a heat map has 2 dimensions, got {cells.shape}")
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"heat map size must be at least 1x1, got {size}")
    return cv2.resize(
        np.ascontiguousarray(cells, dtype=np.float32),
        (width, height),
        interpolation=cv2.INTER_LINEAR,
    )


def _normalise(evidence: np.ndarray) -> np.ndarray:
    """Min–max to [0, 1] (Zhou et al. 2016's display); all zeros without contrast."""
    evidence = np.asarray(evidence, dtype=np.float64)
    low, high = float(evidence.min()), float(evidence.max())
    if not np.isfinite(low) or not np.isfinite(high) or high - low <= 1e-12:
        return np.zeros(evidence.shape, dtype=np.float32)
    return ((evidence - low) / (high - low)).astype(np.float32)


def cam_heatmap(cam: np.ndarray, class_index: int, size: tuple[int, int]) -> np.ndarray:
    """The heat map of ``class_index`` from a class activation map.

    Args:
        cam: ``(h, w, n_classes)`` per-cell logits (the engine's third output).
        class_index: the class whose evidence is shown (the model's call).
        size: ``(H, W)`` of the image the map is laid on.

    Returns:
        ``(H, W)`` float32 in [0, 1]: per cell, the logit margin of ``class_index`` over the
        mean of the other classes (for two classes: ``z_c − z_other``, whose mean over cells is
        the model's own margin), min–max normalised and upsampled.

    Raises:
        ValueError: a map that is not ``(h, w, n)`` with ``n ≥ 2``, or a class out of range.
    """
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 3 or cam.shape[-1] < 2:
        raise ValueError(f"a class activation map is (h, w, n_classes >= 2), got {cam.shape}")
    if not 0 <= class_index < cam.shape[-1]:
        raise ValueError(f"class index {class_index} outside 0..{cam.shape[-1] - 1}")
    others = np.delete(cam, class_index, axis=-1).mean(axis=-1)
    return upsample(_normalise(cam[..., class_index] - others), size)


def occlusion_heatmap(
    probabilities: Callable[[np.ndarray], np.ndarray],
    rgb: np.ndarray,
    class_index: int,
    size: tuple[int, int],
    grid: int = OCCLUSION_GRID,
) -> np.ndarray:
    """The heat map of ``class_index`` by blurred occlusion.

    Args:
        probabilities: the model: ``(S, S, 3)`` uint8 RGB → ``(n_classes,)`` probabilities.
        rgb: the model's input, ``(S, S, 3)`` uint8 RGB.
        class_index: the class whose evidence is shown.
        size: ``(H, W)`` of the image the map is laid on.
        grid: cells per side (``grid²`` extra invokes).

    Returns:
        ``(H, W)`` float32 in [0, 1]: per cell, how much p(class) drops when that cell is
        blurred (Gaussian, σ = a quarter of the cell's side), floored at 0, normalised and
        upsampled.

    Raises:
        ValueError: ``grid`` < 2 or larger than the image side.
    """
    import cv2

    height, width = rgb.shape[:2]
    if not 2 <= grid <= min(height, width):
        raise ValueError(f"grid must be between 2 and the image side, got {grid}")
    sigma = max(min(height, width) / grid / 4.0, 1.0)
    blurred = cv2.GaussianBlur(rgb, (0, 0), sigma)
    base = float(probabilities(rgb)[class_index])
    rows = np.linspace(0, height, grid + 1).round().astype(int)
    cols = np.linspace(0, width, grid + 1).round().astype(int)
    drop = np.zeros((grid, grid))
    for i in range(grid):
        for j in range(grid):
            occluded = rgb.copy()
            cell = (slice(rows[i], rows[i + 1]), slice(cols[j], cols[j + 1]))
            occluded[cell] = blurred[cell]
            drop[i, j] = base - float(probabilities(occluded)[class_index])
    return upsample(_normalise(np.maximum(drop, 0.0)), size)

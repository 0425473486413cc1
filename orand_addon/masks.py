"""Turning class maps into label masks (pure functions)."""

from __future__ import annotations

import numpy as np


def maps_to_mask(maps: np.ndarray, keys: np.ndarray, bg_thres: float) -> np.ndarray:
    """Label mask from (K, H, W) maps: a constant background map ``bg_thres`` is prepended, then argmax,
    then channel -> class label (``keys + 1``; 0 background). Ties go to background, as in IRN.

    >>> maps = np.array([[[0.1, 0.6], [0.3, 0.2]], [[0.0, 0.7], [0.3, 0.9]]], np.float32)
    >>> maps_to_mask(maps, np.array([0, 14]), 0.25).tolist()
    [[0, 15], [1, 15]]
    """
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if maps.shape[0] == 0:
        return np.zeros(maps.shape[-2:], np.uint8)
    bg = np.full((1, *maps.shape[-2:]), bg_thres, dtype=np.float32)
    stacked = np.concatenate([bg, np.asarray(maps, np.float32)], axis=0)
    labels = np.concatenate([[0], keys + 1]).astype(np.uint8)
    return labels[np.argmax(stacked, axis=0)]


def strided_size(size: tuple[int, int], stride: int = 4) -> tuple[int, int]:
    """``(ceil(H / stride), ceil(W / stride))``, the size of IRN's stride-4 ``cam``.

    >>> strided_size((375, 500))
    (94, 125)
    """
    return (size[0] + stride - 1) // stride, (size[1] + stride - 1) // stride

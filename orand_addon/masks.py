"""Turning class maps into label masks (pure functions)."""

from __future__ import annotations

import numpy as np


def maps_to_channels(maps: np.ndarray, bg_thres: float) -> np.ndarray:
    """Channel indices (H, W) int64 of (K, H, W) maps: a constant background map ``bg_thres`` is prepended, then
    argmax; 0 is background, ``c`` is map ``c - 1``. Ties go to background, as in IRN (its ``cam_to_ir_label``
    before the CRF).

    >>> maps = np.zeros((1, 2, 3), np.float32); maps[0, 0, :2] = [0.9, 0.2]
    >>> maps_to_channels(maps, 0.30).tolist(), maps_to_channels(maps, 0.05).tolist()
    ([[1, 0, 0], [0, 0, 0]], [[1, 1, 0], [0, 0, 0]])
    >>> maps_to_channels(np.array([[[0.3, 0.5]]], np.float32), 0.3).tolist()
    [[0, 1]]
    """
    maps = np.asarray(maps, dtype=np.float32)
    bg = np.full((1, *maps.shape[-2:]), bg_thres, dtype=np.float32)
    return np.argmax(np.concatenate([bg, maps], axis=0), axis=0).astype(np.int64, copy=False)


def channels_to_labels(channels: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Mask labels (uint8) of channel indices: 0 stays background, channel ``c`` becomes ``keys[c - 1] + 1``.

    >>> channels_to_labels(np.array([[0, 1, 2]]), np.array([4, 14])).tolist()
    [[0, 5, 15]]
    """
    labels = np.concatenate([[0], np.asarray(keys, dtype=np.int64).reshape(-1) + 1]).astype(np.uint8)
    return labels[channels]


def maps_to_mask(maps: np.ndarray, keys: np.ndarray, bg_thres: float) -> np.ndarray:
    """Label mask from (K, H, W) maps: a constant background map ``bg_thres`` is prepended, then argmax,
    then channel -> class label (``keys + 1``; 0 background). Ties go to background, as in IRN.

    >>> maps = np.array([[[0.1, 0.6], [0.3, 0.2]], [[0.0, 0.7], [0.3, 0.9]]], np.float32)
    >>> maps_to_mask(maps, np.array([0, 14]), 0.25).tolist()
    [[0, 15], [1, 15]]
    """
    if maps.shape[0] == 0:
        return np.zeros(maps.shape[-2:], np.uint8)
    return channels_to_labels(maps_to_channels(maps, bg_thres), keys)


def strided_size(size: tuple[int, int], stride: int = 4) -> tuple[int, int]:
    """``(ceil(H / stride), ceil(W / stride))``, the size of IRN's stride-4 ``cam``.

    >>> strided_size((375, 500))
    (94, 125)
    """
    return (size[0] + stride - 1) // stride, (size[1] + stride - 1) // stride

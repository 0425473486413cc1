"""Bilinear resizing of class maps (numpy in, numpy out)."""

from __future__ import annotations

import numpy as np


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (K, h, w) maps to (K, H, W) bilinearly (``align_corners=False``, as the reference code).

    >>> resize_maps(np.ones((2, 3, 4), np.float32), (6, 8)).shape
    (2, 6, 8)
    """
    if maps.shape[-2:] == tuple(size):
        return maps
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
    out = F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return out[0].numpy()

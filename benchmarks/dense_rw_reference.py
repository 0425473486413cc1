"""A plain dense implementation of IRN's random walk, written from DESIGN §6, used only for checking.

Nothing here is shared with ``orand_addon.refine``: the pair offsets, the paths, the affinity matrix and the
matrix power are written out again, the dense way IRN does it, so the tests and the benchmark compare two
independent computations.

* Pairs: a pixel and every pixel at an offset ``(dy, dx)`` with ``0 < dy² + dx² < radius²`` and ``dy > 0`` (or
  ``dy = 0, dx > 0``); the matrix is symmetric, so the other half plane is covered by the transpose.
* Path of an offset: the lattice points of the box spanned by ``(0, 0)`` and ``(dy, dx)`` that lie closer than
  one pixel to the straight line between them (both end points included).
* ``A[i, j] = 1 − max(boundary on the path)``, ``A[i, i] = 1``, 0 for pixels further apart; the boundary map is
  padded with 1 so paths leaving the image have affinity 0.
* ``T = A**beta / column sums``; ``T`` is squared ``exp_times`` times; result ``(cam·(1 − edge)) @ T``, (K, h, w).

Usage from a test: ``sys.path.insert(0, "benchmarks"); from dense_rw_reference import dense_random_walk``.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def pair_offsets(radius: int) -> list[tuple[int, int]]:
    """Offsets of the upper half plane inside the open disc of ``radius``.

    >>> len(pair_offsets(5)), pair_offsets(2)
    (34, [(0, 1), (1, -1), (1, 0), (1, 1)])
    """
    out = []
    for dy in range(0, radius):
        for dx in range(-radius, radius + 1):
            inside = 0 < dy * dy + dx * dx < radius * radius
            upper = dy > 0 or dx > 0
            if inside and upper:
                out.append((dy, dx))
    return out


def line_points(dy: int, dx: int) -> list[tuple[int, int]]:
    """Lattice points of the bounding box closer than 1 to the line from (0, 0) to (dy, dx).

    >>> sorted(line_points(0, 2))
    [(0, 0), (0, 1), (0, 2)]
    """
    norm = math.hypot(dy, dx)
    pts = []
    for y in range(min(0, dy), max(0, dy) + 1):
        for x in range(min(0, dx), max(0, dx) + 1):
            distance = abs(dy * x - dx * y) / norm  # |cross product| / length
            if distance < 1 - 1e-12:
                pts.append((y, x))
    return pts


def dense_affinity(edge: np.ndarray, radius: int) -> np.ndarray:
    """The symmetric (hw, hw) affinity matrix (float64) with ones on the diagonal."""
    edge = np.asarray(edge, dtype=np.float64)
    h, w = edge.shape
    pad = radius
    big = np.ones((h + 2 * pad, w + 2 * pad))
    big[pad:pad + h, pad:pad + w] = edge
    n = h * w
    aff = np.eye(n)
    flat = np.arange(n).reshape(h, w)
    for dy, dx in pair_offsets(radius):
        worst = np.zeros((h, w))
        for py, px in line_points(dy, dx):
            worst = np.maximum(worst, big[pad + py:pad + py + h, pad + px:pad + px + w])
        value = 1.0 - worst
        for y in range(h):
            ty = y + dy
            if ty >= h:
                continue
            for x in range(w):
                tx = x + dx
                if 0 <= tx < w:
                    aff[flat[y, x], flat[ty, tx]] = value[y, x]
                    aff[flat[ty, tx], flat[y, x]] = value[y, x]
    return aff


def dense_random_walk(cam, edge, beta: float = 10, exp_times: int = 8, radius: int = 5,
                      device: str = "cpu", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """IRN's dense propagation: returns (K, h, w) in ``dtype`` on ``device``."""
    cam = torch.as_tensor(np.asarray(cam), dtype=dtype, device=device)
    edge_np = np.asarray(edge, dtype=np.float64).reshape(cam.shape[-2:])
    k, h, w = cam.shape
    aff = torch.as_tensor(dense_affinity(edge_np, radius), dtype=dtype, device=device)
    aff = aff ** beta
    trans = aff / aff.sum(dim=0, keepdim=True)
    for _ in range(exp_times):
        trans = trans @ trans
    x = cam * (1 - torch.as_tensor(edge_np, dtype=dtype, device=device))
    return (x.reshape(k, h * w) @ trans).reshape(k, h, w)


def dense_random_walk_timed_parts(cam: torch.Tensor, edge: torch.Tensor, beta: float = 10, exp_times: int = 8,
                                  radius: int = 5) -> torch.Tensor:
    """The same computation with the affinity built by tensor ops on the device (for the benchmark, as IRN).

    The per-pixel Python loop of :func:`dense_affinity` is replaced by index arrays so the timing measures the
    dense algebra, like IRN's GPU code.
    """
    device, dtype = cam.device, cam.dtype
    k, h, w = cam.shape
    n = h * w
    pad = radius
    big = torch.ones(h + 2 * pad, w + 2 * pad, device=device, dtype=dtype)
    big[pad:pad + h, pad:pad + w] = edge.reshape(h, w)
    aff = torch.eye(n, device=device, dtype=dtype)
    flat = torch.arange(n, device=device).reshape(h, w)
    for dy, dx in pair_offsets(radius):
        worst = torch.zeros(h, w, device=device, dtype=dtype)
        for py, px in line_points(dy, dx):
            worst = torch.maximum(worst, big[pad + py:pad + py + h, pad + px:pad + px + w])
        rows = slice(0, h - dy)
        cols = slice(max(0, -dx), w - max(0, dx))
        if h - dy <= 0 or w - abs(dx) <= 0:
            continue
        src = flat[rows, cols].reshape(-1)
        dst = flat[dy:, max(0, dx):w + min(0, dx)].reshape(-1)
        value = (1.0 - worst[rows, cols]).reshape(-1)
        aff[src, dst] = value
        aff[dst, src] = value
    aff = aff ** beta
    trans = aff / aff.sum(dim=0, keepdim=True)
    for _ in range(exp_times):
        trans = trans @ trans
    x = cam * (1 - edge.reshape(h, w))
    return (x.reshape(k, n) @ trans).reshape(k, h, w)

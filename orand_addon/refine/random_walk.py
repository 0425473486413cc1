"""IRN's random walk (``propagate_to_edge``) without the dense (hw)² matrix, and the semantic labels after it.

IRN forms the affinity matrix ``A`` of the ``n = h·w`` pixels of the stride-4 map: ``A[i, i] = 1``;
``A[i, j] = A[j, i] = 1 − max(edge on the path i→j)`` for every pair at an offset of :func:`~.paths.directions`
(radius 5); 0 elsewhere. Then ``T = A^β / colsum(A^β)`` (element-wise power, column-normalised) is squared
``exp_times`` times, and the result is ``(cam · (1 − edge)) · T^(2^exp_times)`` for the K maps as row vectors.

Matrix products are associative, so ``x · T^(2^e)`` equals ``x`` multiplied by ``T`` ``2^e`` times. ``T`` has at
most ``1 + 2·D`` non-zeros per column (D = 34 directions at radius 5): a step costs ``K·n·(1 + 2D)``
multiply-adds instead of ``n³`` for one squaring, and memory stays linear in ``n``. Column ``j`` of ``T`` is the
neighbour table row ``j`` here: ``y_j = Σ_i x_i A[i, j] / Σ_i A[i, j]``, with neighbours ``j`` itself, ``j + d``
(weight ``w_d(j)``) and ``j − d`` (weight ``w_d(j − d)``). The sums are the ones the dense product computes;
only the rounding differs. ``T`` is built in float64 and the steps run in float64: the result matches a float64
dense reference to ~1e-8 (relative to the max), and IRN's own float32 squaring to that one's rounding error
(2e-6 at 47×63 on CPU; see ``benchmarks/dense_rw_reference.py`` and ``tests/test_random_walk.py``). In float32, sequential sums (CSR,
stencil) drift by ~1e-4 over 256 steps, which is why float64 is the default.

Shapes: ``cam`` (K, h, w), ``edge`` (h, w) (or (1, h, w) as IRN's network returns it); the result is (K, h, w)
(IRN returns (K, 1, h, w); the singleton axis is dropped here everywhere).

>>> import torch
>>> cam = torch.zeros(1, 4, 6); cam[0, 1, 1] = 1.0
>>> edge = torch.zeros(4, 6); edge[:, 3] = 1.0          # a wall between columns 0-2 and 4-5
>>> out = random_walk(cam, edge, exp_times=4, radius=3)
>>> out.shape, bool(out[0, :, 4:].abs().max() < 1e-6), 0 < float(out.max()) <= 1  # each step averages
(torch.Size([1, 4, 6]), True, True)
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np

from ..registries import WALK_METHODS as _METHODS
from .paths import path_max, path_table

WALK_METHODS = tuple(_METHODS)


def walk_weights(edge, radius: int = 5, beta: float = 10.0):
    """Per-direction affinities ``w_d(p) = (1 − max edge on the path p → p + d) ** beta``: (D, h, w).

    ``w_d(p)`` is 0 where ``p + d`` falls outside the map (IRN pads the boundary map with 1 there).

    >>> import torch
    >>> w = walk_weights(torch.zeros(3, 3), radius=2, beta=10)
    >>> w.shape, w[1].tolist()          # direction (1, -1): no pair from the left column or the last row
    (torch.Size([4, 3, 3]), [[0.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    """
    import torch
    import torch.nn.functional as F

    table = path_table(radius)
    h, w = edge.shape[-2:]
    pad = radius - 1
    padded = F.pad(edge.reshape(1, 1, h, w), (pad, pad, 0, pad), value=1.0)
    windows = F.unfold(padded, table.window_shape)  # (1, U, h*w)
    aff = 1.0 - path_max(windows, table)[0].reshape(-1, h, w)
    inside = F.pad(torch.ones(1, 1, h, w, device=edge.device, dtype=edge.dtype), (pad, pad, 0, pad))
    valid = F.unfold(inside, table.window_shape)[0, torch.as_tensor(table.dest_rows, device=edge.device)]
    return torch.where(valid.reshape(-1, h, w) > 0, aff.pow(beta), torch.zeros_like(aff))


def shift_back(weights, dirs: np.ndarray):
    """``out[d, y, x] = weights[d, y − dy, x − dx]`` (0 outside): the weight of the pair that ends at (y, x).

    >>> import torch
    >>> shift_back(torch.arange(6.).reshape(1, 2, 3), np.array([[1, -1]])).tolist()
    [[[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]]]
    """
    import torch

    h, w = weights.shape[-2:]
    out = torch.zeros_like(weights)
    for d, (dy, dx) in enumerate(dirs.tolist()):
        if dy >= h or abs(dx) >= w:
            continue
        out[d, dy:, max(dx, 0):w + min(dx, 0)] = weights[d, :h - dy, max(-dx, 0):w - max(dx, 0)]
    return out


def transition_stencil(edge, radius: int = 5, beta: float = 10.0):
    """Column-normalised transition ``T`` as a stencil: ``(offsets (S, 2) int, weights (S, h, w))``.

    ``y[p] = Σ_s weights[s, p] · x[p + offsets[s]]`` is one step ``y = x · T``. ``S = 1 + 2D``: the pixel
    itself, then the ``D`` forward offsets ``+d`` (weight ``w_d(p)``), then the backward ones ``−d`` (weight
    ``w_d(p − d)``), each divided by the column sum; neighbours outside the map have weight 0.

    >>> import torch
    >>> offsets, weights = transition_stencil(torch.zeros(2, 2), radius=2)
    >>> offsets.tolist()[:3], weights.shape, weights.sum(0).tolist()
    ([[0, 0], [0, 1], [1, -1]], torch.Size([9, 2, 2]), [[1.0, 1.0], [1.0, 1.0]])
    """
    import torch

    dirs = path_table(radius).directions
    fwd = walk_weights(edge, radius, beta)
    bwd = shift_back(fwd, dirs)
    ones = torch.ones(1, *edge.shape[-2:], device=edge.device, dtype=fwd.dtype)
    weights = torch.cat([ones, fwd, bwd])
    offsets = np.concatenate([np.zeros((1, 2), np.int64), dirs, -dirs])
    return offsets, weights / weights.sum(0, keepdim=True)


def neighbour_index(offsets: np.ndarray, size: Sequence[int], device=None):
    """(n, S) flat index of ``p + offsets[s]`` for every pixel ``p`` (``p`` itself where that is outside).

    >>> neighbour_index(np.array([[0, 0], [0, 1]]), (1, 2)).tolist()
    [[0, 1], [1, 1]]
    """
    import torch

    h, w = int(size[0]), int(size[1])
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    off = torch.as_tensor(offsets, device=device)
    ty, tx = ys[None] + off[:, 0, None, None], xs[None] + off[:, 1, None, None]
    inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
    here = (ys * w + xs)[None]
    return torch.where(inside, ty * w + tx, here).reshape(len(offsets), -1).t().contiguous()


def _walk_stencil(x, offsets: np.ndarray, weights, steps: int):
    """Steps on a zero-padded flat layout: each offset is one fused multiply-add over a contiguous span."""
    import torch

    k, h, w = x.shape
    pad = int(np.abs(offsets).max(initial=0))
    wp = w + 2 * pad
    cur = torch.nn.functional.pad(x, (pad, pad, pad, pad)).reshape(k, -1)
    nxt = torch.zeros_like(cur)
    wts = torch.nn.functional.pad(weights, (pad, pad, pad, pad)).reshape(len(offsets), -1)
    base, span = pad * wp + pad, (h - 1) * wp + w  # the interior rows, with the side pads between them
    wts = wts[:, base:base + span].contiguous()  # zero on the side pads, which keeps them zero in the output
    shifts = [int(dy) * wp + int(dx) for dy, dx in offsets.tolist()]
    for _ in range(steps):
        out = nxt[:, base:base + span]
        torch.mul(cur[:, base + shifts[0]:base + shifts[0] + span], wts[0], out=out)
        for s in range(1, len(shifts)):
            out.addcmul_(cur[:, base + shifts[s]:base + shifts[s] + span], wts[s])
        cur, nxt = nxt, cur
    return cur.reshape(k, h + 2 * pad, wp)[:, pad:pad + h, pad:pad + w]


def _walk_gather(x, offsets: np.ndarray, weights, steps: int):
    """Steps as ``index_select`` of every neighbour, multiply, sum: three kernels per step (the GPU path)."""
    import torch

    k, h, w = x.shape
    n, s = h * w, len(offsets)
    index = neighbour_index(offsets, (h, w), x.device).reshape(-1)
    weight = weights.reshape(s, -1).t().contiguous()
    y = x.reshape(k, n)
    for _ in range(steps):
        y = (torch.index_select(y, 1, index).view(k, n, s) * weight).sum(-1)
    return y.reshape(k, h, w)


def csr_transition(offsets: np.ndarray, weights, size: Sequence[int]):
    """``T`` transposed (row ``j`` = column ``j`` of ``T``) as a torch CSR matrix: zero entries dropped,
    columns sorted within each row (what cuSPARSE and MKL expect).

    >>> import torch
    >>> offsets, weights = transition_stencil(torch.zeros(2, 3), radius=2)
    >>> m = csr_transition(offsets, weights, (2, 3))
    >>> m.to_dense().sum(1).tolist(), m.crow_indices().tolist()      # pixel (0, 0): itself + 3 neighbours
    ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0, 4, 10, 14, 18, 24, 28])
    """
    import warnings

    import torch

    h, w = int(size[0]), int(size[1])
    n = h * w
    index = neighbour_index(offsets, (h, w), weights.device)
    weight = weights.reshape(len(offsets), -1).t()
    keep = weight != 0
    order = torch.argsort(index.masked_fill(~keep, n), dim=1)
    index, weight, keep = index.gather(1, order), weight.gather(1, order), keep.gather(1, order)
    crow = torch.zeros(n + 1, dtype=torch.int64, device=weights.device)
    crow[1:] = torch.cumsum(keep.sum(1), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, index[keep], weight[keep], (n, n), check_invariants=False)


def _walk_csr(x, offsets: np.ndarray, weights, steps: int):
    """Steps as one sparse CSR product each (MKL on CPU, cuSPARSE on GPU)."""
    k, h, w = x.shape
    matrix = csr_transition(offsets, weights, (h, w))
    y = x.reshape(k, h * w).t().contiguous()
    for _ in range(steps):
        y = matrix @ y
    return y.t().reshape(k, h, w)


_WALKERS = {"stencil": _walk_stencil, "gather": _walk_gather, "csr": _walk_csr}


def random_walk(cam, edge, beta: float = 10.0, exp_times: int = 8, radius: int = 5, method: str = "auto",
                dtype=None):
    """IRN's ``propagate_to_edge``: ``(cam · (1 − edge)) · T^(2^exp_times)`` by sparse steps; returns (K, h, w).

    ``cam`` (K, h, w) and ``edge`` (h, w) or (1, h, w): torch tensors on the same device, or numpy arrays (then
    the result is a numpy array too); edge values are boundary probabilities in [0, 1]. ``method``: ``csr``
    (torch's sparse CSR product, one call per step; the default on CPU, run on one thread), ``gather``
    (``index_select`` of the neighbour table, multiply, sum; the default on GPU), ``stencil`` (one fused
    multiply-add per neighbour offset over the whole map) or ``auto``: all compute the same sums. ``dtype`` of the steps, float64 by default (``T`` is always built in float64: a
    rounded ``T`` is a bias applied ``2^exp_times`` times); the result is float32.

    >>> out = random_walk(np.ones((1, 6, 6), np.float32), np.zeros((6, 6), np.float32), exp_times=2, radius=1)
    >>> type(out).__name__, out.shape, out.dtype
    ('ndarray', (1, 6, 6), dtype('float32'))
    """
    import torch

    if isinstance(cam, np.ndarray):
        edge = torch.as_tensor(np.asarray(edge))
        return random_walk(torch.from_numpy(np.ascontiguousarray(cam)), edge, beta, exp_times, radius, method,
                           dtype).numpy()

    if method not in WALK_METHODS:
        raise ValueError(f"unknown random-walk method {method!r}; valid: {', '.join(WALK_METHODS)}")
    if int(exp_times) != exp_times or exp_times < 0:
        raise ValueError(f"exp_times must be a non-negative integer, got {exp_times!r}")
    if edge.dim() == 3 and edge.shape[0] == 1:
        edge = edge[0]
    if cam.dim() != 3 or edge.dim() != 2 or tuple(cam.shape[-2:]) != tuple(edge.shape):
        raise ValueError(f"cam must be (K, h, w) and edge (h, w) of the same size, got {tuple(cam.shape)} "
                         f"and {tuple(edge.shape)}")
    if not bool(torch.isfinite(edge).all()):
        raise ValueError("the boundary map contains NaN or Inf")
    dtype = dtype or torch.float64
    k, h, w = cam.shape
    edge = edge.to(torch.float64)
    x = cam.to(torch.float64) * (1.0 - edge)
    if k == 0 or h * w == 0:
        return x.to(torch.float32)
    if method == "auto":
        method = "csr" if x.device.type == "cpu" else "gather"
    with _one_cpu_thread(x.device):
        offsets, weights = transition_stencil(edge, radius, beta)
        out = _WALKERS[method](x.to(dtype), offsets, weights.to(dtype), 2 ** int(exp_times))
    return out.to(torch.float32)


@contextlib.contextmanager
def _one_cpu_thread(device) -> Iterator[None]:
    """The steps are too small to split over threads (two threads ran 1.5-4x slower on 2 shared cores); on CPU
    the walk runs on one thread, and parallelism belongs across images."""
    import torch

    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def walk_to_maps(rw, size: Sequence[int]):
    """The maps IRN's ``make_sem_seg_labels`` thresholds: ×4 upsampled, cropped to ``size``, divided by the max.

    ``rw`` (K, h, w) walk output -> (K, H, W) float32 in [0, 1]; the mask is then
    :func:`orand_addon.masks.maps_to_mask` with background 0.25 (ties go to background, as IRN's argmax).

    >>> import torch
    >>> walk_to_maps(torch.tensor([[[1.0, 2.0]]]), (3, 5)).amax().item()
    1.0
    """
    return normalize_global(upsample_crop(rw, size))


def prepare_cam(maps, power: float = 1.0):
    """Stored image-size maps (K, H, W) -> IRN's stride-4 ``cam``: bilinear downsizing to ⌈H/4⌉ × ⌈W/4⌉, then
    ``cam ** power`` (1.3 in AMN's ``make_sem_seg_labels``; 1 in IRN).

    >>> import torch
    >>> prepare_cam(torch.full((1, 8, 5), 0.5), power=2.0).tolist()
    [[[0.25, 0.25], [0.25, 0.25]]]
    """
    h, w = maps.shape[-2:]
    cam = downsize_maps(maps, ((h + 3) // 4, (w + 3) // 4))
    return cam.clamp_min(0) ** power if power != 1 else cam


def upsample_crop(rw, size: Sequence[int], scale: int = 4):
    """Bilinear ×``scale`` upsampling (``align_corners=False``), cropped to the image ``size``: (K, H, W).

    >>> import torch
    >>> upsample_crop(torch.ones(2, 3, 4), (10, 13)).shape
    torch.Size([2, 10, 13])
    """
    import torch.nn.functional as F

    h, w = int(size[0]), int(size[1])
    if rw.shape[0] == 0:
        return rw.new_zeros((0, h, w))
    up = F.interpolate(rw[None].float(), scale_factor=scale, mode="bilinear", align_corners=False)[0]
    return up[:, :h, :w]


def normalize_global(maps):
    """Divide by the maximum over all classes and pixels; all-zero (or empty) maps stay 0 (documented fallback).

    >>> import torch
    >>> normalize_global(torch.tensor([[[1.0, 4.0]], [[2.0, 0.0]]])).tolist()
    [[[0.25, 1.0]], [[0.5, 0.0]]]
    """
    import torch

    if maps.numel() == 0:
        return maps
    peak = maps.max()
    return maps / peak if float(peak) > 0 else torch.zeros_like(maps)


def downsize_maps(maps, size: Sequence[int]):
    """Image-size maps (K, H, W) -> IRN's stride-4 ``cam`` size ``size`` (bilinear, ``align_corners=False``).

    >>> import torch
    >>> downsize_maps(torch.ones(3, 375, 500), (94, 125)).shape
    torch.Size([3, 94, 125])
    """
    import torch.nn.functional as F

    if maps.shape[0] == 0:
        return maps.new_zeros((0, int(size[0]), int(size[1])))
    return F.interpolate(maps[None].float(), size=(int(size[0]), int(size[1])), mode="bilinear",
                         align_corners=False)[0]

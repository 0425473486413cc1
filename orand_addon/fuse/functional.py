"""Probabilistic OR / AND fusion of class activation maps (paper Eq. 1), as pure functions.

For maps ``c_i`` in [0, 1] of the same class and size::

    OR  = 1 - prod_i (1 - c_i)        (two sources: c1 + c2 - c1 c2)
    AND = prod_i c_i                  (two sources: c1 c2)

each divided by its own maximum over the pixels of that class map (``normalize=True``, the paper), so the peak
is 1; a map whose maximum is 0 stays 0 and never becomes NaN. ``normalize=False`` keeps the raw values, as the
official AMN + MCTformer code does: on float32 inputs the two-source results are then exactly its numpy
expressions ``a + b - a*b`` (evaluated as ``(a + b) - (a*b)``) and ``a*b``. Inputs may be numpy arrays or torch
tensors of shape (..., H, W); the normalisation is per map over the last two axes.

Naive ensembles: :func:`fuse_mean` is the plain mean; :func:`fuse_mean_official` the official
``simple_addition.py`` baseline, ``relu(m) / (max(m) + 1e-5)`` per class map with ``m = (a + (b + 0.15)) / 2``.

>>> import numpy as np
>>> a = np.array([[[0.0, 0.5], [1.0, 0.2]]])
>>> b = np.array([[[0.0, 0.5], [0.5, 0.0]]])
>>> fuse_or([a, b], normalize=False).tolist()
[[[0.0, 0.75], [1.0, 0.2]]]
>>> fuse_and([a, b]).tolist()
[[[0.0, 0.5], [1.0, 0.0]]]
>>> fuse_mean([a, b]).tolist()
[[[0.0, 0.5], [0.75, 0.1]]]
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

Array = TypeVar("Array")


def _is_torch(x: object) -> bool:
    return type(x).__module__.startswith("torch")


def _check(maps: Sequence[Array]) -> None:
    if len(maps) < 1:
        raise ValueError("fusion needs at least one map")
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"maps to fuse must have the same shape, got {sorted(shapes)}")


def normalize_max(x: Array) -> Array:
    """Divide each map (last two axes) by its own maximum; all-zero maps stay zero.

    >>> normalize_max(np.array([[[0.0, 2.0]], [[0.0, 0.0]]])).tolist()
    [[[0.0, 1.0]], [[0.0, 0.0]]]
    """
    if _is_torch(x):
        peak = x.amax(dim=(-2, -1), keepdim=True)
        return x / peak.clamp_min(1e-12) * (peak > 0)
    if not x.size:
        return x
    return x * _inverse_peaks(x)


def _inverse_peaks(x: np.ndarray) -> np.ndarray:
    """1 / the maximum of each map (last two axes), 0 where the map is all zero."""
    peak = np.max(x, axis=(-2, -1), keepdims=True)
    return np.divide(1.0, peak, out=np.zeros_like(peak), where=peak > 0)


def fuse_or(maps: Sequence[Array], normalize: bool = True) -> Array:
    """Probabilistic OR of N maps: ``1 - prod(1 - c_i)``, optionally max-normalised per class map."""
    _check(maps)
    out = maps[0]
    for m in maps[1:]:
        prod = out * m
        out = out + m
        out -= prod  # a + b - ab equals 1 - (1 - a)(1 - b), with fewer rounding steps
    return normalize_max(out) if normalize else out


def fuse_and(maps: Sequence[Array], normalize: bool = True) -> Array:
    """Probabilistic AND of N maps: ``prod c_i``, optionally max-normalised per class map."""
    _check(maps)
    out = maps[0]
    for m in maps[1:]:
        out = out * m
    return normalize_max(out) if normalize else out


def fuse_mean(maps: Sequence[Array], normalize: bool = False) -> Array:
    """The naive ensemble: the mean of the maps (not normalised unless asked)."""
    _check(maps)
    out = maps[0]
    for m in maps[1:]:
        out = out + m
    out = out / len(maps)
    return normalize_max(out) if normalize else out


def fuse_pair(a: np.ndarray, b: np.ndarray, kinds: Sequence[str], normalize: bool = True) -> dict[str, np.ndarray]:
    """``or``, ``and`` and ``mean`` of two numpy maps at once, sharing ``a * b`` and ``a + b`` and normalising in
    place: the same values as :func:`fuse_or`, :func:`fuse_and` and :func:`fuse_mean` (the same float operations in
    the same order), with two products and sums fewer and no copies per kind (the fuse stage's hot loop).

    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.random((2, 3, 4, 5), dtype=np.float32)
    >>> out = fuse_pair(a, b, ["or", "and", "mean"])
    >>> all(np.array_equal(out[k], f([a, b])) for k, f in (("or", fuse_or), ("and", fuse_and), ("mean", fuse_mean)))
    True
    >>> sorted(fuse_pair(a, b, ["and"], normalize=False)), np.array_equal(fuse_pair(a, b, ["and"], False)["and"], a * b)
    (['and'], True)
    """
    out: dict[str, np.ndarray] = {}
    unknown = [k for k in kinds if k not in ("or", "and", "mean")]
    if unknown:
        raise ValueError(f"fuse_pair makes or, and, mean; got {unknown}")
    _check([a, b])
    prod = a * b if ("or" in kinds or "and" in kinds) else None
    total = a + b if ("or" in kinds or "mean" in kinds) else None
    if "mean" in kinds:
        out["mean"] = total / 2
    if "or" in kinds:
        fused = total  # the mean above is a new array: the sum can be reused in place
        fused -= prod
        out["or"] = _normalize_in_place(fused) if normalize else fused
    if "and" in kinds:
        out["and"] = _normalize_in_place(prod) if normalize else prod
    return {k: out[k] for k in kinds}


def _normalize_in_place(x: np.ndarray) -> np.ndarray:
    """:func:`normalize_max` of a numpy array, written into ``x`` itself (the same values)."""
    if x.size:
        x *= _inverse_peaks(x)
    return x


OFFICIAL_SHIFT = 0.15  # simple_addition.py: added to the ViT maps, "compensating threshold difference"
OFFICIAL_EPS = 1e-5


def fuse_mean_official(maps: Sequence[Array]) -> Array:
    """The official naive ensemble (``module/simple_addition.py``) of two sources ``a, b``:
    ``m = (a + (b + 0.15)) / 2``, then ``relu(m) / (max(m) + 1e-5)`` per class map, the max taken over ``m`` before
    the ReLU. In float32, operation by operation as the official code.

    >>> a = np.array([[[0.0, 0.45]]], np.float32); b = np.array([[[0.05, 0.2]]], np.float32)
    >>> fuse_mean_official([a, b]).round(4).tolist()   # m = [0.1, 0.4]
    [[[0.25, 1.0]]]
    >>> fuse_mean_official([a])
    Traceback (most recent call last):
    ...
    ValueError: the official naive ensemble (mean-official) takes two sources, got 1
    """
    _check(maps)
    if len(maps) != 2:
        raise ValueError(f"the official naive ensemble (mean-official) takes two sources, got {len(maps)}")
    a, b = maps
    if _is_torch(a):
        m = (a + (b + OFFICIAL_SHIFT)) / 2
        return m.clamp_min(0) / (m.amax(dim=(-2, -1), keepdim=True) + OFFICIAL_EPS)
    dtype = np.result_type(a, b)
    m = (a + (b + dtype.type(OFFICIAL_SHIFT))) / dtype.type(2)
    if not m.size:
        return m
    peak = m.max(axis=(-2, -1), keepdims=True) + dtype.type(OFFICIAL_EPS)
    return np.maximum(m, dtype.type(0)) / peak


FUSION_KINDS = {"or": fuse_or, "and": fuse_and, "mean": fuse_mean, "mean-official": fuse_mean_official}

"""The pure per-image steps of the fuse stage: classes of an image, its source maps aligned to one size and class
order, values repaired, the fused kinds, and the storage cast. No I/O; the stage (:mod:`.stage`) calls them."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..classes import ImageLabels
from ..errors import FormatError, OrandError
from ..io.formats import CamRecord
from ..io.resize import resize_maps
from ..registries import FUSED_KINDS
from .functional import fuse_and, fuse_mean, fuse_mean_official, fuse_or, fuse_pair

MAP_KINDS = tuple(FUSED_KINDS)


def clean_values(maps: np.ndarray, policy: str, where: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Make maps finite and within [0, 1]; returns the maps and ``(note kind, text)`` for what was changed.

    ``policy='fix'``: non-finite values become 0, negatives 0, and a map whose maximum exceeds 1 is divided by
    it. ``policy='error'``: any of these raises :class:`FormatError` naming ``where``.

    >>> m, notes = clean_values(np.array([[[np.nan, -1.0], [2.0, 1.0]]], np.float32), "fix", "x.npy")
    >>> m.tolist(), [k for k, _ in notes]
    ([[[0.0, 0.0], [1.0, 0.5]]], ['non-finite values set to 0', 'negative values clipped to 0', 'maps above 1 divided by their max'])
    """
    peaks = maps.max(axis=(-2, -1)) if maps.size else np.zeros(0, np.float32)
    if maps.size == 0 or (np.isfinite(peaks).all() and peaks.max() <= 1 + 1e-3 and maps.min() >= 0):
        return maps, []  # the common case: two passes, no copy
    bad = ~np.isfinite(maps)
    neg = maps < 0
    finite = np.where(bad | neg, 0, maps)
    peaks = finite.max(axis=(-2, -1))
    over = peaks > 1 + 1e-3
    problems = []  # (note kind, detail, reason for --value-policy error)
    if bad.any():
        problems.append(("non-finite values set to 0", f"{where} ({int(bad.sum())} values)", "NaN/Inf values"))
    if neg.any():
        problems.append(("negative values clipped to 0", f"{where} (min {np.nanmin(maps):.3g})", "negative values"))
    if over.any():
        problems.append(("maps above 1 divided by their max", f"{where} (max {peaks.max():.3g})", "values above 1"))
    if problems and policy == "error":
        _, detail, reason = problems[0]
        raise FormatError(f"{detail}: {reason} (use --value-policy fix to repair)")
    if not problems:
        return maps, []
    maps = finite.astype(np.float32)
    if over.any():
        maps[over] /= peaks[over][:, None, None]
    return maps, [(kind, detail) for kind, detail, _ in problems]


def select_classes(record: CamRecord, classes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, list[int], list[int]]:
    """Maps of ``record`` for ``classes`` in that order, resized to ``size``; absent classes are zero maps.

    Returns ``(maps (len(classes), H, W), missing classes, extra classes)``.
    """
    index = {int(k): i for i, k in enumerate(record.keys)}
    maps = resize_maps(record.maps, size) if record.maps.shape[0] else record.maps
    out = np.zeros((len(classes), *size), np.float32)
    missing = []
    for j, c in enumerate(classes):
        if int(c) in index:
            out[j] = maps[index[int(c)]]
        else:
            missing.append(int(c))
    extra = sorted(set(index) - {int(c) for c in classes})
    return out, missing, extra


def image_classes(image_id: str, records: Sequence[CamRecord], labels: ImageLabels | None) -> tuple[np.ndarray, str | None]:
    """Classes of an image: the image-level label when there is one, else the sources' keys if they agree."""
    keysets = [tuple(sorted(int(k) for k in r.keys)) for r in records]
    label = labels.get(image_id) if labels is not None else None
    if label is not None:
        disagree = any(set(k) != set(label.tolist()) for k in keysets)
        text = None
        if disagree:
            text = f"{image_id}: labels {label.tolist()}, sources {' / '.join(str(list(k)) for k in keysets)}"
        return label.astype(np.int64), text
    if len(set(keysets)) == 1:
        return np.array(keysets[0], dtype=np.int64), None
    raise OrandError(
        f"{image_id}: no image-level label and the sources disagree on its classes "
        f"({' / '.join(str(list(k)) for k in keysets)}); pass --labels FILE"
    )


def fuse_image(maps: Sequence[np.ndarray], kinds: Sequence[str], normalize: bool,
               unshifted: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The requested fused kinds of one image's aligned source maps; ``unshifted``: the same maps before any
    ``--shift-*`` (``mean-official`` adds its own 0.15 to source B, as the official code; default ``maps``)."""
    out = {}
    pair = [k for k in kinds if k in ("or", "and", "mean")]
    if len(maps) == 2 and all(isinstance(m, np.ndarray) for m in maps) and len(pair) > 1:
        out.update(fuse_pair(maps[0], maps[1], pair, normalize))  # shares a*b and a+b: the same values, faster
    for kind in kinds:
        if kind in out:
            continue
        if kind == "or":
            out[kind] = fuse_or(maps, normalize=normalize)
        elif kind == "and":
            out[kind] = fuse_and(maps, normalize=normalize)
        elif kind == "mean":
            out[kind] = fuse_mean(maps)
        elif kind == "mean-official":
            out[kind] = fuse_mean_official(unshifted if unshifted is not None else maps)
        else:
            raise OrandError(f"unknown fused kind {kind!r}; valid: {', '.join(MAP_KINDS)}")
    return {k: out[k] for k in kinds}


def to_storage_dtype(maps: np.ndarray, dtype: str) -> np.ndarray:
    """Cast to the store's dtype; float16 goes through torch, which is ~20x faster than numpy's astype.

    >>> to_storage_dtype(np.array([[[0.5, 1.0]]], np.float32), "float16").dtype
    dtype('float16')
    """
    if dtype == "float16" and maps.dtype != np.float16:
        import torch

        return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).to(torch.float16).numpy()
    return maps.astype(dtype, copy=False)

"""Writing CAM dumps in the native layouts of the reference code bases (the inverse of :mod:`.formats`).

Used by the synthetic benchmark (which starts from exactly what users have) and by the tests. ``maps`` are
(K, H, W) float maps at image size for the 0-based foreground classes ``keys``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import OrandError
from ..masks import strided_size
from ..runtime.files import atomic_write
from .resize import resize_maps


def _low(maps: np.ndarray) -> np.ndarray:
    return resize_maps(np.ascontiguousarray(maps, np.float32), strided_size(maps.shape[-2:]))


def _with_background(maps: np.ndarray, bg: np.ndarray | None) -> np.ndarray:
    if bg is None:  # AMN's background channel: high where no class is
        bg = 1 - maps.max(axis=0) if maps.shape[0] else np.ones(maps.shape[-2:], np.float32)
    return np.concatenate([bg[None].astype(np.float32), maps.astype(np.float32)], axis=0)


def irn_dict(keys: np.ndarray, maps: np.ndarray) -> dict:
    import torch

    return {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "cam": torch.from_numpy(_low(maps)),
            "high_res": np.asarray(maps, np.float32)}


def amn_dict(keys: np.ndarray, maps: np.ndarray, background: np.ndarray | None = None) -> dict:
    import torch

    full = _with_background(np.asarray(maps, np.float32), background)
    return {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "cam": torch.from_numpy(_low(full)),
            "high_res": full}


def orandnet_dict(keys: np.ndarray, maps: np.ndarray) -> dict:
    import torch

    return {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "cam": _low(maps), "high_res": np.asarray(maps, np.float32)}


def mctformer_dict(keys: np.ndarray, maps: np.ndarray) -> dict:
    return {int(k): np.asarray(m, np.float32) for k, m in zip(keys, maps)}


def crf_dict(keys: np.ndarray, maps: np.ndarray, background: np.ndarray | None = None) -> dict:
    full = _with_background(np.asarray(maps, np.float32), background)
    return {0: full[0], **{int(k) + 1: m for k, m in zip(keys, full[1:])}}


def toco_dict(keys: np.ndarray, maps: np.ndarray) -> dict:
    return {"keys": np.asarray(keys, np.int64), "high_res": np.asarray(maps, np.float32)}


def clip_es_dict(keys: np.ndarray, maps: np.ndarray) -> dict:
    return {"keys": np.asarray(keys, np.int64), "attn_highres": np.asarray(maps, np.float16)}


WRITERS: dict[str, Callable[..., dict]] = {
    "irn": irn_dict, "amn": amn_dict, "orandnet": orandnet_dict, "mctformer": mctformer_dict,
    "crf-dict": crf_dict, "toco": toco_dict, "clip-es": clip_es_dict,
}


def write_cam(folder: str | Path, image_id: str, fmt: str, keys: np.ndarray, maps: np.ndarray) -> Path:
    """Write one image's CAMs in format ``fmt`` (``npz`` writes ``<id>.npz``); atomic rename."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        arrays = {"keys": np.asarray(keys, np.int64), "high_res": np.asarray(maps, np.float32)}
        return atomic_write(folder / f"{image_id}.npz", lambda fh: np.savez(fh, **arrays), what="CAM file")
    if fmt not in WRITERS:
        raise OrandError(f"unknown CAM format {fmt!r}; valid: {', '.join(WRITERS)}, npz")
    obj = WRITERS[fmt](keys, maps)
    path = folder / f"{image_id}{'_1' if fmt == 'orandnet' else ''}.npy"
    return atomic_write(path, lambda fh: np.save(fh, obj, allow_pickle=True), what="CAM file")

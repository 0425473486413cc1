"""Exporting a store kind: IRN-layout ``.npy`` folders, palette PNGs, VOC-style lists."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import OrandError
from .images import save_label_png
from .resize import resize_maps
from ..masks import maps_to_mask, strided_size
from ..runtime.files import atomic_write, atomic_write_text
from ..runtime.progress import progress
from ..store.store import MASK_GROUPS, Store

EXPORT_TARGETS = ("irn", "png", "lists")


def irn_record(maps: np.ndarray, keys: np.ndarray) -> dict:
    """The dict IRN's ``make_cam`` writes: torch ``keys``, torch stride-4 ``cam``, numpy ``high_res``.

    The stride-4 map is the full-size map resized bilinearly to ``ceil(H/4) x ceil(W/4)``, as the official
    ORANDNet code does.
    """
    import torch

    maps = np.ascontiguousarray(maps, dtype=np.float32)
    low = resize_maps(maps, strided_size(maps.shape[-2:])) if maps.shape[0] else np.zeros((0, *strided_size(maps.shape[-2:])), np.float32)
    return {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "cam": torch.from_numpy(low), "high_res": maps}


def _save_npy_atomic(path: Path, obj: dict) -> None:
    atomic_write(path, lambda fh: np.save(fh, obj, allow_pickle=True), what="IRN .npy file")


def export_kind(store_path: str | Path, kind: str, to: str, out: str | Path, ids: Sequence[str] | None = None,
                bg_thres: float | None = None, progress_bar: bool = True) -> int:
    """Export ``kind`` of the store to ``out``; returns the number of files written."""
    if to not in EXPORT_TARGETS:
        raise OrandError(f"unknown export target {to!r}; valid: {', '.join(EXPORT_TARGETS)}")
    out = Path(out)
    with Store(store_path) as store:
        if kind not in store.groups():
            raise OrandError(f"{store_path}: no kind {kind!r} (has: {', '.join(store.groups()) or 'none'})")
        all_ids = store.ids(kind)
        if ids is not None:
            absent = [i for i in ids if i not in set(all_ids)]
            if absent:
                raise OrandError(f"{store_path}: {len(absent)} ids not in /{kind}, e.g. {', '.join(absent[:3])}")
            all_ids = list(ids)
        is_mask = kind in MASK_GROUPS
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OrandError(f"{out}: cannot create output folder ({exc.strerror})") from None
        if to == "lists":
            atomic_write_text(out / f"{kind}_ids.txt", "".join(f"{i}\n" for i in all_ids), what="id list")
            if not is_mask:
                num_fg = len(store.class_names) - 1
                table = {}
                for i in all_ids:
                    vec = np.zeros(num_fg, np.float32)
                    vec[store.read_keys(kind, i)] = 1
                    table[i] = vec
                _save_npy_atomic(out / "cls_labels.npy", table)
            return 1 if is_mask else 2
        if to == "irn" and is_mask:
            raise OrandError(f"/{kind} holds masks; IRN-layout export needs a map kind ({', '.join(store.kinds())})")
        if to == "png" and not is_mask and bg_thres is None:
            raise OrandError(f"/{kind} holds maps; pass --bg-thres T to turn them into masks")
        n = 0
        for image_id in progress(all_ids, desc=f"export {kind}", enabled=progress_bar, unit="img"):
            if to == "irn":
                maps, keys = store.read_maps(kind, image_id)
                _save_npy_atomic(out / f"{image_id}.npy", irn_record(maps, keys))
            else:
                if is_mask:
                    mask = store.read_mask(kind, image_id)
                else:
                    maps, keys = store.read_maps(kind, image_id)
                    mask = maps_to_mask(maps, keys, bg_thres)
                save_label_png(out / f"{image_id}.png", mask)
            n += 1
    return n

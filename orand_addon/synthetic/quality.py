"""A sanity check of the synthetic CAM sources: mIoU / precision / recall of maps against the ground truth.

A deliberately tiny, self-contained scorer (dataset-level confusion matrix, GT 255 ignored, means over all
classes including background, nan-mean over classes absent from both) used to report the testbed's numbers in
``docs/synthetic.md``; the product's evaluation lives in :mod:`orand_addon.metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..io.images import load_label_png
from ..io.resize import resize_maps
from ..masks import maps_to_mask
from .generator import DatasetInfo

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows ground truth, columns prediction; GT 255 ignored.

    >>> confusion(np.array([0, 1, 1, 255]), np.array([0, 1, 0, 1]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    gt, pred = np.asarray(gt).reshape(-1), np.asarray(pred).reshape(-1)
    keep = gt != 255
    idx = gt[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(conf: np.ndarray) -> dict[str, float]:
    """mIoU, precision and recall (percent) over all classes, background included; a class absent from both
    ground truth and prediction is left out, an empty denominator otherwise scores 0.

    >>> scores(np.array([[1, 0], [1, 1]]))
    {'miou': 50.0, 'precision': 75.0, 'recall': 75.0}
    """
    tp = np.diag(conf).astype(np.float64)
    gt, pred = conf.sum(1), conf.sum(0)
    union = gt + pred - tp
    present = union > 0

    def ratio(den: np.ndarray) -> float:
        values = np.divide(tp, den, out=np.zeros_like(tp), where=den > 0)[present]
        return round(float(values.mean()) * 100, 2) if values.size else float("nan")

    return {"miou": ratio(union), "precision": ratio(pred), "recall": ratio(gt)}


def confusions(maps_of: Iterable[tuple[str, np.ndarray, np.ndarray]], info: DatasetInfo,
               thresholds: Sequence[float]) -> np.ndarray:
    """(T, C, C) confusion matrices at each background threshold from ``(id, keys, maps)`` triples."""
    n = len(info.class_names)
    total = np.zeros((len(thresholds), n, n), np.int64)
    for image_id, keys, maps in maps_of:
        gt = load_label_png(info.masks / f"{image_id}.png")
        maps = resize_maps(maps, gt.shape) if maps.shape[-2:] != gt.shape else maps
        for t, thres in enumerate(thresholds):
            total[t] += confusion(gt, maps_to_mask(maps, keys, thres), n)
    return total


def best_scores(confs: np.ndarray, thresholds: Sequence[float]) -> dict[str, float]:
    """Scores at the threshold of best mIoU, with that threshold as ``bg_thres``."""
    table = [scores(c) for c in confs]
    best = int(np.argmax([s["miou"] for s in table]))
    return {**table[best], "bg_thres": float(thresholds[best])}


def source_maps(records: Mapping, ids: Sequence[str]) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """``(id, keys, maps)`` of a CAM source opened with :func:`orand_addon.io.sources.read_cams`."""
    for image_id in ids:
        record = records[image_id]
        yield image_id, np.asarray(record.keys), np.asarray(record.maps, np.float32)


def store_maps(store_path: str | Path, kind: str, ids: Sequence[str]) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """``(id, keys, maps)`` of one kind of an HDF5 store."""
    from ..store import Store

    with Store(store_path) as store:
        for image_id in ids:
            maps, keys = store.read_maps(kind, image_id)
            yield image_id, np.asarray(keys), np.asarray(maps, np.float32)

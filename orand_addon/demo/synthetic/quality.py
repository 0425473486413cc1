"""A sanity check of the synthetic CAM sources: mIoU / precision / recall of maps against the ground truth.

The counting and the scores are the product's (:mod:`orand_addon.evaluation.functional`: dataset-level confusion
matrix, GT 255 ignored, means over all classes including background, classes absent from both left out, every
background threshold in one pass); this module only reports them in percent for the testbed's table in
``docs/synthetic.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ...io.images import load_label_png
from ...io.resize import resize_maps
from ...evaluation.functional import ThresholdSweep, confusion_matrix, segmentation_scores
from .generator import DatasetInfo

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows ground truth, columns prediction; GT 255 ignored
    (:func:`~orand_addon.evaluation.functional.confusion_matrix`).

    >>> confusion(np.array([0, 1, 1, 255]), np.array([0, 1, 0, 1]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    return confusion_matrix(gt, pred, num_classes)


def scores(conf: np.ndarray) -> dict[str, float]:
    """mIoU, precision and recall (percent, 2 decimals) over all classes, background included, from
    :func:`~orand_addon.evaluation.functional.segmentation_scores`: a class absent from both ground truth and
    prediction is left out, an empty denominator otherwise scores 0.

    >>> scores(np.array([[1, 0], [1, 1]]))
    {'miou': 50.0, 'precision': 75.0, 'recall': 75.0}
    """
    s = segmentation_scores(conf)
    return {name: round(float(s[f"mean_{metric}"]) * 100, 2)
            for name, metric in (("miou", "iou"), ("precision", "precision"), ("recall", "recall"))}


def confusions(maps_of: Iterable[tuple[str, np.ndarray, np.ndarray]], info: DatasetInfo,
               thresholds: Sequence[float]) -> np.ndarray:
    """(T, C, C) confusion matrices at each background threshold (increasing) from ``(id, keys, maps)`` triples,
    counted in one pass per image (:class:`~orand_addon.evaluation.functional.ThresholdSweep`)."""
    sweep = ThresholdSweep(len(info.class_names), thresholds)
    for image_id, keys, maps in maps_of:
        gt = load_label_png(info.masks / f"{image_id}.png")
        maps = resize_maps(maps, gt.shape) if maps.shape[-2:] != gt.shape else maps
        sweep.update(gt, maps, keys, name=image_id)
    conf, _ = sweep.confusions()
    return conf


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
    from ...store.store import Store

    with Store(store_path) as store:
        for image_id in ids:
            maps, keys = store.read_maps(kind, image_id)
            yield image_id, np.asarray(keys), np.asarray(maps, np.float32)

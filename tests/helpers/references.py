"""Independent references, written from the definitions in plain Python/numpy: Eq. 1 fusion, the dataset-level
segmentation metrics and the constant-background mask rule (used to check orand_addon.fuse and .evaluation)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np


def reference_or_and(a: np.ndarray, b: np.ndarray, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 1 written out independently, in float64, per class map."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    o = a + b - a * b
    n = a * b
    if normalize:
        for x in (o, n):
            for k in range(x.shape[0]):
                peak = x[k].max()
                x[k] = x[k] / peak if peak > 0 else 0.0
    return o, n




def ref_pairs(gt: np.ndarray, pred: np.ndarray) -> Counter:
    """Count (gt, pred) pairs pixel by pixel."""
    return Counter(zip(gt.ravel().tolist(), pred.ravel().tolist()))


def ref_scores(pairs: Counter, num_classes: int, unsure: str = "miss") -> dict:
    """Per-class numbers and means from pair counts, in plain Python (255 in GT ignored; 255 in pred = miss)."""
    out = {m: [] for m in ("iou", "precision", "recall", "fp_union", "fn_union")}
    for k in range(num_classes):
        tp = pairs.get((k, k), 0)
        gt = sum(n for (g, p), n in pairs.items() if g == k and (p != 255 or unsure == "miss"))
        pred = sum(n for (g, p), n in pairs.items() if p == k and g != 255)
        union = gt + pred - tp
        if union == 0:
            for m in out:
                out[m].append(float("nan"))
            continue
        out["iou"].append(tp / union)
        out["precision"].append(tp / pred if pred else 0.0)
        out["recall"].append(tp / gt if gt else 0.0)
        out["fp_union"].append((pred - tp) / union)
        out["fn_union"].append((gt - tp) / union)
    for m in list(out):
        vals = [v for v in out[m] if not math.isnan(v)]
        out[f"mean_{m}"] = sum(vals) / len(vals) if vals else float("nan")
    return out


def ref_mask(maps: np.ndarray, keys: np.ndarray, t: float) -> np.ndarray:
    """Per class, in order: a pixel takes the first class with the highest map if that map exceeds t."""
    best = np.full(maps.shape[1:], np.float32(t))
    out = np.zeros(maps.shape[1:], np.uint8)
    for k, key in enumerate(keys):
        higher = maps[k] > best
        out[higher] = key + 1
        best = np.where(higher, maps[k], best)
    return out


def reference_official(logits: np.ndarray, target: np.ndarray) -> float:
    """Mean over pixels of -sum_k AND_k * log softmax_k(logits)."""
    return float(-(target * log_softmax(logits)).sum(axis=0).mean())


def reference_bg_softmax(logits: np.ndarray, target: np.ndarray) -> float:
    z = np.concatenate([np.zeros_like(logits[:1]), logits])
    t = np.concatenate([1 - target.max(axis=0, keepdims=True), target])
    return float(-(t * log_softmax(z)).sum(axis=0).mean())


def log_softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))

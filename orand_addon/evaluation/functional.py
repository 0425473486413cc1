"""Segmentation metrics as pure functions (DESIGN §8).

Everything is counted at dataset level: one confusion matrix (rows ground truth, columns prediction) summed over
all images, and the scores derived from it. Nothing is ever averaged per image.

* Ground-truth pixels equal to ``ignore_index`` (255, VOC's void border) are left out.
* A prediction equal to ``ignore_index`` means *no prediction* (IRN seeds' "unsure" pixels). The accumulators
  count such a pixel against the ground-truth class (a miss: it lowers that class's recall and IoU, and adds no
  false positive), or leave it out when asked (``unsure="ignore"``). It is never turned into background.
* Any other value outside ``0..C-1`` (ground truth or prediction) is an error naming the value.

Per class k, with TP = conf[k, k], GT = pixels labelled k, Pred = pixels predicted k, union = GT + Pred − TP:
IoU = TP / union, precision = TP / Pred, recall = TP / GT, FP/union = (Pred − TP) / union, FN/union =
(GT − TP) / union. A class absent from both ground truth and prediction (union 0) has no score (NaN) and is left
out of the means. A class present on one side only has an empty precision (never predicted) or recall (absent from
the ground truth) denominator: ``undefined="zero"`` (default) scores it 0 and counts it in the mean, as the
reference evaluators; ``undefined="nan"`` makes it NaN and leaves it out of that mean, as the official ORANDNet
evaluation (``np.nanmean``). Means are over all scored classes, background included.

:func:`drop_last_class` restricts counts to the classes ``0..C-2`` (``scored_classes="drop-last"``): the
official ORANDNet evaluation builds a 20x20 confusion matrix for VOC, so every pixel whose ground truth or
prediction is the last class (tvmonitor), or void, is left out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import OrandError

METRICS: tuple[str, ...] = ("iou", "precision", "recall", "fp_union", "fn_union")
MEANS: tuple[str, ...] = tuple(f"mean_{m}" for m in METRICS)
UNSURE_POLICIES: tuple[str, ...] = ("miss", "ignore")
UNDEFINED: tuple[str, ...] = ("zero", "nan")
SCORED: tuple[str, ...] = ("all", "drop-last")
PRECISION_RULES: tuple[str, ...] = ("first-ge", "official")
MAX_THRESHOLDS = 2000  # one (C + 1) x C histogram per threshold is added per image


def _prefix(name: str) -> str:
    return f"{name}: " if name else ""


def as_labels(values: np.ndarray, what: str = "mask", name: str = "") -> np.ndarray:
    """A label array as uint8 (values 0..255); other integer values are an error naming them.

    >>> as_labels(np.array([0, 3, 255])).dtype
    dtype('uint8')
    >>> as_labels(np.array([0, -1]), "prediction", "img7")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: img7: prediction has label -1 (labels must be 0..255)
    """
    arr = np.asarray(values)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "iub":
        raise OrandError(f"{_prefix(name)}{what} must hold integer labels, got dtype {arr.dtype}")
    if arr.size:
        low, high = int(arr.min()), int(arr.max())
        if low < 0 or high > 255:
            raise OrandError(f"{_prefix(name)}{what} has label {low if low < 0 else high} (labels must be 0..255)")
    return arr.astype(np.uint8)


def check_shapes(gt: np.ndarray, pred_shape: Sequence[int], name: str = "") -> None:
    """Error naming the image when the prediction's (H, W) differs from the ground truth's.

    >>> check_shapes(np.zeros((2, 3)), (3, 2), "img1")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: img1: prediction is 3x2 but the ground truth is 2x3
    """
    if tuple(pred_shape) != tuple(gt.shape):
        h, w = tuple(pred_shape)[-2:]
        raise OrandError(f"{_prefix(name)}prediction is {h}x{w} but the ground truth is {gt.shape[0]}x{gt.shape[1]}")


def joint_histogram(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(256, 256) int64 counts of (ground-truth value, predicted value) pairs of two uint8 masks.

    >>> joint_histogram(np.array([[0, 1]], np.uint8), np.array([[0, 0]], np.uint8))[:2, :2].tolist()
    [[1, 0], [1, 0]]
    """
    index = (gt.astype(np.uint16) << 8) | pred
    return np.bincount(index.ravel(), minlength=65536).reshape(256, 256)


def check_label_range(hist: np.ndarray, num_classes: int, ignore_index: int = 255, name: str = "") -> None:
    """Error naming the first label outside ``0..C-1`` and ``ignore_index``, from a :func:`joint_histogram`.

    >>> hist = joint_histogram(np.array([0, 1], np.uint8), np.array([0, 23], np.uint8))
    >>> check_label_range(hist, 21, name="img2")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: img2: prediction has label 23 (valid: 0..20, 255 = void / no prediction)
    """
    for what, counts in (("ground truth", hist.sum(1)), ("prediction", hist.sum(0))):
        used = np.flatnonzero(counts)
        bad = used[(used >= num_classes) & (used != ignore_index)]
        if bad.size:
            raise OrandError(f"{_prefix(name)}{what} has label {int(bad[0])} "
                             f"(valid: 0..{num_classes - 1}, {ignore_index} = void / no prediction)")


def _check_classes(num_classes: int, ignore_index: int) -> None:
    if not 1 <= num_classes <= 255:
        raise OrandError(f"num_classes must be 1..255 for uint8 masks, got {num_classes}")
    if 0 <= ignore_index < num_classes or not 0 <= ignore_index <= 255:
        raise OrandError(f"ignore_index {ignore_index} must be in {num_classes}..255 (outside the classes)")


def pixel_counts(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = 255,
                 name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(conf (C, C), unsure (C,))`` of one image: the confusion matrix of the labelled pixels and, per
    ground-truth class, the pixels the prediction leaves unlabelled (``ignore_index``).

    >>> gt = np.array([[0, 1, 255], [1, 1, 0]], np.uint8)
    >>> pred = np.array([[0, 1, 1], [255, 0, 0]], np.uint8)
    >>> conf, unsure = pixel_counts(gt, pred, 2)
    >>> conf.tolist(), unsure.tolist()
    ([[2, 0], [1, 1]], [0, 1])
    """
    _check_classes(num_classes, ignore_index)
    gt = as_labels(gt, "ground truth", name)
    pred = as_labels(pred, "prediction", name)
    check_shapes(gt, pred.shape, name)
    hist = joint_histogram(gt, pred)
    check_label_range(hist, num_classes, ignore_index, name)
    return hist[:num_classes, :num_classes].copy(), hist[:num_classes, ignore_index].copy()


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Confusion matrix (C, C) int64, rows ground truth, columns prediction; ground truth ``ignore_index`` is
    left out. A prediction of ``ignore_index`` on a labelled pixel is refused here (the square matrix has no
    place for it): count such masks with :class:`ConfusionAccumulator`, which says what it does with them.

    >>> gt = np.array([[0, 0, 1], [1, 2, 255]])
    >>> pred = np.array([[0, 1, 1], [1, 2, 0]])
    >>> confusion_matrix(gt, pred, 3).tolist()
    [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    """
    conf, unsure = pixel_counts(gt, pred, num_classes, ignore_index)
    if unsure.any():
        raise OrandError(f"the prediction leaves {int(unsure.sum())} labelled pixels at {ignore_index} (no prediction); "
                         f"use ConfusionAccumulator(unsure='miss' or 'ignore') to count them")
    return conf


def _ratio(num: np.ndarray, den: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.divide(num, den, out=np.zeros(num.shape, np.float64), where=den > 0)
    out[~present] = np.nan
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def segmentation_scores(conf: np.ndarray, unsure: np.ndarray | None = None, undefined: str = "zero") -> dict:
    """Per-class IoU, precision, recall, FP/union, FN/union and their means, from a dataset confusion matrix.

    ``unsure`` (C,) adds pixels of each ground-truth class that were left without a prediction (counted in GT
    only). Per-class arrays are float64 with NaN for classes absent from both sides; ``mean_*`` are floats.
    ``undefined``: ``zero`` or ``nan`` for a precision/recall whose denominator is empty (module docstring).
    Also returned: ``tp``, ``gt_pixels``, ``pred_pixels`` (int64) and ``present`` (bool).

    >>> s = segmentation_scores(np.array([[3, 1, 0], [2, 4, 0], [0, 0, 0]]))
    >>> s["iou"].round(4).tolist(), s["precision"].round(4).tolist()
    ([0.5, 0.5714, nan], [0.6, 0.8, nan])
    >>> round(s["mean_iou"], 4), round(s["mean_recall"], 4), bool(s["present"][2])
    (0.5357, 0.7083, False)
    >>> conf = np.array([[2, 1], [0, 0]])              # class 1 predicted once, absent from the ground truth
    >>> segmentation_scores(conf)["recall"].tolist(), segmentation_scores(conf, undefined="nan")["recall"].tolist()
    ([0.6666666666666666, 0.0], [0.6666666666666666, nan])
    """
    if undefined not in UNDEFINED:
        raise OrandError(f"unknown rule for undefined scores {undefined!r}; valid: {', '.join(UNDEFINED)}")
    conf = np.asarray(conf, dtype=np.int64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise OrandError(f"a confusion matrix must be square (C, C), got shape {conf.shape}")
    tp = np.diag(conf).copy()
    gt_pixels = conf.sum(1) + (np.zeros_like(tp) if unsure is None else np.asarray(unsure, np.int64))
    pred_pixels = conf.sum(0)
    union = gt_pixels + pred_pixels - tp
    present = union > 0
    strict = undefined == "nan"
    per_class = {
        "iou": _ratio(tp, union, present),
        "precision": _ratio(tp, pred_pixels, present & (pred_pixels > 0) if strict else present),
        "recall": _ratio(tp, gt_pixels, present & (gt_pixels > 0) if strict else present),
        "fp_union": _ratio(pred_pixels - tp, union, present),
        "fn_union": _ratio(gt_pixels - tp, union, present),
    }
    means = {f"mean_{k}": _nanmean(v) for k, v in per_class.items()}
    return {**per_class, **means, "tp": tp, "gt_pixels": gt_pixels, "pred_pixels": pred_pixels, "present": present}


# -- thresholds ---------------------------------------------------------------------------------------------------

def parse_sweep(spec: str) -> np.ndarray:
    """Thresholds ``A, A+S, ..., B`` (B included when on the grid) from ``"A:B:S"``.

    >>> parse_sweep("0.05:0.60:0.05").round(2).tolist()
    [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]
    >>> len(parse_sweep("0.05:0.60:0.01"))
    56
    >>> parse_sweep("0.1:inf:0.1")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: --sweep '0.1:inf:0.1': START, STOP and STEP must be finite numbers
    """
    parts = str(spec).split(":")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise OrandError(f"--sweep {spec!r}: expected START:STOP:STEP, e.g. 0.05:0.60:0.01") from None
    if not all(np.isfinite((start, stop, step))):
        raise OrandError(f"--sweep {spec!r}: START, STOP and STEP must be finite numbers")
    if not (step > 0 and stop >= start):
        raise OrandError(f"--sweep {spec!r}: needs STEP > 0 and STOP >= START")
    count = int(np.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_THRESHOLDS:
        raise OrandError(f"--sweep {spec!r}: {count} thresholds; at most {MAX_THRESHOLDS}")
    return np.round(start + step * np.arange(count), 10)


def best_index(mean_iou: Sequence[float]) -> int | None:
    """Index of the highest mean IoU (the first on ties); None when all are NaN.

    >>> best_index([0.40, 0.52, 0.52, 0.50])
    1
    """
    values = np.asarray(mean_iou, np.float64)
    if values.size == 0 or np.isnan(values).all():
        return None
    return int(np.nanargmax(values))


def precision_aware_index(mean_precision: Sequence[float], mean_recall: Sequence[float],
                          rule: str = "first-ge") -> int | None:
    """Index of the "precision-aware" threshold of ORANDNet among thresholds in increasing order.

    ``first-ge``: the first where mean precision >= mean recall; None when precision never catches up.
    ``official`` (``finding_best_thres`` of the release, over 0.10, 0.11, ..., 0.80): the first where mean
    precision > mean recall (strictly), else the last threshold.

    >>> precision_aware_index([0.60, 0.68, 0.75, 0.80], [0.80, 0.74, 0.70, 0.60])
    2
    >>> precision_aware_index([0.6, 0.7, 0.8], [0.8, 0.7, 0.6]), precision_aware_index([0.6, 0.7, 0.8], [0.8, 0.7, 0.6], "official")
    (1, 2)
    >>> precision_aware_index([0.5, 0.6], [0.9, 0.8], "official")
    1
    """
    if rule not in PRECISION_RULES:
        raise OrandError(f"unknown precision-aware rule {rule!r}; valid: {', '.join(PRECISION_RULES)}")
    p = np.asarray(mean_precision, np.float64)
    r = np.asarray(mean_recall, np.float64)
    hits = np.flatnonzero(p > r if rule == "official" else p >= r)
    if hits.size:
        return int(hits[0])
    return p.size - 1 if rule == "official" and p.size else None


def official_thresholds() -> list[float]:
    """The official sweep ``t_ * 0.01`` for ``t_`` in 10..80 (Python floats, as ``finding_best_thres``).

    >>> t = official_thresholds(); len(t), t[0], t[-1], t[7]
    (71, 0.1, 0.8, 0.17)
    """
    return [k * 0.01 for k in range(10, 81)]


def drop_last_class(conf: np.ndarray, unsure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``(conf (T, C, C), unsure (T, C))`` restricted to the classes ``0..C-2``: every pixel whose ground
    truth or prediction is the last class is left out (the official ORANDNet 20-class VOC evaluation).

    >>> conf, unsure = drop_last_class(np.arange(9).reshape(1, 3, 3), np.array([[1, 2, 3]]))
    >>> conf.tolist(), unsure.tolist()
    ([[[0, 1], [3, 4]]], [[1, 2]])
    """
    return conf[..., :-1, :-1].copy(), unsure[..., :-1].copy()


def top_class(maps: np.ndarray, keys: Sequence[int], name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the highest map value (float32) and its class label (int32 ``key + 1``; the first class on ties).

    >>> top, label = top_class(np.array([[[0.2, 0.5]], [[0.4, 0.5]]], np.float32), [3, 7])
    >>> top.tolist(), label.tolist()
    ([[0.4000000059604645, 0.5]], [[8, 4]])
    """
    labels = np.asarray(keys, np.int32).reshape(-1) + 1
    top = np.array(maps[0], dtype=np.float32)
    label = np.full(top.shape, labels[0], np.int32)
    for k in range(1, labels.size):  # a loop over the few classes is ~4x faster than argmax(axis=0)
        higher = maps[k] > top
        label[higher] = labels[k]
        np.maximum(top, maps[k], out=top)
    if np.isnan(top).any():
        raise OrandError(f"{_prefix(name)}maps contain NaN")
    return top, label


def threshold_buckets(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per value, how many thresholds are strictly below it (``searchsorted(thresholds, v, 'left')``), compared
    in float32 like :func:`orand_addon.masks.maps_to_mask`.

    Evenly spaced thresholds are bucketed arithmetically and then corrected to the exact float32 comparison
    (twice as fast as a binary search); other grids use the binary search.

    >>> thr = np.float32([0.1, 0.2, 0.3])
    >>> threshold_buckets(np.float32([0.05, 0.1, 0.15, 0.3, 0.31, np.inf]), thr).tolist()
    [0, 0, 1, 2, 3, 3]
    """
    thr = np.asarray(thresholds, np.float32)
    values = np.asarray(values, np.float32)
    n = thr.size
    step = float(thr[-1] - thr[0]) / (n - 1) if n > 1 else 0.0
    if n < 3 or step < 1e-5 or not np.allclose(np.diff(thr), step, rtol=1e-3, atol=0):
        return np.searchsorted(thr, values, side="left").astype(np.int32)
    guess = values - thr[0]
    guess *= np.float32(1 / step)
    np.ceil(guess, out=guess)
    np.clip(guess, 0, n, out=guess)
    bucket = guess.astype(np.int32)  # int32 all the way: half the memory traffic of int64
    edges = np.concatenate([[-np.inf], thr, [np.inf]]).astype(np.float32)  # edges[b] = thr[b - 1]
    for _ in range(4):  # the arithmetic guess is off by at most one; fix it exactly
        up = values > edges.take(bucket + 1)
        down = values <= edges.take(bucket)
        if not (up.any() or down.any()):
            return bucket
        bucket += up
        bucket -= down
    return np.searchsorted(thr, values, side="left").astype(np.int32)


# -- streaming accumulators ---------------------------------------------------------------------------------------

class ConfusionAccumulator:
    """Dataset-level counts of label masks, one image at a time (memory independent of the number of images).

    ``unsure``: what a predicted ``ignore_index`` (no prediction) on a labelled pixel means: ``miss`` counts it
    in the ground-truth class (lower recall and IoU, no false positive), ``ignore`` leaves it out as if the
    ground truth were void. Either way the count is kept in :attr:`unsure`.

    >>> acc = ConfusionAccumulator(3)
    >>> acc.update(np.array([[0, 1, 255]]), np.array([[0, 1, 2]]))
    >>> acc.update(np.array([[2, 2, 1]]), np.array([[2, 255, 1]]))
    >>> acc.conf.tolist(), acc.unsure.tolist(), acc.images
    ([[1, 0, 0], [0, 2, 0], [0, 0, 1]], [0, 0, 1], 2)
    >>> acc.scores()["recall"].tolist()
    [1.0, 1.0, 0.5]
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, unsure: str = "miss"):
        _check_classes(num_classes, ignore_index)
        if unsure not in UNSURE_POLICIES:
            raise OrandError(f"unknown unsure policy {unsure!r}; valid: {', '.join(UNSURE_POLICIES)}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.unsure_policy = unsure
        self.conf = np.zeros((num_classes, num_classes), np.int64)
        self.unsure = np.zeros(num_classes, np.int64)
        self.images = 0

    def update(self, gt: np.ndarray, pred: np.ndarray, name: str = "") -> None:
        """Add one image (``name`` appears in error messages)."""
        conf, unsure = pixel_counts(gt, pred, self.num_classes, self.ignore_index, name)
        self.conf += conf
        self.unsure += unsure
        self.images += 1

    def merge(self, other: "ConfusionAccumulator") -> None:
        """Add the counts of another accumulator (e.g. from a worker process)."""
        self.conf += other.conf
        self.unsure += other.unsure
        self.images += other.images

    def confusions(self) -> tuple[np.ndarray, np.ndarray]:
        """``(conf (1, C, C), unsure (1, C))``: the counts the scores use (unsure zero under ``ignore``)."""
        unsure = self.unsure if self.unsure_policy == "miss" else np.zeros_like(self.unsure)
        return self.conf[None].copy(), unsure[None].copy()

    def scores(self) -> dict:
        conf, unsure = self.confusions()
        return segmentation_scores(conf[0], unsure[0])


class ThresholdSweep:
    """Dataset-level confusion matrices of class maps at many background thresholds, in one pass.

    A pixel is foreground at threshold t when its highest class map exceeds t (ties go to background, as in
    :func:`orand_addon.masks.maps_to_mask`), and then takes that class. Per image, each pixel's
    (threshold bucket, ground truth, best class) is counted once; the per-threshold matrices follow from
    cumulative sums, so the cost hardly depends on the number of thresholds and memory is flat in the number of
    images.

    >>> sweep = ThresholdSweep(3, [0.2, 0.7])
    >>> maps = np.array([[[0.1, 0.3, 0.9]], [[0.0, 0.6, 0.2]]], np.float32)   # K=2 maps of a 1x3 image
    >>> sweep.update(np.array([[0, 2, 1]]), maps, keys=np.array([0, 1]))      # keys 0-based: labels 1, 2
    >>> conf, _ = sweep.confusions()
    >>> conf[0].tolist(), conf[1].tolist()
    ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    """

    def __init__(self, num_classes: int, thresholds: Sequence[float], ignore_index: int = 255):
        _check_classes(num_classes, ignore_index)
        thr = np.asarray(thresholds, np.float64).reshape(-1)
        if thr.size == 0 or np.any(np.diff(thr) <= 0) or not np.isfinite(thr).all():
            raise OrandError("thresholds must be finite and strictly increasing")
        if thr.size > MAX_THRESHOLDS:
            raise OrandError(f"{thr.size} thresholds; at most {MAX_THRESHOLDS}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.thresholds = thr
        self._thr32 = thr.astype(np.float32)  # maps_to_mask compares in float32
        # ground-truth value -> histogram row: classes keep theirs, void -> C, anything else -> C + 1 (an error)
        self._rows = np.full(256, num_classes + 1, np.int32)
        self._rows[:num_classes] = np.arange(num_classes)
        self._rows[ignore_index] = num_classes
        # [bucket = number of thresholds below the pixel's max map, gt row, best class label]
        self.hist = np.zeros((thr.size + 1, num_classes + 2, num_classes), np.int64)
        self.images = 0

    def update(self, gt: np.ndarray, maps: np.ndarray, keys: Sequence[int], name: str = "") -> None:
        """Add one image: ground truth (H, W) and maps (K, H, W) for the 0-based foreground classes ``keys``."""
        c = self.num_classes
        gt = as_labels(gt, "ground truth", name)
        keys = np.asarray(keys).reshape(-1)
        maps = np.asarray(maps)
        if maps.ndim != 3 or maps.shape[0] != keys.size:
            raise OrandError(f"{_prefix(name)}maps of shape {maps.shape} do not match {keys.size} class keys")
        check_shapes(gt, maps.shape[1:], name)
        if keys.size and (keys.dtype.kind not in "iu" or keys.min() < 0 or keys.max() > c - 2):
            raise OrandError(f"{_prefix(name)}class keys {keys.tolist()} outside 0..{c - 2} (0-based foreground)")
        if keys.size:
            top, label = top_class(maps, keys, name)
            index = threshold_buckets(top, self._thr32)
        else:  # no class maps: background at every threshold
            index, label = np.zeros(gt.shape, np.int32), 0
        index *= c + 2
        index += self._rows[gt]
        index *= c
        index += label
        counts = np.bincount(index.ravel(), minlength=self.hist.size).reshape(self.hist.shape)
        if counts[:, c + 1].any():
            values = np.unique(gt)
            bad = values[(values >= c) & (values != self.ignore_index)]
            raise OrandError(f"{_prefix(name)}ground truth has label {int(bad[0])} "
                             f"(valid: 0..{c - 1}, {self.ignore_index} = void)")
        self.hist += counts
        self.images += 1

    def merge(self, other: "ThresholdSweep") -> None:
        self.hist += other.hist
        self.images += other.images

    def confusions(self) -> tuple[np.ndarray, np.ndarray]:
        """``(conf (T, C, C), unsure (T, C))`` per threshold (maps always predict, so ``unsure`` is zero)."""
        h = self.hist[:, : self.num_classes, :]
        above = np.cumsum(h[::-1], axis=0)[::-1][1:]  # above[i]: pixels whose max exceeds threshold i
        conf = above.copy()
        conf[:, :, 0] += h.sum(axis=(0, 2))[None] - above.sum(axis=2)
        return conf, np.zeros(conf.shape[:2], np.int64)

    def scores(self) -> list[dict]:
        conf, _ = self.confusions()
        return [segmentation_scores(c) for c in conf]

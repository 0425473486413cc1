"""The metric core (orand_addon.evaluation.functional) against independent, straightforward counting.

References here count pixels with Python loops (``collections.Counter`` over pixel pairs) or per-class boolean
masks, and compute the scores in plain Python from those counts, following DESIGN §8 word by word.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from helpers import gt_classes, gt_mask, pseudo_cams, ref_mask, ref_pairs, ref_scores, voc_mini_ids
import orand_addon
from orand_addon.errors import OrandError
from orand_addon.masks import maps_to_mask
from orand_addon.evaluation.functional import (ConfusionAccumulator, ThresholdSweep, best_index, confusion_matrix,
                                               parse_sweep, precision_aware_index, segmentation_scores,
                                               threshold_buckets)

C = 21


# -- independent reference ----------------------------------------------------------------------------------------

def assert_scores_equal(scores: dict, ref: dict) -> None:
    for m in ("iou", "precision", "recall", "fp_union", "fn_union"):
        np.testing.assert_allclose(scores[m], ref[m], rtol=0, atol=1e-12, equal_nan=True, err_msg=m)
        assert scores[f"mean_{m}"] == pytest.approx(ref[f"mean_{m}"], abs=1e-12, nan_ok=True), m


def degrade(mask: np.ndarray, seed: int) -> np.ndarray:
    """A plausible wrong prediction from a real mask: shifted, a class swapped, noise, void filled."""
    rng = np.random.default_rng(seed)
    pred = np.roll(mask, (rng.integers(-15, 15), rng.integers(-15, 15)), axis=(0, 1)).copy()
    pred[pred == 255] = rng.integers(0, C)
    noise = rng.random(pred.shape) < 0.05
    pred[noise] = rng.integers(0, C, noise.sum())
    return pred.astype(np.uint8)


# -- the hand-computed example --------------------------------------------------------------------------------------

HAND_GT = np.array([[0, 0, 1], [0, 1, 1], [255, 2, 2]], np.uint8)
HAND_PRED = np.array([[0, 1, 1], [0, 1, 1], [2, 2, 255]], np.uint8)
# pairs (gt, pred): (0,0) (0,1) (1,1) / (0,0) (1,1) (1,1) / (255,2) ignored, (2,2), (2,255) = no prediction
# class 0: TP 2, GT 3, Pred 2, union 3 | class 1: TP 3, GT 3, Pred 4, union 4 | class 2: TP 1, GT 2, Pred 1, union 2
# class 3: absent from both (NaN, left out of the means)
HAND = {
    "iou": [Fraction(2, 3), Fraction(3, 4), Fraction(1, 2)],
    "precision": [Fraction(1), Fraction(3, 4), Fraction(1)],
    "recall": [Fraction(2, 3), Fraction(1), Fraction(1, 2)],
    "fp_union": [Fraction(0), Fraction(1, 4), Fraction(0)],
    "fn_union": [Fraction(1, 3), Fraction(0), Fraction(1, 2)],
}
HAND_MEANS = {"mean_iou": Fraction(23, 36), "mean_precision": Fraction(11, 12), "mean_recall": Fraction(13, 18),
              "mean_fp_union": Fraction(1, 12), "mean_fn_union": Fraction(5, 18)}


def test_hand_computed_3x3_example_to_the_exact_fraction():
    acc = ConfusionAccumulator(4)
    acc.update(HAND_GT, HAND_PRED)
    assert acc.conf.tolist() == [[2, 1, 0, 0], [0, 3, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert acc.unsure.tolist() == [0, 0, 1, 0]
    s = acc.scores()
    tp, gt, pred = s["tp"], s["gt_pixels"], s["pred_pixels"]
    for k in range(3):
        union = int(gt[k] + pred[k] - tp[k])
        exact = {"iou": Fraction(int(tp[k]), union), "precision": Fraction(int(tp[k]), int(pred[k])),
                 "recall": Fraction(int(tp[k]), int(gt[k])), "fp_union": Fraction(int(pred[k] - tp[k]), union),
                 "fn_union": Fraction(int(gt[k] - tp[k]), union)}
        for metric, values in HAND.items():
            assert exact[metric] == values[k], (metric, k)
            assert s[metric][k] == float(values[k]), (metric, k)  # these ratios are exact in binary too
    assert np.isnan([s[m][3] for m in HAND]).all()
    for metric, value in HAND_MEANS.items():
        assert Fraction(s[metric]).limit_denominator(1000) == value, metric
        assert s[metric] == pytest.approx(float(value), rel=1e-15), metric


def test_hand_example_with_unsure_ignored():
    acc = ConfusionAccumulator(4, unsure="ignore")
    acc.update(HAND_GT, HAND_PRED)
    s = acc.scores()
    assert s["iou"][2] == 1.0 and s["recall"][2] == 1.0  # the unsure pixel left out, as if void
    assert acc.unsure.tolist() == [0, 0, 1, 0]  # still counted for the report
    assert_scores_equal(s, ref_scores(ref_pairs(HAND_GT, HAND_PRED), 4, unsure="ignore"))


def test_confusion_matrix_refuses_unsure_pixels_and_counts_the_rest():
    with pytest.raises(OrandError, match="leaves 1 labelled pixels at 255"):
        confusion_matrix(HAND_GT, HAND_PRED, 4)
    pred = HAND_PRED.copy()
    pred[2, 2] = 0
    conf = confusion_matrix(HAND_GT, pred, 4)
    pairs = ref_pairs(HAND_GT, pred)
    assert conf.tolist() == [[pairs.get((g, p), 0) for p in range(4)] for g in range(4)]
    assert conf.dtype == np.int64
    assert orand_addon.confusion_matrix is confusion_matrix
    assert orand_addon.segmentation_scores is segmentation_scores


# -- real VOC masks --------------------------------------------------------------------------------------------------

def test_real_voc_masks_dataset_level_equals_reference():
    acc = ConfusionAccumulator(C)
    pairs: Counter = Counter()
    per_image_iou = []
    for n, image_id in enumerate(voc_mini_ids()):
        gt = gt_mask(image_id)
        assert (gt == 255).any()  # the official void borders are there
        pred = degrade(gt, n)
        acc.update(gt, pred, name=image_id)
        pairs.update(ref_pairs(gt, pred))
        per_image_iou.append(segmentation_scores(confusion_matrix(gt, pred, C))["mean_iou"])
    assert acc.conf.tolist() == [[pairs.get((g, p), 0) for p in range(C)] for g in range(C)]
    ref = ref_scores(pairs, C)
    assert_scores_equal(acc.scores(), ref)
    assert acc.images == len(voc_mini_ids())
    # dataset-level, not an average of per-image scores
    assert abs(np.mean(per_image_iou) - ref["mean_iou"]) > 1e-3


def test_void_pixels_never_count_whatever_is_predicted_there():
    image_id = voc_mini_ids()[4]
    gt = gt_mask(image_id)
    pred = degrade(gt, 1)
    other = pred.copy()
    void = gt == 255
    other[void] = (other[void].astype(int) + 7) % C
    a, b = ConfusionAccumulator(C), ConfusionAccumulator(C)
    a.update(gt, pred)
    b.update(gt, other)
    assert np.array_equal(a.conf, b.conf)
    assert a.conf.sum() == int((~void).sum())


def test_random_masks_with_classes_absent_from_both():
    rng = np.random.default_rng(7)
    acc = ConfusionAccumulator(C)
    pairs: Counter = Counter()
    used = np.array([0, 3, 8, 15, 20])  # all other classes absent from both sides
    for _ in range(6):
        gt = rng.choice(used, size=(37, 53)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.1] = 255
        pred = rng.choice(used, size=gt.shape).astype(np.uint8)
        pred[rng.random(gt.shape) < 0.05] = 255
        acc.update(gt, pred)
        pairs.update(ref_pairs(gt, pred))
    s = acc.scores()
    assert_scores_equal(s, ref_scores(pairs, C))
    assert set(np.flatnonzero(s["present"]).tolist()) == set(used.tolist())
    assert np.isnan(s["iou"][1]) and not np.isnan(s["mean_iou"])


def test_class_only_in_prediction_or_only_in_gt_scores_zero_not_nan():
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 2, 0, 0]], np.uint8)
    s = segmentation_scores(confusion_matrix(gt, pred, 3))
    assert s["precision"][1] == 0.0 and s["recall"][1] == 0.0  # class 1 never predicted
    assert s["recall"][2] == 0.0 and s["iou"][2] == 0.0  # class 2 predicted but absent from GT
    assert_scores_equal(s, ref_scores(ref_pairs(gt, pred), 3))


@pytest.mark.parametrize("gt_value,pred_value,message", [
    (23, 0, "img: ground truth has label 23 (valid: 0..20, 255 = void / no prediction)"),
    (0, 21, "img: prediction has label 21 (valid: 0..20, 255 = void / no prediction)"),
    (0, 254, "img: prediction has label 254"),
])
def test_labels_outside_the_classes_are_errors_naming_them(gt_value, pred_value, message):
    gt = np.zeros((4, 4), np.uint8)
    pred = np.zeros((4, 4), np.uint8)
    gt[1, 1], pred[2, 2] = gt_value, pred_value
    with pytest.raises(OrandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ConfusionAccumulator(C).update(gt, pred, name="img")


def test_shape_mismatch_and_bad_arguments():
    with pytest.raises(OrandError, match="img: prediction is 3x4 but the ground truth is 4x3"):
        ConfusionAccumulator(C).update(np.zeros((4, 3), np.uint8), np.zeros((3, 4), np.uint8), name="img")
    with pytest.raises(OrandError, match="img: prediction must hold integer labels, got dtype float32"):
        ConfusionAccumulator(C).update(np.zeros(3, np.uint8), np.zeros(3, np.float32), name="img")
    with pytest.raises(OrandError, match="prediction has label -3"):
        confusion_matrix(np.zeros(3, np.int64), np.array([0, -3, 1]), C)
    with pytest.raises(OrandError, match="ignore_index 5 must be in 21..255"):
        confusion_matrix(np.zeros(3, np.uint8), np.zeros(3, np.uint8), C, ignore_index=5)
    with pytest.raises(OrandError, match="unknown unsure policy 'drop'; valid: miss, ignore"):
        ConfusionAccumulator(C, unsure="drop")
    with pytest.raises(OrandError, match="must be square"):
        segmentation_scores(np.zeros((3, 4)))


# -- thresholds ------------------------------------------------------------------------------------------------------

def test_sweep_equals_one_mask_per_threshold_on_real_pseudo_cams():
    thresholds = parse_sweep("0.05:0.60:0.05")
    sweep = ThresholdSweep(C, thresholds)
    pairs = [Counter() for _ in thresholds]
    for n, image_id in enumerate(voc_mini_ids()[:6]):
        gt = gt_mask(image_id)
        keys = gt_classes(gt)
        maps = pseudo_cams(gt, keys, seed=n)
        maps[:, :3, :3] = np.float32(thresholds[3])  # values exactly on a threshold: background (tie)
        sweep.update(gt, maps, keys, name=image_id)
        for i, t in enumerate(thresholds):
            pred = ref_mask(maps, keys, t)
            if n == 0:
                assert np.array_equal(pred, maps_to_mask(maps, keys, t))
            pairs[i].update(ref_pairs(gt, pred))
    scores = sweep.scores()
    for i in range(len(thresholds)):
        assert_scores_equal(scores[i], ref_scores(pairs[i], C))
    ref = [ref_scores(p, C) for p in pairs]
    ious = [r["mean_iou"] for r in ref]
    assert best_index([s["mean_iou"] for s in scores]) == ious.index(max(ious))
    first = next((i for i, r in enumerate(ref) if r["mean_precision"] >= r["mean_recall"]), None)
    assert precision_aware_index([s["mean_precision"] for s in scores], [s["mean_recall"] for s in scores]) == first


def test_sweep_image_without_classes_is_all_background():
    gt = gt_mask(voc_mini_ids()[0])
    sweep = ThresholdSweep(C, [0.1, 0.2])
    sweep.update(gt, np.zeros((0, *gt.shape), np.float32), np.zeros(0, np.int64))
    conf, _ = sweep.confusions()
    for t in range(2):
        assert conf[t].tolist() == confusion_matrix(gt, np.zeros_like(gt), C).tolist()


def test_sweep_errors_name_the_image():
    gt = gt_mask(voc_mini_ids()[0])
    sweep = ThresholdSweep(C, [0.1])
    maps = np.zeros((1, *gt.shape), np.float32)
    with pytest.raises(OrandError, match="x: class keys \\[20\\] outside 0..19"):
        sweep.update(gt, maps, np.array([20]), name="x")
    maps[0, 5, 5] = np.nan
    with pytest.raises(OrandError, match="x: maps contain NaN"):
        sweep.update(gt, maps, np.array([0]), name="x")
    with pytest.raises(OrandError, match="x: prediction is 10x10 but the ground truth"):
        sweep.update(gt, np.zeros((1, 10, 10), np.float32), np.array([0]), name="x")
    bad_gt = gt.copy()
    bad_gt[0, 0] = 99
    with pytest.raises(OrandError, match="x: ground truth has label 99 \\(valid: 0..20, 255 = void\\)"):
        sweep.update(bad_gt, np.zeros((1, *gt.shape), np.float32), np.array([0]), name="x")
    assert sweep.images == 0 and not sweep.hist.any()  # a refused image adds nothing
    with pytest.raises(OrandError, match="strictly increasing"):
        ThresholdSweep(C, [0.2, 0.1])


def test_threshold_buckets_equal_a_binary_search():
    rng = np.random.default_rng(3)
    for thr in (parse_sweep("0.05:0.60:0.01"), parse_sweep("0:1:0.001"), np.array([0.1, 0.25, 0.7])):
        t32 = thr.astype(np.float32)
        values = np.concatenate([rng.random(5000).astype(np.float32), t32, np.nextafter(t32, np.float32(2)),
                                 np.nextafter(t32, np.float32(-1)), np.float32([-np.inf, np.inf, -5, 7])])
        assert np.array_equal(threshold_buckets(values, t32), np.searchsorted(t32, values, side="left"))


@pytest.mark.parametrize("spec,message", [("0.5", "expected START:STOP:STEP"), ("a:b:c", "expected START:STOP:STEP"),
                                          ("0.6:0.05:0.01", "needs STEP > 0 and STOP >= START"),
                                          ("0:1:0", "needs STEP > 0"), ("0:100:0.01", "at most 2000")])
def test_bad_sweep_specs(spec, message):
    with pytest.raises(OrandError, match=message):
        parse_sweep(spec)


def test_threshold_rules():
    assert best_index([float("nan"), float("nan")]) is None
    assert precision_aware_index([0.5, 0.6], [0.9, 0.8]) is None
    assert precision_aware_index([0.5, 0.8, 0.9], [0.9, 0.8, 0.7]) == 1  # equality counts
    grid = parse_sweep("0.05:0.60:0.01")
    assert grid[0] == 0.05 and grid[-1] == 0.6 and len(grid) == 56

"""``orand-addon demo --dataset msrc --size ci`` on the real MSRC-v2 photos ($ORAND_ADDON_MSRC), as a user runs it;
the table's numbers are rescored independently from what the run wrote (the store read with plain h5py, the PNG
masks, the plain-Python metric of helpers.py)."""

from __future__ import annotations

import json
from collections import Counter

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from helpers import hed_weights, msrc_root, ref_mask, ref_pairs, ref_scores, require_real_extra
from orand_addon.cli import cli
from orand_addon.classes import read_id_list
from orand_addon.io.images import load_label_png
from orand_addon.io.safe_pickle import safe_load_npy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    raw = msrc_root()
    require_real_extra()
    hed_weights()
    out = tmp_path_factory.mktemp("msrc_demo") / "ci"
    res = CliRunner().invoke(cli, ["demo", "--dataset", "msrc", "--data", str(raw), "--size", "ci", "--out", str(out),
                                   "--device", "cpu", "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out, res.output, json.loads((out / "results.json").read_text())


def _gt(out, image_id):
    return load_label_png(out / "data" / "SegmentationClassAug" / f"{image_id}.png")


def _score(pairs: Counter) -> dict:
    s = ref_scores(pairs, 15)
    return {"mIoU": 100 * s["mean_iou"], "precision": 100 * s["mean_precision"], "recall": 100 * s["mean_recall"]}


def _check(row: dict, ref: dict) -> None:
    for metric in ("mIoU", "precision", "recall"):
        assert row[metric] == pytest.approx(ref[metric], abs=1e-6), (row["row"], metric)


def test_the_table_has_every_row_and_the_ci_sizes(demo):
    out, output, record = demo
    rows = [r["row"] for r in record["rows"]]
    assert rows == ["A: Lite0 CAM (AMN dump)", "B: Lite2 CAM (MCTformer dump)", "naive mean", "OR", "AND", "ORANDNet",
                    "ORANDNet + IRN", "ORANDNet + IRN masks (IRN bg 0.25)", "baseline: centre box (middle 60 %)",
                    "baseline: image label everywhere"]
    assert [r["row"] for r in record["deeplab"]] == ["DeepLab, no scale schedule", "DeepLab, scale schedule 4:1,2:1"]
    for row in record["rows"] + record["deeplab"]:
        assert f"{row['row']:38s}" in output and f"{row['mIoU']:6.1f}" in output
    train, val = read_id_list(out / "lists" / "train.txt"), read_id_list(out / "lists" / "val.txt")
    assert (len(train), len(val), record["dataset"], record["plan"]["orandnet_iterations"]) == (40, 20, "msrc", 20)
    assert (out / "report" / "index.html").is_file()


def test_map_rows_rescored_from_the_store(demo):
    out, _, record = demo
    train = read_id_list(out / "lists" / "train.txt")
    rows = {r["kind"]: r for r in record["rows"]}
    with h5py.File(out / "fused.h5", "r") as store:
        for kind in ("a", "or", "orandnet", "rw"):
            pairs: Counter = Counter()
            for image_id in train:
                node = store[f"{kind}/{image_id}"]
                mask = ref_mask(node[()].astype(np.float32), np.asarray(node.attrs["keys"]), rows[kind]["best_thres"])
                pairs += ref_pairs(_gt(out, image_id), mask)
            _check(rows[kind], _score(pairs))
        pairs = Counter()
        for image_id in train:
            pairs += ref_pairs(_gt(out, image_id), store[f"masks/{image_id}"][()])
        _check(rows["masks"], _score(pairs))


def test_baselines_and_deeplab_rows_rescored(demo):
    out, _, record = demo
    train, val = read_id_list(out / "lists" / "train.txt"), read_id_list(out / "lists" / "val.txt")
    labels = safe_load_npy(out / "data" / "cls_labels.npy")
    boxes, everywhere = Counter(), Counter()
    for image_id in train:
        gt = _gt(out, image_id)
        label = int(np.flatnonzero(labels[image_id])[0]) + 1  # the first image label
        h, w = gt.shape
        box = np.zeros_like(gt)
        box[round(0.2 * h):h - round(0.2 * h), round(0.2 * w):w - round(0.2 * w)] = label
        boxes += ref_pairs(gt, box)
        everywhere += ref_pairs(gt, np.full_like(gt, label))
    baselines = [r for r in record["rows"] if r["kind"] == "baseline"]
    _check(baselines[0], _score(boxes))
    _check(baselines[1], _score(everywhere))
    for row, folder in zip(record["deeplab"], ("deeplab_plain", "deeplab_scheduled")):
        pairs = Counter()
        for image_id in val:
            pairs += ref_pairs(_gt(out, image_id), load_label_png(out / "runs" / folder / "val_masks" / f"{image_id}.png"))
        _check(row, _score(pairs))


def test_sources_are_native_dumps_of_the_image_labels(demo):
    out, _, _ = demo
    train = read_id_list(out / "lists" / "train.txt")
    labels = safe_load_npy(out / "data" / "cls_labels.npy")
    image_id = train[0]
    keys = np.flatnonzero(labels[image_id])
    amn = safe_load_npy(out / "cams" / "a_amn" / f"{image_id}.npy")
    assert amn["keys"].tolist() == keys.tolist()
    h, w = _gt(out, image_id).shape
    assert amn["high_res"].shape == (len(keys) + 1, h, w)  # background channel 0
    assert tuple(amn["cam"].shape) == (len(keys) + 1, (h + 3) // 4, (w + 3) // 4)
    mct = safe_load_npy(out / "cams" / "b_mctformer" / f"{image_id}.npy")
    assert sorted(mct) == keys.tolist() and all(m.shape == (h, w) and m.max() <= 1 for m in mct.values())

"""`fuse --recipe official` and `evaluate --recipe official` against the official code's formulas, computed in the
tests on the same real VOC-mini inputs: the raw float32 OR/AND of AMN's high_res[1:] and MCTformer's maps in AMN key
order, the simple_addition baseline, and the 20-class IOUMetric with NaN-excluded means and its threshold rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from helpers import GT, gt_classes, gt_mask, pseudo_cams, voc_mini_ids
from official_reference import ref_iou_metric, ref_maps_to_mask
from orand_addon.cli import cli
from orand_addon.io.writers import write_cam
from orand_addon.store.store import Store

CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    root = tmp_path_factory.mktemp("official_dumps")
    for n, image_id in enumerate(voc_mini_ids()):
        mask = gt_mask(image_id)
        keys = gt_classes(mask)
        write_cam(root / "amn", image_id, "amn", keys, pseudo_cams(mask, keys, seed=n, blur=8))
        write_cam(root / "mct", image_id, "mctformer", keys, pseudo_cams(mask, keys, seed=500 + n, blur=16))
    return root


def official_inputs(root, image_id):
    """What metadata/dataset.py does: AMN's high_res without channel 0, MCTformer's maps stacked in AMN key order."""
    cam1 = np.load(root / "amn" / f"{image_id}.npy", allow_pickle=True).item()
    cam2 = np.load(root / "mct" / f"{image_id}.npy", allow_pickle=True).item()
    keys = [int(k) for k in cam1["keys"]]
    return cam1["high_res"][1:], np.stack([cam2[k] for k in keys]), keys


def test_fuse_recipe_official_gives_the_official_maps_exactly(dumps, tmp_path):
    out = tmp_path / "fused.h5"
    result = run("fuse", "--cams-a", dumps / "amn", "--cams-b", dumps / "mct", "--format-a", "amn", "--format-b",
                 "mctformer", "--recipe", "official", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "kinds: or, and, mean-official" in result.output
    with Store(out) as store:
        for image_id in voc_mini_ids():
            a, b, keys = official_inputs(dumps, image_id)
            assert a.dtype == b.dtype == np.float32
            got = {kind: store.read_maps(kind, image_id) for kind in ("or", "and", "mean-official")}
            for kind, expected in (("or", a + b - a * b), ("and", a * b)):
                maps, stored_keys = got[kind]
                assert maps.dtype == np.float32 and stored_keys.tolist() == keys
                assert np.array_equal(maps, expected), (image_id, kind)
            # module/simple_addition.py, in torch: c2 + 0.15, mean, relu, / (max of the mean + 1e-5)
            c1, c2 = torch.from_numpy(a), torch.from_numpy(b) + 0.15
            m = (c1 + c2) / 2
            official = torch.relu(m) / (torch.nn.functional.adaptive_max_pool2d(m, (1, 1)) + 1e-5)
            assert np.array_equal(got["mean-official"][0], official.numpy()), image_id


def test_mean_official_ignores_the_shift_options_and_needs_two_sources(dumps, tmp_path):
    out = tmp_path / "shifted.h5"
    (tmp_path / "one.txt").write_text("2007_000033\n")
    result = run("fuse", "--cams-a", dumps / "amn", "--cams-b", dumps / "mct", "--format-a", "amn", "--format-b",
                 "mctformer", "--kinds", "mean,mean-official", "--dtype", "float32", "--shift-b", "0.15",
                 "--ids", tmp_path / "one.txt", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    a, b, _ = official_inputs(dumps, "2007_000033")
    with Store(out) as store:
        plain, _ = store.read_maps("mean", "2007_000033")
        official, _ = store.read_maps("mean-official", "2007_000033")
    np.testing.assert_allclose(plain, (a + (b + np.float32(0.15))) / 2, rtol=1e-6)
    m = (a + (b + np.float32(0.15))) / 2  # its own 0.15 once, not twice
    np.testing.assert_allclose(official, np.maximum(m, 0) / (m.max(axis=(1, 2), keepdims=True) + 1e-5), rtol=1e-6)
    three = run("fuse", "--cams-a", dumps / "amn", "--cams-b", dumps / "mct", "--cams-c", dumps / "mct",
                "--format-a", "amn", "--format-b", "mctformer", "--format-c", "mctformer", "--kinds", "mean-official",
                "--out", tmp_path / "three.h5", "--no-progress")
    assert three.exit_code == 2
    assert three.output.strip().splitlines()[-1] == ("orand-addon: error: kind mean-official is the official "
                                                     "two-source baseline; got 3 sources (drop it from --kinds)")


# -- evaluation ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    """Maps of every VOC-mini image, with a class predicted that no ground truth has (dog on the sheep image) and a
    ground-truth class never predicted (car on 2011_000025): the cases where the NaN rules differ."""
    root = tmp_path_factory.mktemp("official_eval")
    out = {}
    for n, image_id in enumerate(voc_mini_ids()):
        mask = gt_mask(image_id)
        keys = gt_classes(mask)
        maps = pseudo_cams(mask, keys, seed=900 + n, blur=8)
        if image_id == "2007_000175":  # sheep; add a dog blob
            keys = np.append(keys, 11)
            maps = np.concatenate([maps, np.roll(maps[:1], 60, axis=2) * np.float32(0.9)])
        if image_id == "2011_000025":  # bus, car: car never predicted
            maps[list(keys).index(6)] = 0
        write_cam(root, image_id, "irn", keys, maps)
        out[image_id] = (keys, maps)
    return root, out


def official_scores(maps_by_id, thres):
    pairs = [(gt_mask(i), ref_maps_to_mask(maps, keys, thres)) for i, (keys, maps) in maps_by_id.items()]
    return ref_iou_metric(pairs)


def test_evaluate_recipe_official_gives_the_official_20_class_scores(predictions, tmp_path):
    root, maps_by_id = predictions
    result = run("evaluate", "--pred", root, "--format", "irn", "--gt", GT, "--recipe", "official", "--json",
                 tmp_path / "o.json", "--no-progress")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["classes"] == CLASSES and doc["threshold"] == 0.25
    ref = official_scores(maps_by_id, 0.25)
    assert doc["metrics"]["mean_iou"] == pytest.approx(ref["miou"], rel=1e-12)
    assert doc["metrics"]["mean_precision"] == pytest.approx(ref["mean_precision"], rel=1e-12)
    assert doc["metrics"]["mean_recall"] == pytest.approx(ref["mean_recall"], rel=1e-12)
    for k, name in enumerate(CLASSES):
        for ours, theirs in (("iou", "iou"), ("precision", "precision"), ("recall", "recall")):
            value = doc["per_class"][name][ours]
            expected = ref[theirs][k]
            assert (value is None) == bool(np.isnan(expected)), (name, ours, value, expected)
            if value is not None:
                assert value == pytest.approx(expected, rel=1e-12), (name, ours)
    assert doc["per_class"]["dog"]["recall"] is None and doc["per_class"]["car"]["precision"] is None
    # the package's default scoring differs on exactly these data (21 classes, undefined scores counted as 0)
    default = run("evaluate", "--pred", root, "--format", "irn", "--gt", GT, "--bg-thres", "0.25", "--json",
                  tmp_path / "d.json", "--no-progress")
    assert default.exit_code == 0, default.output
    plain = json.loads((tmp_path / "d.json").read_text())
    assert len(plain["classes"]) == 21 and plain["per_class"]["dog"]["recall"] == 0.0
    assert abs(plain["metrics"]["mean_iou"] - doc["metrics"]["mean_iou"]) > 1e-3


def test_official_precision_aware_threshold(predictions, tmp_path):
    """finding_best_thres: t = k * 0.01 for k in 10..80, the first with mean precision > mean recall, else 0.80."""
    root, maps_by_id = predictions
    result = run("evaluate", "--pred", root, "--format", "irn", "--gt", GT, "--recipe", "official", "--sweep",
                 "0.10:0.80:0.01", "--json", tmp_path / "s.json", "--no-progress")
    assert result.exit_code == 0, result.output  # the recipe's --bg-thres gives way to the explicit sweep
    doc = json.loads((tmp_path / "s.json").read_text())
    expected = 0.8
    for k in range(10, 81):
        s = official_scores(maps_by_id, k * 0.01)
        if s["mean_precision"] > s["mean_recall"]:
            expected = k * 0.01
            break
    chosen = doc["sweep"]["precision_aware"]
    assert chosen["threshold"] == pytest.approx(expected, abs=1e-9)
    s = official_scores(maps_by_id, expected)
    assert chosen["metrics"]["mean_iou"] == pytest.approx(s["miou"], rel=1e-12)


def test_recipe_threshold_is_ignored_for_masks(tmp_path):
    """A recipe's --bg-thres applies to maps only: label PNGs are still scored (20 classes, NaN rule)."""
    result = run("evaluate", "--pred", GT, "--gt", GT, "--recipe", "official", "--json", tmp_path / "m.json",
                 "--no-progress")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["mode"] == "masks" and doc["metrics"]["mean_iou"] == 1.0 and len(doc["classes"]) == 20
    explicit = run("evaluate", "--pred", GT, "--gt", GT, "--bg-thres", "0.3", "--no-progress")
    assert explicit.exit_code == 2
    assert "holds label masks; --bg-thres and --sweep apply to class maps only" in explicit.output

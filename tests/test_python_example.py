"""docs/python_example.py runs as a user runs it (a script, on CAM dumps of two methods in their native formats)
and prints the numbers an independent computation gives: Eq. 1 in float64, the dense random walk, plain counting."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import gt_mask, pseudo_cams, ref_mask, ref_pairs, ref_scores, reference_or_and, voc_mini_ids
from orand_addon.io.images import load_image, save_label_png
from orand_addon.io.writers import write_cam
from helpers import small_voc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from dense_rw_reference import dense_random_walk  # noqa: E402

IDS = voc_mini_ids()[:3]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """Quarter-size VOC-mini images, their ground truth, AMN dumps of all ids and MCTformer dumps of all but one."""
    tmp = tmp_path_factory.mktemp("example")
    data = small_voc(tmp / "images", IDS, factor=4)
    (tmp / "gt").mkdir()
    maps_b = {}
    for n, (image_id, (keys, maps)) in enumerate(data.items()):
        h, w = maps.shape[1:]
        truth = np.asarray(Image.fromarray(gt_mask(image_id)).resize((w, h), Image.NEAREST))
        save_label_png(tmp / "gt" / f"{image_id}.png", truth)
        write_cam(tmp / "amn", image_id, "amn", keys, maps)
        maps_b[image_id] = pseudo_cams(truth, keys, seed=50 + n, blur=8)
        write_cam(tmp / "mct", image_id, "mctformer", keys, maps_b[image_id])
    write_cam(tmp / "amn", "2099_000001", "amn", *data[IDS[0]])  # only in A: not fused
    return tmp, data, maps_b


def run_example(*args) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "docs" / "python_example.py"), *map(str, args)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def printed(output: str, name: str) -> tuple[int, float, float, float]:
    match = re.search(rf"^{name}: (\d+) images, mIoU ([\d.]+), precision ([\d.]+), recall ([\d.]+)$", output, re.M)
    assert match, output
    return int(match[1]), float(match[2]), float(match[3]), float(match[4])


def reference_scores(masks: dict[str, np.ndarray], gt: Path) -> tuple[float, float, float]:
    pairs = Counter()
    for image_id, mask in masks.items():
        pairs.update(ref_pairs(np.asarray(Image.open(gt / f"{image_id}.png")), mask))
    s = ref_scores(pairs, 21)
    return 100 * s["mean_iou"], 100 * s["mean_precision"], 100 * s["mean_recall"]


def dense_walk(maps: np.ndarray, edge: torch.Tensor) -> np.ndarray:
    """IRN's walk written out: stride-4 maps, the dense walk, x4 upsampling, cropped, divided by the global max."""
    h, w = maps.shape[1:]
    cam = F.interpolate(torch.from_numpy(maps.astype(np.float32))[None], size=(-(-h // 4), -(-w // 4)),
                        mode="bilinear", align_corners=False)[0]
    rw = dense_random_walk(cam.numpy(), edge.numpy(), beta=10, exp_times=8, radius=5)
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
    return (up / up.max()).numpy()


def test_example_fuses_scores_and_walks_as_an_independent_computation(dumps):
    tmp, data, maps_b = dumps
    output = run_example("--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--gt", tmp / "gt", "--images",
                         tmp / "images")
    or_maps = {i: reference_or_and(data[i][1], maps_b[i])[0] for i in IDS}
    or_masks = {i: ref_mask(or_maps[i], data[i][0], 0.15) for i in IDS}
    n, *scores = printed(output, "or")
    assert n == len(IDS)  # the id only one method dumped is left out
    np.testing.assert_allclose(scores, reference_scores(or_masks, tmp / "gt"), atol=0.006)
    rw_masks = {i: ref_mask(dense_walk(or_maps[i], torch.zeros((-(-or_maps[i].shape[1] // 4),
                                                                 -(-or_maps[i].shape[2] // 4)), dtype=torch.float64)),
                            data[i][0], 0.25) for i in IDS}
    n, *scores = printed(output, "rw")
    assert n == len(IDS)
    np.testing.assert_allclose(scores, reference_scores(rw_masks, tmp / "gt"), atol=0.02)


def test_example_takes_the_boundary_map_from_irn_weights(dumps, tmp_path):
    from orand_addon.refine.network import build_irnet, load_trained, normalize_image, predict_edge

    tmp, data, maps_b = dumps
    torch.manual_seed(0)
    torch.save({"model": build_irnet("trainable", None).state_dict(), "options": {"backbone": "trainable"}},
               tmp_path / "irn.pt")  # untrained weights: an arbitrary but fixed boundary map
    output = run_example("--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--gt", tmp / "gt", "--images",
                         tmp / "images", "--irn", tmp_path / "irn.pt", "--limit", 2)
    model = load_trained(tmp_path / "irn.pt", torch.device("cpu"))
    masks = {}
    for image_id in IDS[:2]:
        keys, maps = data[image_id]
        edge = predict_edge(model, normalize_image(load_image(tmp / "images", image_id))).double()
        assert 0 < float(edge.mean()) < 1
        masks[image_id] = ref_mask(dense_walk(reference_or_and(maps, maps_b[image_id])[0], edge), keys, 0.25)
    n, *scores = printed(output, "rw")
    assert n == 2
    np.testing.assert_allclose(scores, reference_scores(masks, tmp / "gt"), atol=0.02)

"""`orand-addon refine` end to end on small real VOC images: seeds -> train -> walk, resume, bad input."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dense_rw_reference import dense_random_walk  # noqa: E402

from orand_addon.cli import cli  # noqa: E402
from orand_addon.io.images import load_image  # noqa: E402
from orand_addon.refine import walk_stage as walk_step  # noqa: E402
from orand_addon.refine.network import load_trained  # noqa: E402
from orand_addon.runtime.provenance import file_digest  # noqa: E402
from orand_addon.store.store import Store  # noqa: E402
from helpers import small_voc, write_store  # noqa: E402,F401

TRAIN_ARGS = ["--pretrained", "none", "--backbone", "trainable", "--crop-size", "80", "--batch-size", "2",
              "--max-steps", "1", "--lr", "0.02", "--dp-lr", "0.2"]


def invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The whole pipeline once, through the CLI, on 4 small VOC images + one image without classes."""
    tmp = tmp_path_factory.mktemp("refine")
    data = small_voc(tmp / "img", factor=4)
    empty_id = next(iter(data))
    keys, maps = data[empty_id]
    data[empty_id] = (np.zeros(0, np.int64), np.zeros((0, *maps.shape[1:]), np.float32))  # all-background seed
    store = write_store(tmp / "fused.h5", "orandnet", data)
    res = invoke("refine", "--store", store, "--kind", "orandnet", "--images", tmp / "img", "--workers", "2",
                 "--device", "cpu", "--no-progress", *TRAIN_ARGS)
    return tmp, store, data, empty_id, res


def test_pipeline_writes_seeds_weights_rw_and_masks(pipeline):
    tmp, store, data, empty_id, res = pipeline
    assert res.exit_code == 0, res.output
    assert f"seeds: wrote {len(data)} images, 0 already present" in res.output
    assert "1 images have no foreground seed" in res.output
    assert "train: 1 steps" in res.output and (tmp / "fused_irn" / "irn.pt").is_file()
    assert f"walk: wrote {len(data)} images (rw maps + masks), 0 already present" in res.output
    with Store(store) as s:
        assert s.ids("seeds") == s.ids("rw") == s.ids("masks") == sorted(data)
        for image_id, (keys, maps) in data.items():
            rw, rw_keys = s.read_maps("rw", image_id)
            mask = s.read_mask("masks", image_id)
            assert rw.shape == maps.shape and rw_keys.tolist() == keys.tolist() and mask.shape == maps.shape[1:]
            assert set(np.unique(mask)) <= {0, *(keys + 1).tolist()}
            if len(keys):
                assert rw.max() == 1.0  # divided by the global max
        assert (s.read_mask("masks", empty_id) == 0).all()
        assert s.group_provenance("rw")["parameters"]["kind"] == "orandnet"
        assert s.group_provenance("masks")["parameters"]["bg_thres"] == 0.25


def test_walk_equals_an_independent_dense_computation(pipeline):
    """Boundary map with flip averaging, dense walk, x4 upsampling, global max, background 0.25 — written out."""
    tmp, store, data, empty_id, _ = pipeline
    model = load_trained(tmp / "fused_irn" / "irn.pt", torch.device("cpu"))
    image_id = sorted(i for i in data if i != empty_id)[0]
    keys, maps = data[image_id]
    image = torch.tensor(load_image(tmp / "img", image_id)).permute(2, 0, 1).float() / 255
    image = (image - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        logits, _ = model(torch.stack([image, image.flip(-1)]))
    edge = torch.sigmoid(logits[0, 0] / 2 + logits[1, 0].flip(-1) / 2)
    h, w = maps.shape[1:]
    cam = F.interpolate(torch.from_numpy(maps)[None], size=(-(-h // 4), -(-w // 4)), mode="bilinear",
                        align_corners=False)[0]
    rw = dense_random_walk(cam.numpy(), edge.numpy(), beta=10, exp_times=8, radius=5)
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
    up = up / up.max()
    expected = np.pad(keys + 1, (1, 0))[torch.argmax(F.pad(up, (0, 0, 0, 0, 1, 0), value=0.25), dim=0).numpy()]
    with Store(store) as s:
        np.testing.assert_allclose(s.read_maps("rw", image_id)[0], up.numpy(), atol=1e-3)  # float16 storage
        assert (s.read_mask("masks", image_id) == expected).mean() > 0.999


def test_rerun_skips_everything_and_walk_resumes_per_image(pipeline):
    tmp, store, data, _, _ = pipeline
    res = invoke("refine", "--store", store, "--kind", "orandnet", "--images", tmp / "img", "--device", "cpu",
                 *TRAIN_ARGS)  # with progress bars: none for the steps with nothing left to do
    assert res.exit_code == 0, res.output
    assert "seeds:" not in res.stderr and "walk:" not in res.stderr and "img/s" not in res.stderr, res.stderr
    assert f"seeds: wrote 0 images, {len(data)} already present" in res.stdout
    assert "already trained (1 steps); skipped" in res.output
    assert f"walk: wrote 0 images (rw maps + masks), {len(data)} already present" in res.output
    copy = tmp / "copy.h5"
    shutil.copy(store, copy)
    with Store(copy, "a") as s:
        for image_id in sorted(data)[:2]:
            del s.h5["masks"][image_id]
    res = invoke("refine", "--store", copy, "--images", tmp / "img", "--steps", "walk", "--device", "cpu",
                 "--checkpoint", tmp / "fused_irn" / "irn.pt", "--no-progress")
    assert res.exit_code == 0, res.output
    assert f"walk: wrote 2 images (rw maps + masks), {len(data) - 2} already present" in res.output


def test_nan_boundary_stops_with_the_id_and_keeps_finished_images(pipeline, monkeypatch):
    tmp, store, data, _, _ = pipeline
    copy = tmp / "nan.h5"
    shutil.copy(store, copy)
    with Store(copy, "a") as s:
        for group in ("rw", "masks"):
            del s.h5[group]
    ids = sorted(data)
    real = walk_step.predict_edge
    calls = {"n": 0}

    def nan_on_second(model, image, *args, **kwargs):
        calls["n"] += 1
        edge = real(model, image, *args, **kwargs)
        return edge * float("nan") if calls["n"] == 2 else edge

    monkeypatch.setattr(walk_step, "predict_edge", nan_on_second)
    res = invoke("refine", "--store", copy, "--images", tmp / "img", "--steps", "walk", "--device", "cpu",
                 "--checkpoint", tmp / "fused_irn" / "irn.pt", "--no-progress")
    assert res.exit_code == 2
    assert res.output.strip() == (f"orand-addon: error: {ids[1]}: the boundary map has NaN or Inf "
                                  f"(diverged IRN weights?)")
    with Store(copy) as s:
        assert s.ids("rw") == s.ids("masks") == ids[:1]


def test_bad_inputs_name_the_problem(pipeline, tmp_path):
    tmp, store, data, _, _ = pipeline
    res = invoke("refine", "--store", store, "--images", tmp / "img", "--steps", "walk,fly")
    assert res.exit_code == 2 and "orand-addon: error: --steps fly: valid steps are seeds, train, walk" in res.output
    res = invoke("refine", "--store", tmp_path / "none.h5", "--images", tmp / "img")
    assert res.exit_code == 2 and "none.h5: store not found" in res.output
    res = invoke("refine", "--store", store, "--images", tmp / "img", "--steps", "walk", "--run-dir", tmp_path / "r")
    assert res.exit_code == 2 and "irn.pt: no IRN weights; run the train step first" in res.output
    ids = sorted(data)
    other = {i: (k, m[:, :, :-3]) for i, (k, m) in data.items()}
    bad = write_store(tmp_path / "bad.h5", "orandnet", other)
    res = invoke("refine", "--store", bad, "--images", tmp / "img", "--steps", "walk", "--device", "cpu",
                 "--checkpoint", tmp / "fused_irn" / "irn.pt", "--no-progress")
    h, w = data[ids[0]][1].shape[1:]
    assert res.exit_code == 2
    assert f"error: {ids[0]}: /orandnet maps are {h}x{w - 3} but the image is {h}x{w}" in res.output
    with Store(bad) as s:
        assert s.ids("rw") == []
    copy = tmp_path / "copy.h5"
    shutil.copy(store, copy)
    res = invoke("refine", "--store", copy, "--images", tmp_path, "--steps", "walk", "--device", "cpu",
                 "--checkpoint", tmp / "fused_irn" / "irn.pt", "--overwrite", "--cam-power", "1.3", "--no-progress")
    assert res.exit_code == 2 and f"error: {ids[0]}: no image {ids[0]}.jpg/.png in {tmp_path}" in res.output
    with Store(copy) as s:  # the checks come before --overwrite deletes anything
        assert s.ids("rw") == ids and s.group_provenance("rw")["parameters"]["cam_power"] == 1.0


def test_walk_after_retraining_refuses_the_masks_of_the_old_weights(pipeline, tmp_path):
    tmp, store, data, _, _ = pipeline
    copy, weights = tmp_path / "copy.h5", tmp_path / "irn.pt"
    shutil.copy(store, copy)
    shutil.copy(tmp / "fused_irn" / "irn.pt", weights)
    walk = ["refine", "--store", copy, "--images", tmp / "img", "--steps", "walk", "--device", "cpu",
            "--checkpoint", weights, "--no-progress"]
    assert invoke(*walk, "--overwrite").exit_code == 0  # masks of the weights in this file
    assert f"walk: wrote 0 images (rw maps + masks), {len(data)} already present" in invoke(*walk).output
    with Store(copy, "a") as s:
        del s.h5["masks"][sorted(data)[0]]  # an interrupted walk
    retrained = torch.load(weights, weights_only=True)
    retrained["step"] += 1
    retrained["model"]["edge.5.bias"] += 0.5
    torch.save(retrained, weights)  # IRN trained again into the same file
    res = invoke(*walk)
    assert res.exit_code == 2
    assert res.output.startswith(f"orand-addon: error: {copy}: /rw was written by 'orand-addon ")  # the command line
    assert res.output.endswith("' with other parameters (--checkpoint content differ); use a new output file or "
                               "--overwrite\n") and len(res.output.splitlines()) == 1
    with Store(copy) as s:
        assert len(s.ids("masks")) == len(data) - 1  # nothing mixed in
    res = invoke(*walk, "--overwrite")
    assert res.exit_code == 0 and f"walk: wrote {len(data)} images" in res.output, res.output
    with Store(copy) as s:
        assert s.group_provenance("rw")["parameters"]["checkpoint_sha256"] == file_digest(weights)


def test_seeds_png_into_a_new_store_takes_the_class_set(tmp_path):
    from orand_addon.classes import get_class_set
    from orand_addon.io.images import save_label_png

    data = small_voc(tmp_path / "img", factor=8)
    (tmp_path / "png").mkdir()
    for n, (image_id, (_, maps)) in enumerate(sorted(data.items())):
        seed = np.zeros(maps.shape[1:], np.uint8)
        seed[:4] = 255
        seed[4:8] = 30 + n  # a COCO class beyond VOC's 20
        save_label_png(tmp_path / "png" / f"{image_id}.png", seed)
    store = tmp_path / "coco.h5"
    res = invoke("refine", "--store", store, "--images", tmp_path / "img", "--steps", "seeds", "--seeds-png",
                 tmp_path / "png", "--classes", "coco", "--no-progress")
    assert res.exit_code == 0, res.output
    with Store(store) as s:
        assert s.class_names == list(get_class_set("coco").names)
        assert int(s.read_mask("seeds", sorted(data)[1]).max()) == 255 and 31 in s.read_mask("seeds", sorted(data)[1])
    res = invoke("refine", "--store", store, "--images", tmp_path / "img", "--steps", "seeds", "--seeds-png",
                 tmp_path / "png", "--classes", "voc", "--no-progress")
    assert res.exit_code == 2 and res.output.startswith(f"orand-addon: error: {store}: store has classes")
    res = invoke("refine", "--store", tmp_path / "voc.h5", "--images", tmp_path / "img", "--steps", "seeds",
                 "--seeds-png", tmp_path / "png", "--no-progress")  # VOC by default: 30 is no VOC class
    assert res.exit_code == 2 and "seed PNG has values [30] outside 0..20 and 255" in res.output



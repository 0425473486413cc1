"""Every command checks all of its options, inputs and weights before it starts, and reports every problem at
once in one line; commands with id lists take the ids actually present, or say how many listed ids are missing."""

from __future__ import annotations

import json
import urllib.error

import pytest
from click.testing import CliRunner

from helpers import voc_mini_ids
from orand_addon import pretrained
from orand_addon.cli import cli
from orand_addon.cli.problems import Problems, ProblemsFound
from orand_addon.classes import VOC_CLASSES, read_id_list
from orand_addon.errors import OrandError
from orand_addon.store.store import Store
from helpers import small_voc, write_store
from test_seg_data import tiny_voc


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_problems_collects_one_line_errors_and_lists_them_in_one_line():
    p = Problems()
    with p.check():
        raise OrandError("a.h5: store not found")
    assert p.run(lambda: 1 / 0 if False else 7) == 7
    assert p.run(lambda: (_ for _ in ()).throw(OrandError("b\n c"))) is None
    p.add(None)
    p.add("a.h5: store not found")  # duplicates once
    with pytest.raises(ProblemsFound) as info:
        p.raise_if_any()
    assert str(info.value) == "2 problems (nothing was started): 1) a.h5: store not found; 2) b c"
    assert info.value.exit_code == 2
    Problems().raise_if_any()  # nothing found: nothing raised
    with pytest.raises(ZeroDivisionError):  # a bug is not a problem of the input
        with Problems().check():
            1 / 0


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """A store with ORANDNet maps of the 11 real VOC-mini images (small copies) and their images."""
    tmp = tmp_path_factory.mktemp("validate")
    data = small_voc(tmp / "img", voc_mini_ids(), factor=8)
    return tmp, write_store(tmp / "fused.h5", "orandnet", data), data


def offline(url, destination, hash_prefix, progress=True):
    raise urllib.error.URLError("no network")


def test_refine_as_documented_reports_every_problem_at_once_before_the_seeds(fused, monkeypatch):
    """The README's refine line on 11 images offline: batch 32 and the missing ResNet-50 weights in one run."""
    tmp, store, data = fused
    monkeypatch.setenv("TORCH_HOME", str(tmp / "torch"))
    monkeypatch.delenv(pretrained.OFFLINE_ENV)
    monkeypatch.setattr(pretrained, "download", offline)
    hub = tmp / "torch" / "hub" / "checkpoints"
    res = run("refine", "--store", store, "--kind", "orandnet", "--images", tmp / "img", "--no-progress")
    assert res.exit_code == 2
    assert res.stderr.splitlines()[-1] == (
        f"orand-addon: error: 2 problems (nothing was started): 1) --batch-size 32: more than the 11 images to train "
        f"IRN on (use a smaller --batch-size); 2) no ImageNet resnet50 weights: resnet50-0676ba61.pth is not in {hub} "
        f"and downloading it failed (URLError: <urlopen error no network>); download "
        f"https://download.pytorch.org/models/resnet50-0676ba61.pth into {hub} (or point TORCH_HOME to a folder whose "
        f"hub/checkpoints has it), pass --pretrained PATH to a copy of the file, or --pretrained none to start from "
        f"random weights")
    res = run("refine", "--store", store, "--kind", "orandnet", "--images", tmp / "img", "--no-progress",
              "--pretrained", "none", "--seed-bg-thres", "1.5", "--steps", "seeds,train,walk,crf")
    assert res.exit_code == 2
    assert res.output == ("orand-addon: error: 2 problems (nothing was started): 1) --steps crf: valid steps are "
                          "seeds, train, walk; 2) --seed-bg-thres 1.5: a background score, between 0 and 1\n")
    res = run("refine", "--store", store, "--kind", "orandnet", "--images", tmp / "img", "--no-progress",
              "--pretrained", "none", "--bg-thres", "1.5")  # the old spelling of --seed-bg-thres
    assert res.output == (
        "orand-addon: error: 3 problems (nothing was started): 1) --seed-bg-thres 1.5: a background score, between "
        "0 and 1; 2) --batch-size 32: more than the 11 images to train IRN on (use a smaller --batch-size); 3) "
        "--pretrained none with a frozen backbone would train on random features; use --backbone trainable (or "
        "ImageNet weights)\n")
    with Store(store) as s:
        assert s.ids("seeds") == []  # the seeds step did not run
    assert not (tmp / "fused_irn").exists()


def test_refine_names_missing_ids_images_and_weights_of_the_walk(fused, tmp_path):
    tmp, store, data = fused
    ids = sorted(data)
    (tmp_path / "ids.txt").write_text("\n".join(ids[:2] + ["2099_000001", "2099_000002"]) + "\n")
    res = run("refine", "--store", store, "--kind", "orandnet", "--images", tmp_path / "nowhere", "--steps", "walk",
              "--ids", tmp_path / "ids.txt", "--no-progress")
    assert res.output == (
        f"orand-addon: error: 3 problems (nothing was started): 1) --images {tmp_path / 'nowhere'}: image folder not "
        f"found; 2) --ids {tmp_path / 'ids.txt'}: 2 of its 4 ids have no /orandnet in {store} (e.g. 2099_000001, "
        f"2099_000002); pass a list file of the ids you have (one id per line), or leave --ids out to take every "
        f"id of /orandnet; 3) {tmp / 'fused_irn' / 'irn.pt'}: no IRN weights; run the train step first (--steps "
        f"train) or pass --checkpoint\n")


def test_train_seg_defaults_to_the_ids_present_and_says_how_many_listed_ids_are_missing(tmp_path):
    tiny = tiny_voc(tmp_path / "tiny", n=6)
    args = ["train-seg", "--images", tiny["images"], "--masks", tiny["store"], "--out", tmp_path / "run",
            "--model", "deeplabv2-resnet18", "--pretrained", "none", "--epochs", 1, "--batch-size", 2,
            "--crop-size", 24, "--scale-schedule", "none", "--workers", 0, "--no-progress"]
    bundled = read_id_list("train_aug")
    res = run(*args, "--train-list", "train_aug")
    have = sorted(set(tiny["ids"]) & set(bundled))
    missing = [i for i in dict.fromkeys(bundled) if i not in have]
    assert res.output == (
        f"orand-addon: error: --train-list train_aug: {len(missing)} of its {len(set(bundled))} ids have no image "
        f"in {tiny['images']} or no mask in {tiny['store']} (e.g. {', '.join(missing[:3])}); pass a list file of the "
        f"ids you have (one id per line), or leave --train-list out to train on every id with both\n")
    # without lists: every id with an image and a mask trains; with --gt the ids with an image and ground truth
    # that do not train validate (here the image without a mask)
    store = tmp_path / "five.h5"
    with Store(store, "a", class_names=VOC_CLASSES) as out, Store(tiny["store"]) as src:
        for image_id in tiny["ids"][:5]:
            out.write_mask("masks", image_id, src.read_mask("masks", image_id))
    res = run(*args[:4], store, *args[5:], "--gt", tiny["masks"])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["train_list"] == sorted(tiny["ids"][:5]) and record["val_list"] == [tiny["ids"][5]]
    res = run(*args[:4], store, *args[5:6], tmp_path / "run2", *args[7:], "--gt", tiny["masks"], "--val-list",
              tiny["list"], "--batch-size", 9, "--epochs", 0)
    assert res.output == (
        "orand-addon: error: 2 problems (nothing was started): 1) --batch-size 9: more than the 5 training images "
        "(use a smaller --batch-size); 2) --epochs 0 must be at least 1\n")
    assert not (tmp_path / "run2").exists()


def test_segment_defaults_to_the_images_with_ground_truth(tmp_path):
    from orand_addon.segment.train import SegTrainConfig, train_segmentation

    tiny = tiny_voc(tmp_path / "tiny", n=4)
    model = train_segmentation(SegTrainConfig(
        images=str(tiny["images"]), masks=str(tiny["store"]), train_list=tiny["ids"], out=str(tmp_path / "run"),
        model="deeplabv2-resnet18", pretrained="none", epochs=1, batch_size=2, crop_size=24, scale_schedule="none",
        workers=0, show_progress=False))
    (tiny["masks"] / f"{tiny['ids'][0]}.png").unlink()  # an image without ground truth is not scored
    res = run("segment", "--checkpoint", model, "--images", tiny["images"], "--gt", tiny["masks"], "--out",
              tmp_path / "pred", "--scales", "1.0", "--no-flip", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "segmented 3 images (0 already done)" in res.output
    assert sorted(p.stem for p in (tmp_path / "pred").glob("*.png")) == sorted(tiny["ids"][1:])
    res = run("segment", "--checkpoint", tmp_path / "none.pt", "--images", tiny["images"], "--ids", "val",
              "--no-progress")
    val = list(dict.fromkeys(read_id_list("val")))
    missing = [i for i in val if i not in tiny["ids"]]
    assert res.output == (
        f"orand-addon: error: 3 problems (nothing was started): 1) {tmp_path / 'none.pt'}: checkpoint not found "
        f"(--checkpoint takes RUN_DIR/model.pt of 'orand-addon train-seg', or its last.pt); 2) segment: give --out "
        f"DIR (PNG masks) and/or --store STORE.h5; 3) --ids val: {len(missing)} of its {len(val)} ids have no image "
        f"in {tiny['images']} (e.g. {', '.join(missing[:3])}); pass a list file of the ids you have (one id per line), "
        f"or leave --ids out to segment every image\n")

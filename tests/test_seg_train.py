"""Segmentation training on tiny real VOC images: models, the loss goes down, per-epoch scale scheduling,
per-epoch validation, exact resume after Ctrl-C."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from helpers.testers import ResumeTester
from helpers import tiny_voc
from helpers import one_torch_thread  # noqa: F401 (fixtures)
from orand_addon.cli import cli
from orand_addon.errors import Interrupted, OrandError
from orand_addon.io.images import load_image, load_label_png
from orand_addon.segment import train as train_module
from orand_addon.segment.data import normalize
from orand_addon.segment.infer import load_segmenter
from orand_addon.segment.models import build_model, param_groups
from orand_addon.segment.train import SegTrainConfig, train_segmentation


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_voc(tmp_path_factory.mktemp("tiny"), side=40, n=10)


def config(tiny, out, **kw) -> SegTrainConfig:
    base = dict(images=str(tiny["images"]), masks=str(tiny["store"]), train_list=str(tiny["list"]), out=str(out),
                model="deeplabv2-resnet18", pretrained="none", epochs=3, batch_size=5, crop_size=32, lr=1e-3,
                scale_schedule="none", workers=0, show_progress=False)
    return SegTrainConfig(**{**base, **kw})


def read_log(run) -> list[dict]:
    with open(run / "log.csv") as fh:
        return list(csv.DictReader(fh))


def test_deeplabv2_resnet101_is_the_wsss_standard():
    net = build_model("deeplabv2-resnet101", 21)
    assert [b.dilation for b in net.head.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    with torch.no_grad():
        feats = net.backbone(torch.zeros(1, 3, 64, 64))
    assert feats.shape == (1, 2048, 8, 8)  # output stride 8
    groups = param_groups(net, 5e-4)
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    assert sum(p.numel() for p in groups[1]["params"]) == 4 * (2048 * 21 * 9 + 21)


@pytest.mark.parametrize("name, stride", [("deeplabv3-resnet50", 8), ("deeplabv2-resnet34", 8),
                                          ("deeplabv2-resnet18", 8), ("deeplabv2-resnet18-os16", 16)])
def test_other_models_output_input_size(name, stride):
    net = build_model(name, 5).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 33, 47)).shape == (1, 5, 33, 47)
        feats = net.backbone(torch.zeros(1, 3, 64, 64))
    feats = feats["out"] if isinstance(feats, dict) else feats
    assert feats.shape[-2:] == (64 // stride, 64 // stride)
    if name.startswith("deeplabv2"):  # the same field of view in pixels at either stride
        assert [b.dilation[0] * stride for b in net.head.branches] == [48, 96, 144, 192]


def test_pretrained_backbone_from_a_file(tmp_path):
    import torchvision

    state = torchvision.models.resnet50().state_dict()
    path = tmp_path / "r50.pth"
    torch.save(state, path)
    net = build_model("deeplabv2-resnet50", 21, pretrained=str(path))
    assert torch.equal(net.backbone.conv1.weight, state["conv1.weight"])
    assert torch.equal(net.backbone.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])
    # pretrained -> batch norm frozen (auto): eval mode and no gradients even when the net trains
    net.train()
    assert not net.backbone.bn1.training and not net.backbone.bn1.weight.requires_grad
    assert net.head.training
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(OrandError, match="the weights do not fit a resnet50 backbone .1 shape mismatches"):
        build_model("deeplabv2-resnet50", 21, pretrained=str(path))


def independent_loss(net, tiny) -> float:
    """Mean CE over every labelled pixel of the un-augmented training images (written out with torch ops)."""
    net.eval()
    total = count = 0.0
    with torch.no_grad():
        for image_id in tiny["ids"]:
            x = torch.from_numpy(normalize(load_image(tiny["images"], image_id)).transpose(2, 0, 1).copy())[None]
            y = torch.from_numpy(load_label_png(tiny["masks"] / f"{image_id}.png").astype(np.int64))[None]
            total += F.cross_entropy(net(x), y, ignore_index=255, reduction="sum").item()
            count += (y != 255).sum().item()
    return total / count


def independent_miou(net, tiny) -> float:
    inter, union = np.zeros(21), np.zeros(21)
    with torch.no_grad():
        for image_id in tiny["ids"]:
            x = torch.from_numpy(normalize(load_image(tiny["images"], image_id)).transpose(2, 0, 1).copy())[None]
            pred = net.eval()(x).argmax(1)[0].numpy()
            gt = load_label_png(tiny["masks"] / f"{image_id}.png")
            valid = gt != 255
            for c in range(21):
                inter[c] += np.sum((pred == c) & (gt == c) & valid)
                union[c] += np.sum(((pred == c) | (gt == c)) & valid)
    return float(np.mean(inter[union > 0] / union[union > 0]))


def test_short_training_lowers_the_loss_and_validates_each_epoch(tiny, tmp_path):
    torch.manual_seed(0)  # the trainer seeds the same way before building the model
    before = independent_loss(build_model("deeplabv2-resnet18", 21), tiny)
    run = tmp_path / "run"
    final = train_segmentation(config(tiny, run, epochs=4, val_list=str(tiny["list"]), gt=str(tiny["masks"])))
    assert final == run / "model.pt" and (run / "last.pt").is_file()
    net, meta = load_segmenter(final, torch.device("cpu"))
    assert meta["model"] == "deeplabv2-resnet18" and meta["class_names"][1] == "aeroplane"
    after = independent_loss(net, tiny)
    assert after < 0.8 * before, (before, after)
    rows = read_log(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["val_miou"]) == pytest.approx(independent_miou(net, tiny), abs=1e-6)


def test_scale_schedule_is_applied_and_logged_per_epoch(tiny, tmp_path, monkeypatch):
    seen = []
    real_step = train_module.train_step

    def spy(net, images, masks, *args, **kwargs):
        seen.append((tuple(images.shape[-2:]), tuple(masks.shape[-2:])))
        return real_step(net, images, masks, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", spy)
    run = tmp_path / "run"
    train_segmentation(config(tiny, run, epochs=4, scale_schedule="4@1,2@2"))
    sizes = {1: 32 // 4, 2: 32 // 2, 3: 32, 4: 32}  # 2 steps per epoch (10 images, batch 5)
    assert seen == [((sizes[e], sizes[e]), (sizes[e], sizes[e])) for e in (1, 1, 2, 2, 3, 3, 4, 4)]
    assert [r["factor"] for r in read_log(run)] == ["4", "2", "1", "1"]
    log = (run / "train.log").read_text()
    assert "epoch 1: scale 1/4 (crop 32 -> 8 px)" in log and "epoch 2: scale 1/2 (crop 32 -> 16 px)" in log
    assert "epoch 3: full size (crop 32 px)" in log


def test_resume_after_ctrl_c_continues_exactly(tiny, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train_segmentation(config(tiny, straight, scale_schedule="2:1", loss="balanced-ls-ce"))

    calls = {"n": 0}
    real_step = train_module.train_step

    def interrupt_on_fourth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", interrupt_on_fourth)
    resumed = tmp_path / "resumed"
    with pytest.raises(Interrupted, match=r"interrupted at epoch 2, step 1; .*last.pt saved, rerun with --resume"):
        train_segmentation(config(tiny, resumed, scale_schedule="2:1", loss="balanced-ls-ce"))
    assert not (resumed / "model.pt").exists() and len(read_log(resumed)) == 1
    monkeypatch.setattr(train_module, "train_step", real_step)

    args = ["train-seg", "--images", tiny["images"], "--masks", tiny["store"], "--train-list", tiny["list"],
            "--out", resumed, "--model", "deeplabv2-resnet18", "--pretrained", "none", "--epochs", "3",
            "--batch-size", "5", "--crop-size", "32", "--lr", "1e-3", "--scale-schedule", "2:1",
            "--loss", "balanced-ls-ce", "--workers", "0", "--no-progress"]
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 2 and "already holds a training run (last.pt); pass --resume" in res.output
    res = CliRunner().invoke(cli, [str(a) for a in args] + ["--epochs", "5", "--resume"])
    assert res.exit_code == 2 and "was trained with other settings (--epochs differ)" in res.output
    res = CliRunner().invoke(cli, [str(a) for a in args] + ["--resume"])
    assert res.exit_code == 0, res.output
    a = torch.load(straight / "model.pt", weights_only=True)["model"]
    b = torch.load(resumed / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["loss"] for r in read_log(straight)] == [r["loss"] for r in read_log(resumed)]


def test_ctrl_c_abandons_the_step_in_progress_and_resume_continues_exactly(tiny, tmp_path, monkeypatch):
    """Ctrl-C while a step computes stops at once: the step is dropped (weights, buffers and RNG as after the step
    before), the checkpoint holds the last finished step, and the resumed run is the straight one."""
    import os
    import signal

    straight = tmp_path / "straight"
    train_segmentation(config(tiny, straight, epochs=2, val_list=str(tiny["list"]), gt=str(tiny["masks"])))
    calls = {"n": 0}
    real_step = train_module.train_step

    def ctrl_c_in_second_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the last step of epoch 1: Ctrl-C arrives while it computes
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", ctrl_c_in_second_step)
    resumed = tmp_path / "resumed"
    run = config(tiny, resumed, epochs=2, val_list=str(tiny["list"]), gt=str(tiny["masks"]))
    with pytest.raises(Interrupted, match=r"interrupted at epoch 1, step 1; .*last.pt saved, rerun with --resume"):
        train_segmentation(run)
    assert calls["n"] == 2 and not (resumed / "log.csv").exists()  # the second step was dropped, nothing validated
    monkeypatch.setattr(train_module, "train_step", real_step)
    train_segmentation(SegTrainConfig(**{**run.__dict__, "resume": True}))
    a = torch.load(straight / "model.pt", weights_only=True)["model"]
    b = torch.load(resumed / "model.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [{k: r[k] for k in r if k != "seconds"} for r in read_log(straight)] == \
           [{k: r[k] for k in r if k != "seconds"} for r in read_log(resumed)]


def same_weights(a, b) -> None:
    wa = torch.load(a / "model.pt", weights_only=True)["model"]
    wb = torch.load(b / "model.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_a_second_ctrl_c_in_a_step_still_saves_a_consistent_checkpoint(tiny, tmp_path, monkeypatch):
    """Two Ctrl-C right after the optimizer step: the step's position update must still happen before the save,
    or the resumed run would take that step twice."""
    import os
    import signal

    straight = tmp_path / "straight"
    train_segmentation(config(tiny, straight, epochs=2))
    calls = {"n": 0}
    real_step = train_module.train_step

    def two_ctrl_c_after_the_update(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(train_module, "train_step", two_ctrl_c_after_the_update)
    resumed = tmp_path / "resumed"
    run = config(tiny, resumed, epochs=2)
    with pytest.raises(Interrupted, match=r"interrupted at epoch 2, step 1; .*last.pt saved"):
        train_segmentation(run)
    saved = torch.load(resumed / "last.pt", weights_only=True)
    assert (saved["position"]["epoch"], saved["position"]["batch"]) == (1, 1)
    monkeypatch.setattr(train_module, "train_step", real_step)
    train_segmentation(SegTrainConfig(**{**run.__dict__, "resume": True}))
    same_weights(straight, resumed)
    assert [r["loss"] for r in read_log(straight)] == [r["loss"] for r in read_log(resumed)]


def test_ctrl_c_during_validation_stops_at_once_and_resume_validates_that_epoch(tiny, tmp_path, monkeypatch):
    import os
    import signal

    val = dict(val_list=str(tiny["list"]), gt=str(tiny["masks"]))
    straight = tmp_path / "straight"
    train_segmentation(config(tiny, straight, epochs=3, **val))
    real = train_module.validation_confusion
    calls = {"n": 0}

    def ctrl_c_in_first_validation(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "validation_confusion", ctrl_c_in_first_validation)
    resumed = tmp_path / "resumed"
    run = config(tiny, resumed, epochs=3, **val)
    with pytest.raises(Interrupted, match=r"interrupted at epoch 1, step 2; .*last.pt saved, rerun with --resume"):
        train_segmentation(run)
    assert calls["n"] == 1 and not (resumed / "log.csv").exists()  # epoch 1 trained, its validation not finished
    monkeypatch.setattr(train_module, "validation_confusion", real)
    train_segmentation(SegTrainConfig(**{**run.__dict__, "resume": True}))
    same_weights(straight, resumed)
    assert [r["val_miou"] for r in read_log(straight)] == [r["val_miou"] for r in read_log(resumed)]


def test_resume_refuses_another_training_list_of_the_same_length(tiny, tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("\n".join(tiny["ids"][:5]) + "\n")
    second.write_text("\n".join(tiny["ids"][5:]) + "\n")
    out = tmp_path / "run"
    with pytest.raises(OrandError):  # nothing to resume yet
        train_segmentation(config(tiny, out, train_list=str(first), epochs=2, resume=True))
    train_segmentation(config(tiny, out, train_list=str(first), epochs=1))
    with pytest.raises(OrandError) as info:
        train_segmentation(config(tiny, out, train_list=str(second), epochs=1, resume=True))
    assert str(info.value) == (f"--resume: {out / 'last.pt'} was trained with other settings (train_ids differ); "
                               f"use the original options or a new --out")


def test_damaged_checkpoints_are_one_line_errors_naming_the_file(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run = config(tiny, out, epochs=1)
    train_segmentation(run)
    good = torch.load(out / "last.pt", weights_only=True)
    for damage in ({"optimizer": {"state": {}, "param_groups": []}}, {"model": {"head.weight": torch.zeros(1)}},
                   {"rng": {"torch": torch.zeros(3)}}):
        torch.save({**good, **damage}, out / "last.pt")
        with pytest.raises(OrandError) as info:
            train_segmentation(SegTrainConfig(**{**run.__dict__, "resume": True}))
        text = str(info.value)
        assert text.startswith(f"--resume: {out / 'last.pt'}: damaged train-seg checkpoint (") and \
            len(text.splitlines()) == 1, damage
        assert text.endswith("); start a new --out")

    from orand_addon.segment.infer import load_segmenter

    for bad, reason in ((dict(good["meta"], model=None), "unknown model 'None'"),
                        ({k: v for k, v in good["meta"].items() if k != "model"}, "its meta has no valid model")):
        torch.save({**good, "meta": bad}, tmp_path / "bad.pt")
        with pytest.raises(OrandError) as info:
            load_segmenter(tmp_path / "bad.pt", torch.device("cpu"))
        assert str(info.value).startswith(f"{tmp_path / 'bad.pt'}: ") and reason in str(info.value)
    torch.save({**good, "meta": dict(good["meta"], num_classes=5)}, tmp_path / "bad.pt")
    res = CliRunner().invoke(cli, ["segment", "--checkpoint", str(tmp_path / "bad.pt"), "--images",
                                   str(tiny["images"]), "--ids", str(tiny["list"]), "--out", str(tmp_path / "seg")])
    assert res.exit_code == 2
    assert res.output.startswith(f"orand-addon: error: {tmp_path / 'bad.pt'}: the weights do not fit a "
                                 f"deeplabv2-resnet18 with 5 classes (Error(s) in loading state_dict")
    assert len(res.output.splitlines()) == 1


def test_checkpoints_keep_the_gpu_rng_states_when_cuda_is_in_use(tmp_path, monkeypatch):
    from orand_addon.segment.state import save_state

    gpu_states = [torch.tensor([7, 7], dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: gpu_states)
    net = torch.nn.Linear(2, 2)
    save_state(tmp_path / "last.pt", net, torch.optim.SGD(net.parameters(), lr=0.1), None, {"epoch": 0, "batch": 1},
               {}, {})
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["rng"]
    assert torch.equal(saved["torch"], torch.get_rng_state()) and [t.tolist() for t in saved["cuda"]] == [[7, 7]]


class TestDeepLabResume(ResumeTester):
    module = train_module
    stop_at = 4
    interrupted_message = r"interrupted at epoch 2, step 1; .*last.pt saved, rerun with --resume to continue"

    def train(self, train_inputs, out, resume):
        return train_segmentation(config(train_inputs, out, scale_schedule="2:1", loss="balanced-ls-ce",
                                         resume=resume))

    def weights(self, out):
        return torch.load(out / "model.pt", weights_only=True)["model"]

    def losses(self, out):
        return [float(r["loss"]) for r in read_log(out)]

    def check_interrupted(self, train_inputs, out):
        saved = torch.load(out / "last.pt", weights_only=True)
        assert (saved["position"]["epoch"], saved["position"]["batch"]) == (1, 1)


@pytest.fixture(scope="module")
def train_inputs(tiny):
    return tiny

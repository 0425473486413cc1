"""`orand-addon train`: the loss falls, single-class images count under the new loss, checkpoints resume exactly
(after Ctrl-C, after a crash, with DataLoader workers), a full disk keeps the previous checkpoint, bad input is one line.

Tiny maps (VOC-mini shrunk 8x) and a VGG16 FCN with 1/8 of the channels, so each run takes about a second.
"""

from __future__ import annotations

import errno
import os
import signal

import numpy as np
import pytest
import torch

from helpers.testers import ResumeTester
from helpers import add_empty_image, make_tiny_store, reference_bg_softmax, reference_official, run, voc_mini_ids
from helpers import one_torch_thread  # noqa: F401 (fixtures)
from orand_addon.orandnet import train as train_module
from orand_addon.orandnet.data import OrAndMaps
from orand_addon.orandnet.losses import get_loss
from orand_addon.orandnet.model import build_model, load_orandnet
from orand_addon.orandnet.train import TrainConfig, make_optimizer, train_orandnet, train_step
from orand_addon.runtime.seeding import seed_everything
from orand_addon.store.store import Store

MULTI = "2011_000006"  # 3 classes
SINGLE = "2007_000033"  # 1 class
TINY = dict(pretrained="none", width_div=8, progress=False)
TINY_ARGS = ["--pretrained", "none", "--width-div", "8", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = make_tiny_store(tmp_path_factory.mktemp("train"))
    add_empty_image(path)
    return path


def eval_loss(model: torch.nn.Module, store, image_id: str, reference) -> float:
    """The loss of ``model`` (eval mode: no dropout) on one image, by the independent float64 reference."""
    with Store(store) as s:
        x, _ = s.read_maps("or", image_id)
        y, _ = s.read_maps("and", image_id)
    with torch.no_grad():
        scores = model.eval()(torch.from_numpy(x)[:, None])[:, 0].double().numpy()
    return reference(scores, y.astype(np.float64))


@pytest.mark.parametrize("loss,reference", [("official", reference_official), ("bg-softmax", reference_bg_softmax)])
def test_a_few_iterations_lower_the_loss(store, tmp_path, loss, reference):
    config = TrainConfig(iterations=8, lr=0.05, momentum=0.9, weight_decay=0, loss=loss, ids=(MULTI,), arch="fcn8s-same", **TINY)
    ckpt = train_orandnet(store, tmp_path / "run", config, echo=lambda _: None)
    seed_everything(config.seed)
    before = eval_loss(build_model("fcn8s-same", 8), store, MULTI, reference)
    after = eval_loss(load_orandnet(ckpt)[0], store, MULTI, reference)
    assert after < 0.9 * before, (before, after)


@pytest.mark.parametrize("loss,moves", [("official", False), ("bg-softmax", True), ("bce", True)])
def test_single_class_images_move_the_weights_only_under_a_new_loss(store, loss, moves):
    torch.manual_seed(0)
    model = build_model("fcn8s-same", 8).train()
    optimizer = make_optimizer(model, TrainConfig(momentum=0, weight_decay=0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = OrAndMaps(store, [SINGLE])[0]
    assert batch["input"].shape[0] == 1
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    train_step(model, optimizer, scaler, batch, get_loss(loss), 0.01, torch.device("cpu"), "fp32")
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert bool(changed) == moves, changed


def interrupt_after(monkeypatch, n: int, how: str) -> None:
    """Make the n-th training step end with Ctrl-C (SIGINT to this process) or a crash."""
    calls = {"n": 0}
    original = train_module.train_step

    def step(*args, **kwargs):
        loss = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            if how == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise RuntimeError("simulated crash")
        return loss

    monkeypatch.setattr(train_module, "train_step", step)


def assert_same_state(a, b):
    """Two checkpoints hold the same run: iteration, losses, weights, and the momentum where both keep it
    (``last.pt``; a finished run's ``model.pt`` has no optimizer state)."""
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert ca["iteration"] == cb["iteration"]
    assert ca["history"] == cb["history"]
    for key, value in ca["model"].items():
        assert torch.equal(value, cb["model"][key]), key
    if "optimizer" in ca or "optimizer" in cb:
        mom_a = [s["momentum_buffer"] for s in ca["optimizer"]["state"].values()]
        mom_b = [s["momentum_buffer"] for s in cb["optimizer"]["state"].values()]
        assert all(torch.equal(x, y) for x, y in zip(mom_a, mom_b)) and len(mom_a) == len(mom_b) > 0


def test_ctrl_c_saves_and_resume_continues_exactly(store, tmp_path, monkeypatch):
    common = ["train", "--store", store, "--iterations", 6, "--lr", 0.01, "--momentum", 0.9, "--loss", "bg-softmax",
              *TINY_ARGS]  # momentum: the resumed run must continue its buffers too
    res = run(*common, "--out", tmp_path / "straight")
    assert res.exit_code == 0, res.output
    assert "skipped 1 images with no classes (nothing to learn): 2099_000001" in res.output
    with monkeypatch.context() as m:
        interrupt_after(m, 3, "sigint")
        res = run(*common, "--out", tmp_path / "cut")
    assert res.exit_code == 130
    assert (f"orand-addon: error: interrupted at iteration 3 of 6; saved {tmp_path / 'cut' / 'last.pt'}; continue "
            f"with the same command and --resume") in res.output
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["iteration"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    res = run(*common, "--out", tmp_path / "cut", "--resume", "--workers", 2)
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output and "at iteration 3 of 6" in res.output
    assert_same_state(tmp_path / "straight" / "model.pt", tmp_path / "cut" / "model.pt")
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["model.pt", "train_log.json"]


def test_periodic_checkpoint_survives_a_crash(store, tmp_path, monkeypatch):
    config = TrainConfig(iterations=6, lr=0.01, momentum=0.9, checkpoint_every=2, loss="bg-softmax", **TINY)
    train_orandnet(store, tmp_path / "straight", config, echo=lambda _: None)
    with monkeypatch.context() as m:
        interrupt_after(m, 5, "crash")
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_orandnet(store, tmp_path / "crash", config, echo=lambda _: None)
    assert torch.load(tmp_path / "crash" / "last.pt", weights_only=True)["iteration"] == 4
    train_orandnet(store, tmp_path / "crash", config, resume=True, echo=lambda _: None)
    assert_same_state(tmp_path / "straight" / "model.pt", tmp_path / "crash" / "model.pt")


def test_full_disk_keeps_the_previous_checkpoint(store, tmp_path, monkeypatch):
    saves = {"n": 0}
    real_save = torch.save

    def save(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    res = run("train", "--store", store, "--out", out, "--iterations", 4, "--checkpoint-every", 2, *TINY_ARGS)
    assert res.exit_code == 2
    assert res.output.strip().endswith(f"orand-addon: error: {out / 'model.pt'}: writing the checkpoint failed "
                                       f"(No space left on device); the previous file is unchanged")
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 2  # the resumable state stays
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "train_log.json"]


def test_bad_input_gives_one_line(store, tmp_path, monkeypatch):
    no_and = make_tiny_store(tmp_path / "noand", ids=voc_mini_ids()[:1], kinds="or")
    res = run("train", "--store", no_and, "--out", tmp_path / "r0", *TINY_ARGS)
    assert res.exit_code == 2
    assert res.output == f"orand-addon: error: {no_and}: no /and maps (has: or); fuse with --kinds or,and first\n"
    out = tmp_path / "r1"
    res = run("train", "--store", store, "--out", out, "--resume", *TINY_ARGS)
    assert res.output == f"orand-addon: error: {out / 'last.pt'}: no checkpoint to resume (run without --resume to start)\n"
    assert run("train", "--store", store, "--out", out, "--iterations", 1, *TINY_ARGS).exit_code == 0
    res = run("train", "--store", store, "--out", out, "--iterations", 1, *TINY_ARGS)
    assert res.output == (f"orand-addon: error: {out / 'model.pt'} exists; pass --resume to continue that run or "
                          f"choose another --out\n")
    res = run("train", "--store", store, "--out", out, "--iterations", 1, "--lr", 0.5, "--resume", *TINY_ARGS)
    assert res.output.splitlines()[-1] == (f"orand-addon: error: {out / 'model.pt'}: was trained with other settings "
                                           f"(lr 0.001 -> 0.5); resume with the same options or start a new --out")
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "last.pt").write_bytes(b"\x00not a checkpoint")
    res = run("train", "--store", store, "--out", tmp_path / "r2", "--resume", *TINY_ARGS)
    assert res.exit_code == 2
    assert res.output.startswith(f"orand-addon: error: {tmp_path / 'r2' / 'last.pt'}: corrupt or unreadable checkpoint")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    res = run("train", "--store", store, "--out", tmp_path / "r3", "--no-progress", "--device", "cpu")
    assert res.exit_code == 2
    assert res.output.startswith("orand-addon: error: no ImageNet vgg16 weights: vgg16-397923af.pth is not in "
                                 f"{tmp_path / 'empty_hub' / 'hub' / 'checkpoints'} and downloads are off")
    res = run("train", "--store", store, "--out", tmp_path / "r4", "--iterations", 0, *TINY_ARGS)
    assert res.output == "orand-addon: error: --iterations must be at least 1, got 0\n"
    assert len(res.output.splitlines()) == 1


def test_help_has_examples_and_lists_every_loss_and_arch():
    res = run("train", "--help")
    assert res.exit_code == 0
    assert "orand-addon train --store fused.h5 --out runs/orandnet --resume" in res.output
    assert "bg-softmax" in res.output and "--checkpoint-every" in res.output


class TestOrandnetResume(ResumeTester):
    module = train_module
    stop_at = 3
    interrupted_message = r"interrupted at iteration 2 of 5; saved .*last.pt; continue with the same command and --resume"

    def train(self, train_inputs, out, resume):
        config = TrainConfig(iterations=5, lr=0.01, loss="bg-softmax", checkpoint_every=100, **TINY)
        return train_orandnet(train_inputs, out, config, resume=resume, echo=lambda _: None)

    def weights(self, out):
        return torch.load(out / "model.pt", weights_only=True)["model"]

    def losses(self, out):
        return torch.load(out / "model.pt", weights_only=True)["history"]

    def check_interrupted(self, train_inputs, out):
        assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 2


@pytest.fixture(scope="module")
def train_inputs(store):
    return store

"""`train-seg` under torchrun (2-process gloo jobs on the loopback, tiny real VOC images, the lightest model): the DDP
run takes the steps of one process with the same global batch (weights, logged losses, validation), rank 0 alone
writes the run folder, Ctrl-C on one rank stops every rank after the same step and one process resumes the
checkpoint exactly; the global batch must divide among the processes and is checked on resume.

The CPU has no SyncBatchNorm, so these runs freeze BatchNorm (``--bn frozen``): the equivalence that holds on the
CPU (on GPUs, SyncBatchNorm makes trained BatchNorm equivalent too).

The hooks: tests/helpers/hooks.py.
"""

from __future__ import annotations

import csv
from pathlib import Path
import json

import numpy as np
import pytest
import torch

from helpers.hooks import HOOK
from helpers import run, tiny_voc, torchrun
from helpers import one_process_env, one_torch_thread  # noqa: F401 (fixtures)
from orand_addon.segment.models import build_model

# 8 images, global batch 4: 2 steps per epoch; epoch 1 at 1/2 scale; class-balanced loss (class counts of all ranks)
ARGS = ["--model", "deeplabv2-resnet18-os16", "--pretrained", "none", "--bn", "frozen", "--epochs", 2,
        "--batch-size", 4, "--crop-size", 32, "--scale-schedule", "2:1", "--loss", "balanced-ls-ce", "--lr", 1e-3,
        "--device", "cpu", "--workers", 0, "--no-progress"]


def train_args(tiny: dict, out: Path, *extra) -> list:
    return ["train-seg", "--images", tiny["images"], "--masks", tiny["store"], "--train-list", tiny["list"],
            "--val-list", tiny["list"], "--gt", tiny["masks"], "--out", out, *ARGS, *extra]


def read_log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv") as fh:
        return list(csv.DictReader(fh))


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def assert_same_training(run_dir: Path, reference: Path) -> None:
    """Same weights and logged losses within float32 rounding, the same validation (argmax of those weights)."""
    a, b = weights(run_dir / "model.pt"), weights(reference / "model.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7, msg=key)
    rows, ref = read_log(run_dir), read_log(reference)
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref] == ["1", "2"]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], [float(r["loss"]) for r in ref], rtol=1e-5)
    np.testing.assert_allclose([float(r["val_miou"]) for r in rows], [float(r["val_miou"]) for r in ref], atol=1e-3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    return tiny_voc(tmp_path_factory.mktemp("tiny"), side=40, n=8)


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory) -> Path:
    """The one-process run with the same global batch."""
    out = tmp_path_factory.mktemp("one") / "run"
    res = run(*train_args(tiny, out))
    assert res.exit_code == 0, res.output
    return out


def test_ddp_training_takes_the_steps_of_one_process_with_the_same_global_batch(tiny, reference, tmp_path):
    out = tmp_path / "ddp"
    res = torchrun("-m", "orand_addon", *train_args(tiny, out))
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    assert res.stdout.count(f"wrote {out / 'model.pt'}") == 1  # rank 0 only
    log = (out / "train.log").read_text().splitlines()
    assert log[0] == "training on 2 processes, 2 images each per step (global batch 4)"
    assert [line for line in log if line.startswith("epoch 1: loss")] == [log[2]]  # logged once
    assert json.loads((out / "config.json").read_text())["processes"] == 2
    assert sorted(p.name for p in out.iterdir() if p.name != "tb") == ["config.json", "last.pt", "log.csv",
                                                                        "model.pt", "train.log"]
    assert_same_training(out, reference)
    torch.manual_seed(0)  # the trainer's initial weights: training moved them far beyond the tolerance
    start = build_model("deeplabv2-resnet18-os16", 21, "none", "frozen").state_dict()
    moved = weights(out / "model.pt")
    assert max(float((moved[k] - start[k]).abs().max()) for k in start if start[k].is_floating_point()) > 1e-3


def test_ctrl_c_on_one_rank_stops_all_after_the_same_step_and_one_process_resumes(tiny, reference, tmp_path):
    out = tmp_path / "ddp"
    res = torchrun(HOOK, *train_args(tiny, out), env={"STOP_RANK": "1", "STOP_AFTER": "3", "STOP_MODULE": "orand_addon.segment.train"})
    assert res.returncode != 0
    assert f"interrupted at epoch 2, step 1; {out / 'last.pt'} saved, rerun with --resume" in res.stderr
    saved = torch.load(out / "last.pt", weights_only=True)
    assert (saved["position"]["epoch"], saved["position"]["batch"]) == (1, 1)
    assert saved["run"]["batch_size"] == 4 and not (out / "model.pt").exists()
    assert len(read_log(out)) == 1
    res = run(*train_args(tiny, out, "--resume"))  # one process continues the 2-rank run: the same global batch
    assert res.exit_code == 0, res.output
    assert_same_training(out, reference)


def test_global_batch_must_divide_among_the_processes_and_is_kept_on_resume(tiny, reference, tmp_path,
                                                                             monkeypatch):
    with monkeypatch.context() as m:
        m.setenv("WORLD_SIZE", "2")
        m.setenv("RANK", "0")
        res = run(*train_args(tiny, tmp_path / "x"), "--batch-size", 5)
    assert res.exit_code == 2
    assert res.output == ("orand-addon: error: --batch-size 5 is the global batch and must be a multiple of the 2 "
                          "processes (WORLD_SIZE=2); use --batch-size 4 or 6\n")
    res = run(*train_args(tiny, reference, "--resume"), "--batch-size", 2)
    assert res.exit_code == 2
    assert res.output.splitlines()[-1] == (
        f"orand-addon: error: --resume: {reference / 'last.pt'} was trained with a global batch of 4 images per "
        f"step, this run takes 2 (--batch-size is the global batch, whatever the number of processes); resume with "
        f"--batch-size 4")

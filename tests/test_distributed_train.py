"""`orand-addon train` under torchrun (2 processes, gloo on the loopback): DDP takes the same steps as one process
on the same global batch. The reference is written out here: one process, gradient of the mean loss over the
global batch's images (the seeded order and per-sample dropout seeds derived again from their definitions).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import make_tiny_store, run, torchrun
from helpers import one_torch_thread  # noqa: F401 (fixtures)
from test_orandnet_train import interrupt_after
from orand_addon.orandnet.losses import get_loss
from orand_addon.orandnet.model import build_model
from orand_addon.orandnet.train import TrainConfig, train_orandnet
from orand_addon.store.store import Store

SETTINGS = dict(iterations=3, lr=0.01, momentum=0.9, weight_decay=5e-4, power=0.9, loss="bg-softmax", seed=0,
                arch="fcn8s-same", width_div=8)
ARGS = ["--iterations", 3, "--lr", 0.01, "--momentum", 0.9, "--weight-decay", 5e-4, "--loss", "bg-softmax",
        "--arch", "fcn8s-same", "--pretrained", "none",
        "--width-div", 8, "--device", "cpu", "--no-progress"]


def reference_training(store, global_batch: int, iterations: int, lr: float, momentum: float, weight_decay: float,
                       power: float, loss: str, seed: int, arch: str, width_div: int):
    """Plain SGD on the mean loss of ``global_batch`` images per step; returns ``(state_dict, losses)``."""
    with Store(store) as s:
        ids = [i for i in s.ids("or") if s.map_shape("or", i)[0] > 0]
        maps = {i: (torch.from_numpy(s.read_maps("or", i)[0]), torch.from_numpy(s.read_maps("and", i)[0])) for i in ids}
    torch.manual_seed(seed)
    model = build_model(arch, width_div, "none").train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn, losses, n = get_loss(loss), [], len(ids)
    for step in range(iterations):
        for group in optimizer.param_groups:
            group["lr"] = lr * (1 - step / iterations) ** power
        optimizer.zero_grad()
        total = 0.0
        for j in range(global_batch):
            sample = step * global_batch + j  # the seeded epochs, flattened
            image_id = ids[np.random.default_rng([seed, sample // n]).permutation(n)[sample % n]]
            torch.manual_seed(int(np.random.SeedSequence([seed, sample]).generate_state(1)[0]))  # dropout
            x, y = maps[image_id]
            value = loss_fn(model(x[:, None])[:, 0], y)
            (value / global_batch).backward()
            total += float(value.detach())
        optimizer.step()
        losses.append(total / global_batch)
    return model.state_dict(), losses


def assert_same_training(ckpt: dict, state: dict, losses: list[float]) -> None:
    np.testing.assert_allclose(ckpt["history"], losses, rtol=1e-5)
    for key, value in state.items():
        torch.testing.assert_close(ckpt["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("ddp"))


def test_ddp_steps_equal_one_process_on_the_same_global_batch(store, tmp_path):
    out = tmp_path / "ddp"
    res = torchrun("-m", "orand_addon", "train", "--store", store, "--out", out, *ARGS)
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    assert res.stdout.count(f"wrote {out / 'model.pt'}") == 1  # rank 0 only
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "train_log.json"]
    ddp = torch.load(out / "model.pt", weights_only=True)
    assert (ddp["iteration"], ddp["global_batch"]) == (3, 2)
    assert json.loads((out / "train_log.json").read_text())["losses"] == ddp["history"]

    state, losses = reference_training(store, global_batch=2, **SETTINGS)
    assert_same_training(ddp, state, losses)
    _, batch_of_one = reference_training(store, global_batch=1, **SETTINGS)
    assert not np.allclose(batch_of_one, losses, rtol=1e-3)  # the comparison tells global batches apart

    res = run("train", "--store", store, "--out", tmp_path / "one", "--accumulate", 2, *ARGS)
    assert res.exit_code == 0, res.output
    assert_same_training(torch.load(tmp_path / "one" / "model.pt", weights_only=True), state, losses)


def test_resuming_needs_the_same_global_batch(store, tmp_path):
    out = tmp_path / "run"
    assert run("train", "--store", store, "--out", out, "--accumulate", 2, *ARGS).exit_code == 0
    res = run("train", "--store", store, "--out", out, "--resume", *ARGS)
    assert res.exit_code == 2
    assert res.output.splitlines()[-1] == (f"orand-addon: error: {out / 'model.pt'}: was trained with 2 images per "
                                           f"step, this run takes 1 (ranks x --accumulate); resume with the same "
                                           f"global batch")
    res = run("train", "--store", store, "--out", out, "--resume", "--accumulate", 2, *ARGS)
    assert res.exit_code == 0 and "is already complete (3 of 3 iterations)" in res.output
    res = run("train", "--store", store, "--out", tmp_path / "x", "--accumulate", 0, *ARGS)
    assert res.output == "orand-addon: error: --accumulate must be at least 1, got 0\n"


def test_a_one_process_checkpoint_continues_under_torchrun(store, tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = TrainConfig(accumulate=2, checkpoint_every=1, pretrained="none", device="cpu", progress=False,
                         **SETTINGS)
    with monkeypatch.context() as m:
        interrupt_after(m, 3, "crash")  # the 3rd step dies before its checkpoint
        with pytest.raises(RuntimeError, match="simulated crash"):
            train_orandnet(store, out, config, echo=lambda _: None)
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 2
    res = torchrun("-m", "orand_addon", "train", "--store", store, "--out", out, "--resume", *ARGS)
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    assert res.stderr.count(f"resuming {out / 'last.pt'} at iteration 2 of 3") == 1  # rank 0 only
    assert_same_training(torch.load(out / "model.pt", weights_only=True), *reference_training(store, 2, **SETTINGS))

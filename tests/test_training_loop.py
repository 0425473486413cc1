"""The training scaffold's stop policy and cost line (:mod:`orand_addon.engine.training`), on a real SGD step of a
small convolutional network with BatchNorm and dropout: what Ctrl-C leaves behind at each point of a step."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from orand_addon.engine.training import StepAbandoned, TrainingLoop, cost_line, set_poly_lr
from orand_addon.runtime.distributed import DistInfo

CPU = torch.device("cpu")


def net_and_optimizer():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                              torch.nn.Conv2d(4, 1, 1)).train()
    return net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)


def step(net, optimizer, loop, ctrl_c_at: str | None = None) -> float:
    """One step; SIGINT to this process at ``before`` (forward/backward), ``commit`` or ``after`` (bookkeeping)."""
    with loop.step(net):
        x = torch.rand(2, 1, 8, 8)
        loss = net(x).pow(2).mean()
        if ctrl_c_at == "before":
            os.kill(os.getpid(), signal.SIGINT)
        loss.backward()
        with loop.commit():
            if ctrl_c_at == "commit":
                os.kill(os.getpid(), signal.SIGINT)
            optimizer.step()
            optimizer.zero_grad()
        if ctrl_c_at == "after":
            os.kill(os.getpid(), signal.SIGINT)
        value = float(loss.detach())
    loop.done()
    return value


def snapshot(net, optimizer):
    return ({k: v.clone() for k, v in net.state_dict().items()},
            {k: v["momentum_buffer"].clone() for k, v in optimizer.state_dict()["state"].items()},
            torch.get_rng_state())


def assert_same(a, b):
    for x, y in zip(a[0].values(), b[0].values()):
        assert torch.equal(x, y)
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert torch.equal(a[2], b[2])


def test_ctrl_c_while_a_step_computes_drops_it_and_leaves_the_state_of_the_step_before():
    net, optimizer = net_and_optimizer()
    with TrainingLoop(3, 0, DistInfo(), CPU, "t", show_progress=False) as loop:
        step(net, optimizer, loop)
        before = snapshot(net, optimizer)
        with pytest.raises(StepAbandoned):
            step(net, optimizer, loop, ctrl_c_at="before")
        after = snapshot(net, optimizer)
    assert_same(before, after)  # weights, BatchNorm statistics, momentum and the RNG as after step 1
    assert all(p.grad is None for p in net.parameters())
    with TrainingLoop(3, 1, DistInfo(), CPU, "t", show_progress=False) as loop:
        step(net, optimizer, loop)  # the dropped step, taken again (a resumed run) ...
    resumed = snapshot(net, optimizer)
    net2, optimizer2 = net_and_optimizer()
    with TrainingLoop(3, 0, DistInfo(), CPU, "t", show_progress=False) as loop:
        step(net2, optimizer2, loop)
        step(net2, optimizer2, loop)
    assert_same(resumed, snapshot(net2, optimizer2))  # ... is the uninterrupted step 2, RNG included


@pytest.mark.parametrize("when", ["commit", "after"])
def test_ctrl_c_during_or_after_the_update_finishes_the_step_and_stops_after_it(when):
    net, optimizer = net_and_optimizer()
    with TrainingLoop(3, 0, DistInfo(), CPU, "t", show_progress=False) as loop:
        before = snapshot(net, optimizer)
        step(net, optimizer, loop, ctrl_c_at=when)
        assert loop.stopping()
    assert not torch.equal(before[0]["0.weight"], net.state_dict()["0.weight"])  # the update happened


def test_ctrl_c_between_steps_stops_at_once():
    net, optimizer = net_and_optimizer()
    with TrainingLoop(3, 0, DistInfo(), CPU, "t", show_progress=False) as loop:
        step(net, optimizer, loop)
        with pytest.raises(KeyboardInterrupt) as info:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        assert not isinstance(info.value, StepAbandoned)


def test_under_torchrun_every_step_runs_to_its_end():
    net, optimizer = net_and_optimizer()
    with TrainingLoop(3, 0, DistInfo(0, 1), CPU, "t", show_progress=False) as loop:
        loop.info = DistInfo(0, 2)  # as a rank of two (no process group: any_rank falls back to this rank)
        step(net, optimizer, loop, ctrl_c_at="before")
        assert loop.requested


def test_the_cost_line_is_printed_once_after_the_timed_steps():
    lines = []
    net, optimizer = net_and_optimizer()
    with TrainingLoop(10, 0, DistInfo(), CPU, "train", show_progress=False, echo=lines.append, unit="iteration",
                      cost_after=2) as loop:
        for _ in range(4):
            step(net, optimizer, loop)
    assert len(lines) == 1
    assert lines[0].startswith("train: 8 iterations left at ") and lines[0].endswith(
        " (Ctrl-C saves a checkpoint; the same command with --resume continues)")
    assert cost_line("x", 100, [1.0, 2.0, 4.0]) .startswith("x: 100 steps left at 2.33 s each on cpu: about 3 min 53 s")


def test_poly_lr_per_group():
    params = [torch.zeros(1, requires_grad=True) for _ in range(2)]
    opt = torch.optim.SGD([{"params": [params[0]], "initial_lr": 0.01},
                           {"params": [params[1]], "initial_lr": 0.01, "lr_mult": 10.0}], lr=0.01)
    assert set_poly_lr(opt, 0, 10, 0.9) == pytest.approx(0.01)
    set_poly_lr(opt, 5, 10, 0.9)
    assert opt.param_groups[1]["lr"] == pytest.approx(10 * 0.01 * 0.5 ** 0.9)


def test_the_cost_line_stands_on_its_own_line_above_the_progress_bar(capsys):
    """With a progress bar on stderr the cost line is not glued to the bar: the bar steps aside and is drawn again.
    A run whose steps are all timed before the line would come says nothing (no '0 steps left')."""
    import sys

    net, optimizer = net_and_optimizer()
    with TrainingLoop(5, 0, DistInfo(), CPU, "train", show_progress=True,
                      echo=lambda line: print(line, file=sys.stderr), unit="iteration") as loop:
        for _ in range(3):
            step(net, optimizer, loop)
    err = capsys.readouterr().err
    line = next(x for x in err.replace("\r", "\n").splitlines() if "left at" in x)
    assert line.startswith("train: 3 iterations left at "), err
    lines = []
    with TrainingLoop(2, 0, DistInfo(), CPU, "train", show_progress=False, echo=lines.append) as loop:
        for _ in range(2):
            step(net, optimizer, loop)
    assert lines == []

"""Scenarios every stage of a kind must pass, written once (in the style of torchmetrics' ``MetricTester``): a
stage's test is a short subclass that names its command and groups, and adds its own checks in the hooks.

* :class:`KilledRankTester`: a sharded per-image stage under torchrun with one rank killed (SIGKILL) mid-run.
* :class:`ResumeTester`: a training loop interrupted by Ctrl-C and resumed equals the uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from orand_addon.store.shards import shard_path

from .cli import run
from .hooks import HOOK
from .stores import assert_same_store, complete_ids, shard_complete, written
from .torchrun import torchrun


@dataclass
class KilledRun:
    """What a :class:`KilledRankTester` scenario saw, for a subclass's own checks."""

    one: Path                      # the one-process store (the reference)
    sharded: Path                  # the store the ranks shard
    shards: list[Path]
    logs: list[Path]               # write logs of the killed run and of the rerun
    ids: set[str]                  # ids the one-process run wrote
    after_kill: dict[str, list[set[str]]] = field(default_factory=dict)  # group -> per-rank ids after the kill
    final: dict[str, list[set[str]]] = field(default_factory=dict)       # group -> per-rank ids after the rerun
    killed: Any = None             # the CompletedProcess of the killed torchrun job
    rerun: Any = None              # the CompletedProcess of the rerun


class KilledRankTester:
    """torchrun (2 ranks, gloo on the loopback) with rank 1 killed after ``kill_after`` writes to ``kill_kind``: its
    shard is left unfinished and the merge refuses it; the rerun of the same command redoes exactly the ids missing
    from the shards (each written once over both runs); the merge then joins the shards into the store of the
    one-process run, dataset for dataset.

    A subclass sets :attr:`groups`, :attr:`kill_kind`, :attr:`kill_after`, implements :meth:`command` (the command
    without its store option) and :meth:`input_store`, and may add checks in :meth:`check_killed` and
    :meth:`check_rerun`. The fixture ``stage_inputs`` (the subclass's module defines it) is passed to them.
    """

    groups: tuple[str, ...] = ()
    kill_kind: str = ""
    kill_after: int = 2
    store_option: str = "--store"
    ignore: tuple[str, ...] = ("command",)

    def command(self, stage_inputs: Any, tmp: Path, role: str) -> list:
        """The stage's command line without the store option; ``role``: ``one`` or ``sharded``."""
        raise NotImplementedError

    def input_store(self, stage_inputs: Any) -> Path:
        """The store the stage reads (copied for the one-process run and for the sharded one)."""
        raise NotImplementedError

    def check_killed(self, stage_inputs: Any, scenario: KilledRun) -> None:
        """Extra checks after the kill (the shards as the killed job left them)."""

    def check_rerun(self, stage_inputs: Any, scenario: KilledRun) -> None:
        """Extra checks after the rerun, before the merge."""

    def test_killed_rank_reruns_only_its_missing_ids_and_merges_to_the_one_process_store(self, stage_inputs,
                                                                                           tmp_path):
        one, sharded = tmp_path / "one.h5", tmp_path / "sharded.h5"
        shutil.copy(self.input_store(stage_inputs), one)
        shutil.copy(self.input_store(stage_inputs), sharded)
        res = run(*self.command(stage_inputs, tmp_path, "one"), self.store_option, one)
        assert res.exit_code == 0, res.output
        scenario = KilledRun(one, sharded, [shard_path(sharded, r, 2) for r in range(2)],
                             [tmp_path / "log1", tmp_path / "log2"], complete_ids(one, list(self.groups)))
        for log in scenario.logs:
            log.mkdir()
        args = [*self.command(stage_inputs, tmp_path, "sharded"), self.store_option, sharded]

        scenario.killed = torchrun(HOOK, *args, env={"WRITE_LOG": str(scenario.logs[0]), "KILL_RANK": "1",
                                                     "KILL_AFTER": str(self.kill_after), "KILL_KIND": self.kill_kind})
        assert scenario.killed.returncode != 0
        scenario.after_kill = {g: [complete_ids(p, [g]) for p in scenario.shards] for g in self.groups}
        assert scenario.shards[1].exists() and not shard_complete(scenario.shards[1])
        merged = run("merge", "--from-shards", sharded, "--no-progress")
        # torchrun stops rank 0 too: merge names the first unfinished shard it finds (or rank 0's, never opened)
        assert merged.exit_code == 2, merged.output
        assert (": incomplete shard (rank " in merged.output
                or f"shard 0 of 2 ({scenario.shards[0].name}) is missing" in merged.output), merged.output
        self.check_killed(stage_inputs, scenario)

        scenario.rerun = torchrun(HOOK, *args, env={"WRITE_LOG": str(scenario.logs[1])})
        assert scenario.rerun.returncode == 0, scenario.rerun.stdout + scenario.rerun.stderr[-4000:]
        assert all(shard_complete(p) for p in scenario.shards)
        for group in self.groups:
            final = scenario.final[group] = [complete_ids(p, [group]) for p in scenario.shards]
            assert final[0] | final[1] == scenario.ids and not final[0] & final[1], group
            for r in range(2):  # the rerun wrote exactly what was missing, nothing twice
                assert sorted(written(scenario.logs[1], r, group)) == \
                    sorted(final[r] - scenario.after_kill[group][r]), (group, r)
        self.check_rerun(stage_inputs, scenario)

        merged = run("merge", "--from-shards", sharded, "--no-progress")
        assert merged.exit_code == 0, merged.output
        for group in self.groups:
            assert f"/{group}: copied {len(scenario.ids)} ids (0 already there)" in merged.output
        assert_same_store(one, sharded, ignore=self.ignore)


class ResumeTester:
    """Ctrl-C during step ``stop_at`` of a training run drops that step, saves the last finished one and exits with
    :class:`~orand_addon.errors.Interrupted`; the resumed run ends with exactly the weights (and losses) of the run
    that was never interrupted.

    A subclass implements :meth:`train` (one run in ``out``; ``resume`` continues it), :meth:`weights` (the final
    weights of a run folder) and names :attr:`module` (whose ``train_step`` the test interrupts), and may add checks
    in :meth:`check_interrupted`. The fixture ``train_inputs`` (the subclass's module defines it) is passed on.
    """

    module: Any = None
    stop_at: int = 2
    interrupted_message: str = r"interrupted"
    tolerance: float = 0.0  # 0: bit-identical weights and losses

    def train(self, train_inputs: Any, out: Path, resume: bool) -> Any:
        raise NotImplementedError

    def weights(self, out: Path) -> dict:
        raise NotImplementedError

    def losses(self, out: Path) -> list:
        return []

    def check_interrupted(self, train_inputs: Any, out: Path) -> None:
        """Extra checks of the saved state after the interruption."""

    def test_ctrl_c_drops_the_step_in_progress_and_the_resumed_run_equals_the_straight_one(self, train_inputs,
                                                                                           tmp_path, monkeypatch):
        from orand_addon.errors import Interrupted

        straight, resumed = tmp_path / "straight", tmp_path / "resumed"
        self.train(train_inputs, straight, resume=False)
        real, calls = self.module.train_step, [0]

        def ctrl_c_in_a_step(*args, **kwargs):
            calls[0] += 1
            if calls[0] == self.stop_at:  # Ctrl-C arrives while the step computes
                os.kill(os.getpid(), signal.SIGINT)
            return real(*args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(self.module, "train_step", ctrl_c_in_a_step)
            with pytest.raises(Interrupted, match=self.interrupted_message):
                self.train(train_inputs, resumed, resume=False)
        assert calls[0] == self.stop_at
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        self.check_interrupted(train_inputs, resumed)
        self.train(train_inputs, resumed, resume=True)
        a, b = self.weights(straight), self.weights(resumed)
        assert a.keys() == b.keys()
        for key in a:
            if self.tolerance:
                torch.testing.assert_close(a[key], b[key], rtol=self.tolerance, atol=self.tolerance / 10, msg=key)
            else:
                assert a[key].dtype == b[key].dtype and bool((a[key] == b[key]).all()), key
        assert self.losses(straight) == pytest.approx(self.losses(resumed), rel=self.tolerance)

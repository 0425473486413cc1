"""Sharded `predict` under torchrun and a sharded `fuse` rank, each with one rank killed (SIGKILL: no cleanup, the
last write unflushed): the rerun redoes exactly the ids missing from the shards, the merge refuses the unfinished
shard before and joins them after, and the merged store equals the one-process run (the hooks: tests/helpers/hooks.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from helpers import (add_empty_image, assert_same_store, complete_ids, DIST_ENV, make_tiny_store, run, shard_complete,
                     written)
from helpers import one_process_env, one_torch_thread  # noqa: F401 (fixtures)
from helpers.hooks import HOOK
from helpers.testers import KilledRankTester
from orand_addon.runtime.distributed import DistInfo
from orand_addon.store.shards import shard_path
from orand_addon.errors import OrandError
from orand_addon.store.merge import merge_shards
from orand_addon.orandnet.predict import PredictConfig, predict_orandnet
from orand_addon.store.store import Store


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    store = make_tiny_store(root)
    add_empty_image(store)
    res = run("train", "--store", store, "--out", root / "run", "--iterations", 1, "--loss", "bg-softmax",
              "--arch", "fcn8s-same", "--pretrained", "none", "--width-div", 8, "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, res.output
    return root, store, root / "run" / "model.pt"


class TestKilledPredictRank(KilledRankTester):
    groups, kill_kind, kill_after = ("orandnet",), "orandnet", 3

    def input_store(self, stage_inputs):
        return stage_inputs[1]

    def command(self, stage_inputs, tmp, role):
        return ["predict", "--checkpoint", stage_inputs[2], "--device", "cpu", "--no-progress"]

    def check_killed(self, stage_inputs, scenario):
        assert 0 < len(scenario.after_kill["orandnet"][1]) <= 3

    def check_rerun(self, stage_inputs, scenario):
        after, final = scenario.after_kill["orandnet"], scenario.final["orandnet"]
        assert len(after[1]) < len(final[1])  # rank 1 had been killed before it finished
        assert (f"rank 1: {len(after[1])} of its {len(final[1])} images already have /orandnet (skipped)"
                in scenario.rerun.stdout + scenario.rerun.stderr)


@pytest.fixture(scope="module")
def stage_inputs(trained):
    return trained


def test_killed_fuse_rank_reruns_only_its_missing_ids(trained, tmp_path, monkeypatch):
    root, _, _ = trained
    one, sharded = tmp_path / "one.h5", tmp_path / "sharded.h5"
    args = ["fuse", "--cams-a", root / "irn", "--cams-b", root / "mct", "--no-progress"]
    groups = ["or", "and", "mean"]
    assert run(*args, "--out", one).exit_code == 0
    ids = sorted(complete_ids(one, groups))
    rank1 = {k: v for k, v in os.environ.items() if k not in DIST_ENV} | {"RANK": "1", "WORLD_SIZE": "2"}
    logs = [tmp_path / "log1", tmp_path / "log2"]
    for log in logs:
        log.mkdir()
    cmd = [sys.executable, str(HOOK), *map(str, args), "--out", str(sharded)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**rank1, "WRITE_LOG": str(logs[0]), "KILL_RANK": "1", "KILL_AFTER": "2",
                               "KILL_KIND": "or"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    done = complete_ids(shard_path(sharded, 1, 2), groups)  # the 2nd image died between its or and and maps
    assert len(done) < 2 and not shard_complete(shard_path(sharded, 1, 2))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**rank1, "WRITE_LOG": str(logs[1])})
    assert proc.returncode == 0, proc.stderr
    assert sorted(written(logs[1], 1, "or")) == sorted(set(ids[1::2]) - done)  # rank 1 of 2: every other id
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(key, value)
    assert run(*args, "--out", sharded).exit_code == 0
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key)
    assert run("merge", "--from-shards", sharded, "--no-progress").exit_code == 0
    assert_same_store(one, sharded, ignore=("command", "reports"))


def test_ranks_skip_what_the_store_has_and_keep_their_batches(trained, tmp_path):
    _, store, ckpt = trained
    one, sharded = tmp_path / "one.h5", tmp_path / "sharded.h5"
    shutil.copy(store, one)
    with Store(one) as s:
        ids = s.ids("or")
    config = PredictConfig(device="cpu", progress=False, dtype="float32")
    predict_orandnet(one, ckpt, PredictConfig(**{**config.__dict__, "ids": tuple(ids[3:8])}), echo=print)
    shutil.copy(one, sharded)
    predict_orandnet(one, ckpt, config, echo=print)  # one process resumes: the reference
    for rank in range(2):
        predict_orandnet(sharded, ckpt, config, echo=print, dist=DistInfo(rank, 2))
        with Store(shard_path(sharded, rank, 2)) as s:
            assert not set(s.ids("orandnet")) & set(ids[3:8])
    merge_shards(sharded, [shard_path(sharded, r, 2) for r in range(2)], show_progress=False)
    assert_same_store(one, sharded)
    with pytest.raises(OrandError) as err:
        predict_orandnet(sharded, ckpt, PredictConfig(**{**config.__dict__, "batch_size": 2}), dist=DistInfo(0, 2))
    assert str(err.value) == (f"{shard_path(sharded, 0, 2)}: this shard was started with other settings (batch_size "
                              f"4 -> 2); rerun with the same ones, or merge it first (orand-addon merge --incomplete "
                              f"merge) and then rerun")

"""Sharded `predict` under torchrun and a sharded `fuse` rank, each with one rank killed (SIGKILL: no cleanup, the
last write unflushed): the rerun redoes exactly the ids missing from the shards, the merge refuses the unfinished
shard before and joins them after, and the merged store equals the one-process run.

Run as a script (``python tests/test_distributed_shards.py COMMAND ...``, by torchrun or with RANK/WORLD_SIZE set),
this file is the orand-addon CLI with a test hook: every map write of the rank is logged to
``$WRITE_LOG/rank{RANK}.txt``, and rank ``$KILL_RANK`` kills itself right after its ``$KILL_AFTER``-th write of kind
``$KILL_KIND``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

HOOK = Path(__file__).resolve()


def install_hooks() -> None:
    from orand_addon.store.store import Store

    rank = os.environ.get("RANK", "0")
    log = Path(os.environ["WRITE_LOG"]) / f"rank{rank}.txt"
    kill = os.environ.get("KILL_RANK") == rank
    after, kind_to_count = int(os.environ.get("KILL_AFTER", "0")), os.environ.get("KILL_KIND", "")
    original, count = Store.write_maps, [0]

    def write_maps(self, kind, image_id, *args, **kwargs):
        original(self, kind, image_id, *args, **kwargs)
        with open(log, "a") as fh:
            fh.write(f"{kind} {image_id}\n")
        count[0] += kind == kind_to_count
        if kill and count[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)

    Store.write_maps = write_maps


if __name__ == "__main__":
    install_hooks()
    from orand_addon.cli import main

    main(sys.argv[1:])

import h5py  # noqa: E402  (the tests; the hook above stays light)
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from test_distributed import DIST_ENV, assert_same_store, torchrun  # noqa: E402
from helpers import one_torch_thread  # noqa: E402,F401 (fixture)
from test_orandnet_data import add_empty_image, make_tiny_store  # noqa: E402
from orand_addon.cli import cli  # noqa: E402
from orand_addon.runtime.distributed import DistInfo
from orand_addon.store.shards import shard_path  # noqa: E402
from orand_addon.errors import OrandError  # noqa: E402
from orand_addon.store.merge import merge_shards  # noqa: E402
from orand_addon.orandnet.predict import PredictConfig, predict_orandnet  # noqa: E402
from orand_addon.store.store import Store  # noqa: E402


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def written(log_dir: Path, rank: int, kind: str) -> list[str]:
    """Ids of ``kind`` a rank wrote, from the hook's log."""
    log = log_dir / f"rank{rank}.txt"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split(" ", 1)[1] for line in lines if line.split(" ", 1)[0] == kind]


def complete_ids(path: Path, groups: list[str]) -> set[str]:
    if not path.exists():  # a rank torchrun stopped before it opened its shard has written nothing
        return set()
    with Store(path) as s:
        return set.intersection(*[set(s.ids(g)) for g in groups])


def shard_complete(path: Path) -> bool:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["shard"])["complete"]


@pytest.fixture(autouse=True)
def one_process_env(monkeypatch):
    for key in DIST_ENV:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    store = make_tiny_store(root)
    add_empty_image(store)
    res = run("train", "--store", store, "--out", root / "run", "--iterations", 1, "--loss", "bg-softmax",
              "--arch", "fcn8s-same", "--pretrained", "none", "--width-div", 8, "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, res.output
    return root, store, root / "run" / "last.pt"


def test_killed_predict_rank_reruns_only_its_missing_ids_and_merges_to_the_one_process_store(trained, tmp_path):
    _, store, ckpt = trained
    one, sharded = tmp_path / "one.h5", tmp_path / "sharded.h5"
    shutil.copy(store, one)
    shutil.copy(store, sharded)
    args = ["predict", "--checkpoint", ckpt, "--device", "cpu", "--no-progress"]
    assert run(*args, "--store", one).exit_code == 0
    with Store(one) as s:
        ids = s.ids("or")
    shards = [shard_path(sharded, r, 2) for r in range(2)]
    logs = [tmp_path / "log1", tmp_path / "log2"]
    for log in logs:
        log.mkdir()

    res = torchrun(HOOK, *args, "--store", sharded,
                   env={"WRITE_LOG": str(logs[0]), "KILL_RANK": "1", "KILL_AFTER": "3", "KILL_KIND": "orandnet"})
    assert res.returncode != 0
    after_kill = [complete_ids(p, ["orandnet"]) for p in shards]
    assert 0 < len(after_kill[1]) <= 3 and not shard_complete(shards[1])
    res_merge = run("merge", "--from-shards", sharded, "--no-progress")
    # torchrun stops rank 0 too: merge names the first shard it finds unfinished (or rank 0's, never opened)
    assert res_merge.exit_code == 2, res_merge.output
    assert (": incomplete shard (rank " in res_merge.output or
            f"shard 0 of 2 ({shards[0].name}) is missing" in res_merge.output), res_merge.output

    res = torchrun(HOOK, *args, "--store", sharded, env={"WRITE_LOG": str(logs[1])})
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    final = [complete_ids(p, ["orandnet"]) for p in shards]
    assert final[0] | final[1] == set(ids) and not final[0] & final[1] and all(shard_complete(p) for p in shards)
    assert len(after_kill[1]) < len(final[1])  # rank 1 had been killed before it finished
    for r in range(2):  # the rerun wrote exactly what was missing, nothing twice
        assert sorted(written(logs[1], r, "orandnet")) == sorted(final[r] - after_kill[r])
    assert (f"rank 1: {len(after_kill[1])} of its {len(final[1])} images already have /orandnet "
            f"(skipped)") in res.stdout + res.stderr

    res = run("merge", "--from-shards", sharded, "--no-progress")
    assert res.exit_code == 0, res.output
    assert f"/orandnet: copied {len(ids)} ids (0 already there)" in res.output
    assert_same_store(one, sharded, ignore=("command",))


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

"""`orand-addon refine` under torchrun (2 processes, gloo on the loopback): DDP training takes the steps of one
process with the same global batch, and the sharded seeds and walk, with one rank killed and the run repeated,
merge into the store of the one-process run.

Run as a script (``python tests/test_distributed_irn.py COMMAND ...``, by torchrun), this file is the orand-addon CLI
with test hooks: every map and mask write of the rank is logged to ``$WRITE_LOG/rank{RANK}.txt`` as ``GROUP ID``,
rank ``$KILL_RANK`` kills itself (SIGKILL) right after its ``$KILL_AFTER``-th write to group ``$KILL_KIND``, and
rank ``$STOP_RANK`` presses Ctrl-C (SIGINT to itself) during its ``$STOP_AFTER``-th IRN training step.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

HOOK = Path(__file__).resolve()


def install_write_hooks(rank: str) -> None:
    from orand_addon.store.store import Store

    log = Path(os.environ["WRITE_LOG"]) / f"rank{rank}.txt"
    kill = os.environ.get("KILL_RANK") == rank
    after, group_to_count = int(os.environ.get("KILL_AFTER", "0")), os.environ.get("KILL_KIND", "")
    count = [0]

    def logged(write):
        def wrapper(self, group, image_id, *args, **kwargs):
            write(self, group, image_id, *args, **kwargs)
            with open(log, "a") as fh:
                fh.write(f"{group} {image_id}\n")
            count[0] += group == group_to_count
            if kill and count[0] == after:
                os.kill(os.getpid(), signal.SIGKILL)
        return wrapper

    Store.write_maps = logged(Store.write_maps)
    Store.write_mask = logged(Store.write_mask)


def install_ctrl_c_hook(after: int) -> None:
    from orand_addon.refine import train

    real, steps = train.train_step, [0]

    def ctrl_c_step(*args, **kwargs):
        steps[0] += 1
        if steps[0] == after:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    train.train_step = ctrl_c_step


if __name__ == "__main__":
    if "WRITE_LOG" in os.environ:
        install_write_hooks(os.environ.get("RANK", "0"))
    if os.environ.get("STOP_RANK") == os.environ.get("RANK", "0"):
        install_ctrl_c_hook(int(os.environ["STOP_AFTER"]))
    from orand_addon.cli import main

    main(sys.argv[1:])

import shutil  # noqa: E402  (the tests; the hook above stays light)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from helpers import one_torch_thread, voc_mini_ids  # noqa: E402,F401 (fixture)
from test_distributed import assert_same_store, one_process_env, torchrun  # noqa: E402,F401 (fixture)
from test_distributed_shards import complete_ids, shard_complete, written  # noqa: E402
from test_irn_helpers import small_voc, write_store  # noqa: E402
from orand_addon.cli import cli  # noqa: E402
from orand_addon.runtime.distributed import DistInfo  # noqa: E402
from orand_addon.store.shards import shard_path  # noqa: E402
from orand_addon.io.images import save_label_png  # noqa: E402
from orand_addon.refine.network import resnet50_stride16  # noqa: E402
from orand_addon.refine.seed_stage import import_seed_pngs, make_seeds  # noqa: E402
from orand_addon.refine.seeds import CrfParams, SeedOptions  # noqa: E402
from orand_addon.store.merge import merge_shards  # noqa: E402
from orand_addon.runtime.files import load_checkpoint  # noqa: E402
from orand_addon.store.store import Store  # noqa: E402

TRAIN = ["--backbone", "frozen", "--crop-size", 80, "--batch-size", 4, "--max-steps", 2, "--lr", 0.05, "--dp-lr", 0.5,
         "--workers", 0, "--device", "cpu", "--no-progress"]
PER_IMAGE = ["--crf-iterations", 2, "--workers", 1, "--device", "cpu", "--no-progress"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """7 small VOC images (one without classes), their maps as kind ``or``, random ResNet-50 weights, and the
    one-process IRN training (the reference, and the weights of the walk)."""
    root = tmp_path_factory.mktemp("irn_ddp")
    data = small_voc(root / "img", voc_mini_ids()[:7], factor=4)
    empty = sorted(data)[3]
    data[empty] = (np.zeros(0, np.int64), np.zeros((0, *data[empty][1].shape[1:]), np.float32))
    maps = write_store(root / "maps.h5", "or", data)
    with Store(maps, "a") as s:
        s.begin(["or"], "test", {"pseudo": "cams"})  # a group with provenance, as every stage writes
    seeded = root / "seeded.h5"
    shutil.copy(maps, seeded)
    make_seeds(seeded, "or", root / "img", options=SeedOptions(crf=CrfParams(iterations=0)), workers=1,
               progress=False)
    torch.manual_seed(5)
    torch.save(resnet50_stride16().state_dict(), root / "r50.pth")
    res = run("refine", "--store", seeded, "--kind", "or", "--images", root / "img", "--steps", "train", "--run-dir",
              root / "one", "--pretrained", root / "r50.pth", *TRAIN)
    assert res.exit_code == 0, res.output
    return root, maps, seeded


def test_ddp_training_takes_the_steps_of_one_process_with_the_same_global_batch(voc, tmp_path):
    root, _, seeded = voc
    store, out = tmp_path / "s.h5", tmp_path / "ddp"
    shutil.copy(seeded, store)
    res = torchrun("-m", "orand_addon", "refine", "--store", store, "--kind", "or", "--images", root / "img",
                   "--steps", "train,walk", "--run-dir", out, "--pretrained", root / "r50.pth", *TRAIN)
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    assert res.stdout.count(f"weights {out / 'irn.pt'}") == 1  # rank 0 only
    assert sorted(p.name for p in out.iterdir()) == ["irn.pt"]
    ddp, one = load_checkpoint(out / "irn.pt"), load_checkpoint(root / "one" / "irn.pt")
    assert (ddp["step"], ddp["global_batch"], ddp["world_size"]) == (2, 4, 2)
    assert one["world_size"] == 1 and ddp["options"] == one["options"]
    for a, b in zip(ddp["history"], one["history"], strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    assert ddp["model"].keys() == one["model"].keys()
    for key, value in one["model"].items():  # the mean shift's running mean included
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)

    # the walk of the same run waited for rank 0's weights; its shards merge into a one-process walk with them
    reference = tmp_path / "one.h5"
    shutil.copy(seeded, reference)
    assert run("refine", "--store", reference, "--kind", "or", "--images", root / "img", "--steps", "walk",
               "--checkpoint", out / "irn.pt", *TRAIN).exit_code == 0
    assert run("merge", "--from-shards", store, "--no-progress").exit_code == 0
    assert_same_store(reference, store, ignore=("command",))

    # one process continues the run folder of two (same global batch and inputs), and refuses another global batch
    args = ["refine", "--store", store, "--kind", "or", "--images", root / "img", "--steps", "train", "--run-dir",
            out, "--pretrained", root / "r50.pth", *TRAIN]
    assert "already trained (2 steps); skipped" in run(*args).output
    res = run(*args, "--batch-size", 2)
    assert res.exit_code == 2
    assert res.output == (f"orand-addon: error: {out / 'irn.pt'} was trained with other settings (--batch-size "
                          f"differ); use another --run-dir, or --no-resume to train again\n")


def test_ctrl_c_on_one_rank_stops_all_after_the_same_step_and_one_process_resumes(voc, tmp_path):
    root, _, seeded = voc
    out = tmp_path / "ddp"
    args = ["refine", "--store", seeded, "--kind", "or", "--images", root / "img", "--steps", "train", "--run-dir",
            out, "--pretrained", root / "r50.pth", *TRAIN]
    res = torchrun(HOOK, *args, env={"STOP_RANK": "1", "STOP_AFTER": "1"})
    assert res.returncode != 0
    stopped = f"orand-addon: error: IRN training interrupted at step 1/2; saved {out / 'irn_last.pt'}; the same " \
              f"command resumes"
    assert res.stderr.count(stopped) == 2, res.stderr[-4000:]  # both ranks, after the same step
    assert sorted(p.name for p in out.iterdir()) == ["irn_last.pt"]
    saved = load_checkpoint(out / "irn_last.pt")
    assert (saved["step"], saved["world_size"], len(saved["history"])) == (1, 2, 1)

    res = run(*args)  # one process continues the 2-rank run: the same global batch
    assert res.exit_code == 0 and "train: 2 steps" in res.output, res.output
    resumed, one = load_checkpoint(out / "irn.pt"), load_checkpoint(root / "one" / "irn.pt")
    for a, b in zip(resumed["history"], one["history"], strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    for key, value in one["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)


def test_sharded_seeds_and_walk_with_a_killed_rank_merge_into_the_one_process_store(voc, tmp_path):
    root, maps, _ = voc
    weights = root / "one" / "irn.pt"
    args = ["refine", "--kind", "or", "--images", root / "img", "--steps", "seeds,walk", "--checkpoint", weights,
            *PER_IMAGE]
    one, sharded = tmp_path / "one.h5", tmp_path / "sharded.h5"
    shutil.copy(maps, one)
    shutil.copy(maps, sharded)
    res = run(*args, "--store", one)
    assert res.exit_code == 0, res.output
    ids = complete_ids(one, ["seeds", "rw", "masks"])
    shards = [shard_path(sharded, r, 2) for r in range(2)]
    logs = [tmp_path / "log1", tmp_path / "log2"]
    for log in logs:
        log.mkdir()

    res = torchrun(HOOK, *args, "--store", sharded,
                   env={"WRITE_LOG": str(logs[0]), "KILL_RANK": "1", "KILL_AFTER": "2", "KILL_KIND": "rw"})
    assert res.returncode != 0
    seeds_after_kill = [complete_ids(p, ["seeds"]) for p in shards]
    walked_after_kill = [complete_ids(p, ["rw", "masks"]) for p in shards]
    assert seeds_after_kill[1] == set(sorted(ids)[1::2])  # rank 1 had seeded its share, then died in the walk
    assert len(walked_after_kill[1]) == 1 and not shard_complete(shards[1])  # its 2nd id has rw but no mask
    res_merge = run("merge", "--from-shards", sharded, "--no-progress")
    assert res_merge.exit_code == 2 and ": incomplete shard (rank " in res_merge.output  # rank 0 was stopped too

    res = torchrun(HOOK, *args, "--store", sharded, env={"WRITE_LOG": str(logs[1])})
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    for group, before in (("seeds", seeds_after_kill), ("masks", walked_after_kill)):
        final = [complete_ids(p, [group]) for p in shards]
        assert final[0] | final[1] == ids and not final[0] & final[1], group
        for r in range(2):  # the rerun wrote exactly what was missing, nothing twice
            assert sorted(written(logs[1], r, group)) == sorted(final[r] - before[r]), (group, r)
    assert all(shard_complete(p) for p in shards)
    assert ("rank 1 of 2: walk: wrote 2 images (rw maps + masks), 1 already present") in res.stdout
    assert f"rank 1 of 2: wrote {shards[1]}; when every rank is done: orand-addon merge --from-shards {sharded}" \
        in res.stdout

    res = run("merge", "--from-shards", sharded, "--no-progress")
    assert res.exit_code == 0, res.output
    for group in ("seeds", "rw", "masks"):
        assert f"/{group}: copied {len(ids)} ids (0 already there)" in res.output
    assert_same_store(one, sharded, ignore=("command",))


def test_torchrun_needs_a_merge_between_seeds_and_training(voc, monkeypatch):
    root, maps, seeded = voc
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(key, value)
    res = run("refine", "--store", maps, "--kind", "or", "--images", root / "img")
    assert res.exit_code == 2
    assert res.output == ("orand-addon: error: --steps seeds,train,walk under torchrun: the ranks write their seeds "
                          "into shards that 'orand-addon merge' must join before training reads them; run --steps "
                          "seeds, then orand-addon merge --from-shards STORE, then --steps train,walk\n")
    res = run("refine", "--store", seeded, "--kind", "or", "--images", root / "img", "--steps", "train",
              "--run-dir", root / "odd", "--pretrained", root / "r50.pth", *TRAIN[:4], "--batch-size", 3)
    assert res.exit_code == 2
    assert res.output == ("orand-addon: error: --batch-size 3 is the global batch and must be a multiple of the 2 "
                          "processes (WORLD_SIZE=2); use --batch-size 2 or 4\n")
    assert not (root / "odd").exists()


def test_seed_pngs_split_over_ranks_and_skip_what_the_store_has(voc, tmp_path):
    root, maps, _ = voc
    pngs = tmp_path / "png"
    pngs.mkdir()
    with Store(maps) as s:
        ids = s.ids("or")
        for n, image_id in enumerate(ids):
            seed = np.full(s.map_shape("or", image_id)[1:], n % 3, np.uint8)
            seed[::5] = 255
            save_label_png(pngs / f"{image_id}.png", seed)
    one, sharded = tmp_path / "one.h5", tmp_path / "sharded.h5"
    import_seed_pngs(one, pngs, root / "img", progress=False)
    for rank in range(2):  # no store yet: the shards create theirs, the merge the store
        import_seed_pngs(sharded, pngs, root / "img", progress=False, dist=DistInfo(rank, 2))
    merge_shards(sharded, [shard_path(sharded, r, 2) for r in range(2)], show_progress=False)
    assert_same_store(one, sharded)

    with Store(one, "a") as s:
        for image_id in ids[:2]:
            del s.h5["seeds"][image_id]
    for rank in range(2):
        report = import_seed_pngs(one, pngs, root / "img", progress=False, dist=DistInfo(rank, 2))
        assert (report.written, report.skipped_existing) == (1, len(ids[rank::2]) - 1)
        with Store(shard_path(one, rank, 2)) as s:
            assert s.ids("seeds") == [ids[rank]]
    merge_shards(one, [shard_path(one, r, 2) for r in range(2)], show_progress=False)
    assert_same_store(sharded, one)

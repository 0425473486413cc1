"""`orand-addon refine` under torchrun (2 processes, gloo on the loopback): DDP training takes the steps of one
process with the same global batch, and the sharded seeds and walk, with one rank killed and the run repeated,
merge into the store of the one-process run (the hooks: tests/helpers/hooks.py).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from helpers.hooks import HOOK
from helpers.testers import KilledRankTester
from helpers import (assert_same_store, run, small_voc, torchrun, voc_mini_ids,
                     write_store)
from helpers import one_process_env, one_torch_thread  # noqa: F401 (fixtures)
from orand_addon.runtime.distributed import DistInfo
from orand_addon.store.shards import shard_path
from orand_addon.io.images import save_label_png
from orand_addon.refine.network import resnet50_stride16
from orand_addon.refine.seed_stage import import_seed_pngs, make_seeds
from orand_addon.refine.seeds import CrfParams, SeedOptions
from orand_addon.store.merge import merge_shards
from orand_addon.runtime.files import load_checkpoint
from orand_addon.store.store import Store

TRAIN = ["--backbone", "frozen", "--crop-size", 80, "--batch-size", 4, "--max-steps", 2, "--lr", 0.05, "--dp-lr", 0.5,
         "--workers", 0, "--device", "cpu", "--no-progress"]
PER_IMAGE = ["--crf-iterations", 2, "--workers", 1, "--device", "cpu", "--no-progress"]


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
    res = torchrun(HOOK, *args, env={"STOP_RANK": "1", "STOP_AFTER": "1", "STOP_MODULE": "orand_addon.refine.train"})
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


class TestKilledSeedsAndWalkRank(KilledRankTester):
    """Seeds and walk in one run; rank 1 dies in the walk, after its seeds and the rw maps of its 2nd image."""

    groups, kill_kind, kill_after = ("seeds", "rw", "masks"), "rw", 2

    def input_store(self, stage_inputs):
        return stage_inputs[1]

    def command(self, stage_inputs, tmp, role):
        root = stage_inputs[0]
        return ["refine", "--kind", "or", "--images", root / "img", "--steps", "seeds,walk", "--checkpoint",
                root / "one" / "irn.pt", *PER_IMAGE]

    def check_killed(self, stage_inputs, scenario):
        after = scenario.after_kill
        assert after["seeds"][1] == set(sorted(scenario.ids)[1::2])  # rank 1 had seeded its share, then died
        assert len(after["masks"][1]) == 1  # its 2nd id died between its rw maps and its mask

    def check_rerun(self, stage_inputs, scenario):
        out = scenario.rerun.stdout
        assert "rank 1 of 2: walk: wrote 2 images (rw maps + masks), 1 already present" in out
        assert (f"rank 1 of 2: wrote {scenario.shards[1]}; when every rank is done: orand-addon merge "
                f"--from-shards {scenario.sharded}") in out


@pytest.fixture(scope="module")
def stage_inputs(voc):
    return voc


def test_torchrun_needs_a_merge_between_seeds_and_training(voc, monkeypatch):
    root, maps, seeded = voc
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(key, value)
    res = run("refine", "--store", maps, "--kind", "or", "--images", root / "img")
    assert res.exit_code == 2 and len(res.output.splitlines()) == 1  # with the other problems of this call
    assert ("--steps seeds,train,walk under torchrun: the ranks write their seeds into shards that 'orand-addon "
            "merge' must join before training reads them; run --steps seeds, then orand-addon merge --from-shards "
            "STORE, then --steps train,walk; ") in res.output
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

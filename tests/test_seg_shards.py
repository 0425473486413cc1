"""`segment` split over ranks: ranks run in this process (RANK/WORLD_SIZE is all `segment` reads without --gt) and a
2-process torchrun job with --gt whose rank 1 is killed (SIGKILL) mid-run. Each rank writes its ids into its shard of
the store and its PNGs into the shared folder; the rerun redoes exactly the killed rank's missing ids; the merged
store and the PNG folder equal the one-process run's, and the scores summed over the ranks are the one-process ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_same_store, complete_ids, run, tiny_voc, written
from helpers import one_process_env, one_torch_thread  # noqa: F401 (fixtures)
from helpers.testers import KilledRankTester
from orand_addon.runtime.distributed import shard
from orand_addon.store.shards import shard_path
from orand_addon.io.images import load_label_png
from orand_addon.segment.train import SegTrainConfig, train_segmentation

SCORES = ("miou", "mean_precision", "mean_recall", "iou")


def segment_args(trained: tuple, out: Path, store: Path, *extra) -> list:
    tiny, ckpt = trained
    return ["segment", "--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out", out,
            "--store", store, "--scales", "0.75,1.0", "--device", "cpu", "--no-progress", *extra]


def assert_same_pngs(a: Path, b: Path, ids: list[str]) -> None:
    """One file per id (no temporary files left), the masks and the parameter record of ``a``."""
    assert sorted(p.name for p in b.iterdir()) == sorted([f"{i}.png" for i in ids] + ["segment.json"])
    assert (a / "segment.json").read_text() == (b / "segment.json").read_text()
    for image_id in ids:
        np.testing.assert_array_equal(load_label_png(a / f"{image_id}.png"), load_label_png(b / f"{image_id}.png"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("seg")
    tiny = tiny_voc(folder, side=40, n=8)
    final = train_segmentation(SegTrainConfig(
        images=str(tiny["images"]), masks=str(tiny["store"]), train_list=tiny["ids"], out=str(folder / "run"),
        model="deeplabv2-resnet18-os16", pretrained="none", optimizer="adamw", lr=1e-3, head_lr_mult=1, epochs=2,
        batch_size=4, crop_size=32, scale_schedule="none", workers=0, show_progress=False))
    return tiny, final


@pytest.fixture(scope="module")
def one(trained, tmp_path_factory) -> Path:
    """The one-process run: ``pred/`` (PNGs), ``seg.h5`` (group seg), ``scores.json``."""
    root = tmp_path_factory.mktemp("one")
    res = run(*segment_args(trained, root / "pred", root / "seg.h5", "--gt", trained[0]["masks"], "--json",
                            root / "scores.json"))
    assert res.exit_code == 0, res.output
    return root


def test_ranks_write_shards_and_pngs_that_merge_into_the_one_process_run(trained, one, tmp_path, monkeypatch):
    ids = trained[0]["ids"]
    out, store = tmp_path / "pred", tmp_path / "seg.h5"
    for rank in range(2):
        with monkeypatch.context() as m:
            m.setenv("RANK", str(rank))
            m.setenv("WORLD_SIZE", "2")
            res = run(*segment_args(trained, out, store))
        assert res.exit_code == 0, res.output
        assert res.output == (f"rank {rank} of 2: segmented 4 images (0 already done) -> {out} -> "
                              f"{shard_path(store, rank, 2)}:seg; when every rank is done: orand-addon merge "
                              f"--from-shards {store}\n")
        assert complete_ids(shard_path(store, rank, 2), ["seg"]) == set(shard(ids, rank, 2))
    assert not store.exists()
    res = run("merge", "--from-shards", store, "--no-progress")
    assert res.exit_code == 0 and "/seg: copied 8 ids (0 already there)" in res.output
    assert_same_store(one / "seg.h5", store, ignore=("command",))
    assert_same_pngs(one / "pred", out, ids)

    with monkeypatch.context() as m:  # ids already merged into the store are skipped
        m.setenv("RANK", "1")
        m.setenv("WORLD_SIZE", "2")
        shard_path(store, 1, 2).unlink()
        res = run(*segment_args(trained, out, store))
        assert res.exit_code == 0 and "rank 1 of 2: segmented 0 images (4 already done)" in res.output
        res = run(*segment_args(trained, out, store, "--gt", trained[0]["masks"]))
    assert res.exit_code == 2
    assert res.output == ("orand-addon: error: segment --gt with WORLD_SIZE=2 sums the ranks' scores over "
                          "torch.distributed, but MASTER_ADDR and MASTER_PORT not set; launch with torchrun, or leave "
                          "out --gt and score the result afterwards (orand-addon evaluate --pred ... --gt ...)\n")


class TestKilledSegmentRank(KilledRankTester):
    """With --gt: the rerun's rank 0 reports the scores of every id once, equal to the one-process run's."""

    groups, kill_kind, kill_after = ("seg",), "seg", 2

    def input_store(self, stage_inputs):
        return stage_inputs[1] / "empty.h5"

    def command(self, stage_inputs, tmp, role):
        (tiny, ckpt), _ = stage_inputs
        return ["segment", "--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out",
                tmp / role / "pred", "--scales", "0.75,1.0", "--device", "cpu", "--no-progress", "--gt",
                tiny["masks"], "--json", tmp / role / "scores.json"]

    def check_killed(self, stage_inputs, scenario):
        assert 0 < len(scenario.after_kill["seg"][1]) <= 2
        assert not (scenario.sharded.parent / "sharded" / "scores.json").exists()

    def check_rerun(self, stage_inputs, scenario):
        (tiny, _), _ = stage_inputs
        after, final = scenario.after_kill["seg"], scenario.final["seg"]
        assert final == [set(shard(tiny["ids"], r, 2)) for r in range(2)]
        for r in range(2):  # the PNGs too: exactly the missing ones
            assert sorted(written(scenario.logs[1], r, "png")) == sorted(final[r] - after[r])
        assert f"rank 1 of 2: segmented {4 - len(after[1])} images ({len(after[1])} already done)" in \
            scenario.rerun.stdout
        assert scenario.rerun.stdout.count("mIoU") == 1  # rank 0 reports once, for every id
        tmp = scenario.sharded.parent
        reference = json.loads((tmp / "one" / "scores.json").read_text())
        scores = json.loads((tmp / "sharded" / "scores.json").read_text())
        assert {k: v for k, v in scores.items() if k in SCORES} == {k: reference[k] for k in SCORES}
        assert_same_pngs(tmp / "one" / "pred", tmp / "sharded" / "pred", tiny["ids"])


@pytest.fixture(scope="module")
def stage_inputs(trained, tmp_path_factory):
    """The trained model, and an empty store with the model's classes for the masks."""
    from orand_addon.classes import VOC_CLASSES
    from orand_addon.store.store import Store

    root = tmp_path_factory.mktemp("seg_inputs")
    Store(root / "empty.h5", mode="a", class_names=VOC_CLASSES).close()
    return trained, root



"""Sharding and merging without a launcher: shard names, the process-group helpers for one process, ranks of
`fuse` simulated in this process (RANK/WORLD_SIZE are all a per-image stage reads), and every refusal of
`orand-addon merge`. The merged store is checked against the one-process run, dataset by dataset.

(:func:`assert_same_store`, :func:`torchrun` and :func:`loopback` live in tests/helpers.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import assert_same_store, ids_of, make_tiny_store, run, voc_mini_ids
from helpers import one_process_env  # noqa: F401 (fixtures)
from orand_addon.classes import get_class_set, load_labels
from orand_addon.runtime.distributed import DistInfo, dist_info, pick_device, process_group, shard
from orand_addon.store.shards import find_shards, parse_shard_path, shard_path
from orand_addon.errors import OrandError
from orand_addon.fuse.stage import FuseOptions, run_fuse
from orand_addon.store.merge import merge_shards
from orand_addon.store.store import Store


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cams(tmp_path_factory) -> Path:
    """Tiny native IRN and MCTformer dumps of the VOC-mini images (``root/irn``, ``root/mct``)."""
    root = tmp_path_factory.mktemp("cams")
    make_tiny_store(root)
    return root


def fuse_args(cams: Path, out: Path, *extra) -> list:
    return ["fuse", "--cams-a", cams / "irn", "--cams-b", cams / "mct", "--out", out, "--keep-sources",
            "--no-progress", *extra]


def fuse_as_rank(monkeypatch, rank: int, world: int, *args):
    """The fuse CLI as rank ``rank`` of ``world`` would run it under torchrun."""
    with monkeypatch.context() as m:
        for key, value in (("RANK", rank), ("WORLD_SIZE", world), ("LOCAL_RANK", rank)):
            m.setenv(key, str(value))
        return run(*args)


def fuse_shards(cams: Path, out: Path, world: int = 2, **options) -> list[Path]:
    voc = get_class_set("voc")
    for rank in range(world):
        run_fuse([cams / "irn", cams / "mct"], out, voc, load_labels(None, voc), FuseOptions(**options),
                 progress=False, dist=DistInfo(rank, world))
    return [shard_path(out, r, world) for r in range(world)]


# -- names, environment, devices -----------------------------------------------------------------------------

def test_shard_files_are_found_by_name_and_gaps_are_refused(tmp_path):
    out = tmp_path / "fused.h5"
    assert [parse_shard_path(shard_path(out, r, 3)) for r in range(3)] == [(out, r, 3) for r in range(3)]
    with pytest.raises(OrandError) as err:
        find_shards(out)
    assert str(err.value) == f"{out}: no shard files fused.rank*-of-*.h5 in {tmp_path}"
    for r in (0, 2):
        shard_path(out, r, 3).write_bytes(b"")
    (tmp_path / "fused.rank0-of-2.h5.bak").write_bytes(b"")
    (tmp_path / "other.rank1-of-3.h5").write_bytes(b"")
    with pytest.raises(OrandError) as err:
        find_shards(out)
    assert str(err.value) == (f"{out}: shard 1 of 3 (fused.rank1-of-3.h5) is missing; rerun the sharded command, "
                              f"or pass the shard files explicitly")
    shard_path(out, 1, 3).write_bytes(b"")
    assert find_shards(out) == [shard_path(out, r, 3) for r in range(3)]
    shard_path(out, 0, 2).write_bytes(b"")
    with pytest.raises(OrandError, match="shards of runs with 2, 3 ranks lie side by side; pass the files to merge "
                                         "explicitly"):
        find_shards(out)


def test_environment_and_process_group_for_one_process(monkeypatch):
    import torch.distributed as dist

    assert dist_info() == DistInfo()
    with process_group("cpu") as (info, device):
        assert (info, str(device), dist.is_initialized()) == (DistInfo(), "cpu", False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert dist_info() == DistInfo(1, 2, 0)
    with pytest.raises(OrandError) as err:
        with process_group("cpu"):
            pass
    assert str(err.value) == ("WORLD_SIZE=2 but MASTER_ADDR and MASTER_PORT not set; launch training with torchrun "
                              "(see docs/distributed.md)")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(OrandError, match=r"^RANK=2 is outside 0..1 \(WORLD_SIZE=2\)$"):
        dist_info()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(OrandError, match="RANK/WORLD_SIZE/LOCAL_RANK must be integers, got RANK='one'"):
        dist_info()


def test_device_per_rank():
    import torch

    if torch.cuda.device_count() > 1:  # torchrun's LOCAL_RANK picks the GPU unless one is pinned
        assert [str(pick_device(s, DistInfo(1, 2, 1))) for s in ("auto", "cuda", "cuda:0")] == ["cuda:1"] * 2 + ["cuda:0"]
    elif not torch.cuda.is_available():
        assert str(pick_device("auto", DistInfo(1, 2, 1))) == "cpu"
        with pytest.raises(OrandError, match="--device cuda: no CUDA GPU is available here"):
            pick_device("cuda", DistInfo(1, 2, 1))


# -- sharded fuse + merge ------------------------------------------------------------------------------------

def test_sharded_fuse_merges_into_the_one_process_store(cams, tmp_path, monkeypatch):
    one, sharded = tmp_path / "one.h5", tmp_path / "sharded.h5"
    assert run(*fuse_args(cams, one)).exit_code == 0
    outputs = [fuse_as_rank(monkeypatch, r, 2, *fuse_args(cams, sharded)) for r in range(2)]
    for r, res in enumerate(outputs):
        assert res.exit_code == 0, res.output
        assert (f"rank {r} of 2: wrote {shard_path(sharded, r, 2)} (kinds: or, and, mean); when every rank is done: "
                f"orand-addon merge --from-shards {sharded}") in res.output
    ids = ids_of(one, "or")
    assert [ids_of(shard_path(sharded, r, 2), "or") for r in range(2)] == [sorted(shard(ids, r, 2)) for r in range(2)]
    assert not sharded.exists()
    res = run("merge", "--from-shards", sharded, "--no-progress")
    assert res.exit_code == 0, res.output
    assert f"/or: copied {len(ids)} ids (0 already there)" in res.output
    assert f"merged 2 shards into {sharded}" in res.output
    assert_same_store(one, sharded)
    res = run("merge", "--out", sharded, *find_shards(sharded), "--no-progress")
    assert res.exit_code == 0, res.output
    assert f"/a: copied 0 ids ({len(ids)} already there)" in res.output
    assert_same_store(one, sharded)
    res = run("merge", "--from-shards", sharded, "--shards-after", "delete", "--no-progress")
    assert res.exit_code == 0 and "(shards deleted)" in res.output
    assert not shard_path(sharded, 0, 2).exists() and not shard_path(sharded, 1, 2).exists()
    assert_same_store(one, sharded)


def test_ranks_skip_ids_of_the_main_store_and_refuse_other_parameters(cams, tmp_path, monkeypatch):
    ids = voc_mini_ids()
    one, out = tmp_path / "one.h5", tmp_path / "out.h5"
    (tmp_path / "first.txt").write_text("\n".join(ids[:4]))
    assert run(*fuse_args(cams, one)).exit_code == 0
    assert run(*fuse_args(cams, out, "--ids", tmp_path / "first.txt")).exit_code == 0
    for r in range(2):
        res = fuse_as_rank(monkeypatch, r, 2, *fuse_args(cams, out))
        assert res.exit_code == 0, res.output
        mine = shard(ids, r, 2)
        assert ids_of(shard_path(out, r, 2), "or") == sorted(set(mine) - set(ids[:4]))
        assert f"rank {r} of 2: fused {len(set(mine) - set(ids[:4]))} images ({len(set(mine) & set(ids[:4]))} " \
               f"already in the store)" in res.output
    assert run("merge", "--from-shards", out, "--no-progress").exit_code == 0
    assert_same_store(one, out, ignore=("reports",))
    res = fuse_as_rank(monkeypatch, 0, 2, *fuse_args(cams, out, "--fusion-norm", "none"))
    assert res.exit_code == 2
    assert res.output.startswith(f"orand-addon: error: {out}: /or was written by ")
    assert res.output.rstrip().endswith(
        "with other parameters (--fusion-norm differ); use a new output file or --overwrite")


def test_merge_refuses_shards_of_different_runs(cams, tmp_path):
    out = tmp_path / "x.h5"
    s0, _ = fuse_shards(cams, tmp_path / "a.h5", kinds=("or", "and"))
    _, s1 = fuse_shards(cams, tmp_path / "b.h5", kinds=("or", "and"), normalize=False)
    res = run("merge", "--out", out, s0, s1, "--no-progress")
    assert res.exit_code == 2
    assert res.output == (f"orand-addon: error: {s1}: /and was written with other parameters than in {s0} "
                          f"(normalize differ); merge only the shards of one run\n")
    assert not out.exists()
    odd = tmp_path / "odd.h5"
    with Store(odd, "a", class_names=["background", "cat", "dog"]) as s:
        s.write_maps("or", "x", np.zeros((1, 2, 2), np.float32), keys=[0])
    res = run("merge", "--out", out, s0, odd, "--no-progress")
    assert res.output == (f"orand-addon: error: {odd}: class names differ from {s0} (3 vs 21 classes, position 1: "
                          f"'cat' vs 'aeroplane')\n")
    res = run("merge", "--out", s0, s0, "--no-progress")
    assert res.output == f"orand-addon: error: {s0}: the output store is also given as a shard\n"


def test_merge_refuses_an_id_with_other_content_and_unfinished_shards(cams, tmp_path):
    s0, s1 = fuse_shards(cams, tmp_path / "a.h5", kinds=("or", "and"))
    changed = tmp_path / "changed.h5"
    shutil.copy(s0, changed)
    image_id = ids_of(s0, "or")[1]
    with Store(changed, "a") as s:
        maps, keys = s.read_maps("or", image_id)
        s.write_maps("or", image_id, maps * 0.5, keys, dtype="float16")
    out = tmp_path / "x.h5"
    res = run("merge", "--out", out, s0, s1, changed, "--no-progress")
    assert res.exit_code == 2
    assert res.output == (f"orand-addon: error: {image_id}: /or/{image_id} in {changed} differs from the one already "
                          f"in {out}; these are not shards of one run\n")
    with h5py.File(s1, "a") as f:
        mark = json.loads(f.attrs["shard"])
        assert mark == {"rank": 1, "world_size": 2, "planned": len(shard(voc_mini_ids(), 1, 2)), "complete": True}
        f.attrs["shard"] = json.dumps({**mark, "complete": False})
    res = run("merge", "--from-shards", tmp_path / "a.h5", "--no-progress")
    assert res.output == (f"orand-addon: error: {s1}: incomplete shard (rank 1 of 2 did not finish its "
                          f"{mark['planned']} ids); rerun the same command to complete it, or merge what is there "
                          f"with --incomplete merge\n")
    res = run("merge", "--from-shards", tmp_path / "a.h5", "--incomplete", "merge", "--no-progress")
    assert res.exit_code == 0, res.output
    assert ids_of(tmp_path / "a.h5", "and") == voc_mini_ids()


def test_merge_into_a_store_of_other_parameters_needs_overwrite(cams, tmp_path):
    shards = fuse_shards(cams, tmp_path / "a.h5", kinds=("or",))
    other = tmp_path / "other.h5"
    run_fuse([cams / "irn", cams / "mct"], other, get_class_set("voc"), load_labels(None, get_class_set("voc")),
             FuseOptions(kinds=("or",), dtype="float32"), progress=False)
    with pytest.raises(OrandError, match=r"/or was written by 'orand-addon fuse' with other parameters \(dtype "
                                         r"differ\); use a new output file or --overwrite"):
        merge_shards(other, shards, show_progress=False)
    with Store(other) as s:
        assert s.ids("or") == voc_mini_ids() and s.h5["or"][voc_mini_ids()[0]].dtype == np.float32
    merge_shards(other, shards, overwrite=True, show_progress=False)
    merge_shards(tmp_path / "a.h5", shards, show_progress=False)
    assert_same_store(tmp_path / "a.h5", other, ignore=("root",))


def test_merge_command_line(tmp_path, monkeypatch):
    res = run("merge", "--no-progress")
    assert res.exit_code == 2 and "give --from-shards STORE.h5, or --out STORE.h5 and the shard files" in res.output
    res = run("merge", "--from-shards", tmp_path / "a.h5", tmp_path / "b.h5")
    assert "give either --from-shards STORE.h5 or shard files, not both" in res.output
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = run("merge", "--from-shards", tmp_path / "a.h5")
    assert res.output == ("orand-addon: error: merge runs as one process, not under torchrun (run it once every rank "
                          "has finished)\n")
    monkeypatch.delenv("WORLD_SIZE")
    res = run("merge", "--out", tmp_path / "x.h5", tmp_path / "missing.h5")
    assert res.output == f"orand-addon: error: {tmp_path / 'missing.h5'}: store not found\n"
    assert "orand-addon merge --out fused.h5 fused.rank0-of-2.h5 fused.rank1-of-2.h5" in run("merge", "--help").output

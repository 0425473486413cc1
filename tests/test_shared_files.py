"""Worker results through files in shared memory (runtime/shared_files.py, engine/stage.py): the arrays read back
as written, every file is removed, and a full or missing folder falls back to the pipe."""

import os
import subprocess
import sys

import numpy as np
import pytest

from orand_addon.engine.stage import ImageResult, _maps_received, _to_shared_memory
from orand_addon.runtime.shared_files import PREFIX, opened, share, sweep, sweep_stale


def test_arrays_of_every_dtype_and_shape_read_back_and_the_file_is_removed(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"or": rng.random((3, 37, 51)).astype(np.float16), "and": rng.random((1, 5, 7)),
              "keys": np.array([4, 11, 19], np.int64), "empty": np.zeros((0, 5, 7), np.float32),
              "fortran": np.asfortranarray(rng.random((6, 9)).astype(np.float32))}
    shared = share(arrays, owner=os.getpid(), folder=tmp_path)
    assert shared is not None and os.path.exists(shared.path)
    with opened(shared) as back:
        assert list(back) == list(arrays)
        for name, value in arrays.items():
            assert back[name].dtype == value.dtype and back[name].shape == value.shape
            np.testing.assert_array_equal(back[name], value)
    assert not os.path.exists(shared.path)


def test_no_folder_means_the_pipe(tmp_path):
    assert share({"or": np.ones((1, 2, 2), np.float16)}, owner=1, folder=tmp_path / "missing") is None


def test_a_write_that_fails_leaves_no_file_and_falls_back(tmp_path, monkeypatch):
    def no_room(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_room)
    assert share({"or": np.ones((1, 2, 2), np.float16)}, owner=os.getpid(), folder=tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_sweep_removes_one_owner_and_sweep_stale_only_dead_owners(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    alive = str(os.getpid())
    for owner in (dead, alive, "7"):
        for n in range(2):
            (tmp_path / f"{PREFIX}{owner}-100-{n}").write_bytes(b"x")
    (tmp_path / "someone-else").write_bytes(b"x")
    assert sweep(7, tmp_path) == 2
    assert sweep_stale(tmp_path) == 2  # the finished process's files; the live one's stay
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["someone-else", f"{PREFIX}{alive}-100-0",
                                                                 f"{PREFIX}{alive}-100-1"])


def test_a_result_goes_out_and_comes_back_with_the_same_maps_and_keys():
    maps = {"or": (np.arange(24, dtype=np.float16).reshape(2, 3, 4), np.array([3, 8])),
            "and": (np.ones((2, 3, 4), np.float16), np.array([3, 8]))}
    result = ImageResult("2007_000032", maps=dict(maps))
    _to_shared_memory(result, os.getpid())
    assert result.maps == {} and result.shared is not None
    path = result.shared[0].path
    with _maps_received(result) as back:
        for kind, (values, keys) in maps.items():
            np.testing.assert_array_equal(back.maps[kind][0], values)
            np.testing.assert_array_equal(back.maps[kind][1], keys)
    assert result.maps == {} and result.shared is None and not os.path.exists(path)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm")
def test_the_run_leaves_nothing_in_shared_memory(tmp_path):
    from orand_addon.classes import get_class_set
    from orand_addon.fuse.stage import FuseOptions, run_fuse
    from orand_addon.store.store import Store
    from helpers.data import voc_mini_ids, write_voc_mini_cams

    ids = voc_mini_ids()[:4]
    write_voc_mini_cams(tmp_path / "amn", "amn", seed=1, ids=ids)
    write_voc_mini_cams(tmp_path / "mct", "mctformer", seed=2, ids=ids)
    voc = get_class_set("voc")
    for n in (1, 2):
        run_fuse([tmp_path / "amn", tmp_path / "mct"], tmp_path / f"w{n}.h5", voc, None, FuseOptions(), workers=n,
                 progress=False)
    assert not list(__import__("pathlib").Path("/dev/shm").glob(f"{PREFIX}{os.getpid()}-*"))
    with Store(tmp_path / "w1.h5") as one, Store(tmp_path / "w2.h5") as two:
        for kind in ("or", "and", "mean", "mean-official"):
            assert one.ids(kind) == two.ids(kind) == sorted(ids)
            for i in ids:
                for a, b in zip(one.read_maps(kind, i), two.read_maps(kind, i)):
                    np.testing.assert_array_equal(a, b)

"""`orand-addon fuse` on real VOC images with native AMN / MCTformer / IRN dumps, and every bad input."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from helpers import (gt_classes, gt_mask, JPEG, reference_or_and, run, voc_mini_ids, write_voc_mini_cams)  # noqa: E402,F401 (one_process_env: autouse fixture)
from orand_addon.fuse import stage as fuse_module
from orand_addon.store.store import Store


@pytest.fixture
def amn_mct(tmp_path):
    a = write_voc_mini_cams(tmp_path / "amn", "amn", seed=1)
    b = write_voc_mini_cams(tmp_path / "mct", "mctformer", seed=2, blur=16)
    return tmp_path, a, b


def test_fused_or_and_equal_independent_eq1(amn_mct):
    tmp, a, b = amn_mct
    out = tmp / "fused.h5"
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--dtype", "float32",
              "--no-progress")
    assert res.exit_code == 0, res.output
    assert f"fused {len(a)} images" in res.output
    with h5py.File(out, "r") as f:  # plain h5py, as other repositories read it
        assert f.attrs["layout_version"] == 1
        assert list(f.attrs["class_names"])[:2] == ["background", "aeroplane"]
        for image_id, (keys, maps_a) in a.items():
            ref_or, ref_and = reference_or_and(maps_a, b[image_id][1])
            np.testing.assert_allclose(f["or"][image_id][()], ref_or, atol=2e-6)
            np.testing.assert_allclose(f["and"][image_id][()], ref_and, atol=2e-6)
            np.testing.assert_allclose(f["mean"][image_id][()], (maps_a + b[image_id][1]) / 2, atol=2e-6)
            assert f["or"][image_id].attrs["keys"].tolist() == keys.tolist()
            assert f["or"][image_id].shape[1:] == gt_mask(image_id).shape


def test_float16_default_and_raw_fusion(amn_mct):
    tmp, a, b = amn_mct
    out = tmp / "raw.h5"
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--fusion-norm", "none",
              "--kinds", "or,and", "--no-progress")
    assert res.exit_code == 0, res.output
    with Store(out) as s:
        assert s.kinds() == ["and", "or"]
        image_id = voc_mini_ids()[3]
        assert s.h5["or"][image_id].dtype == np.float16
        maps, _ = s.read_maps("and", image_id)
        _, ref_and = reference_or_and(a[image_id][1], b[image_id][1], normalize=False)
        np.testing.assert_allclose(maps, ref_and, atol=1e-3)


def test_irn_and_three_sources(tmp_path):
    ids = voc_mini_ids()[:3]
    srcs = [write_voc_mini_cams(tmp_path / n, f, seed=s, ids=ids)
            for n, f, s in (("irn", "irn", 1), ("mct", "mctformer", 2), ("toco", "toco", 3))]
    out = tmp_path / "f.h5"
    res = run("fuse", "--cams-a", tmp_path / "irn", "--cams-b", tmp_path / "mct", "--cams-c", tmp_path / "toco",
              "--out", out, "--dtype", "float32", "--no-progress")
    assert res.exit_code == 0, res.output
    with Store(out) as s:
        for image_id in ids:
            c = [x[image_id][1].astype(np.float64) for x in srcs]
            ref_or = 1 - (1 - c[0]) * (1 - c[1]) * (1 - c[2])
            ref_or /= ref_or.max(axis=(1, 2), keepdims=True)
            np.testing.assert_allclose(s.read_maps("or", image_id)[0], ref_or, atol=2e-6)
        assert [x["format"] for x in s.provenance["sources"]] == ["irn", "mctformer", "toco"]


def test_shift_of_source_b(amn_mct):
    tmp, a, b = amn_mct
    out = tmp / "shift.h5"
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--shift-b", "0.15",
              "--fusion-norm", "none", "--dtype", "float32", "--kinds", "and", "--no-progress")
    assert res.exit_code == 0, res.output
    image_id = voc_mini_ids()[0]
    with Store(out) as s:
        np.testing.assert_allclose(s.read_maps("and", image_id)[0], a[image_id][1] * (b[image_id][1] + 0.15), atol=1e-6)


def test_missing_ids_error_lists_them_and_skip_fuses_the_rest(amn_mct):
    tmp, a, _ = amn_mct
    gone = voc_mini_ids()[2]
    (tmp / "mct" / f"{gone}.npy").unlink()
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", tmp / "x.h5", "--no-progress")
    assert res.exit_code == 2
    assert f"1 ids are missing from a source: {gone} (not in {tmp / 'mct'}" in res.output
    assert not (tmp / "x.h5").exists()
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", tmp / "x.h5", "--on-missing", "skip",
              "--no-progress")
    assert res.exit_code == 0, res.output
    assert "skipped 1 ids missing from a source" in res.output
    with Store(tmp / "x.h5") as s:
        assert gone not in s.ids("or") and len(s.ids("or")) == len(a) - 1


def test_ids_list_restricts(amn_mct, tmp_path):
    tmp, _, _ = amn_mct
    (tmp / "ids.txt").write_text("2007_000033\n2011_000003\n")
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--ids", tmp / "ids.txt", "--out", tmp / "x.h5",
              "--no-progress")
    assert res.exit_code == 0, res.output
    with Store(tmp / "x.h5") as s:
        assert s.ids("and") == ["2007_000033", "2011_000003"]


def test_disagreeing_classes_labels_decide_and_are_reported(tmp_path):
    image_id = voc_mini_ids()[0]
    mask = gt_mask(image_id)
    h, w = mask.shape
    rng = np.random.default_rng(0)
    true = np.array([0])  # 2007_000033: aeroplane only
    from orand_addon.io.writers import write_cam

    write_cam(tmp_path / "A", image_id, "amn", np.array([0, 5]), rng.random((2, h, w)).astype(np.float32))
    write_cam(tmp_path / "B", image_id, "mctformer", true, rng.random((1, h, w)).astype(np.float32))
    res = run("fuse", "--cams-a", tmp_path / "A", "--cams-b", tmp_path / "B", "--out", tmp_path / "x.h5", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "classes differ between labels and sources (labels used): 1" in res.output
    assert "source class not in the labels (dropped): 1" in res.output
    with Store(tmp_path / "x.h5") as s:
        assert s.read_keys("or", image_id).tolist() == [0]


def test_bad_values_are_fixed_and_reported_or_refused(tmp_path):
    from orand_addon.io.writers import write_cam

    ids = ["2007_000129", "2011_000006"]  # two and three classes
    for n, image_id in enumerate(ids):
        mask = gt_mask(image_id)
        h, w = mask.shape
        keys = np.unique(mask[(mask > 0) & (mask < 255)]) - 1
        a = np.random.default_rng(n).random((len(keys), h, w)).astype(np.float32)
        b = a.copy()
        if n == 0:
            a[0, :5, :5] = np.nan
            a[0, 10, 10] = -0.5
            b[0] *= 3.0  # values above 1
            b[-1] = 0.0  # an all-zero map
        write_cam(tmp_path / "A", image_id, "irn", keys, a)
        write_cam(tmp_path / "B", image_id, "mctformer", keys, b)
    out = tmp_path / "x.h5"
    res = run("fuse", "--cams-a", tmp_path / "A", "--cams-b", tmp_path / "B", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "non-finite values set to 0: 1" in res.output and f"{ids[0]}.npy (25 values)" in res.output
    assert "negative values clipped to 0: 1" in res.output
    assert "maps above 1 divided by their max: 1" in res.output
    with Store(out) as s:
        for kind in ("or", "and", "mean"):
            maps, _ = s.read_maps(kind, ids[0])
            assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
        assert np.all(s.read_maps("and", ids[0])[0][-1] == 0)  # all-zero AND stays zero, no NaN
    res = run("fuse", "--cams-a", tmp_path / "A", "--cams-b", tmp_path / "B", "--out", tmp_path / "y.h5",
              "--value-policy", "error", "--no-progress")
    assert res.exit_code == 2
    assert f"{ids[0]}.npy (25 values): NaN/Inf values" in res.output


def test_different_map_sizes_are_resized_to_the_image(tmp_path):
    from orand_addon.io.writers import write_cam

    image_id = voc_mini_ids()[1]
    mask = gt_mask(image_id)
    h, w = mask.shape
    keys = np.unique(mask[(mask > 0) & (mask < 255)]) - 1
    write_cam(tmp_path / "A", image_id, "irn", keys, np.ones((len(keys), h, w), np.float32))
    write_cam(tmp_path / "B", image_id, "mctformer", keys, np.ones((len(keys), h // 2, w // 2), np.float32))
    res = run("fuse", "--cams-a", tmp_path / "A", "--cams-b", tmp_path / "B", "--out", tmp_path / "x.h5", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "maps resized to the image size: 1" in res.output
    with Store(tmp_path / "x.h5") as s:
        assert s.map_shape("or", image_id) == (len(keys), h, w)


def test_truncated_file_stops_naming_it_and_rerun_resumes_identically(amn_mct):
    tmp, a, _ = amn_mct
    ids = sorted(a)
    victim = tmp / "mct" / f"{ids[5]}.npy"
    good = victim.read_bytes()
    victim.write_bytes(good[:400])
    out = tmp / "x.h5"
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--no-progress")
    assert res.exit_code == 2 and f"{victim}: corrupt or truncated" in res.output
    with Store(out) as s:
        assert s.ids("or") == ids[:5]  # complete ids kept, nothing half-written
    victim.write_bytes(good)
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--no-progress")
    assert res.exit_code == 0 and f"fused {len(ids) - 5} images (5 already in the store)" in res.output
    fresh = tmp / "fresh.h5"
    assert run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", fresh, "--no-progress").exit_code == 0
    with Store(out) as s1, Store(fresh) as s2:
        for kind in ("or", "and", "mean"):
            assert s1.ids(kind) == s2.ids(kind) == ids
            for i in ids:
                np.testing.assert_array_equal(s1.read_maps(kind, i)[0], s2.read_maps(kind, i)[0])


def test_ctrl_c_leaves_a_readable_store_that_resumes(amn_mct, monkeypatch):
    tmp, a, _ = amn_mct
    real = fuse_module.FuseStage.fuse_one
    calls = {"n": 0}

    def interrupt_on_fourth(*args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(fuse_module.FuseStage, "fuse_one", interrupt_on_fourth)
    out = tmp / "x.h5"
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--no-progress")
    assert res.exit_code == 130
    assert "interrupted after 3 of 11 images" in res.output and "resumes" in res.output
    with h5py.File(out, "r") as f:
        assert len(f["or"]) == 3
    monkeypatch.setattr(fuse_module.FuseStage, "fuse_one", real)
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--no-progress")
    assert res.exit_code == 0 and "(3 already in the store)" in res.output


def test_rerun_with_other_parameters_is_refused(amn_mct):
    tmp, _, _ = amn_mct
    out = tmp / "x.h5"
    assert run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--no-progress").exit_code == 0
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--fusion-norm", "none",
              "--no-progress")
    assert res.exit_code == 2 and "with other parameters (--fusion-norm differ)" in res.output  # the option's name


def test_relative_and_absolute_paths_of_the_same_labels_and_images_resume(amn_mct, monkeypatch):
    tmp, a, _ = amn_mct
    ids = sorted(a)
    labels = {i: np.eye(20, dtype=np.float32)[gt_classes(gt_mask(i))].sum(0) for i in ids}
    np.save(tmp / "labels.npy", labels)
    shutil.copytree(JPEG, tmp / "JPEGImages")
    (tmp / "first.txt").write_text("\n".join(ids[:3]) + "\n")
    out = tmp / "x.h5"
    monkeypatch.chdir(tmp)
    res = run("fuse", "--cams-a", "amn", "--cams-b", "mct", "--out", "x.h5", "--labels", "labels.npy",
              "--images", "JPEGImages", "--ids", "first.txt", "--no-progress")
    assert res.exit_code == 0 and "fused 3 images" in res.output, res.output
    monkeypatch.chdir(tmp.parent)
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--labels", tmp / "labels.npy",
              "--images", tmp / "JPEGImages", "--no-progress")
    assert res.exit_code == 0, res.output
    assert f"fused {len(ids) - 3} images (3 already in the store)" in res.output
    with Store(out) as s:
        assert s.provenance["parameters"]["labels"] == str((tmp / "labels.npy").resolve())


def test_unwritable_output_is_one_line(amn_mct):
    tmp, _, _ = amn_mct
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", locked / "x.h5", "--no-progress")
    finally:
        locked.chmod(0o700)
    if res.exit_code == 0:
        pytest.skip("running as a user that can write anywhere")
    assert res.exit_code != 0 and "x.h5" in res.output and "Traceback" not in res.output


def test_unwritable_output_as_root_too(amn_mct):
    tmp, _, _ = amn_mct
    (tmp / "afile").write_text("")
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", tmp / "afile" / "x.h5", "--no-progress")
    assert res.exit_code == 2
    assert "afile/x.h5: cannot create output folder" in res.output


def test_workers_give_the_same_store(amn_mct):
    tmp, _, _ = amn_mct
    for n in (1, 2):
        res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", tmp / f"w{n}.h5",
                  "--workers", n, "--no-progress")
        assert res.exit_code == 0, res.output
    with Store(tmp / "w1.h5") as s1, Store(tmp / "w2.h5") as s2:
        for i in s1.ids("or"):
            np.testing.assert_array_equal(s1.read_maps("or", i)[0], s2.read_maps("or", i)[0])


def test_store_as_source_and_orandnet_suffix(tmp_path):
    ids = voc_mini_ids()[:2]
    write_voc_mini_cams(tmp_path / "ornd", "orandnet", seed=4, ids=ids)
    assert sorted(p.name for p in (tmp_path / "ornd").iterdir()) == [f"{i}_1.npy" for i in ids]
    write_voc_mini_cams(tmp_path / "mct", "mctformer", seed=5, ids=ids)
    assert run("fuse", "--cams-a", tmp_path / "ornd", "--cams-b", tmp_path / "mct", "--out", tmp_path / "s.h5",
               "--kinds", "or,and", "--dtype", "float32", "--no-progress").exit_code == 0
    res = run("fuse", "--cams-a", f"{tmp_path / 's.h5'}:or", "--cams-b", f"{tmp_path / 's.h5'}:and",
              "--out", tmp_path / "t.h5", "--kinds", "and", "--dtype", "float32", "--no-progress")
    assert res.exit_code == 0, res.output
    with Store(tmp_path / "s.h5") as s, Store(tmp_path / "t.h5") as t:
        for i in ids:
            expect = s.read_maps("or", i)[0].astype(np.float64) * s.read_maps("and", i)[0]
            expect /= expect.max(axis=(1, 2), keepdims=True)
            np.testing.assert_allclose(t.read_maps("and", i)[0], expect, atol=2e-6)


def test_console_script_runs_as_a_user_would(amn_mct):
    tmp, _, _ = amn_mct
    exe = shutil.which("orand-addon") or str(__import__("pathlib").Path(sys.executable).parent / "orand-addon")
    proc = subprocess.run([exe, "fuse", "--cams-a", str(tmp / "amn"), "--cams-b", str(tmp / "nope"),
                           "--out", str(tmp / "x.h5")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"orand-addon: error: {tmp / 'nope'}: CAM folder not found"


def test_a_foreign_hdf5_file_is_never_modified(amn_mct):
    tmp, _, _ = amn_mct
    foreign = tmp / "other.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    before = foreign.read_bytes()
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", foreign, "--no-progress")
    assert res.exit_code == 2
    assert "other.h5: not an orand-addon store (no layout_version attribute)" in res.output
    assert foreign.read_bytes() == before


def test_ctrl_c_with_worker_processes_is_one_line(amn_mct):
    """A terminal's Ctrl-C reaches the worker processes too: they leave it to the main process, which stops with one
    line (no traceback per worker) and keeps a store that resumes."""
    from helpers import ctrl_c_during

    tmp, _, _ = amn_mct
    out = tmp / "w.h5"
    res = ctrl_c_during("orand_addon.fuse.stage.FuseStage.collect", "fuse", "--cams-a", tmp / "amn", "--cams-b",
                        tmp / "mct", "--out", out, "--workers", 2, "--no-progress")
    assert res.returncode == 130, res.stderr
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr, res.stderr
    kept = int(re.match(r"orand-addon: error: interrupted after (\d+) of 11 images; ", res.stderr).group(1))
    assert len(res.stderr.splitlines()) == 1
    with Store(out) as s:  # what the workers finished is in the store, the rest is fused by the rerun
        assert len(s.ids("or")) == kept
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", out, "--workers", 2, "--no-progress")
    assert res.exit_code == 0 and f"fused {11 - kept} images ({kept} already in the store)" in res.output


def test_workers_come_from_the_shared_pool_and_progress_from_runtime(amn_mct, monkeypatch):
    from orand_addon.engine import stage as engine
    from orand_addon.runtime import progress, workers

    tmp, _, _ = amn_mct
    pools, bars = [], []

    def pool(*args, **kwargs):
        pools.append(args[0])
        return workers.WorkerProcesses(*args, **kwargs)

    def bar(*args, **kwargs):
        bars.append(kwargs.get("desc"))
        return progress.progress(*args, **kwargs)

    monkeypatch.setattr(engine, "worker_processes", pool)
    monkeypatch.setattr(engine, "progress", bar)
    res = run("fuse", "--cams-a", tmp / "amn", "--cams-b", tmp / "mct", "--out", tmp / "w.h5", "--workers", 2,
              "--no-progress")
    assert res.exit_code == 0 and pools == [2] and bars == ["fuse"]

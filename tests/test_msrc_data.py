"""MSRC-v2 data: the numpy-only MAT reader (against scipy.io), the class mapping, the image labels and the split,
and the VOC-layout work folder (on the real files when $ORAND_ADDON_MSRC names them)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from helpers import msrc_root
from orand_addon.cli import cli
from orand_addon.classes import get_class_set, load_labels, read_id_list
from orand_addon.datasets.matfile import MatFileError, read_mat
from orand_addon.datasets.msrc import (CLASSES, MSRC_CLASSES, ClassMap, image_labels, make_split, msrc_class_map,
                                       spread)
from orand_addon.datasets.prepare import prepare_msrc
from orand_addon.io.images import load_image, load_label_png

sio = pytest.importorskip("scipy.io")

# the mapping written out independently of the package: MSRC class -> VOC-style name (None = void)
EXPECTED = {"building": "background", "grass": "background", "tree": "background", "cow": "cow", "horse": None,
            "sheep": "sheep", "sky": "background", "mountain": "background", "aeroplane": "aeroplane",
            "water": "background", "face": "person", "car": "car", "bicycle": "bicycle", "flower": "flower",
            "sign": "sign", "bird": "bird", "book": "book", "chair": "chair", "road": "background", "cat": "cat",
            "dog": "dog", "body": "person", "boat": "boat"}


# -- the MAT reader ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [True, False])
def test_scipy_written_v5_files_read_identically(tmp_path, compress):
    rng = np.random.default_rng(0)
    variables = {"newseg": rng.integers(1, 9, (21, 32)).astype(np.uint8), "a_rather_long_variable_name_x": np.arange(
        6, dtype=np.int16).reshape(2, 3), "d": rng.standard_normal((3, 4, 2)), "f": np.float32([[1.5, -2]]),
                 "flag": np.array([[True, False, True]]), "big": np.arange(70000, dtype=np.uint32).reshape(7, 10000)}
    path = tmp_path / "x.mat"
    sio.savemat(path, variables, do_compression=compress)
    ours, ref = read_mat(path), sio.loadmat(path)
    assert set(ours) == set(variables)
    for name in variables:
        assert ours[name].dtype == ref[name].dtype, name
        np.testing.assert_array_equal(ours[name], ref[name])
    assert set(read_mat(path, ["d", "missing"])) == {"d"}


def test_unsupported_variables_and_bad_files_are_one_line_errors(tmp_path):
    path = tmp_path / "c.mat"
    sio.savemat(path, {"names": np.array(["ab", "cd"]), "x": np.ones((1, 1))}, do_compression=True)
    with pytest.raises(MatFileError) as err:
        read_mat(path)
    assert str(err.value) == f"{path}: variable 'names': char arrays are not supported (numeric arrays only)"
    assert read_mat(path, ["x"])["x"].tolist() == [[1.0]]  # a wanted variable is read past an unsupported one
    cell = tmp_path / "cell.mat"
    sio.savemat(cell, {"c": np.array([np.ones(2), np.ones(3)], dtype=object)})
    with pytest.raises(MatFileError, match="variable 'c': cell arrays are not supported"):
        read_mat(cell)
    truncated = tmp_path / "t.mat"
    sio.savemat(truncated, {"x": np.arange(1000.0)}, do_compression=False)
    truncated.write_bytes(truncated.read_bytes()[:400])
    with pytest.raises(MatFileError) as err:
        read_mat(truncated)
    assert str(err.value) == f"{truncated}: corrupt MAT v5 file (truncated element data)"
    other = tmp_path / "img.mat"
    other.write_bytes(b"\x89PNG" + bytes(200))
    with pytest.raises(MatFileError) as err:
        read_mat(other)
    assert str(err.value) == f"{other}: not a MAT v5 or v7.3 file"


def test_v73_files_go_through_h5py_transposed_back(tmp_path):
    path = tmp_path / "v73.mat"
    seg = np.arange(12, dtype=np.float64).reshape(3, 4)
    with h5py.File(path, "w", userblock_size=512) as f:
        f["newseg"] = seg.T  # MATLAB writes column-major: h5py sees the transpose
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(128))
    np.testing.assert_array_equal(read_mat(path)["newseg"], seg)


# -- classes, labels, split ------------------------------------------------------------------------------------------

def test_every_msrc_class_maps_as_documented():
    cm = ClassMap()
    assert cm.classes == CLASSES and cm.num_classes == 15
    for index, name in enumerate(MSRC_CLASSES, start=1):
        target = EXPECTED[name]
        assert cm.lut[index] == (255 if target is None else CLASSES.index(target)), name
    assert cm.lut[0] == 255  # the unlabelled region
    assert ClassMap(unlabelled="background").lut[0] == 0
    kept = ClassMap(horse="keep")
    assert kept.lut[MSRC_CLASSES.index("horse") + 1] == kept.classes.index("horse")
    assert ClassMap(horse="background").lut[MSRC_CLASSES.index("horse") + 1] == 0


def test_unlabelled_region_and_label_rule():
    seg = np.array([[1, 1, 2, 3]] * 100)  # region 3 is beyond newlabels: nobody labelled it
    msrc = msrc_class_map(seg, np.array([[4, 23]]))  # cow, boat
    assert msrc[0].tolist() == [4, 4, 23, 0]
    mask = ClassMap()(msrc)
    assert mask[0].tolist() == [CLASSES.index("cow"), CLASSES.index("cow"), CLASSES.index("boat"), 255]
    labels = image_labels(mask, 15, 0.3)  # boat has 25 % of the pixels (void counts): below 30 %
    assert np.flatnonzero(labels).tolist() == [CLASSES.index("cow") - 1]
    assert np.flatnonzero(image_labels(mask, 15, 0.25)).tolist() == [CLASSES.index(c) - 1 for c in ("boat", "cow")]


def test_split_and_spread_are_fixed_and_stratified():
    ids = [f"{s}_{n}_s" for s in (1, 2, 3) for n in range(1, 31)] + ["extra_a"]
    split = make_split(ids)
    assert sorted(split["train"] + split["val"]) == sorted(ids)
    for s in (1, 2, 3):
        assert [i for i in split["val"] if i.startswith(f"{s}_")] == [f"{s}_{n}_s" for n in (4, 8, 12, 16, 20, 24, 28)]
    picked = spread(split["train"], 12)
    assert len(picked) == 12 and [sum(p.startswith(f"{s}_") for p in picked) for s in (1, 2, 3)] == [4, 4, 4]
    assert spread(split["train"], 12) == picked
    assert spread(ids, 500) == [f"{s}_{n}_s" for s in (1, 2, 3) for n in range(1, 31)] + ["extra_a"]


# -- the real files ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    raw = msrc_root()
    out = tmp_path_factory.mktemp("msrc") / "voc"
    return raw, prepare_msrc(raw, out, show_progress=False)


def _reference(raw, image_id):
    """The mapped GT written independently: scipy's loadmat + the EXPECTED table."""
    m = sio.loadmat(raw / "newsegmentations_mats" / f"{image_id}_GT.mat")
    labels = m["newlabels"].reshape(-1).astype(int)
    seg = m["newseg"].astype(int)
    out = np.full(seg.shape, 255, np.uint8)
    for region in np.unique(seg):
        if 1 <= region <= len(labels):
            target = EXPECTED[MSRC_CLASSES[labels[region - 1] - 1]]
            out[seg == region] = 255 if target is None else CLASSES.index(target)
    return out


def test_real_gt_files_read_as_scipy_reads_them(prepared):
    raw, _ = prepared
    files = sorted((raw / "newsegmentations_mats").glob("*_GT.mat"))
    for path in files[::40]:
        ours, ref = read_mat(path), sio.loadmat(path)
        for name in ("newseg", "newlabels"):
            assert ours[name].dtype == ref[name].dtype
            np.testing.assert_array_equal(ours[name], ref[name])


def test_work_folder_counts_labels_and_masks(prepared):
    raw, folder = prepared
    classes = get_class_set(str(folder.classes_path))
    assert classes.names == CLASSES
    labels = load_labels(folder.labels_path, classes)
    all_train, all_val = read_id_list(folder.list_path("train_all")), read_id_list(folder.list_path("val_all"))
    # the documented split: 591 images, 452 train / 139 val; with objects 378 / 116; 74 object-less train images
    assert (len(all_train) + len(all_val), len(all_train), len(all_val)) == (591, 452, 139)
    assert (len(folder.train_ids), len(folder.val_ids), len(folder.negative_ids)) == (378, 116, 74)
    assert read_id_list(folder.list_path("train")) == list(folder.train_ids)
    ref_labels = {}
    for image_id in all_train + all_val:
        gt = _reference(raw, image_id)
        present = {int(v) - 1 for v in np.unique(gt) if 0 < v < 255 and (gt == v).sum() >= np.ceil(0.005 * gt.size)}
        ref_labels[image_id] = present
        assert set(labels.get(image_id).tolist()) == present, image_id
    assert set(folder.train_ids) == {i for i in all_train if ref_labels[i]}
    assert set(folder.negative_ids) == {i for i in all_train if not ref_labels[i]}
    assert {"1_23_s", "1_24_s", "1_25_s"} & set(folder.train_ids + folder.val_ids) == set()  # horse only: void
    per_image = np.bincount([len(v) for v in ref_labels.values()]).tolist()
    assert json.loads((folder.root / "msrc.json").read_text())["counts"]["objects_per_image"] == {
        str(k): n for k, n in enumerate(per_image)}
    for image_id in folder.train_ids[::50]:
        np.testing.assert_array_equal(load_label_png(folder.masks / f"{image_id}.png"), _reference(raw, image_id))
        source = next((raw / "Images").glob(f"{image_id}.*"))
        from PIL import Image

        with Image.open(source) as im:
            np.testing.assert_array_equal(load_image(folder.images, image_id), np.asarray(im.convert("RGB")))


def test_prepared_folder_is_reused_and_other_settings_refused(prepared):
    raw, folder = prepared
    stamp = (folder.root / "msrc.json").stat().st_mtime_ns
    assert prepare_msrc(raw, folder.root, show_progress=False) == folder
    assert (folder.root / "msrc.json").stat().st_mtime_ns == stamp
    res = CliRunner().invoke(cli, ["demo", "--dataset", "msrc", "--data", str(raw), "--make-data", str(folder.root),
                                   "--no-progress"])
    assert res.exit_code == 0 and "wrote 378 train + 116 val images with objects (74 object-less" in res.output
    with pytest.raises(Exception) as err:
        prepare_msrc(raw, folder.root, ClassMap(horse="keep"), show_progress=False)
    assert str(err.value) == (f"{folder.root}: holds an MSRC work folder prepared with other settings (horse, "
                              f"class_names differ); use another folder or delete it")


def test_not_an_msrc_folder_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["demo", "--dataset", "msrc", "--data", str(tmp_path), "--out",
                                   str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 2
    assert res.output == (f"orand-addon: error: {tmp_path}: not the MSRC-v2 layout (expected the folders Images/ and "
                          f"newsegmentations_mats/)\n")
    res = CliRunner().invoke(cli, ["demo", "--dataset", "msrc", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--dataset msrc needs --data DIR" in res.output

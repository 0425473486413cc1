"""CAM readers: every native layout round-trips, detection decides only when unambiguous, pickles are safe."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from helpers import gt_classes, gt_mask, pseudo_cams, voc_mini_ids, write_voc_mini_cams
from orand_addon.classes import ImageLabels, get_class_set, load_labels
from orand_addon.errors import FormatError, OrandError, UnsafePickleError
from orand_addon.io.safe_pickle import safe_load_npy
from orand_addon.io.sources import read_cams

FORMATS = ["irn", "amn", "orandnet", "mctformer", "crf-dict", "toco", "clip-es", "npz"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_on_real_voc_masks(tmp_path, fmt):
    ids = voc_mini_ids()[:4]
    written = write_voc_mini_cams(tmp_path, fmt, seed=1, ids=ids)
    labels = load_labels(None, get_class_set("voc"))
    source = read_cams(tmp_path, format="auto", labels=labels)
    assert source.format == fmt
    assert sorted(source) == sorted(ids)
    for image_id, (keys, maps) in written.items():
        rec = source[image_id]
        assert rec.keys.tolist() == keys.tolist()
        tol = 1e-3 if fmt == "clip-es" else 0  # clip-es stores float16
        np.testing.assert_allclose(rec.maps, maps, atol=tol, rtol=0)
        # VOC GT classes equal the official image-level labels of these ids
        assert labels.get(image_id).tolist() == gt_classes(gt_mask(image_id)).tolist()


def test_native_amn_layout_is_what_amn_writes(tmp_path):
    image_id = voc_mini_ids()[0]
    write_voc_mini_cams(tmp_path, "amn", seed=2, ids=[image_id])
    raw = np.load(tmp_path / f"{image_id}.npy", allow_pickle=True).item()
    assert torch.is_tensor(raw["keys"]) and raw["keys"].dtype == torch.int64
    assert torch.is_tensor(raw["cam"]) and isinstance(raw["high_res"], np.ndarray)
    h, w = gt_mask(image_id).shape
    k = raw["keys"].numel()
    assert raw["high_res"].shape == (k + 1, h, w)
    assert tuple(raw["cam"].shape) == (k + 1, (h + 3) // 4, (w + 3) // 4)
    rec = read_cams(tmp_path)[image_id]
    np.testing.assert_array_equal(rec.maps, raw["high_res"][1:])  # background channel 0 dropped


def test_int_keyed_dict_without_labels_is_ambiguous_and_asks(tmp_path):
    keys = np.array([0, 14])  # aeroplane as class 0: key 0 present in every file
    maps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    for i in range(3):
        np.save(tmp_path / f"x{i}.npy", {int(k): m for k, m in zip(keys, maps)})
    hint = r"; name it with --format-a/--format-b \(fuse\) or --format: mctformer or crf-dict$"
    with pytest.raises(FormatError, match=r"cannot tell the CAM format .*" + hint):
        read_cams(tmp_path)
    labels = ImageLabels({f"x{i}": np.eye(20)[[0, 14]].sum(0) for i in range(3)}, 20)
    assert read_cams(tmp_path, labels=labels).format == "mctformer"
    crf_labels = ImageLabels({f"x{i}": np.eye(20)[[13]].sum(0) for i in range(3)}, 20)  # keys = 0 + (13 + 1)
    assert read_cams(tmp_path, labels=crf_labels).format == "crf-dict"


def test_file_without_key_zero_decides_mctformer(tmp_path):
    np.save(tmp_path / "a.npy", {0: np.ones((4, 4), np.float32)})
    np.save(tmp_path / "b.npy", {5: np.ones((4, 4), np.float32)})
    assert read_cams(tmp_path).format == "mctformer"


def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    np.save(tmp_path / "2007_000033.npy", {"keys": np.array([0]), "high_res": Evil()}, allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=r"2007_000033.npy: refused to unpickle posix.system"):
        safe_load_npy(tmp_path / "2007_000033.npy")
    assert not marker.exists()


def test_truncated_npy_names_the_file(tmp_path):
    write_voc_mini_cams(tmp_path, "irn", seed=1, ids=voc_mini_ids()[:1])
    path = next(tmp_path.glob("*.npy"))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(FormatError, match=f"{path.name}: corrupt or truncated"):
        safe_load_npy(path)


def test_plain_npy_array_loads_without_pickle(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6).reshape(2, 3))
    assert safe_load_npy(tmp_path / "a.npy").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_labels_accept_int_and_str_keys(tmp_path):
    voc = get_class_set("voc")
    bundled = load_labels(None, voc)
    assert len(bundled) == 12031
    assert bundled.get("2007_000032").tolist() == [0, 14]
    as_str = {i: np.eye(20, dtype=np.float32)[bundled.get(i)].sum(0) for i in voc_mini_ids()}
    np.save(tmp_path / "str_labels.npy", as_str)
    loaded = load_labels(tmp_path / "str_labels.npy", voc)
    for i in voc_mini_ids():
        assert loaded.get(i).tolist() == bundled.get(i).tolist()


def test_wrong_format_given_is_named(tmp_path):
    write_voc_mini_cams(tmp_path, "mctformer", seed=1, ids=voc_mini_ids()[:1])
    source = read_cams(tmp_path, format="irn")
    with pytest.raises(FormatError, match=r"not a irn CAM file \(it looks like mctformer"):
        source[voc_mini_ids()[0]]


def test_unknown_format_lists_valid_ones(tmp_path):
    with pytest.raises(OrandError, match="valid: auto, irn, amn"):
        read_cams(tmp_path, format="seam")


def test_pseudo_cams_are_max_normalised():
    mask = gt_mask(voc_mini_ids()[0])
    maps = pseudo_cams(mask, gt_classes(mask), seed=0)
    assert np.allclose(maps.max(axis=(1, 2)), 1.0)


def test_json_labels_are_always_class_indices(tmp_path):
    import json

    names = tmp_path / "classes.txt"
    names.write_text("background\ncat\n")  # one foreground class: a list of length 1 == K
    (tmp_path / "l.json").write_text(json.dumps({"img": [0], "none": []}))
    labels = load_labels(tmp_path / "l.json", get_class_set(str(names)))
    assert labels.get("img").tolist() == [0] and labels.get("none").tolist() == []
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    (tmp_path / "m.json").write_text(json.dumps({"img": [0, 1]}))
    assert load_labels(tmp_path / "m.json", get_class_set(str(tmp_path / "two.txt"))).get("img").tolist() == [0, 1]
    (tmp_path / "bad.json").write_text(json.dumps({"img": [5]}))
    with pytest.raises(OrandError, match=r"bad.json: label of 'img' has class indices outside 0..1"):
        load_labels(tmp_path / "bad.json", get_class_set(str(tmp_path / "two.txt")))

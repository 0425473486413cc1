"""Bad values and bad input end in one line naming the file, id or option (exit 2), never "internal error": maps
holding NaN/Inf (train, predict, export, evaluate), classes that do not cover the dumps' keys, maps of strings,
complex numbers or no pixels, JSON labels that are not lists of classes, names and texts that are not UTF-8, a store
entry that is not a dataset, --sweep and --scales out of range. Where a store is written, what was finished before
the refusal equals an uninterrupted run's."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from helpers import GT, one_torch_thread, voc_mini_ids, write_voc_mini_cams  # noqa: F401 (fixture)
from test_orandnet_data import make_tiny_store
from orand_addon.cli import cli
from orand_addon.store.store import Store

TINY = ["--no-progress", "--device", "cpu"]
IDS = voc_mini_ids()
NAN_ID = IDS[-1]  # the last id: every other id is computed before it in one process


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error(res) -> str:
    """The last line, which must be the one-line error of a failed command."""
    assert res.exit_code == 2, res.output
    assert "internal error" not in res.output and "Traceback" not in res.output
    return res.output.splitlines()[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny or/and store of VOC-mini, a 2-iteration ORANDNet checkpoint, and the store predicted without NaN."""
    root = tmp_path_factory.mktemp("values")
    store = make_tiny_store(root)
    res = run("train", "--store", store, "--out", root / "run", "--iterations", 2, "--pretrained", "none",
              "--width-div", 8, *TINY)
    assert res.exit_code == 0, res.output
    reference = root / "reference.h5"
    shutil.copy(store, reference)
    res = run("predict", "--store", reference, "--checkpoint", root / "run" / "model.pt", "--batch-size", 1, *TINY)
    assert res.exit_code == 0, res.output
    return store, root / "run" / "model.pt", reference


def with_nan(store: Path, tmp_path: Path, kind: str = "or", value: float = np.nan) -> Path:
    copy = tmp_path / "nan.h5"
    shutil.copy(store, copy)
    with h5py.File(copy, "a") as h5:
        maps = h5[kind][NAN_ID][()]
        maps[0, 3, 4] = value
        h5[kind][NAN_ID][...] = maps
    return copy


def nan_line(store: Path, kind: str = "or") -> str:
    with Store(store) as s:
        size = int(np.prod(s.map_shape(kind, NAN_ID)))
    return (f"orand-addon: error: {store}: /{kind}/{NAN_ID} holds NaN/Inf (1 of {size} values): the store was damaged "
            f"or edited; rewrite /{kind} (its command with --overwrite)")


@pytest.mark.parametrize("workers", [1, 2])
def test_train_refuses_maps_holding_nan_naming_the_id(trained, tmp_path, workers):
    store = with_nan(trained[0], tmp_path, "and", np.inf)
    out = tmp_path / "run"
    res = run("train", "--store", store, "--out", out, "--iterations", len(IDS), "--pretrained", "none",
              "--width-div", 8, "--workers", workers, *TINY)  # one epoch: every id is read
    assert error(res) == nan_line(store, "and")
    assert not (out / "last.pt").exists() and not (out / "model.pt").exists()  # no checkpoint trained on NaN


def test_predict_refuses_maps_holding_nan_and_keeps_what_it_finished(trained, tmp_path):
    store, ckpt, reference = trained
    nan = with_nan(store, tmp_path)
    res = run("predict", "--store", nan, "--checkpoint", ckpt, "--batch-size", 1, *TINY)
    assert error(res) == nan_line(nan)
    with Store(nan) as s, Store(reference) as r:
        done = s.ids("orandnet")
        assert NAN_ID not in done and done
        for image_id in done:  # what was finished equals the uninterrupted run's
            np.testing.assert_array_equal(s.read_maps("orandnet", image_id)[0], r.read_maps("orandnet", image_id)[0])
    with h5py.File(nan, "a") as h5, h5py.File(store, "r") as clean:  # repaired: the rerun completes the same store
        h5["or"][NAN_ID][...] = clean["or"][NAN_ID][()]
    res = run("predict", "--store", nan, "--checkpoint", ckpt, "--batch-size", 1, *TINY)
    assert res.exit_code == 0, res.output
    assert f"{len(done)} images already have /orandnet (skipped)" in res.output
    with Store(nan) as s, Store(reference) as r:
        assert s.ids("orandnet") == r.ids("orandnet")
        for image_id in s.ids("orandnet"):
            np.testing.assert_array_equal(s.read_maps("orandnet", image_id)[0], r.read_maps("orandnet", image_id)[0])


def test_predict_refuses_a_checkpoint_whose_weights_hold_nan(trained, tmp_path):
    store, ckpt, _ = trained
    saved = torch.load(ckpt, weights_only=True)
    name = next(iter(saved["model"]))
    saved["model"][name] = saved["model"][name].clone().fill_(float("nan"))
    bad = tmp_path / "diverged.pt"
    torch.save(saved, bad)
    copy = tmp_path / "s.h5"
    shutil.copy(store, copy)
    res = run("predict", "--store", copy, "--checkpoint", bad, *TINY)
    assert error(res) == (f"orand-addon: error: {bad}: 1 weight tensors hold NaN/Inf (e.g. {name}): the training "
                          f"diverged; train again (a lower --lr)")


def test_export_and_evaluate_refuse_maps_holding_nan(trained, tmp_path):
    nan = with_nan(trained[0], tmp_path)
    clean = tmp_path / "clean"
    assert run("export", "--store", trained[0], "--kind", "or", "--to", "png", "--bg-thres", 0.3, "--out", clean,
               "--no-progress").exit_code == 0
    for target in ("png", "irn"):
        res = run("export", "--store", nan, "--kind", "or", "--to", target, "--bg-thres", 0.3, "--out",
                  tmp_path / target, "--no-progress")
        assert error(res) == nan_line(nan)
        assert not list((tmp_path / target).glob(f"{NAN_ID}.*"))
    for image_id in IDS[:-1]:  # the files written before it are the clean export's
        assert (tmp_path / "png" / f"{image_id}.png").read_bytes() == (clean / f"{image_id}.png").read_bytes()
    res = run("evaluate", "--pred", f"{nan}:or", "--gt", GT, "--resize-pred", "--no-progress")
    assert error(res) == nan_line(nan)


# -- classes ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dumps")
    write_voc_mini_cams(root / "amn", "amn", seed=1)
    write_voc_mini_cams(root / "mct", "mctformer", seed=2)
    return root


def fuse(dumps: Path, out: Path, *extra, a: Path | None = None):
    return run("fuse", "--cams-a", a or dumps / "amn", "--cams-b", dumps / "mct", "--out", out, "--no-progress", *extra)


def test_classes_that_do_not_cover_the_keys_of_the_dumps_are_refused_before_anything_is_written(dumps, tmp_path):
    names = tmp_path / "three.txt"
    names.write_text("aeroplane\nbicycle\nbird\n")
    out = tmp_path / "s.h5"
    res = fuse(dumps, out, "--classes", names)
    first = next(i for i in IDS if max(np.load(dumps / "amn" / f"{i}.npy", allow_pickle=True).item()["keys"]) > 2)
    key = int(max(np.load(dumps / "amn" / f"{first}.npy", allow_pickle=True).item()["keys"]))
    assert error(res) == (f"orand-addon: error: {dumps / 'amn' / first}.npy: class key {key} is not one of the 3 "
                          f"classes of --classes three (keys 0..2); give the class set the CAMs were made with")
    assert not out.exists()


def test_json_labels_take_class_names_and_refuse_anything_else_naming_the_id(dumps, tmp_path):
    ids = IDS[:3]
    (tmp_path / "ids.txt").write_text("\n".join(ids))
    with_indices, with_names = tmp_path / "indices.json", tmp_path / "names.json"
    from orand_addon.classes import VOC_CLASSES, get_class_set, load_labels

    voc = load_labels(None, get_class_set("voc"))
    with_indices.write_text(json.dumps({i: voc.get(i).tolist() for i in ids}))
    with_names.write_text(json.dumps({i: [VOC_CLASSES[c + 1] for c in voc.get(i).tolist()] for i in ids}))
    for labels in (with_indices, with_names):
        assert fuse(dumps, tmp_path / f"{labels.stem}.h5", "--labels", labels, "--ids", tmp_path / "ids.txt",
                    "--dtype", "float32").exit_code == 0
    with Store(tmp_path / "indices.h5") as a, Store(tmp_path / "names.h5") as b:
        for image_id in ids:
            np.testing.assert_array_equal(a.read_maps("or", image_id)[0], b.read_maps("or", image_id)[0])
    cases = {
        b'{"%s": null}' % ids[0].encode(): f"label of '{ids[0]}' must be a list of class indices or names, got null",
        b'{"%s": [null]}' % ids[0].encode(): f"label of '{ids[0]}' holds null; expected class indices (0-based "
                                             f"foreground) or class names",
        b'{"%s": [true]}' % ids[0].encode(): f"label of '{ids[0]}' holds true; expected class indices (0-based "
                                             f"foreground) or class names",
        b'{"%s": ["unicorn"]}' % ids[0].encode(): f"label of '{ids[0]}' names class 'unicorn', which is not in the "
                                                  f"voc class set (aeroplane, bicycle, bird, boat, ...)",
        b'{"%s": [1]}\xff\xfe' % ids[0].encode(): "label file is not UTF-8 text (byte 0xff at offset 20)",
        b'[1, 2]': "expected a JSON object {id: [class index or name, ...]}, got list",
    }
    for n, (content, message) in enumerate(cases.items()):
        labels = tmp_path / f"bad{n}.json"
        labels.write_bytes(content)
        res = fuse(dumps, tmp_path / f"bad{n}.h5", "--labels", labels)
        assert error(res) == f"orand-addon: error: {labels}: {message}"


# -- maps that are not real numbers; names and texts that are not UTF-8 -------------------------------------------

BAD_MAPS = {
    "strings": (np.array([["a", "b"], ["c", "d"]]), "the map of class key 0 holds <U1 values, not numbers"),
    "complex": (np.full((366, 500), 0.5 + 0.5j, np.complex64),
                "the map of class key 0 holds complex values (complex64); maps must be real numbers"),
    "no pixels": (np.zeros((0, 0), np.float32), "the map of class key 0 is empty (0 x 0)"),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPS))
def test_a_map_of_strings_complex_numbers_or_no_pixels_is_one_line(dumps, tmp_path, case):
    value, message = BAD_MAPS[case]
    folder = tmp_path / "mct"
    shutil.copytree(dumps / "mct", folder)
    np.save(folder / f"{IDS[0]}.npy", {0: value}, allow_pickle=True)
    res = run("fuse", "--cams-a", dumps / "amn", "--cams-b", folder, "--format-b", "mctformer", "--out",
              tmp_path / "s.h5", "--no-progress")
    assert error(res) == f"orand-addon: error: {folder / IDS[0]}.npy: {message}"


def test_a_file_name_that_is_not_utf8_is_refused_before_fusing_and_an_id_list_too(dumps, tmp_path):
    folder = tmp_path / "amn"
    shutil.copytree(dumps / "amn", folder)
    os.rename(folder / f"{IDS[0]}.npy", os.fsencode(folder) + b"/2007_\xff.npy")
    out = tmp_path / "s.h5"
    res = fuse(dumps, out, a=folder)
    assert error(res) == (f"orand-addon: error: {folder}: the file name b'2007_\\xff.npy' is not valid UTF-8; "
                          f"image ids are stored as UTF-8 text: rename it, or move it out of the folder")
    assert not out.exists()
    ids = tmp_path / "ids.txt"
    ids.write_bytes(IDS[1].encode() + b"\n\xe9t\xe9\n")
    res = fuse(dumps, out, "--ids", ids)
    assert error(res) == f"orand-addon: error: --ids {ids}: id list is not UTF-8 text (byte 0xe9 at offset 12)"


def test_a_store_entry_that_is_not_a_map_dataset_is_one_line_in_every_reader(dumps, tmp_path):
    store = tmp_path / "s.h5"
    assert fuse(dumps, store).exit_code == 0
    with h5py.File(store, "a") as h5:
        h5["or"].create_group("zz_nested")["x"] = np.zeros(3)
        h5["and"][IDS[0]].attrs["keys"] = np.array([b"a"])
    line = f"orand-addon: error: {store}: /or/zz_nested is not a dataset: a layout orand-addon does not write"
    assert error(run("evaluate", "--pred", f"{store}:or", "--gt", GT, "--no-progress")) == line
    res = run("export", "--store", store, "--kind", "or", "--to", "irn", "--out", tmp_path / "irn", "--no-progress")
    assert error(res) == (f"orand-addon: error: {store}: /or/zz_nested is a group, not a map dataset (a layout "
                          f"orand-addon does not write)")
    res = run("inspect", store)
    assert "  /or/zz_nested: not a dataset (a layout orand-addon does not write)" in res.output.splitlines()
    assert error(res) == f"orand-addon: error: {store}: 1 entry cannot be read (listed above)"
    res = run("evaluate", "--pred", f"{store}:and", "--gt", GT, "--no-progress")
    assert error(res) == f"orand-addon: error: {store}: /and/{IDS[0]} has 'keys' of type |S1, not class indices"


# -- options out of range -----------------------------------------------------------------------------------------

def test_sweep_and_scales_out_of_range_name_the_option(dumps, tmp_path):
    store = tmp_path / "s.h5"
    assert fuse(dumps, store).exit_code == 0
    res = run("evaluate", "--pred", f"{store}:or", "--gt", GT, "--sweep", "0.1:inf:0.1", "--no-progress")
    assert error(res) == "orand-addon: error: --sweep '0.1:inf:0.1': START, STOP and STEP must be finite numbers"
    for scales, why in (("nan", "expected positive numbers, comma-separated"),
                        ("1,inf", "expected positive numbers, comma-separated"),
                        ("1e6", "at most 8 (a larger scale makes a larger image than any network input)")):
        res = run("segment", "--checkpoint", tmp_path / "none.pt", "--images", tmp_path, "--ids", "val", "--out",
                  tmp_path / "o", "--scales", scales)
        assert error(res) == f"Error: Invalid value for --scales: '{scales}': {why}"


STORE_ENTRIES = {
    "strings": (lambda: np.array([[[b"a", b"b"]]]), "holds |S1 values, not real-valued maps"),
    "complex": (lambda: np.ones((1, 4, 5), np.complex64), "holds complex values, not real-valued maps"),
    "no pixels": (lambda: np.zeros((1, 0, 0), np.float16), "has empty 0 x 0 maps"),
    "2-D": (lambda: np.zeros((4, 5), np.float16), "must be maps (K, H, W), got shape (4, 5)"),
    "keys mismatch": (lambda: np.zeros((2, 4, 5), np.float16), "has 2 maps but 1 keys"),
    "key outside": (lambda: np.zeros((1, 4, 5), np.float16), "has class key 20, outside the store's 20 classes"),
}


@pytest.mark.parametrize("case", sorted(STORE_ENTRIES))
def test_a_store_map_that_is_not_real_numbers_of_some_pixels_is_one_line(dumps, tmp_path, case):
    store = tmp_path / "s.h5"
    assert fuse(dumps, store).exit_code == 0
    data, message = STORE_ENTRIES[case]
    with h5py.File(store, "a") as h5:
        del h5["or"][IDS[0]]
        h5["or"][IDS[0]] = data()
        h5["or"][IDS[0]].attrs["keys"] = np.array([20 if case == "key outside" else 0])
    res = run("evaluate", "--pred", f"{store}:or", "--gt", GT, "--no-progress")
    assert error(res) == f"orand-addon: error: {store}: /or/{IDS[0]} {message}"

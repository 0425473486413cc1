"""`orand-addon export` (IRN layout, PNG, lists) and `orand-addon inspect`."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from helpers import run, voc_mini_ids, write_voc_mini_cams  # noqa: E402,F401 (one_process_env: autouse fixture)
from orand_addon.io.sources import read_cams
from orand_addon.masks import maps_to_mask
from orand_addon.store.store import Store


def _fused(tmp_path):
    write_voc_mini_cams(tmp_path / "amn", "amn", seed=1)
    write_voc_mini_cams(tmp_path / "mct", "mctformer", seed=2)
    out = tmp_path / "f.h5"
    assert run("fuse", "--cams-a", tmp_path / "amn", "--cams-b", tmp_path / "mct", "--out", out,
               "--no-progress").exit_code == 0
    return out


def test_export_irn_layout_loads_as_irn_does(tmp_path):
    store = _fused(tmp_path)
    res = run("export", "--store", store, "--kind", "or", "--to", "irn", "--out", tmp_path / "irn", "--no-progress")
    assert res.exit_code == 0, res.output
    with Store(store) as s:
        for image_id in voc_mini_ids():
            d = np.load(tmp_path / "irn" / f"{image_id}.npy", allow_pickle=True).item()  # what IRN's scripts do
            maps, keys = s.read_maps("or", image_id)
            assert torch.is_tensor(d["keys"]) and d["keys"].tolist() == keys.tolist()
            assert torch.is_tensor(d["cam"]) and isinstance(d["high_res"], np.ndarray)
            h, w = maps.shape[1:]
            assert tuple(d["cam"].shape) == (len(keys), (h + 3) // 4, (w + 3) // 4)
            np.testing.assert_array_equal(d["high_res"], maps)
            # IRN's cam_to_ir_label: pad keys with background, prepend a threshold channel, argmax
            padded = np.pad(d["keys"].numpy() + 1, (1, 0), mode="constant")
            ir = padded[np.argmax(np.pad(d["high_res"], ((1, 0), (0, 0), (0, 0)), constant_values=0.3), axis=0)]
            np.testing.assert_array_equal(ir, maps_to_mask(maps, keys, 0.3))
    assert read_cams(tmp_path / "irn").format == "irn"


def test_export_png_and_lists(tmp_path):
    store = _fused(tmp_path)
    res = run("export", "--store", store, "--kind", "and", "--to", "png", "--out", tmp_path / "png", "--no-progress")
    assert res.exit_code == 2 and "pass --bg-thres" in res.output
    res = run("export", "--store", store, "--kind", "and", "--to", "png", "--bg-thres", "0.3", "--out",
              tmp_path / "png", "--no-progress")
    assert res.exit_code == 0, res.output
    image_id = "2011_000006"
    with Store(store) as s:
        maps, keys = s.read_maps("and", image_id)
    png = Image.open(tmp_path / "png" / f"{image_id}.png")
    assert png.mode == "P"
    np.testing.assert_array_equal(np.asarray(png), maps_to_mask(maps, keys, 0.3))
    res = run("export", "--store", store, "--kind", "or", "--to", "lists", "--out", tmp_path / "lists")
    assert res.exit_code == 0
    assert (tmp_path / "lists" / "or_ids.txt").read_text().split() == voc_mini_ids()
    labels = np.load(tmp_path / "lists" / "cls_labels.npy", allow_pickle=True).item()
    assert np.flatnonzero(labels[image_id]).tolist() == [8, 14, 17]


def test_inspect_folder_reports_format_and_problems(tmp_path):
    write_voc_mini_cams(tmp_path / "amn", "amn", seed=1)
    bad = tmp_path / "amn" / "2007_000042.npy"
    bad.write_bytes(bad.read_bytes()[:300])
    res = run("inspect", tmp_path / "amn")
    assert res.exit_code == 2, res.output  # a file that fuse would refuse fails the inspection too
    out = res.output
    assert out.splitlines()[-1] == (f"orand-addon: error: {tmp_path / 'amn'}: 1 of 11 files were refused or could "
                                    f"not be read (listed above)")
    assert "format amn (structure), 11 files" in out
    assert "read 10 of 11 files" in out
    assert "classes per image: 1 .. 3" in out
    assert "problems: 1" in out and "2007_000042.npy: corrupt or truncated" in out


def test_inspect_store(tmp_path):
    store = _fused(tmp_path)
    res = run("inspect", store)
    assert res.exit_code == 0
    assert "/or: 11 maps" in res.output and "source a:" in res.output and "(amn)" in res.output


def test_inspect_names_classes_in_its_problems(tmp_path):
    from helpers import gt_classes, gt_mask
    from orand_addon.classes import VOC_CLASSES
    from orand_addon.io.writers import write_cam

    image_id = "2011_000006"
    written = write_voc_mini_cams(tmp_path / "amn", "amn", seed=1, ids=[image_id, "2007_000033"])
    keys, maps = written[image_id]
    maps = maps.copy()
    maps[1] = 0.0  # the second class's map is all zero
    write_cam(tmp_path / "amn", image_id, "amn", keys, maps)
    write_cam(tmp_path / "amn", "2007_000033", "amn", keys[:1], written["2007_000033"][1])  # a class it has not
    res = run("inspect", tmp_path / "amn")
    assert res.exit_code == 0, res.output
    names = [VOC_CLASSES[k + 1] for k in keys]
    assert f"{image_id}.npy: all-zero map for {names[1]}" in res.output
    truth = VOC_CLASSES[gt_classes(gt_mask("2007_000033"))[0] + 1]
    assert f"2007_000033.npy: classes {names[0]} differ from the labels' {truth}" in res.output

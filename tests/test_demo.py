"""`orand-addon demo` as a user types it: the dataset only, and a run stopped after the fuse stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from orand_addon.cli import cli
from orand_addon.classes import load_labels, get_class_set
from orand_addon.io.images import load_label_png
from orand_addon.store.store import Store

TINY = "ci,n_train=12,n_val=4,cnn_epochs=1,vit_epochs=1"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_make_data_writes_a_voc_layout_dataset(tmp_path):
    res = run("demo", "--make-data", tmp_path / "syn", "--size", TINY, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "wrote 12 train + 4 val images" in res.output
    root = tmp_path / "syn"
    train = (root / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    assert len(train) == 12 and len((root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()) == 4
    labels = load_labels(root / "cls_labels.npy", get_class_set(str(root / "classes.txt")))
    for image_id in train:
        assert (root / "JPEGImages" / f"{image_id}.jpg").is_file()
        mask = load_label_png(root / "SegmentationClassAug" / f"{image_id}.png")
        present = sorted({int(v) - 1 for v in np.unique(mask) if 0 < v < 255})
        assert labels.get(image_id).tolist() == present


def test_demo_stops_after_fuse_with_the_native_sources_in_the_store(tmp_path):
    out = tmp_path / "demo"
    res = run("demo", "--out", out, "--size", TINY, "--stop-after", "fuse", "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "[3/7] fuse" in res.output and "stopped after 'fuse' (--stop-after)" in res.output
    with Store(out / "fused.h5") as s:
        assert {"a", "b", "or", "and", "mean"} <= set(s.kinds())
        assert [x["format"] for x in s.provenance["sources"]] == ["amn", "mctformer"]
        image_id = s.ids("or")[0]
        a, b = s.read_maps("a", image_id)[0].astype(np.float64), s.read_maps("b", image_id)[0].astype(np.float64)
        ref = a + b - a * b
        ref = ref / np.where(ref.max(axis=(1, 2), keepdims=True) > 0, ref.max(axis=(1, 2), keepdims=True), 1)
        np.testing.assert_allclose(s.read_maps("or", image_id)[0], ref, atol=2e-3)  # float16 store
    record = json.loads((out / "results.json").read_text())
    assert set(record["timings_s"]) == {"data", "cams", "fuse"}
    assert record["machine"]["cores"] >= 1 and record["machine"]["device"] == "cpu: " + (
        record["machine"]["cpu"]) and record["date"][:2] == "20"
    written = {p: p.stat().st_mtime_ns for p in (out / "cams").rglob("*") if p.is_file()}
    res = run("demo", "--out", out, "--size", TINY, "--stop-after", "fuse", "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, res.output
    # the rerun reuses the classifiers and their CAM dumps instead of training again
    assert {p: p.stat().st_mtime_ns for p in (out / "cams").rglob("*") if p.is_file()} == written
    # ... and keeps the time they took: its own (the resume's ~0 s) is added, not written over it
    rerun = json.loads((out / "results.json").read_text())["timings_s"]
    shown = [float(line.split()[1]) for line in res.output.splitlines() if line.startswith("    cams: ")]
    assert rerun["cams"] == pytest.approx(record["timings_s"]["cams"] + shown[0], abs=0.051)
    assert rerun["cams"] >= record["timings_s"]["cams"] > 1


def test_unknown_size_is_one_line(tmp_path):
    res = run("demo", "--out", tmp_path / "d", "--size", "huge", "--no-progress")
    assert res.exit_code == 2
    assert res.output.startswith("orand-addon: error: unknown size 'huge'; valid: ci, default, large")

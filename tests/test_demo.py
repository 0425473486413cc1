"""`orand-addon demo` as a user types it: the dataset only, and a run stopped after the fuse stage."""

from __future__ import annotations

from helpers import run  # noqa: E402,F401 (one_process_env: autouse fixture)

import json

import numpy as np
import pytest

from orand_addon.classes import load_labels, get_class_set
from orand_addon.io.images import load_label_png
from orand_addon.store.store import Store

TINY = "ci,n_train=12,n_val=4,cnn_epochs=1,vit_epochs=1"


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
    assert rerun["cams"] >= record["timings_s"]["cams"] > 0  # kept, not replaced by the resume's time


def test_unknown_size_is_one_line(tmp_path):
    res = run("demo", "--out", tmp_path / "d", "--size", "huge", "--no-progress")
    assert res.exit_code == 2
    assert res.output.startswith("orand-addon: error: unknown size 'huge'; valid: ci, default, large")


def test_demo_report_has_every_stage_times_colour_bar_legend_and_deeplab(tmp_path):
    """The demo's report page from a real (tiny) run stopped after fuse: the rows of the scored kinds, the stage
    times, the sweep chart, per-class IoU, train examples through every kind in the store and DeepLab's val masks
    (here the ground truth stands in for them), each mask section with a legend of the synthetic classes shown."""
    import re

    from orand_addon.demo.report import write_demo_report
    from orand_addon.demo.run import SWEEP, _scores, map_rows
    from orand_addon.demo.synthetic.benchmark import SyntheticBenchmark
    from orand_addon.demo.synthetic import load_dataset
    from orand_addon.evaluation.stage import evaluate
    from orand_addon.io.images import save_label_png

    out = tmp_path / "demo"
    assert run("demo", "--out", out, "--size", TINY, "--stop-after", "fuse", "--device", "cpu",
               "--no-progress").exit_code == 0
    info = load_dataset(out / "data")
    record = json.loads((out / "results.json").read_text())
    labels = dict((kind, label) for label, kind in map_rows(SyntheticBenchmark(TINY)))
    evaluations, rows = {}, []
    for kind in ("a", "b", "or"):
        result = evaluate(f"{out / 'fused.h5'}:{kind}", info.masks, ids=list(info.train_ids), sweep=SWEEP,
                          classes=str(info.classes_path))
        evaluations[kind] = result
        rows.append({"row": labels[kind], "kind": kind, "best_thres": result.best_threshold,
                     **_scores(result, result.best), "pa_thres": result.precision_aware_threshold,
                     "pa": _scores(result, result.precision_aware) if result.precision_aware is not None else None})
    val = tmp_path / "val_masks"
    val.mkdir()
    for image_id in info.val_ids:
        save_label_png(val / f"{image_id}.png", load_label_png(info.masks / f"{image_id}.png"))
    record.update(rows=rows, deeplab=[{"row": "DeepLab, no scale schedule", "mIoU": 12.34, "precision": 23.45,
                                       "recall": 34.56, "train_s": 61.0}])
    page = write_demo_report(out / "report", record, evaluations, out / "fused.h5", info,
                             [("DeepLab, no scale schedule", val)], examples=3).read_text()
    for r in rows:
        assert (f"<td>{labels[r['kind']]}</td><td>{r['best_thres']:.2f}</td><td>{r['mIoU']:.1f}</td>"
                f"<td>{r['precision']:.1f}</td><td>{r['recall']:.1f}</td>") in page
    assert "<td>DeepLab (val)</td><td>DeepLab, no scale schedule (trained in 61 s)</td><td></td><td>12.3</td>" in page
    for stage, seconds in record["timings_s"].items():
        assert f"<tr><td>{stage}</td><td>{seconds:.1f}</td>" in page
    assert (out / "report" / "sweeps.png").is_file() and "<h2>IoU per class</h2>" in page
    captions = ["image", "CNN CAM", "ViT CAM", "mean", "OR", "AND", "ground truth"]
    assert all(page.count(f"<figcaption>{c}</figcaption>") >= 3 for c in captions)
    assert page.count("<figcaption>DeepLab, no scale schedule</figcaption>") == 3
    assert 'class="bar" style="background:linear-gradient(to right,#000080,' in page
    legends = re.findall(r'<div class="legend">(.*?)</div>', page)
    assert len(legends) == 2
    for legend, ids in zip(legends, (list(info.train_ids), list(info.val_ids))):
        chosen = [ids[int(round(i * (len(ids) - 1) / 2))] for i in range(3)]
        values = set().union(*(np.unique(load_label_png(info.masks / f"{i}.png")).tolist() for i in chosen))
        for value in values:
            assert (info.class_names[value] if value < 255 else "void / no prediction") in legend, (value, legend)

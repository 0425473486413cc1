"""`orand-addon evaluate` on the real VOC-mini masks: every number against independent counting, the sweep's
thresholds, the baseline gate, and each bad input with its message."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from helpers import (GT, JPEG, gt_classes, gt_mask, pseudo_cams, ref_mask, ref_scores, reference_or_and, voc_mini_ids,
                     write_voc_mini_cams)
from orand_addon.cli import cli
from orand_addon.io.images import save_label_png
from orand_addon.evaluation.stage import evaluate
from orand_addon.store.store import Store

METRICS = ("iou", "precision", "recall", "fp_union", "fn_union")


def run(*args):
    return CliRunner().invoke(cli, ["evaluate", *(str(a) for a in args), "--no-progress"], catch_exceptions=False)


def class_pairs(gt: np.ndarray, pred: np.ndarray) -> Counter:
    """(gt, pred) pair counts with one boolean mask per pair of values present."""
    out = Counter()
    for g in np.unique(gt).tolist():
        for p in np.unique(pred).tolist():
            n = int(np.count_nonzero((gt == g) & (pred == p)))
            if n:
                out[(g, p)] = n
    return out


def reference(preds: dict, unsure: str = "miss") -> dict:
    pairs = Counter()
    for image_id, pred in preds.items():
        pairs.update(class_pairs(gt_mask(image_id), pred))
    return ref_scores(pairs, 21, unsure)


def assert_json_matches(doc: dict, ref: dict) -> None:
    for k, name in enumerate(doc["classes"]):
        for m in METRICS:
            value = doc["per_class"][name][m]
            if math.isnan(ref[m][k]):
                assert value is None, (name, m)
            else:
                assert value == pytest.approx(ref[m][k], abs=1e-12), (name, m)
    for m in METRICS:
        assert doc["metrics"][f"mean_{m}"] == pytest.approx(ref[f"mean_{m}"], abs=1e-12), m


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A store with source, fused, mask and seed kinds of the 11 real VOC images (float32 maps)."""
    tmp = tmp_path_factory.mktemp("eval")
    truth = {}
    with Store(tmp / "s.h5", mode="a") as store:
        for n, image_id in enumerate(voc_mini_ids()):
            gt = gt_mask(image_id)
            keys = gt_classes(gt)
            a = pseudo_cams(gt, keys, seed=n)
            b = pseudo_cams(gt, keys, seed=100 + n, blur=16)
            fused_or, fused_and = (x.astype(np.float32) for x in reference_or_and(a, b))
            for kind, maps in (("a", a), ("b", b), ("or", fused_or), ("and", fused_and)):
                store.write_maps(kind, image_id, maps, keys, dtype="float32")
            mask = ref_mask(fused_or, keys, 0.3)
            seeds = mask.copy()
            top = fused_or.max(axis=0)
            seeds[(top > 0.2) & (top < 0.45)] = 255
            store.write_mask("masks", image_id, mask)
            store.write_mask("seeds", image_id, seeds)
            truth[image_id] = {"keys": keys, "or": fused_or, "mask": mask, "seeds": seeds}
    return tmp, tmp / "s.h5", truth


def test_store_kind_at_a_threshold_equals_reference(data):
    tmp, store, truth = data
    res = run("--pred", f"{store}:or", "--gt", GT, "--bg-thres", 0.3, "--json", tmp / "r.json", "--csv", tmp / "r.csv")
    assert res.exit_code == 0, res.output
    ref = reference({i: ref_mask(t["or"], t["keys"], 0.3) for i, t in truth.items()})
    doc = json.loads((tmp / "r.json").read_text())
    assert_json_matches(doc, ref)
    assert doc["num_images"] == 11 and doc["threshold"] == 0.3 and doc["mode"] == "threshold"
    with open(tmp / "r.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class"] for r in rows] == doc["classes"] + ["mean"]
    for row in rows[:-1]:
        for m in METRICS:
            value = doc["per_class"][row["class"]][m]
            assert (row[m] == "" and value is None) or float(row[m]) == value
    assert float(rows[-1]["iou"]) == doc["metrics"]["mean_iou"]
    assert f"{100 * ref['mean_iou']:.2f}" in res.output and "background threshold 0.3" in res.output
    assert "cat " in res.output and "(absent from GT and prediction)" in res.output


def test_sweep_curves_and_both_thresholds_equal_reference(data):
    tmp, store, truth = data
    res = run("--pred", f"{store}:or", "--gt", GT, "--sweep", "0.10:0.60:0.10", "--json", tmp / "s.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp / "s.json").read_text())
    grid = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert doc["sweep"]["thresholds"] == pytest.approx(grid)
    refs = [reference({i: ref_mask(x["or"], x["keys"], t) for i, x in truth.items()}) for t in grid]
    for key in ("mean_iou", "mean_precision", "mean_recall", "mean_fp_union", "mean_fn_union"):
        assert doc["sweep"][key] == pytest.approx([r[key] for r in refs], abs=1e-12)
    ious = [r["mean_iou"] for r in refs]
    best = ious.index(max(ious))
    aware = next(i for i, r in enumerate(refs) if r["mean_precision"] >= r["mean_recall"])
    assert doc["sweep"]["best"]["threshold"] == pytest.approx(grid[best])
    assert doc["sweep"]["precision_aware"]["threshold"] == pytest.approx(grid[aware])
    assert doc["threshold"] == pytest.approx(grid[best])  # the headline numbers are the best threshold's
    assert_json_matches(doc, refs[best])
    assert "best mIoU" in res.output and f"precision-aware  threshold {grid[aware]:g}" in res.output


@pytest.mark.parametrize("unsure", ["miss", "ignore"])
def test_store_masks_and_seeds(data, unsure):
    tmp, store, truth = data
    res = run("--pred", f"{store}:masks", "--gt", GT, "--json", tmp / "m.json")
    assert res.exit_code == 0, res.output
    assert_json_matches(json.loads((tmp / "m.json").read_text()), reference({i: t["mask"] for i, t in truth.items()}))
    res = run("--pred", f"{store}:seeds", "--gt", GT, "--unsure", unsure, "--json", tmp / "seeds.json")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp / "seeds.json").read_text())
    assert_json_matches(doc, reference({i: t["seeds"] for i, t in truth.items()}, unsure=unsure))
    unsure_pixels = sum(int(((t["seeds"] == 255) & (gt_mask(i) != 255)).sum()) for i, t in truth.items())
    assert doc["unsure"] == {"policy": unsure, "pixels": unsure_pixels} and unsure_pixels > 0
    assert f"255 = no prediction: {unsure}, {unsure_pixels} labelled pixels" in res.output


def test_cam_folder_and_png_folder(tmp_path):
    ids = voc_mini_ids()[:5]
    cams = write_voc_mini_cams(tmp_path / "amn", "amn", seed=3, ids=ids)
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    res = run("--pred", tmp_path / "amn", "--gt", GT, "--bg-thres", 0.25, "--json", tmp_path / "c.json")
    assert res.exit_code == 0, res.output
    preds = {i: ref_mask(maps, keys, 0.25) for i, (keys, maps) in cams.items()}
    assert_json_matches(json.loads((tmp_path / "c.json").read_text()), reference(preds))
    (tmp_path / "png").mkdir()
    for i, mask in preds.items():
        save_label_png(tmp_path / "png" / f"{i}.png", mask)
    res = run("--pred", tmp_path / "png", "--gt", GT, "--ids", tmp_path / "ids.txt", "--json", tmp_path / "p.json")
    assert res.exit_code == 0, res.output
    assert_json_matches(json.loads((tmp_path / "p.json").read_text()), reference(preds))


def test_python_api_and_worker_processes_agree(data):
    _, store, truth = data
    one = evaluate(f"{store}:and", GT, sweep="0.05:0.5:0.05")
    two = evaluate(f"{store}:and", GT, sweep=[round(0.05 * k, 2) for k in range(1, 11)], workers=2)
    assert np.array_equal(one.conf, two.conf) and one.num_images == 11 == two.num_images
    assert one.best == two.best and one.precision_aware == two.precision_aware
    assert one.threshold == one.thresholds[one.best] == one.best_threshold
    assert one.precision_aware_threshold == one.to_dict()["sweep"]["precision_aware"]["threshold"]
    default = evaluate(f"{store}:or", GT, ids=voc_mini_ids()[:3])
    assert default.thresholds == [0.15] and default.ids == voc_mini_ids()[:3]


# -- the CI gate ------------------------------------------------------------------------------------------------------

def test_baseline_gate_names_every_fallen_metric(data):
    tmp, store, _ = data
    assert run("--pred", f"{store}:masks", "--gt", GT, "--json", tmp / "base.json").exit_code == 0
    doc = json.loads((tmp / "base.json").read_text())
    res = run("--pred", f"{store}:masks", "--gt", GT, "--baseline", tmp / "base.json", "--tolerance", 0)
    assert res.exit_code == 0 and "no metric fell more than 0 points" in res.output
    raised = json.loads(json.dumps(doc))
    raised["metrics"]["mean_iou"] += 0.012  # 1.2 points better than what we get now
    raised["metrics"]["mean_recall"] += 0.004
    raised["per_class"]["aeroplane"]["iou"] += 0.03
    (tmp / "better.json").write_text(json.dumps(raised))
    res = run("--pred", f"{store}:masks", "--gt", GT, "--baseline", tmp / "better.json", "--tolerance", 0.5)
    assert res.exit_code == 1
    now = 100 * doc["metrics"]["mean_iou"]
    assert (f"orand-addon: error: 1 metrics fell more than 0.5 points below the baseline {tmp / 'better.json'}: "
            f"mean_iou {now:.2f} < {now + 1.2:.2f} (-1.20)") in res.output
    assert "mean_recall" not in res.output.splitlines()[-1]  # 0.4 points is within the tolerance
    res = run("--pred", f"{store}:masks", "--gt", GT, "--baseline", tmp / "better.json", "--tolerance", 0.3,
              "--gate-per-class")
    assert res.exit_code == 1
    assert "3 metrics fell" in res.output and "mean_recall" in res.output and "iou[aeroplane]" in res.output
    res = run("--pred", f"{store}:masks", "--gt", GT, "--baseline", tmp / "better.json", "--tolerance", 1.5)
    assert res.exit_code == 0, res.output


# -- bad input ------------------------------------------------------------------------------------------------------

def _png_preds(tmp_path, ids=None):
    folder = tmp_path / "pred"
    folder.mkdir(exist_ok=True)
    for i in ids or voc_mini_ids():
        save_label_png(folder / f"{i}.png", gt_mask(i))
    return folder


def test_size_mismatch_names_the_id_and_resize_pred_fixes_it(tmp_path):
    folder = _png_preds(tmp_path)
    image_id = voc_mini_ids()[2]
    small = gt_mask(image_id)[::2, ::2]
    save_label_png(folder / f"{image_id}.png", small)
    h, w = gt_mask(image_id).shape
    res = run("--pred", folder, "--gt", GT)
    assert res.exit_code == 2
    assert (f"orand-addon: error: {image_id}: prediction is {small.shape[0]}x{small.shape[1]} but the ground truth "
            f"{GT / (image_id + '.png')} is {h}x{w}; pass --resize-pred") in res.output
    res = run("--pred", folder, "--gt", GT, "--resize-pred", "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert "resized 1 predictions" in res.output
    preds = {i: gt_mask(i) for i in voc_mini_ids()}
    preds[image_id] = np.asarray(Image.fromarray(small).resize((w, h), Image.NEAREST))
    assert_json_matches(json.loads((tmp_path / "r.json").read_text()), reference(preds))


def test_ids_without_ground_truth_or_prediction(tmp_path):
    folder = _png_preds(tmp_path)
    save_label_png(folder / "2099_000001.png", np.zeros((5, 5), np.uint8))
    res = run("--pred", folder, "--gt", GT)
    assert res.exit_code == 2
    assert f"1 ids have no ground truth in {GT}: 2099_000001; pass --ids to score a subset" in res.output
    (tmp_path / "ids.txt").write_text("2007_000033\n2098_000001\n")
    (folder / "2099_000001.png").unlink()
    (folder / "2007_000033.png").unlink()
    res = run("--pred", folder, "--gt", GT, "--ids", tmp_path / "ids.txt")
    assert res.exit_code == 2 and "2 ids have no prediction in" in res.output and "2007_000033, 2098_000001" in res.output


@pytest.mark.parametrize("where", ["prediction", "ground truth"])
def test_labels_outside_range_name_the_id_and_value(tmp_path, where):
    image_id = voc_mini_ids()[1]
    folder = _png_preds(tmp_path, [image_id])
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    bad = gt_mask(image_id)
    bad[10, 10] = 42
    save_label_png(gt_dir / f"{image_id}.png", bad if where == "ground truth" else gt_mask(image_id))
    if where == "prediction":
        save_label_png(folder / f"{image_id}.png", bad)
    res = run("--pred", folder, "--gt", gt_dir)
    assert res.exit_code == 2
    assert f"orand-addon: error: {image_id}: {where} has label 42 (valid: 0..20, 255 = void" in res.output


def test_empty_missing_and_wrong_kinds_of_prediction(tmp_path, data):
    _, store, _ = data
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    cases = [
        (["--pred", tmp_path / "empty"], f"{tmp_path / 'empty'}: empty prediction folder (no .npy/.npz CAM files and no "
                                         ".png label masks)"),
        (["--pred", tmp_path / "nope"], f"{tmp_path / 'nope'}: prediction folder or store not found"),
        (["--pred", store], f"{store}: name the kind to score as {store}:KIND (the store has: a, and, b, masks, or, seeds)"),
        (["--pred", f"{store}:rw"], f"{store}: no kind 'rw' in the store (has: a, and, b, masks, or, seeds)"),
        (["--pred", f"{store}:seg"], f"{store}: no /seg group in the store (has: a, and, b, masks, or, seeds)"),
        (["--pred", f"{store}:masks", "--bg-thres", "0.2"], "holds label masks; --bg-thres and --sweep apply to class maps"),
        (["--pred", f"{store}:or", "--sweep", "0.5:0.1:0.1"], "--sweep '0.5:0.1:0.1': needs STEP > 0 and STOP >= START"),
        (["--pred", f"{store}:or", "--sweep", "0.1:0.5:0.1", "--bg-thres", "0.2"], "give either --bg-thres or --sweep"),
        (["--pred", f"{store}:or", "--baseline", tmp_path / "none.json"], f"{tmp_path / 'none.json'}: baseline file not found"),
        (["--pred", f"{store}:or", "--baseline", tmp_path / "empty" / "notes.txt"], "baseline is not valid JSON"),
    ]
    for args, message in cases:
        res = run(*args, "--gt", GT)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert "Traceback" not in res.output
    res = run("--pred", f"{store}:or", "--gt", tmp_path / "nogt")
    assert res.exit_code == 2 and f"{tmp_path / 'nogt'}: ground-truth folder not found" in res.output


# -- the report -------------------------------------------------------------------------------------------------------

def test_report_pictures_and_page(data, tmp_path):
    _, store, _ = data
    res = run("--pred", f"{store}:or", "--gt", GT, "--sweep", "0.1:0.5:0.1", "--report", tmp_path / "rep",
              "--images", JPEG, "--examples", 2)
    assert res.exit_code == 0, res.output
    for name in ("eval_classes.png", "eval_sweep.png", "eval_examples.png"):
        with Image.open(tmp_path / "rep" / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "<td>aeroplane</td>" in page
    # the examples: one picture per panel with its caption, the first and the last id; a colour bar of the heat
    # maps (the jet colour map from blue to dark red); a legend naming every class of the masks shown
    ids = voc_mini_ids()
    titles = ["image", "source A", "source B", "OR", "AND", "pseudo-mask (bg ", "ground truth"]
    assert page.count("<figure>") == 2 * len(titles) and all(f"<h3>{i}</h3>" in page for i in (ids[0], ids[-1]))
    assert all(page.count(f"<figcaption>{t}") == 2 for t in titles)
    assert 'class="bar" style="background:linear-gradient(to right,#000080,' in page and "#800000)" in page
    legend = page[page.index('<div class="legend">'):]
    legend = legend[: legend.index("</div>")]
    from orand_addon.classes import VOC_CLASSES
    shown = set(np.unique(np.concatenate([gt_mask(i).ravel() for i in (ids[0], ids[-1])])).tolist())
    for value in shown:
        assert (VOC_CLASSES[value] if value < 255 else "void / no prediction") in legend, (value, legend)
    assert page.count("data:image/png;base64,") == 2 + 2 * len(titles)  # two charts and the panels


def test_report_without_matplotlib_says_which_extra(data, tmp_path, monkeypatch):
    _, store, _ = data
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    res = run("--pred", f"{store}:or", "--gt", GT, "--report", tmp_path / "rep")
    assert res.exit_code == 2
    assert "orand-addon: error: the report needs matplotlib: pip install 'orand-addon[plot]'" in res.output
    assert not (tmp_path / "rep").exists()


def test_report_of_label_pngs_without_images(tmp_path):
    folder = _png_preds(tmp_path, voc_mini_ids()[:3])
    res = run("--pred", folder, "--gt", GT, "--report", tmp_path / "rep", "--examples", 1)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["eval_classes.png", "eval_examples.png",
                                                                    "index.html"]
    with Image.open(tmp_path / "rep" / "eval_examples.png") as im:  # one row: pseudo-mask | ground truth
        assert im.size[0] < im.size[1] * 3


def test_ctrl_c_with_worker_processes_is_one_line(tmp_path):
    """A terminal's Ctrl-C reaches the worker processes too: they leave it to the main process (one line, no
    traceback per worker)."""
    from helpers import ctrl_c_during

    res = ctrl_c_during("orand_addon.evaluation.functional.ConfusionAccumulator.merge", "evaluate", "--pred", GT,
                        "--gt", GT, "--workers", 2, "--no-progress")
    assert res.returncode == 130, res.stderr
    assert "Traceback" not in res.stderr and "KeyboardInterrupt" not in res.stderr, res.stderr
    assert res.stderr == ("orand-addon: error: interrupted; an evaluation writes nothing until it has counted every "
                          "image\n")


def test_worker_processes_are_never_forked(data, monkeypatch):
    from orand_addon.runtime import workers as runtime
    from orand_addon.evaluation import stage as evaluate_module

    _, store, _ = data
    methods = []

    def pool(*args, **kwargs):
        made = runtime.worker_pool(*args, **kwargs)
        methods.append(made._ctx.get_start_method())
        return made

    monkeypatch.setattr(evaluate_module, "worker_pool", pool)
    two = evaluate(f"{store}:and", GT, sweep="0.1:0.3:0.1", workers=2)
    assert methods in (["forkserver"], ["spawn"]) and two.num_images == 11


def test_a_threshold_at_the_edge_of_the_sweep_is_warned_about(data):
    """Over 0.10..0.60 the best mIoU of the OR maps lies inside; over a sweep ending below it the best threshold
    is the sweep's last, and the warning says to sweep higher (the reference's own best decides)."""
    tmp, store, truth = data
    inside = run("--pred", f"{store}:or", "--gt", GT, "--sweep", "0.10:0.60:0.10", "--json", tmp / "in.json")
    best = json.loads((tmp / "in.json").read_text())["sweep"]["best"]["threshold"]
    assert 0.1 < best < 0.6 and "warning" not in inside.output
    low = round(best - 0.1, 2)
    res = run("--pred", f"{store}:or", "--gt", GT, "--sweep", f"{low - 0.05:.2f}:{low:.2f}:0.05")
    assert res.exit_code == 0, res.output
    assert (f"  warning: the best-mIoU threshold {low:g} is the highest of the sweep; it may lie above: sweep "
            f"higher, e.g. --sweep {low - 0.05:g}:{low + 0.1:.3g}:0.05") in res.output

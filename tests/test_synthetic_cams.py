"""The two synthetic classifiers and their CAM dumps: training, native formats read back, fused by the CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import one_torch_thread  # noqa: F401 (fixtures)
from orand_addon.cli import cli
from orand_addon.errors import OrandError
from orand_addon.io.safe_pickle import safe_load_npy
from orand_addon.io.sources import read_cams
from orand_addon.store.store import Store
from orand_addon.demo.synthetic import CLASS_NAMES, build_classifier, make_cams, make_dataset
from orand_addon.demo.synthetic.classifiers import TrainConfig, load_split, train_classifier

SIZE = (64, 80)
EPOCHS = {"cnn": 2, "vit": 2}


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bed")
    info = make_dataset(tmp / "data", n_train=24, n_val=8, image_size=SIZE, seed=1, show_progress=False)
    # The classifiers may only see images and image-level labels: hide the pixel labels while they work.
    hidden = tmp / "hidden_masks"
    shutil.move(info.masks, hidden)
    dirs = make_cams(info.root, tmp / "cams", seed=0, device="cpu", epochs=EPOCHS, show_progress=False)
    shutil.move(hidden, info.masks)
    return info, dirs, tmp


def test_folders_and_formats_are_auto_detected(testbed):
    info, dirs, _ = testbed
    assert sorted(dirs) == ["cnn", "vit"]
    assert read_cams(dirs["cnn"]).format == "amn"
    assert read_cams(dirs["vit"], labels=info.labels()).format == "mctformer"


def test_maps_cover_exactly_the_labelled_classes_at_image_size(testbed):
    info, dirs, _ = testbed
    labels = info.labels()
    ids = sorted(info.train_ids + info.val_ids)
    for name, fmt in (("cnn", "amn"), ("vit", "mctformer")):
        records = read_cams(dirs[name], format=fmt)
        assert sorted(records) == ids
        for image_id in ids:
            record = records[image_id]
            assert record.keys.tolist() == labels.get(image_id).tolist()
            assert record.maps.shape == (len(record.keys), *SIZE) and record.maps.dtype == np.float32
            assert record.maps.min() >= 0 and record.maps.max() <= 1 + 1e-6


def test_native_layouts(testbed):
    info, dirs, _ = testbed
    image_id = info.train_ids[0]
    amn = safe_load_npy(dirs["cnn"] / f"{image_id}.npy")
    k = len(info.labels().get(image_id))
    assert amn["keys"].dtype.is_floating_point is False and amn["high_res"].shape == (k + 1, *SIZE)
    assert tuple(amn["cam"].shape) == (k + 1, SIZE[0] // 4, SIZE[1] // 4)
    fg = amn["high_res"][1:]
    np.testing.assert_allclose(amn["high_res"][0], 1 - fg.max(axis=0), atol=1e-6)  # background = 1 - max
    assert np.all(fg.max(axis=(1, 2)) > 0.99) or not fg.any()  # IRN: divided by the max (+1e-5)
    mct = safe_load_npy(dirs["vit"] / f"{image_id}.npy")
    assert sorted(mct) == info.labels().get(image_id).tolist()
    for m in mct.values():
        assert m.shape == SIZE and m.min() == pytest.approx(0, abs=1e-4) and m.max() == pytest.approx(1, abs=1e-4)


def test_fuse_cli_reads_the_dumps_with_the_generated_class_files(testbed):
    info, dirs, tmp = testbed
    out = tmp / "fused.h5"
    res = CliRunner().invoke(cli, ["fuse", "--cams-a", str(dirs["cnn"]), "--cams-b", str(dirs["vit"]),
                                   "--format-b", "mctformer", "--classes", str(info.classes_path),
                                   "--labels", str(info.labels_path), "--dtype", "float32", "--out", str(out),
                                   "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    n = len(info.train_ids) + len(info.val_ids)
    assert f"fused {n} images" in res.output
    a, b = read_cams(dirs["cnn"], format="amn"), read_cams(dirs["vit"], format="mctformer")
    with Store(out) as store:
        assert tuple(store.h5.attrs["class_names"]) == CLASS_NAMES
        for image_id in (info.train_ids[0], info.val_ids[-1]):
            c1, c2 = a[image_id].maps.astype(np.float64), b[image_id].maps.astype(np.float64)
            ref = c1 + c2 - c1 * c2
            peak = ref.max(axis=(1, 2), keepdims=True)
            ref = np.divide(ref, peak, out=np.zeros_like(ref), where=peak > 0)
            maps, keys = store.read_maps("or", image_id)
            np.testing.assert_allclose(maps, ref, atol=1e-5)
            assert keys.tolist() == a[image_id].keys.tolist()


def test_rerun_reuses_checkpoints_and_dumps(testbed):
    info, dirs, tmp = testbed
    files = [tmp / "cams" / "checkpoints" / "cnn.pt", dirs["vit"] / f"{info.val_ids[0]}.npy"]
    stamps = [f.stat().st_mtime_ns for f in files]
    again = make_cams(info.root, tmp / "cams", seed=0, device="cpu", epochs=EPOCHS, show_progress=False)
    assert again == dirs
    assert [f.stat().st_mtime_ns for f in files] == stamps


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_training_lowers_the_loss_and_is_seeded(testbed, name):
    info, _, _ = testbed
    images, targets = load_split(info, info.train_ids)
    config = TrainConfig(epochs=6, batch_size=8, lr=2e-3, warmup_epochs=0.5)
    model, history = train_classifier(name, images, targets, config, seed=5, device="cpu", show_progress=False)
    assert len(history) == 6 and history[-1] < history[0]
    again, history2 = train_classifier(name, images, targets, TrainConfig(epochs=1, batch_size=8), seed=5,
                                       device="cpu", show_progress=False)
    third, history3 = train_classifier(name, images, targets, TrainConfig(epochs=1, batch_size=8), seed=5,
                                       device="cpu", show_progress=False)
    assert history2 == pytest.approx(history3, rel=1e-5)
    for (k, v), w in zip(again.state_dict().items(), third.state_dict().values()):
        assert np.allclose(v.float().numpy(), w.float().numpy(), atol=1e-5), k


@pytest.mark.parametrize("name", ["cnn", "vit"])
def test_cam_grid_follows_the_input_size(name):
    import torch

    model = build_classifier(name, 6, SIZE).eval()
    with torch.no_grad():
        cam = model.cam(torch.zeros(2, 3, 96, 128))
    stride = 4 if name == "cnn" else 8
    assert cam.shape == (2, 6, 96 // stride, 128 // stride) and (cam >= 0).all()


def test_unknown_dataset_folder(tmp_path):
    with pytest.raises(OrandError, match="not a complete synthetic dataset"):
        make_cams(tmp_path, tmp_path / "cams", device="cpu", show_progress=False)


def test_sanity_scores_match_the_metrics_module_and_picture(testbed):
    from orand_addon.demo.synthetic import evaluate_testbed, format_table, plot_examples
    from orand_addon.demo.synthetic.quality import THRESHOLDS, confusions, scores, source_maps

    info, dirs, tmp = testbed
    results = evaluate_testbed(info, dirs, tmp / "sanity", split="val", show_progress=False)
    assert list(results) == ["cnn", "vit", "mean", "or", "and"]
    for row in results.values():
        assert 0 <= row["fixed"]["miou"] <= row["best"]["miou"] <= 100
    assert format_table(results).count("\n") == len(results)
    functional = pytest.importorskip("orand_addon.evaluation.functional")
    from orand_addon.io.images import load_label_png
    from orand_addon.masks import maps_to_mask

    confs = confusions(source_maps(read_cams(dirs["cnn"], format="amn"), info.val_ids), info, THRESHOLDS)
    at = THRESHOLDS.index(0.25)
    reference = np.zeros((len(CLASS_NAMES),) * 2, np.int64)
    records = read_cams(dirs["cnn"], format="amn")
    for image_id in info.val_ids:
        gt = load_label_png(info.masks / f"{image_id}.png")
        pred = maps_to_mask(records[image_id].maps, records[image_id].keys, 0.25)
        reference += functional.confusion_matrix(gt, pred, len(CLASS_NAMES))
    np.testing.assert_array_equal(confs[at], reference)
    expected = functional.segmentation_scores(reference)
    ours = scores(confs[at])
    assert ours["miou"] == pytest.approx(100 * expected["mean_iou"], abs=0.01)
    assert ours["precision"] == pytest.approx(100 * expected["mean_precision"], abs=0.01)
    assert ours["recall"] == pytest.approx(100 * expected["mean_recall"], abs=0.01)
    png = plot_examples(info, dirs, tmp / "examples.png", count=2)
    assert png.stat().st_size > 1000


def test_sanity_entry_point_writes_its_record(tmp_path, capsys):
    import json

    from orand_addon.demo.synthetic.sanity import main

    record = main(["--out", str(tmp_path), "--size", "ci,n_train=8,n_val=4,cnn_epochs=1,vit_epochs=1",
                   "--split", "val", "--device", "cpu", "--no-progress"])
    printed = capsys.readouterr().out
    assert "maps    | best thr" in printed and "times:" in printed
    saved = json.loads((tmp_path / "sanity.json").read_text())
    assert saved["results"] == json.loads(json.dumps(record["results"]))
    assert sorted(saved["results"]) == ["and", "cnn", "mean", "or", "vit"]
    assert saved["spec"]["n_train"] == 8

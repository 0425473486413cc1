"""`orand-addon segment`: multi-scale + flip inference, CRF, PNG and store output, scores against an
independent count, resume, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from helpers import tiny_voc
from helpers import one_torch_thread  # noqa: F401 (fixtures)
from orand_addon.cli import cli
from orand_addon.errors import OrandError
from orand_addon.io.images import load_image, load_label_png
from orand_addon.segment.infer import dense_crf, load_segmenter, predict_probs
from orand_addon.segment.stage import SegmentConfig, segment_images
from orand_addon.segment.train import SegTrainConfig, train_segmentation
from orand_addon.store.store import Store


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seg")
    tiny = tiny_voc(folder, side=40, n=8)
    final = train_segmentation(SegTrainConfig(
        images=str(tiny["images"]), masks=str(tiny["masks"]), train_list=tiny["ids"], out=str(folder / "run"),
        model="deeplabv2-resnet18", pretrained="none", epochs=2, batch_size=4, crop_size=32, lr=1e-3,
        scale_schedule="none", workers=0, show_progress=False))
    return tiny, final


def independent_scores(pred_dir, gt_dir, ids) -> tuple[float, dict[int, float]]:
    """Dataset-level IoU per class counted directly from the PNG files; mean over classes present."""
    inter, union = np.zeros(21), np.zeros(21)
    for image_id in ids:
        pred = np.asarray(Image.open(pred_dir / f"{image_id}.png"))
        gt = np.asarray(Image.open(gt_dir / f"{image_id}.png"))
        valid = gt != 255
        for c in range(21):
            inter[c] += np.sum((pred == c) & (gt == c) & valid)
            union[c] += np.sum(((pred == c) | (gt == c)) & valid)
    present = union > 0
    return float(np.mean(inter[present] / union[present])), {c: inter[c] / union[c] for c in np.flatnonzero(present)}


def segment(*args):
    return CliRunner().invoke(cli, ["segment", *[str(a) for a in args], "--no-progress"])


def test_segment_writes_masks_that_score_as_counted(trained, tmp_path):
    tiny, ckpt = trained
    out = tmp_path / "pred"
    res = segment("--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out", out,
                  "--scales", "0.75,1.0", "--gt", tiny["masks"], "--json", tmp_path / "s.json",
                  "--store", tmp_path / "s.h5")
    assert res.exit_code == 0, res.output
    assert f"segmented {len(tiny['ids'])} images (0 already done)" in res.output
    for image_id in tiny["ids"]:
        png = Image.open(out / f"{image_id}.png")
        assert png.mode == "P"
        assert png.size == Image.open(tiny["images"] / f"{image_id}.png").size
    miou, iou = independent_scores(out, tiny["masks"], tiny["ids"])
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["miou"] == pytest.approx(miou, abs=1e-9)
    assert f"mIoU {100 * miou:.2f}, precision {100 * scores['mean_precision']:.2f}, recall " in res.output
    names = list(scores["iou"])
    # the per-class table of evaluate: IoU, precision, recall per class, counted independently here
    header = next(line for line in res.output.splitlines() if line.startswith("class "))
    assert header.split()[:4] == ["class", "IoU", "Precision", "Recall"]
    gt_all = np.concatenate([load_label_png(tiny["masks"] / f"{i}.png").ravel() for i in tiny["ids"]])
    pred_all = np.concatenate([load_label_png(out / f"{i}.png").ravel() for i in tiny["ids"]])
    for c in sorted(iou):
        tp = np.sum((pred_all == c) & (gt_all == c))
        pred_c, gt_c = np.sum((pred_all == c) & (gt_all != 255)), np.sum(gt_all == c)
        precision, recall = (tp / pred_c if pred_c else 0.0), (tp / gt_c if gt_c else 0.0)
        row = next(line for line in res.output.splitlines() if line.startswith(names[c] + " "))
        assert row.split()[1:4] == [f"{100 * iou[c]:.2f}", f"{100 * precision:.2f}", f"{100 * recall:.2f}"], row
    for c, value in iou.items():
        assert scores["iou"][names[c]] == pytest.approx(value, abs=1e-9)
    # the evaluate command scores the written masks the same
    res_eval = CliRunner().invoke(cli, ["evaluate", "--pred", str(out), "--gt", str(tiny["masks"]),
                                        "--json", str(tmp_path / "e.json")])
    assert res_eval.exit_code == 0, res_eval.output
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["mean_iou"] == pytest.approx(miou, abs=1e-9)
    with Store(tmp_path / "s.h5") as store:
        assert store.ids("seg") == sorted(tiny["ids"])
        for image_id in tiny["ids"]:
            assert np.array_equal(store.read_mask("seg", image_id), load_label_png(out / f"{image_id}.png"))
    # a rerun resumes: nothing recomputed, the same score
    res = segment("--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out", out,
                  "--scales", "0.75,1.0", "--gt", tiny["masks"], "--store", tmp_path / "s.h5")
    assert f"segmented 0 images ({len(tiny['ids'])} already done)" in res.output
    assert f"mIoU {100 * miou:.2f}" in res.output
    # other parameters into the same folder: refused
    res = segment("--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out", out)
    assert res.exit_code == 2
    assert ("masks there were written with other parameters (--scales differ); use a new --out or --overwrite"
            in res.output)  # the option's name, not the parameter's


def test_multi_scale_and_flip_average(trained):
    tiny, ckpt = trained
    net, _ = load_segmenter(ckpt, torch.device("cpu"))
    image = load_image(tiny["images"], tiny["ids"][0])
    cpu = torch.device("cpu")
    both = predict_probs(net, image, cpu, (1.0, 0.5))
    separate = (predict_probs(net, image, cpu, (1.0,)) + predict_probs(net, image, cpu, (0.5,))) / 2
    torch.testing.assert_close(both, separate, atol=1e-6, rtol=0)
    flipped = predict_probs(net, np.ascontiguousarray(image[:, ::-1]), cpu, (1.0,), flip=True)
    torch.testing.assert_close(predict_probs(net, image, cpu, (1.0,), flip=True), flipped.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(both.sum(0), torch.ones(image.shape[:2]), atol=1e-5, rtol=0)


def test_dense_crf_sharpens_a_confident_labelling():
    rng = np.random.default_rng(0)
    labels = np.zeros((24, 30), np.int64)
    labels[6:18, 8:22] = 1
    image = np.where(labels[..., None] == 1, [200, 40, 40], [30, 30, 160]).astype(np.uint8)
    probs = np.stack([np.where(labels == c, 0.7, 0.3) for c in (0, 1)]).astype(np.float32)
    noisy = probs.copy()
    flip = rng.random(labels.shape) < 0.1  # 10 % of pixels lean the wrong way
    noisy[:, flip] = noisy[::-1][:, flip]
    refined = dense_crf(image, noisy)
    assert refined.shape == probs.shape
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)
    assert (noisy.argmax(0) != labels).sum() > 20
    assert (refined.argmax(0) == labels).mean() > (noisy.argmax(0) == labels).mean()


def test_segment_with_crf_runs_end_to_end(trained, tmp_path):
    tiny, ckpt = trained
    result = segment_images(ckpt, tiny["images"], tiny["ids"][:2],
                            SegmentConfig(out=tmp_path / "crf", scales=(1.0,), flip=False, crf=True,
                                          show_progress=False))
    assert result["written"] == 2
    assert sorted(p.stem for p in (tmp_path / "crf").glob("*.png")) == sorted(tiny["ids"][:2])


def test_bad_inputs(trained, tmp_path):
    tiny, ckpt = trained
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    res = segment("--checkpoint", junk, "--images", tiny["images"], "--ids", tiny["list"], "--out", tmp_path / "o")
    assert res.exit_code == 2 and f"{junk}: corrupt or unreadable checkpoint" in res.output
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    res = segment("--checkpoint", other, "--images", tiny["images"], "--ids", tiny["list"], "--out", tmp_path / "o")
    assert res.exit_code == 2 and "not a train-seg checkpoint (no model/meta entries)" in res.output
    res = segment("--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"])
    assert res.exit_code == 2 and "give --out DIR (PNG masks) and/or --store STORE.h5" in res.output
    res = segment("--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out", tmp_path / "o",
                  "--gt", tmp_path, "--scales", "1")
    assert res.exit_code == 2 and res.output == (
        f"orand-addon: error: --ids {tiny['list']}: {len(tiny['ids'])} of its {len(tiny['ids'])} ids have no ground "
        f"truth in {tmp_path} (e.g. {', '.join(tiny['ids'][:3])}); pass a list file of the ids you have (one id per "
        f"line), or leave --ids out to segment every image with ground truth\n")
    res = segment("--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out", tmp_path / "o",
                  "--scales", "1,x")
    assert res.exit_code == 2 and "'1,x' is not a comma-separated list of numbers" in res.output
    for r in (res,):
        assert len(r.output.strip().splitlines()) == 1 or "Usage" in r.output
    with pytest.raises(OrandError, match="segment: the id list is empty"):
        segment_images(ckpt, tiny["images"], [], SegmentConfig(out=tmp_path / "o"))


@pytest.mark.parametrize("command", ["train-seg", "segment"])
def test_help_has_examples(command):
    res = CliRunner().invoke(cli, [command, "--help"])
    assert res.exit_code == 0
    assert "Examples:" in res.output and f"orand-addon {command} --" in res.output


def test_masks_of_a_retrained_checkpoint_are_not_mixed_with_the_old_ones(trained, tmp_path):
    import shutil

    tiny, final = trained
    ckpt = tmp_path / "model.pt"
    shutil.copy(final, ckpt)
    args = ["--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out", tmp_path / "png",
            "--store", tmp_path / "s.h5", "--scales", "1.0", "--no-flip"]
    assert segment(*args).exit_code == 0
    (tmp_path / "png" / f"{tiny['ids'][0]}.png").unlink()  # an interrupted run
    retrained = torch.load(ckpt, weights_only=True)
    retrained["model"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in retrained["model"].items()}
    torch.save(retrained, ckpt)  # train-seg again into the same run folder
    res = segment(*args)
    assert res.exit_code == 2
    assert res.output == (f"orand-addon: error: {tmp_path / 'png'}: masks there were written with other parameters "
                          f"(--checkpoint content differ); use a new --out or --overwrite\n")
    res = segment(*args[:6], *args[8:])  # the store alone
    assert res.exit_code == 2 and "/seg was written by" in res.output and "(--checkpoint content differ)" in res.output
    res = segment(*args, "--overwrite")
    assert res.exit_code == 0 and f"segmented {len(tiny['ids'])} images (0 already done)" in res.output, res.output


def test_a_damaged_record_of_an_earlier_run_is_one_line(trained, tmp_path):
    tiny, ckpt = trained
    out = tmp_path / "png"
    out.mkdir()
    (out / "segment.json").write_text('{"parameters": {"scales": [1.0]')  # cut off mid-write by hand
    res = segment("--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out", out)
    assert res.exit_code == 2
    assert res.output.startswith(f"orand-addon: error: {out / 'segment.json'}: unreadable record of an earlier "
                                 f"segment run (") and len(res.output.splitlines()) == 1
    (out / "segment.json").write_text("[1, 2]")
    res = segment("--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out", out)
    assert res.output == (f"orand-addon: error: {out / 'segment.json'}: not a record of an earlier segment run (no "
                          f"parameters); delete it or use a new --out\n")
    res = segment("--checkpoint", ckpt, "--images", tiny["images"], "--ids", tiny["list"], "--out", out, "--overwrite",
                  "--scales", "1.0")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "segment.json").read_text())["parameters"]["scales"] == [1.0]



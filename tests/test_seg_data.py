"""Segmentation data: a tiny real-VOC dataset (also used by the other test_seg files), augmentation, aligned
scale-scheduled pairs, and every bad input as a one-line error before training starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from helpers import CLASS_COLOURS, tiny_voc  # noqa: E402
from orand_addon.classes import VOC_CLASSES
from orand_addon.cli import cli
from orand_addon.io.images import load_label_png, save_label_png
from orand_addon.segment.data import (IMAGENET_MEAN, IMAGENET_STD, MaskReader, TrainPairs, downsample_pair,
                                      parse_mask_source, random_scale_crop_flip)
from orand_addon.store.store import Store


def decode_colours(image_chw: np.ndarray) -> np.ndarray:
    """Class of each pixel whose (normalised) colour is exactly a class colour; -1 elsewhere."""
    rgb = image_chw.transpose(1, 2, 0) * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)
    palette = CLASS_COLOURS.astype(np.float64) / 255.0
    dist = np.abs(rgb[:, :, None, :] - palette[None, None]).max(-1)
    label = dist.argmin(-1)
    return np.where(dist.min(-1) < 1e-4, label, -1)


def block_labels(mask: np.ndarray, f: int) -> np.ndarray:
    """Independent reference: the label of each f x f block whose pixels all agree, -1 for mixed blocks."""
    h, w = mask.shape[0] // f, mask.shape[1] // f
    blocks = mask[: h * f, : w * f].reshape(h, f, w, f).transpose(0, 2, 1, 3).reshape(h, w, f * f)
    uniform = (blocks == blocks[..., :1]).all(-1)
    return np.where(uniform, blocks[..., 0].astype(np.int64), -1)


@pytest.mark.parametrize("scale_range", [(1.0, 1.0), (0.5, 1.5)])
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_downsampled_pairs_stay_aligned(tmp_path, scale_range, factor):
    data = tiny_voc(tmp_path, side=64, n=6, colour_coded=True)
    pairs = TrainPairs(data["ids"], data["images"], MaskReader(parse_mask_source(data["store"])), crop=48,
                       scale_range=scale_range, seed=3)
    checked = 0
    for index in range(len(pairs)):
        image, mask = pairs[(1, index)]
        # full size: the colour of every pure pixel names the mask's class
        full = decode_colours(image.numpy())
        assert (full[full >= 0] == mask.numpy()[full >= 0]).all()
        small_img, small_mask = downsample_pair(image[None], mask[None], factor)
        assert small_img.shape[-2:] == small_mask.shape[-2:] == (48 // factor, 48 // factor)
        colour_class = decode_colours(small_img[0].numpy())
        small = small_mask[0].numpy()
        # a pixel whose area-averaged colour is a pure class colour has that class in the mask
        pure = colour_class >= 0
        assert (colour_class[pure] == small[pure]).all()
        # and, computed independently, every uniform block keeps its label and its colour
        ref = block_labels(mask.numpy(), factor)
        assert (small[ref >= 0] == ref[ref >= 0]).all()
        real = (ref >= 0) & (ref != 255)  # 255 blocks may be padding, which has the mean colour
        if scale_range == (1.0, 1.0):
            assert (colour_class[real] == ref[real]).all()
        else:  # rescaling blends image edges (bilinear) that the mask keeps sharp (nearest): never another class
            assert ((colour_class[real] == ref[real]) | (colour_class[real] == -1)).all()
        checked += int(pure.sum())
    assert checked > 50


def test_downsampled_image_is_the_block_mean():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((2, 3, 12, 13)).astype(np.float32)
    mask = rng.integers(0, 21, (2, 12, 13))
    small, small_mask = downsample_pair(torch.from_numpy(img), torch.from_numpy(mask), 4)
    expected = img[..., :12, :12].reshape(2, 3, 3, 4, 3, 4).mean(axis=(3, 5))
    np.testing.assert_allclose(small.numpy(), expected, atol=1e-6)
    assert small_mask.shape == (2, 3, 3)
    # nearest: every kept label comes from inside its own block
    for b in range(2):
        for i in range(3):
            for j in range(3):
                assert small_mask[b, i, j].item() in mask[b, 4 * i:4 * i + 4, 4 * j:4 * j + 4]


def test_augmentation_pads_with_mean_and_ignore():
    image = np.ones((10, 6, 3), np.float32)
    mask = np.full((10, 6), 7, np.uint8)
    out_img, out_mask = random_scale_crop_flip(image, mask, np.random.default_rng(1), crop=16, scale_range=(1, 1))
    labelled = out_mask == 7
    assert labelled.sum() == 60 and (out_mask[~labelled] == 255).all()
    assert (out_img[labelled] == 1).all() and (out_img[~labelled] == 0).all()  # 0 = the mean after normalising


def test_augmented_items_are_deterministic_per_epoch_and_index(tmp_path):
    data = tiny_voc(tmp_path, n=3)
    pairs = TrainPairs(data["ids"], data["images"], MaskReader(parse_mask_source(data["masks"])), 32, (0.5, 1.5), 0)
    a, b, c = pairs[(0, 1)], pairs[(0, 1)], pairs[(1, 1)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


# -- bad input: one line, exit 2, nothing trained ------------------------------------------------------------


def train_seg(data: dict, out: Path, *extra: str, masks: str | Path | None = None, train_list=None):
    args = ["train-seg", "--images", data["images"], "--masks", masks or data["store"],
            "--train-list", train_list or data["list"], "--out", out, "--model", "deeplabv2-resnet18",
            "--pretrained", "none", "--epochs", "1", "--batch-size", "2", "--crop-size", "32",
            "--scale-schedule", "none", "--workers", "0", "--no-progress", *extra]
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(res, out: Path, text: str) -> None:
    assert res.exit_code == 2, res.output
    assert res.output.startswith("orand-addon: error: "), res.output
    assert text in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (out / "last.pt").exists() and not (out / "log.csv").exists()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_voc(tmp_path_factory.mktemp("tiny"), n=4)


def test_mask_not_matching_its_image(tiny, tmp_path):
    bad = tmp_path / "bad.h5"
    with Store(bad, "a", class_names=VOC_CLASSES) as store:
        for image_id in tiny["ids"]:
            store.write_mask("masks", image_id, load_label_png(tiny["masks"] / f"{image_id}.png"))
        store.write_mask("masks", tiny["ids"][2], np.zeros((5, 7), np.uint8))
    h, w = np.asarray(Image.open(tiny["images"] / f"{tiny['ids'][2]}.png")).shape[:2]
    res = train_seg(tiny, tmp_path / "run", masks=bad)
    assert_one_line_error(res, tmp_path / "run", f"{tiny['ids'][2]}: mask is 5x7 but its image is {h}x{w} (HxW)")


def test_mask_values_outside_classes(tiny, tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for image_id in tiny["ids"]:
        mask = load_label_png(tiny["masks"] / f"{image_id}.png").copy()
        if image_id == tiny["ids"][1]:
            mask[0, :3] = [21, 40, 255]
        save_label_png(folder / f"{image_id}.png", mask)
    res = train_seg(tiny, tmp_path / "run", masks=folder)
    assert_one_line_error(res, tmp_path / "run", f"{tiny['ids'][1]}: mask has values 21, 40 outside 0..20 and 255")


def test_empty_training_list(tiny, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    res = train_seg(tiny, tmp_path / "run", train_list=empty)
    assert_one_line_error(res, tmp_path / "run", f"{empty}: id list is empty")


def test_empty_training_list_python_api(tiny, tmp_path):
    from orand_addon.errors import OrandError
    from orand_addon.segment.train import SegTrainConfig, train_segmentation

    config = SegTrainConfig(images=str(tiny["images"]), masks=str(tiny["store"]), train_list=[],
                            out=str(tmp_path / "run"), pretrained="none", scale_schedule="none", epochs=1)
    with pytest.raises(OrandError, match="the training list is empty: nothing to train on"):
        train_segmentation(config)


@pytest.mark.parametrize("extra, masks, text", [
    ((), "missing-id", "1 of its 4 ids have no image in"),
    ((), "no-store", "not an HDF5 store (.h5, optionally :GROUP) or a folder of label PNGs"),
    ((), "group", "no /seeds group (write masks first, or use :GROUP)"),
    (("--val-list", "LIST"), None, "--val-list needs --gt: per-epoch validation scores against ground truth"),
    (("--batch-size", "9"), None, "--batch-size 9: more than the 4 training images (use a smaller --batch-size)"),
    (("--model", "unet"), None, "--model 'unet' is unknown; valid: deeplabv2-resnet101,"),
    (("--loss", "dice"), None, "--loss 'dice' is unknown; valid: ce, balanced-ls-ce"),
    (("--scale-range", "1.5,0.5"), None, "--scale-range 1.5,0.5: need 0 < low <= high"),
])
def test_other_bad_inputs(tiny, tmp_path, extra, masks, text):
    if masks == "missing-id":
        masks = tmp_path / "three.h5"
        with Store(masks, "a", class_names=VOC_CLASSES) as store:
            for image_id in tiny["ids"][:3]:
                store.write_mask("masks", image_id, load_label_png(tiny["masks"] / f"{image_id}.png"))
        text = text + f" {tiny['images']} or no mask in {masks} (e.g. {tiny['ids'][3]}); pass a list file"
    elif masks == "no-store":
        masks = tmp_path / "nothing.txt"
    elif masks == "group":
        masks = f"{tiny['store']}:seeds"
    extra = tuple(str(tiny["list"]) if x == "LIST" else x for x in extra)
    res = train_seg(tiny, tmp_path / "run", *extra, masks=masks)
    assert_one_line_error(res, tmp_path / "run", text)


def test_validation_gt_not_matching(tiny, tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    for image_id in tiny["ids"]:
        save_label_png(gt / f"{image_id}.png", np.zeros((3, 3), np.uint8))
    res = train_seg(tiny, tmp_path / "run", "--val-list", tiny["list"], "--gt", gt)
    assert_one_line_error(res, tmp_path / "run", f"{tiny['ids'][0]}: ground truth is 3x3 but its image is")


def test_missing_imagenet_weights_is_a_clear_error(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    res = train_seg(tiny, tmp_path / "run", "--model", "deeplabv2-resnet50", "--pretrained", "imagenet")
    assert_one_line_error(res, tmp_path / "run", "no ImageNet resnet50 weights: resnet50-0676ba61.pth is not in")


def test_store_read_by_worker_processes_gives_the_same_batches(tmp_path):
    from orand_addon.segment.data import EpochSampler

    data = tiny_voc(tmp_path, n=6)
    pairs = TrainPairs(data["ids"], data["images"], MaskReader(parse_mask_source(data["store"])), 24, (0.5, 1.5), 5)

    def batches(workers: int) -> list:
        loader = torch.utils.data.DataLoader(pairs, batch_size=3, sampler=EpochSampler(6, 3, 5, epoch=2),
                                             num_workers=workers, generator=torch.Generator().manual_seed(0))
        return list(loader)

    main, workers = batches(0), batches(2)
    assert len(main) == len(workers) == 2
    for (a_img, a_mask), (b_img, b_mask) in zip(main, workers):
        assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)


def test_epoch_sampler_resumes_inside_an_epoch_and_shards():
    from orand_addon.segment.data import EpochSampler

    full = [i for _, i in EpochSampler(23, 4, seed=1, epoch=3)]
    assert len(full) == 20 and len(set(full)) == 20  # 5 whole batches, no repeats
    assert [i for _, i in EpochSampler(23, 4, seed=1, epoch=3, start_batch=2)] == full[8:]
    assert full != [i for _, i in EpochSampler(23, 4, seed=1, epoch=4)]
    shards = [[i for _, i in EpochSampler(23, 4, 1, 3, rank=r, world_size=2)] for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == 8


@pytest.mark.parametrize("n, batch, world", [(23, 6, 2), (23, 6, 3), (40, 8, 4), (9, 2, 2)])
def test_ranks_shares_of_a_step_are_the_one_process_batch(n, batch, world):
    """DDP with global batch ``batch``: rank r takes ``batch / world`` images per step; together the ranks' step s
    holds exactly the images of the one-process step s (the same number of steps, nothing left out or repeated)."""
    from orand_addon.segment.data import EpochSampler, batches_per_epoch

    one = [i for _, i in EpochSampler(n, batch, seed=4, epoch=2)]
    steps = batches_per_epoch(n, batch)
    per_rank = [[i for _, i in EpochSampler(n, batch // world, 4, 2, rank=r, world_size=world)]
                for r in range(world)]
    assert all(len(share) == steps * (batch // world) for share in per_rank)
    b = batch // world
    for s in range(steps):
        together = sorted(i for share in per_rank for i in share[s * b:(s + 1) * b])
        assert together == sorted(one[s * batch:(s + 1) * batch])
    resumed = [[i for _, i in EpochSampler(n, b, 4, 2, start_batch=1, rank=r, world_size=world)]
               for r in range(world)]
    assert resumed == [share[b:] for share in per_rank]  # a global step index resumes every rank's share

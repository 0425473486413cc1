"""The synthetic dataset generator: determinism, VOC layout, labels consistent with the masks, bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from orand_addon.classes import get_class_set, load_labels, read_id_list
from orand_addon.errors import OrandError
from orand_addon.io.images import load_image, load_label_png
from orand_addon.demo.synthetic import CLASS_NAMES, load_dataset, make_dataset, resolve_size
from orand_addon.demo.synthetic.generator import generate_image

SIZE = (64, 80)


def tree_digest(root) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "data"
    return make_dataset(root, n_train=12, n_val=5, image_size=SIZE, seed=3, show_progress=False)


def test_voc_layout_and_lists(dataset):
    root = dataset.root
    train = read_id_list(root / "ImageSets/Segmentation/train_aug.txt")
    val = read_id_list(root / "ImageSets/Segmentation/val.txt")
    assert len(train) == 12 and len(val) == 5 and not set(train) & set(val)
    assert read_id_list(root / "ImageSets/Segmentation/train.txt") == train
    for image_id in train + val:
        image = Image.open(root / "JPEGImages" / f"{image_id}.jpg")
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (SIZE[1], SIZE[0])
        mask = Image.open(root / "SegmentationClassAug" / f"{image_id}.png")
        assert mask.mode == "P" and mask.size == image.size
    assert sorted(p.stem for p in (root / "JPEGImages").iterdir()) == sorted(train + val)


def test_labels_equal_the_classes_in_each_mask(dataset):
    class_set = get_class_set(str(dataset.classes_path))
    assert class_set.names == CLASS_NAMES and class_set.names[0] == "background"
    raw = np.load(dataset.labels_path, allow_pickle=True).item()
    assert all(isinstance(k, str) for k in raw) and all(v.dtype == np.float32 for v in raw.values())
    labels = load_labels(dataset.labels_path, class_set)
    assert len(labels) == len(dataset.train_ids) + len(dataset.val_ids)
    counts = np.zeros(class_set.num_foreground)
    for image_id in dataset.train_ids + dataset.val_ids:
        mask = load_label_png(dataset.masks / f"{image_id}.png")
        values = set(np.unique(mask).tolist())
        assert values <= set(range(len(CLASS_NAMES))) | {255}
        present = sorted(v - 1 for v in values if 0 < v < 255)
        assert labels.get(image_id).tolist() == present and present, image_id
        counts[present] += 1
    assert (counts > 0).sum() >= 4  # several classes even in a tiny dataset


def test_void_band_on_every_outline(dataset):
    for image_id in dataset.train_ids[:6]:
        mask = load_label_png(dataset.masks / f"{image_id}.png")
        # no foreground pixel touches a pixel of another label: 255 always separates them
        a, b = mask[:, 1:], mask[:, :-1]
        change = (a != b) & (a != 255) & (b != 255)
        assert not change.any(), image_id
        assert (mask == 255).any()


def test_same_seed_same_bytes_and_reuse(dataset, tmp_path):
    again = make_dataset(tmp_path / "again", n_train=12, n_val=5, image_size=SIZE, seed=3, show_progress=False)
    assert tree_digest(again.root) == tree_digest(dataset.root)
    stamp = (dataset.images / f"{dataset.train_ids[0]}.jpg").stat().st_mtime_ns
    reused = make_dataset(dataset.root, n_train=12, n_val=5, image_size=SIZE, seed=3, show_progress=False)
    assert reused == dataset == load_dataset(dataset.root)
    assert (dataset.images / f"{dataset.train_ids[0]}.jpg").stat().st_mtime_ns == stamp


def test_other_seed_differs_and_prefix_is_stable(dataset):
    first = dataset.train_ids[0]
    image, mask = generate_image(3, "train", 0, SIZE)
    np.testing.assert_array_equal(mask, load_label_png(dataset.masks / f"{first}.png"))
    jpeg_error = float(np.abs(image.astype(int) - load_image(dataset.images, first).astype(int)).mean())
    other, _ = generate_image(4, "train", 0, SIZE)
    other_seed = float(np.abs(other.astype(int) - image.astype(int)).mean())
    assert jpeg_error < 8 and other_seed > 3 * jpeg_error, (jpeg_error, other_seed)
    val0, _ = generate_image(3, "val", 0, SIZE)
    assert not np.array_equal(val0, image)


def test_incomplete_dataset_is_rewritten(dataset, tmp_path):
    info = make_dataset(tmp_path / "d", n_train=3, n_val=2, image_size=SIZE, seed=3, show_progress=False)
    victim = info.images / f"{info.val_ids[1]}.jpg"
    victim.unlink()
    make_dataset(tmp_path / "d", n_train=3, n_val=2, image_size=SIZE, seed=3, show_progress=False)
    assert victim.is_file()


def test_other_parameters_refused(dataset):
    with pytest.raises(OrandError, match=r"other parameters \(seed 3 -> 4\)"):
        make_dataset(dataset.root, n_train=12, n_val=5, image_size=SIZE, seed=4, show_progress=False)
    manifest = json.loads((dataset.root / "synthetic.json").read_text())
    assert manifest["seed"] == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"n_train": 0}, "at least one train and one val image"),
    ({"image_size": 16}, "at least 32 px"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    args = {"n_train": 2, "n_val": 1, "image_size": SIZE, "show_progress": False, **kwargs}
    with pytest.raises(OrandError, match=message):
        make_dataset(tmp_path / "x", **args)


def test_not_a_dataset(tmp_path):
    with pytest.raises(OrandError, match="not a complete synthetic dataset"):
        load_dataset(tmp_path)


def test_sizes():
    assert resolve_size("ci").image_size == (64, 80)
    assert resolve_size("large,n_val=7").n_val == 7
    assert resolve_size("default,image=96x128").image_size == (96, 128)
    with pytest.raises(OrandError, match="not key=integer"):
        resolve_size("ci,n_train=many")
    with pytest.raises(OrandError, match="unknown size key 'epochs'"):
        resolve_size("ci,epochs=3")
    with pytest.raises(OrandError, match="at least 32 px"):
        resolve_size("image=8")


def test_identical_bytes_from_another_process(dataset, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from orand_addon.demo.synthetic import make_dataset; "
            "make_dataset(sys.argv[1], n_train=12, n_val=5, image_size=(64, 80), seed=3, show_progress=False)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "p")], check=True, env={"PYTHONHASHSEED": "123"})
    assert tree_digest(tmp_path / "p") == tree_digest(dataset.root)

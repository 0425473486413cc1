"""A deterministic synthetic WSSS dataset in the PASCAL VOC layout.

::

    ROOT/JPEGImages/<id>.jpg                 RGB images (JPEG quality 90)
    ROOT/SegmentationClassAug/<id>.png       palette PNGs: 0 background, 1..6 classes, 255 void on outlines
    ROOT/ImageSets/Segmentation/train_aug.txt, train.txt, val.txt
    ROOT/cls_labels.npy                      dict str id -> float32[6] multi-hot (MCTformer/PSA convention)
    ROOT/classes.txt                         class names, background first (``--classes ROOT/classes.txt``)
    ROOT/synthetic.json                      the parameters; written last, so it marks a complete dataset

Every image is a pure function of ``(seed, split, index)``: the same call writes the same bytes, and the first
images of a larger dataset are the images of a smaller one. ``train.txt`` equals ``train_aug.txt`` (every
synthetic image has exact ground truth, unlike VOC's SBD part).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...datasets.folder import VocFolder
from ...errors import OrandError
from ...io.images import save_label_png
from ...runtime.files import atomic_write, atomic_write_text
from ...runtime.progress import progress
from .scene import CLASS_NAMES, render_scene, sample_scene

GENERATOR_VERSION = 1
SPLIT_CODES = {"train": 1, "val": 2}
JPEG_QUALITY = 90


@dataclass(frozen=True)
class DatasetInfo(VocFolder):
    """Where a synthetic dataset lives and what it holds: a VOC-layout folder whose images share one size."""

    image_size: tuple[int, int]
    seed: int


def image_id(split: str, index: int) -> str:
    """The id of image ``index`` of a split.

    >>> image_id("train", 7), image_id("val", 0)
    ('train_000007', 'val_000000')
    """
    return f"{split}_{index:06d}"


def void_width(size: tuple[int, int]) -> int:
    """Width of the void band: about 1 % of the shorter side, at least 1 pixel (VOC: ~5 px at 500 px).

    >>> void_width((96, 128)), void_width((375, 500))
    (1, 4)
    """
    return max(1, round(min(size) / 100))


def generate_image(seed: int, split: str, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W, 3) uint8 and label mask (H, W) uint8 of one id; a pure function of its arguments."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    return render_scene(sample_scene(rng, size), void_width(size))


def mask_classes(mask: np.ndarray, num_foreground: int) -> np.ndarray:
    """Multi-hot float32 (C,) of the classes present in a label mask (void and background ignored).

    >>> mask_classes(np.array([[0, 2, 255], [5, 2, 0]], np.uint8), 6).tolist()
    [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    """
    present = np.unique(mask)
    out = np.zeros(num_foreground, np.float32)
    fg = present[(present > 0) & (present <= num_foreground)]
    out[fg.astype(np.int64) - 1] = 1
    return out


def _manifest(seed: int, size: tuple[int, int], n_train: int, n_val: int) -> dict:
    return {"generator": "orand_addon.demo.synthetic", "generator_version": GENERATOR_VERSION, "seed": seed,
            "image_size": list(size), "n_train": n_train, "n_val": n_val, "class_names": list(CLASS_NAMES)}


def _info(root: Path, manifest: dict) -> DatasetInfo:
    return DatasetInfo(root, tuple(manifest["class_names"]),
                       tuple(image_id("train", i) for i in range(manifest["n_train"])),
                       tuple(image_id("val", i) for i in range(manifest["n_val"])),
                       tuple(manifest["image_size"]), manifest["seed"])


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _complete(info: DatasetInfo) -> bool:
    ids = info.train_ids + info.val_ids
    return (info.labels_path.is_file() and info.classes_path.is_file()
            and all((info.images / f"{i}.jpg").is_file() and (info.masks / f"{i}.png").is_file() for i in ids))


def load_dataset(root: str | Path) -> DatasetInfo:
    """The :class:`DatasetInfo` of a complete synthetic dataset at ``root``."""
    root = Path(root)
    path = root / "synthetic.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise OrandError(f"{root}: not a complete synthetic dataset (no readable synthetic.json)") from None
    return _info(root, manifest)


def make_dataset(root: str | Path, n_train: int, n_val: int, image_size: int | tuple[int, int] = (64, 80),
                 seed: int = 0, show_progress: bool = True) -> DatasetInfo:
    """Write (or reuse) the synthetic dataset at ``root``; returns its :class:`DatasetInfo`.

    A complete dataset with the same parameters is reused as is. A folder holding a synthetic dataset made with
    other parameters is refused (choose another folder); an incomplete one is written again.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 32:
        raise OrandError(f"image size {image_size!r}: need (H, W) of at least 32 px")
    if n_train < 1 or n_val < 1:
        raise OrandError(f"synthetic dataset needs at least one train and one val image (got {n_train}, {n_val})")
    root = Path(root)
    manifest = _manifest(seed, size, n_train, n_val)
    info = _info(root, manifest)
    marker = root / "synthetic.json"
    if marker.is_file():
        try:
            old = json.loads(marker.read_text())
        except json.JSONDecodeError:
            old = None
        if old == manifest and _complete(info):
            return info
        if old is not None and old != manifest:
            changed = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in manifest.items() if old.get(k) != v)
            raise OrandError(f"{root}: holds a synthetic dataset made with other parameters ({changed}); "
                             f"use another folder or delete it")
    for folder in (info.images, info.masks, info.list_path("val").parent):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OrandError(f"{folder}: cannot create folder ({exc.strerror})") from None
    labels: dict[str, np.ndarray] = {}
    jobs = [("train", i) for i in range(n_train)] + [("val", i) for i in range(n_val)]
    for split, index in progress(jobs, desc="synthetic data", unit="img", enabled=show_progress):
        name = image_id(split, index)
        image, mask = generate_image(seed, split, index, size)
        atomic_write(info.images / f"{name}.jpg",
                     lambda fh: Image.fromarray(image).save(fh, format="JPEG", quality=JPEG_QUALITY), what="image")
        save_label_png(info.masks / f"{name}.png", mask)
        labels[name] = mask_classes(mask, len(CLASS_NAMES) - 1)
    train_list = "".join(f"{i}\n" for i in info.train_ids)
    for split, text in (("train_aug", train_list), ("train", train_list), ("val", "".join(f"{i}\n" for i in info.val_ids))):
        _write_text(info.list_path(split), text)
    _write_text(info.classes_path, "".join(f"{n}\n" for n in CLASS_NAMES))
    atomic_write(info.labels_path, lambda fh: np.save(fh, labels, allow_pickle=True), what="labels file")
    _write_text(marker, json.dumps(manifest, indent=1) + "\n")
    return info

"""Raw MSRC-v2 -> a VOC-layout work folder (:class:`MsrcFolder`) that every command reads.

::

    OUT/JPEGImages/<id>.png                  the photos, lossless, at MSRC's own sizes (320x213, 213x320, ...)
    OUT/SegmentationClassAug/<id>.png        the mapped ground truth (0 background, 1..14, 255 void)
    OUT/ImageSets/Segmentation/train.txt     WSSS train list: train images with at least one object (378 of 452)
    OUT/ImageSets/Segmentation/train_aug.txt the same (VOC's name for the WSSS training list)
    OUT/ImageSets/Segmentation/val.txt       val images with at least one object (116 of 139)
    OUT/ImageSets/Segmentation/train_all.txt, val_all.txt   the whole split, object-less images included
    OUT/cls_labels.npy                       dict str id -> float32[14] multi-hot, every image
    OUT/classes.txt                          background + the 14 object classes
    OUT/msrc.json                            the settings and counts; written last, so it marks a complete folder

Object-less images (pure scenery, and the horse images once horse is void) stay out of the WSSS lists, as every
VOC training image has an object; they are image-level negatives for the CAM sources' classifiers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import OrandError
from ..io.images import save_label_png
from ..runtime.files import atomic_write, atomic_write_text
from ..runtime.progress import progress
from .folder import VocFolder
from .msrc import (GT_FOLDER, GT_SUFFIX, MIN_FRACTION, VAL_EVERY, ClassMap, find_msrc_image, image_labels,
                   list_msrc_ids, make_split, read_msrc_gt)

FORMAT_VERSION = 1
MANIFEST = "msrc.json"


@dataclass(frozen=True)
class MsrcFolder(VocFolder):
    """A prepared MSRC-v2 work folder: ``train_ids``/``val_ids`` hold the images with objects, ``negative_ids``
    the object-less train images."""

    negative_ids: tuple[str, ...] = ()


def _manifest(raw: Path, ids: list[str], class_map: ClassMap, min_fraction: float, val_every: int) -> dict:
    return {"dataset": "msrc-v2", "format_version": FORMAT_VERSION, "source": str(raw.resolve()), "n_images": len(ids),
            "horse": class_map.horse, "unlabelled": class_map.unlabelled, "min_fraction": min_fraction,
            "val_every": val_every, "class_names": list(class_map.classes)}


def load_msrc_folder(root: str | Path) -> MsrcFolder:
    """The :class:`MsrcFolder` of a complete work folder (one-line error otherwise)."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        lists = {name: tuple(manifest["lists"][name]) for name in ("train", "val", "negatives")}
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise OrandError(f"{root}: not a complete MSRC work folder (no readable {MANIFEST})") from None
    return MsrcFolder(root, tuple(manifest["class_names"]), lists["train"], lists["val"], lists["negatives"])


def _reuse(out: Path, manifest: dict) -> MsrcFolder | None:
    """The existing folder when it was prepared with the same settings; an error when with others."""
    if not (out / MANIFEST).is_file():
        return None
    folder = load_msrc_folder(out)
    old = json.loads((out / MANIFEST).read_text())
    differ = [k for k in manifest if old.get(k) != manifest[k]]
    if differ:
        raise OrandError(f"{out}: holds an MSRC work folder prepared with other settings ({', '.join(differ)} "
                         f"differ); use another folder or delete it")
    return folder


def prepare_msrc(raw: str | Path, out: str | Path, class_map: ClassMap = ClassMap(),
                 min_fraction: float = MIN_FRACTION, val_every: int = VAL_EVERY,
                 show_progress: bool = True) -> MsrcFolder:
    """Write (or reuse) the work folder ``out`` from the raw MSRC-v2 folder ``raw``; returns its description.

    A complete folder prepared from the same source with the same settings is reused as is; one prepared with
    other settings is refused. Nothing here is random: the same source gives the same files.
    """
    raw, out = Path(raw), Path(out)
    ids = list_msrc_ids(raw)
    manifest = _manifest(raw, ids, class_map, min_fraction, val_every)
    existing = _reuse(out, manifest)
    if existing is not None:
        return existing
    folder = MsrcFolder(out, class_map.classes, (), ())
    labels: dict[str, np.ndarray] = {}
    for image_id in progress(ids, desc="msrc data", unit="img", enabled=show_progress):
        labels[image_id] = _write_pair(raw, folder, image_id, class_map, min_fraction)
    split = make_split(ids, val_every)
    has_object = {i for i, v in labels.items() if v.any()}
    lists = {"train": [i for i in split["train"] if i in has_object], "val": [i for i in split["val"] if i in has_object],
             "negatives": [i for i in split["train"] if i not in has_object]}
    for name, members in (("train", lists["train"]), ("train_aug", lists["train"]), ("val", lists["val"]),
                          ("train_all", split["train"]), ("val_all", split["val"])):
        atomic_write_text(folder.list_path(name), "".join(f"{i}\n" for i in members))
    atomic_write_text(folder.classes_path, "".join(f"{n}\n" for n in class_map.classes))
    atomic_write(folder.labels_path, lambda fh: np.save(fh, labels, allow_pickle=True), what="labels file")
    manifest["lists"] = lists
    manifest["counts"] = count_labels(labels, split, class_map.classes)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return load_msrc_folder(out)


def _write_pair(raw: Path, folder: VocFolder, image_id: str, class_map: ClassMap, min_fraction: float) -> np.ndarray:
    """Copy one photo (as PNG) and write its mapped ground truth; returns its image-level labels."""
    source = find_msrc_image(raw, image_id)
    try:
        with Image.open(source) as im:
            image = np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise OrandError(f"{source}: unreadable image ({exc})") from None
    mask = class_map(read_msrc_gt(raw / GT_FOLDER / f"{image_id}{GT_SUFFIX}"))
    if mask.shape != image.shape[:2]:
        raise OrandError(f"{image_id}: ground truth is {mask.shape[1]}x{mask.shape[0]}, the image "
                         f"{image.shape[1]}x{image.shape[0]}")
    atomic_write(folder.images / f"{image_id}.png", lambda fh: Image.fromarray(image).save(fh, format="PNG"),
                 what="image")
    save_label_png(folder.masks / f"{image_id}.png", mask)
    return image_labels(mask, class_map.num_classes, min_fraction)


def count_labels(labels: dict[str, np.ndarray], split: dict[str, list[str]], classes: tuple[str, ...]) -> dict:
    """Images per class and split, and images by number of objects (the dataset's statistics in the manifest).

    >>> count_labels({"a": np.array([1., 0.]), "b": np.array([1., 1.]), "c": np.zeros(2)},
    ...              {"train": ["a", "c"], "val": ["b"]}, ("background", "x", "y"))
    {'train': {'x': 1, 'y': 0}, 'val': {'x': 1, 'y': 1}, 'objects_per_image': {'0': 1, '1': 1, '2': 1}}
    """
    out: dict = {}
    for name, members in split.items():
        total = np.sum([labels[i] for i in members], axis=0) if members else np.zeros(len(classes) - 1)
        out[name] = {c: int(n) for c, n in zip(classes[1:], total)}
    per_image = np.bincount([int(v.sum()) for v in labels.values()])
    out["objects_per_image"] = {str(k): int(n) for k, n in enumerate(per_image)}
    return out

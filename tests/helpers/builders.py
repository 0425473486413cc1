"""Small real-data set-ups the stage tests share: a store of tiny VOC-mini pseudo-CAMs fused by the real fuse
(:func:`make_tiny_store`, for ORANDNet), downscaled VOC-mini images with pseudo-CAMs (:func:`small_voc`, for IRN), and
real VOC images + official masks at a few dozen pixels (:func:`tiny_voc`, for DeepLab)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from orand_addon.classes import VOC_CLASSES, get_class_set, load_labels
from orand_addon.fuse.stage import FuseOptions, run_fuse
from orand_addon.io.images import load_label_png, save_label_png
from orand_addon.io.writers import write_cam
from orand_addon.store.store import Store

from .data import JPEG, VOC_MINI, gt_classes, gt_mask, pseudo_cams, voc_mini_ids, write_voc_mini_cams

def make_tiny_store(root: Path, ids: list[str] | None = None, kinds: str = "or,and") -> Path:
    """A store with ``or``/``and`` (float32) of tiny VOC-mini pseudo-CAMs, fused by ``run_fuse``."""
    ids = ids or voc_mini_ids()
    for n, image_id in enumerate(ids):
        mask = small_mask(image_id)
        keys = gt_classes(mask)
        write_cam(root / "irn", image_id, "irn", keys, pseudo_cams(mask, keys, seed=n, blur=2))
        write_cam(root / "mct", image_id, "mctformer", keys, pseudo_cams(mask, keys, seed=100 + n, blur=4))
    voc = get_class_set("voc")
    out = root / "tiny.h5"
    run_fuse([root / "irn", root / "mct"], out, voc, load_labels(None, voc),
             FuseOptions(kinds=tuple(kinds.split(",")), dtype="float32"), ids=ids, progress=False)
    return out


def add_empty_image(store_path: Path, image_id: str = "2099_000001", shape: tuple[int, int] = (40, 50)) -> str:
    with Store(store_path, mode="a") as s:
        for kind in ("or", "and"):
            s.write_maps(kind, image_id, np.zeros((0, *shape), np.float32), keys=[])
    return image_id


def small_voc(folder: Path, ids: list[str] | None = None, factor: int = 4, seed: int = 0) -> dict:
    """Downscaled VOC-mini JPEGs in ``folder`` and ``id -> (keys, maps)`` pseudo-CAMs at their size."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for n, image_id in enumerate(ids or voc_mini_ids()[:4]):
        with Image.open(JPEG / f"{image_id}.jpg") as im:
            w, h = im.size
            im.convert("RGB").resize((w // factor, h // factor), Image.BICUBIC).save(folder / f"{image_id}.jpg",
                                                                                   quality=95)
        mask = np.asarray(Image.fromarray(gt_mask(image_id)).resize((w // factor, h // factor), Image.NEAREST))
        keys = gt_classes(mask)
        out[image_id] = (keys, pseudo_cams(mask, keys, seed=seed * 100 + n, blur=4))
    return out


def write_store(path: Path, kind: str, data: dict) -> Path:
    with Store(path, "a") as store:
        for image_id, (keys, maps) in data.items():
            store.write_maps(kind, image_id, maps, keys, dtype="float32")
    return path


def tiny_voc(folder: Path, side: int = 40, n: int | None = None, colour_coded: bool = False) -> dict:
    """Real VOC images + official masks downsized to ``side`` px (longest side): ``images/``, ``masks/`` (PNG),
    ``masks.h5`` (store group ``masks``), ``list.txt``. ``colour_coded``: each pixel painted with its class's
    colour in :data:`CLASS_COLOURS`, so image colours say which class a pixel has."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(exist_ok=True)
    ids = []
    with Store(folder / "masks.h5", "a", class_names=VOC_CLASSES) as store:
        for image_id, image_path, label_path in voc_pairs()[:n]:
            im = Image.open(image_path).convert("RGB")
            scale = side / max(im.size)
            size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
            mask = np.asarray(Image.fromarray(load_label_png(label_path)).resize(size, Image.NEAREST))
            rgb = CLASS_COLOURS[mask] if colour_coded else np.asarray(im.resize(size, Image.BILINEAR))
            Image.fromarray(rgb).save(images / f"{image_id}.png")
            save_label_png(masks / f"{image_id}.png", mask)
            store.write_mask("masks", image_id, mask)
            ids.append(image_id)
    (folder / "list.txt").write_text("\n".join(ids) + "\n")
    return {"images": images, "masks": masks, "store": folder / "masks.h5", "list": folder / "list.txt", "ids": ids}


SHRINK = 8


def small_mask(image_id: str, shrink: int = SHRINK) -> np.ndarray:
    mask = gt_mask(image_id)
    h, w = mask.shape
    return np.asarray(Image.fromarray(mask).resize((w // shrink, h // shrink), Image.NEAREST))


# Random colours: unlike the bit-structured VOC palette, a mean of several of them is never another one.
CLASS_COLOURS = np.random.default_rng(7).integers(20, 236, (256, 3)).astype(np.uint8)


def voc_pairs() -> list[tuple[str, Path, Path]]:
    """(id, image, label PNG) of the 11 VOC-mini JPEGs and the 14 voc513 PNG images."""
    pairs = [(p.stem, p, VOC_MINI / "SegmentationClassAug" / f"{p.stem}.png")
             for p in sorted((VOC_MINI / "JPEGImages").glob("*.jpg"))]
    pairs += [(p.stem, p, VOC_MINI / "voc513" / "SegmentationClassAug" / p.name)
              for p in sorted((VOC_MINI / "voc513" / "images").glob("*.png"))]
    seen: set[str] = set()
    return [x for x in pairs if not (x[0] in seen or seen.add(x[0]))]


def two_source_dumps(root: Path) -> Path:
    """AMN and MCTformer dumps of the VOC-mini images under ``root`` (``amn/``, ``mct/``), as two methods write
    them (different seeds and blur): the inputs of the fuse tests that compare a run with an uninterrupted one."""
    write_voc_mini_cams(root / "amn", "amn", seed=1)
    write_voc_mini_cams(root / "mct", "mctformer", seed=2, blur=16)
    return root

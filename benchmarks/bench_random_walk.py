"""The sparse random walk vs IRN's dense propagation, in one run (issue 6).

Measures, with K = 2 class maps and IRN's settings (beta 10, exp_times 8, radius 5):

* on a GPU when present: the dense reference (float32, as IRN) and ``random_walk`` (each method) at VOC size,
  a 94×125 stride-4 map, with peak GPU memory;
* on the CPU: the dense reference and ``random_walk`` at half size (47×63), and ``random_walk`` alone at VOC size;
* the relative error between the two in the same run, and memory: peak GPU memory on a GPU; on the CPU the
  bytes of the sparse transition (linear in h·w) next to those of one dense (hw)² float32 matrix.

Goals: >= 50x faster than dense on the same device, <= 10 ms/image on an H200, <= 1 s/image at VOC size on 2 CPU
cores. Prints a table and writes JSON. Usage::

    python benchmarks/bench_random_walk.py [--repeats 3] [--threads 2] [--json benchmarks/results/random_walk.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dense_rw_reference import dense_random_walk_timed_parts  # noqa: E402

from orand_addon.refine.random_walk import WALK_METHODS, random_walk  # noqa: E402

VOC, HALF = (94, 125), (47, 63)


def inputs(size: tuple[int, int], device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two blob-shaped class maps and a boundary map of region borders plus noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    cams = [np.exp(-((yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2) / (2 * (min(h, w) / 5) ** 2))
            for _ in range(2)]
    edge = rng.uniform(0, 0.1, (h, w)).astype(np.float32)
    for _ in range(3):
        edge[int(rng.integers(0, h)), :] = 0.9
        edge[:, int(rng.integers(0, w))] = 0.9
    return (torch.tensor(np.stack(cams), device=device), torch.tensor(edge, device=device))


def timed(fn, device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    """Best wall time of ``repeats`` runs (after one warm-up), and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def sparse_bytes(size: tuple[int, int], radius: int = 5) -> int:
    """The CSR transition (S float64 values + S int64 columns per pixel) + K = 2 float64 maps, in and out:
    linear in h·w (the dense reference's one (hw)² float32 matrix is reported for comparison)."""
    from orand_addon.refine.paths import path_table

    n = size[0] * size[1]
    s = 1 + 2 * len(path_table(radius).directions)
    return n * s * 16 + (n + 1) * 8 + 2 * 2 * n * 8


def bench_device(device: torch.device, dense_size, sparse_sizes, repeats: int) -> list[dict]:
    rows = []
    cam, edge = inputs(dense_size, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_dense, ref = timed(lambda: dense_random_walk_timed_parts(cam, edge), device, max(1, repeats // 2))
    dense_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 4 * (dense_size[0] * dense_size[1]) ** 2
    rows.append({"device": device.type, "size": list(dense_size), "impl": "dense reference (float32, IRN)",
                 "s_per_image": t_dense, "memory_bytes": dense_mem})
    variants = [("auto", torch.float64)]
    if device.type == "cuda":  # every kernel, and float32 steps, so the GPU default can be chosen from numbers
        variants += [(m, dt) for m in WALK_METHODS if m != "auto" for dt in (torch.float64, torch.float32)]
    for size in sparse_sizes:
        cam_s, edge_s = inputs(size, device)
        for method, dtype in variants:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t, out = timed(lambda: random_walk(cam_s, edge_s, method=method, dtype=dtype), device, repeats)
            mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else sparse_bytes(size)
            name = f"random_walk ({method}{', float32' if dtype == torch.float32 else ''})"
            row = {"device": device.type, "size": list(size), "impl": name, "s_per_image": t, "memory_bytes": mem}
            if tuple(size) == tuple(dense_size):
                row["speedup_vs_dense"] = t_dense / t
                row["rel_error_vs_dense"] = rel_error(out, ref)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "random_walk.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if torch.cuda.is_available():
        rows += bench_device(torch.device("cuda"), VOC, [VOC], args.repeats)
    rows += bench_device(torch.device("cpu"), HALF, [HALF, VOC], args.repeats)
    result = {
        "benchmark": "random_walk", "k": 2, "beta": 10, "exp_times": 8, "radius": 5,
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                    "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "torch": torch.__version__},
        "goals": {"speedup_vs_dense_same_device": 50, "h200_s_per_image": 0.010, "cpu_voc_s_per_image": 1.0},
        "rows": rows,
    }
    print(f"{'device':6} {'size':>8} {'implementation':34} {'s/image':>9} {'memory':>10} {'speed-up':>9} {'rel.err':>9}")
    for r in rows:
        size = "x".join(map(str, r["size"]))
        speed = f"{r['speedup_vs_dense']:.0f}x" if "speedup_vs_dense" in r else ""
        err = f"{r['rel_error_vs_dense']:.1e}" if "rel_error_vs_dense" in r else ""
        print(f"{r['device']:6} {size:>8} {r['impl']:34} {r['s_per_image']:9.4f} "
              f"{r['memory_bytes'] / 2**20:8.1f}Mi {speed:>9} {err:>9}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()

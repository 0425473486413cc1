"""Fusing is I/O: compare `orand-addon fuse` with merely loading the same CAM files, side by side in one run.

Makes N VOC-sized (375x500) image pairs with 1-3 classes in the native AMN (torch tensors, background channel)
and MCTformer layouts, then measures in one run:

* load only: ``np.load(allow_pickle=True).item()`` of both files of every pair (the reference code's way), and
  the same through orand-addon's restricted unpickler, both inside this process (torch already imported), and
  the reference way again as its own process (start-up and torch import included, as for ``fuse``);
* ``orand-addon fuse`` with ``--workers 1`` and ``--workers 2`` (the real console script, timed end to end,
  interpreter and torch start-up included);
* each with the files evicted from the page cache first (``posix_fadvise DONTNEED``: a real train_aug dump of
  ~40 GB does not fit in memory, so this is the realistic case) and with a warm cache (the best case for loading);
* peak memory (max RSS of the fuse process and its workers) at N/4 and N, which must not grow with N;
* the write floor: writing as many bytes as the store holds to a new file (4 MB blocks, no fsync), the least any
  fuse that writes this store can take on this disk.

Prints a table and writes JSON. Usage: ``python benchmarks/bench_fuse.py [--n 1000] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from orand_addon.io.safe_pickle import safe_load_npy
from orand_addon.io.writers import write_cam

PEAK_WRAPPER = (
    "import resource, sys\n"
    "from orand_addon.cli import main\n"
    "code = 0\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code or 0\n"
    "s = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "c = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(f'PEAK_KB {max(s, c)}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def make_pairs(root: Path, n: int, seed: int = 0) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(seed)
    a, b = root / "amn", root / "mct"
    labels = {}
    h, w = 375, 500
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    for i in range(n):
        image_id = f"bench_{i:06d}"
        k = int(rng.integers(1, 4))
        keys = np.sort(rng.choice(20, size=k, replace=False))
        maps = []
        for _ in range(k):
            cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(30, 120)
            maps.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))
        maps = np.stack(maps).astype(np.float32)
        write_cam(a, image_id, "amn", keys, maps)
        write_cam(b, image_id, "mctformer", keys, np.clip(maps * 1.2, 0, 1) ** 0.7)
        labels[image_id] = np.eye(20, dtype=np.float32)[keys].sum(0)
    np.save(root / "labels.npy", labels)
    return a, b, root / "labels.npy"


def time_load(folders: list[Path], safe: bool) -> float:
    ids = sorted(p.stem for p in folders[0].glob("*.npy"))
    t0 = time.perf_counter()
    for image_id in ids:
        for folder in folders:
            path = folder / f"{image_id}.npy"
            obj = safe_load_npy(path) if safe else np.load(path, allow_pickle=True).item()
            assert obj is not None
    return time.perf_counter() - t0


LOAD_SCRIPT = (
    "import sys\n"
    "from pathlib import Path\n"
    "import numpy as np\n"
    "folders = [Path(f) for f in sys.argv[1:]]\n"
    "for p in sorted(folders[0].glob('*.npy')):\n"
    "    for folder in folders:\n"
    "        assert np.load(folder / p.name, allow_pickle=True).item() is not None\n"
)


def time_load_process(folders: list[Path]) -> float:
    """Loading every pair the reference code's way in a fresh interpreter, timed end to end like ``fuse``
    (start-up included; unpickling AMN's torch tensors imports torch, as it does for fuse)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, *map(str, folders)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"load failed: {proc.stderr.strip()}")
    return time.perf_counter() - t0


def time_fuse(a: Path, b: Path, labels: Path, out: Path, workers: int, ids: Path | None = None) -> tuple[float, int]:
    if out.exists():
        out.unlink()
    cmd = [sys.executable, "-c", PEAK_WRAPPER, "fuse", "--cams-a", str(a), "--cams-b", str(b), "--labels", str(labels),
           "--out", str(out), "--workers", str(workers), "--no-progress"]
    if ids is not None:
        cmd += ["--ids", str(ids)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fuse failed: {proc.stderr.strip()}")
    peak = int(next(l.split()[1] for l in proc.stderr.splitlines() if l.startswith("PEAK_KB")))
    return elapsed, peak


def time_write_floor(path: Path, n_bytes: int) -> float:
    """Writing ``n_bytes`` to a new file in 4 MB blocks (no fsync): what a new store of that size costs at least."""
    block = os.urandom(4 << 20)
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        for _ in range(max(1, n_bytes // len(block))):
            fh.write(block)
    elapsed = time.perf_counter() - t0
    path.unlink()
    return elapsed


def warm(folders: list[Path]) -> None:
    """Read every file once: the next pass reads from the page cache (the best case for 'load only')."""
    for folder in folders:
        for p in folder.iterdir():
            p.read_bytes()


def evict(folders: list[Path]) -> None:
    """Drop the files from the page cache (posix_fadvise DONTNEED), so the next pass reads the disk."""
    for folder in folders:
        for p in folder.iterdir():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="image pairs (default 1000)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "fuse.json")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the dumps (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_fuse_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        a, b, labels = make_pairs(root, args.n)
        make_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in root.rglob("*.npy")) / 2**20
        os.sync()
        timings = {}
        for cache, prepare in (("cold", evict), ("warm", warm)):
            prepare([a, b])
            timings[f"load_{cache}"] = time_load([a, b], safe=False)
            prepare([a, b])
            timings[f"load_safe_{cache}"] = time_load([a, b], safe=True)
            prepare([a, b])
            timings[f"load_process_{cache}"] = time_load_process([a, b])
            for workers in (1, 2):
                prepare([a, b])
                timings[f"fuse{workers}_{cache}"], timings[f"peak{workers}_{cache}"] = time_fuse(
                    a, b, labels, root / f"w{workers}.h5", workers)
        quarter = root / "quarter.txt"
        quarter.write_text("".join(f"bench_{i:06d}\n" for i in range(max(1, args.n // 4))))
        warm([a, b])
        _, peak_quarter = time_fuse(a, b, labels, root / "q.h5", 1, ids=quarter)
        store_mb = (root / "w1.h5").stat().st_size / 2**20
        floor = time_write_floor(root / "floor.bin", (root / "w1.h5").stat().st_size)
        result = {
            "n_pairs": args.n, "image_size": [375, 500], "dump_mb": round(size_mb, 1), "store_mb": round(store_mb, 1),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "generate_s": round(make_s, 1),
            "peak_rss_mb_n_quarter": round(peak_quarter / 1024),
            "write_floor_s": round(floor, 2),
        }
        for cache in ("cold", "warm"):
            load, load_process = timings[f"load_{cache}"], timings[f"load_process_{cache}"]
            result[f"load_{cache}_s"] = round(load, 2)
            result[f"load_safe_{cache}_s"] = round(timings[f"load_safe_{cache}"], 2)
            result[f"load_process_{cache}_s"] = round(load_process, 2)
            for w in (1, 2):
                t = timings[f"fuse{w}_{cache}"]
                result[f"fuse_workers{w}_{cache}_s"] = round(t, 2)
                result[f"ratio_workers{w}_{cache}"] = round(t / load, 2)
                result[f"ratio_process_workers{w}_{cache}"] = round(t / load_process, 2)
                result[f"images_per_s_workers{w}_{cache}"] = round(args.n / t, 1)
                result[f"peak_rss_mb_workers{w}_{cache}"] = round(timings[f"peak{w}_{cache}"] / 1024)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    rows = [
        ("pairs (375x500, 1-3 classes)", f"{args.n}"),
        ("dumps on disk", f"{result['dump_mb']} MB (store: {result['store_mb']} MB)"),
    ]
    for cache in ("cold", "warm"):
        load = result[f"load_{cache}_s"]
        rows.append((f"[{cache} page cache] load only, np.load", f"{load} s"))
        rows.append((f"[{cache} page cache] load only, restricted", f"{result[f'load_safe_{cache}_s']} s"))
        rows.append((f"[{cache} page cache] load only, own process", f"{result[f'load_process_{cache}_s']} s"))
        for w in (1, 2):
            rows.append((f"[{cache} page cache] fuse --workers {w}",
                         f"{result[f'fuse_workers{w}_{cache}_s']} s = {result[f'ratio_workers{w}_{cache}']}x load "
                         f"({result[f'ratio_process_workers{w}_{cache}']}x as a process), "
                         f"{result[f'images_per_s_workers{w}_{cache}']} img/s, peak {result[f'peak_rss_mb_workers{w}_{cache}']} MB"))
    rows.append(("peak RSS of fuse at N/4 (workers 1)", f"{result['peak_rss_mb_n_quarter']} MB"))
    rows.append(("write floor: the store's bytes to a new file", f"{result['write_floor_s']} s"))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Fair CPU use: how much slower the training loops (and optionally the demo) get when another CPU-bound job shares
the machine, side by side in one run.

For each workload (``orand-addon train`` on a small store: ORANDNet; ``orand-addon train-seg`` on small images:
DeepLab; with ``--demo`` the synthetic demo at size ``ci``) it times the real command:

* alone, and next to one competing job (a process that keeps one core busy);
* with the package's settings (idle OpenMP threads sleep, torch's thread count follows the cores the other jobs
  leave free: ``orand_addon/runtime/threads.py``) and with the old ones (spinning OpenMP threads, a fixed thread
  count of all cores: ``OMP_WAIT_POLICY=ACTIVE ORAND_ADDON_THREADS=<cores>``).

The slowdown is busy time / alone time of the same settings; the fair share on 2 cores with one competing job is
about 2x. Run it alone on the machine (nothing else running). Prints a table and writes JSON::

    python benchmarks/bench_contention.py [--demo] [--json benchmarks/results/contention.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "package": {},  # what orand-addon does by default
    "old (spinning, fixed threads)": {"OMP_WAIT_POLICY": "ACTIVE", "ORAND_ADDON_THREADS": str(os.cpu_count() or 2)},
}
BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def make_inputs(work: Path) -> dict[str, list[str]]:
    """A small store for ORANDNet and images + masks for DeepLab; returns each workload's command."""
    from PIL import Image

    from orand_addon.store.store import Store

    rng = np.random.default_rng(0)
    store = work / "maps.h5"
    with Store(store, mode="a") as s:
        for n in range(4):
            maps = rng.random((2, 160, 208), dtype=np.float32)
            s.write_maps("or", f"img{n}", maps, [0, 1], dtype="float32")
            s.write_maps("and", f"img{n}", maps * maps, [0, 1], dtype="float32")
    images, masks = work / "images", work / "masks"
    images.mkdir()
    masks.mkdir()
    for n in range(8):
        Image.fromarray(rng.integers(0, 256, (160, 208, 3), dtype=np.uint8)).save(images / f"img{n}.png")
        Image.fromarray(rng.integers(0, 3, (160, 208), dtype=np.uint8)).save(masks / f"img{n}.png")
    (work / "ids.txt").write_text("".join(f"img{n}\n" for n in range(8)))
    cli = [sys.executable, "-m", "orand_addon"]
    return {
        "ORANDNet train (fcn8s-same /2, 30 iterations)": [
            *cli, "train", "--store", str(store), "--out", "{out}", "--iterations", "30", "--arch", "fcn8s-same",
            "--width-div", "2", "--pretrained", "none", "--device", "cpu", "--no-progress"],
        "DeepLab train-seg (resnet18, 3 epochs of 2 steps)": [
            *cli, "train-seg", "--images", str(images), "--masks", str(masks), "--train-list", str(work / "ids.txt"),
            "--out", "{out}", "--model", "deeplabv2-resnet18", "--pretrained", "none", "--epochs", "3",
            "--batch-size", "4", "--crop-size", "129", "--scale-schedule", "none", "--workers", "0", "--device", "cpu",
            "--no-progress"],
    }


def timed(cmd: list[str], env: dict, work: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=work))
    cmd = [c.replace("{out}", str(out / "run")) for c in cmd]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:5])}: failed ({proc.stderr.strip().splitlines()[-1:]})")
    return seconds


def measure(workloads: dict[str, list[str]], work: Path) -> list[dict]:
    rows = []
    base = {**os.environ, "PYTHONPATH": str(ROOT)}
    for key in ("OMP_WAIT_POLICY", "ORAND_ADDON_THREADS", "OMP_NUM_THREADS"):
        base.pop(key, None)
    for name, cmd in workloads.items():
        for setting, extra in SETTINGS.items():
            env = {**base, **extra}
            alone = timed(cmd, env, work)
            busy_proc = subprocess.Popen([sys.executable, "-c", BUSY])
            try:
                time.sleep(1.0)
                busy = timed(cmd, env, work)
            finally:
                busy_proc.kill()
                busy_proc.wait()
            rows.append({"workload": name, "settings": setting, "alone_s": round(alone, 1), "busy_s": round(busy, 1),
                         "slowdown": round(busy / alone, 2)})
            print(f"{name:<52} {setting:<30} alone {alone:7.1f} s   with one busy job {busy:7.1f} s   "
                  f"slowdown {busy / alone:5.2f}x", flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="also time the synthetic demo at size ci (minutes)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "contention.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="contention_"))
    workloads = make_inputs(work)
    if args.demo:
        workloads["demo --size ci"] = [sys.executable, "-m", "orand_addon", "demo", "--size", "ci", "--out", "{out}",
                                       "--no-progress"]
    rows = measure(workloads, work)
    cores = os.cpu_count() or 2
    result = {"machine": f"{platform.machine()}, {cores} cores", "date": time.strftime("%Y-%m-%d"),
              "competing_jobs": 1, "fair_share_slowdown": round(cores / max(1, cores - 1), 2), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()

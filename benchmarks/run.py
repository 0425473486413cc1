"""One entry point for the benchmarks: quality (the demo's table, fixed seeds), the ORANDNet loss comparison, and
the speed benchmark of every stage; writes one JSON and compares it with a committed baseline.

    python benchmarks/run.py --size ci --baseline benchmarks/baseline_ci.json         # what CI runs (via pytest)
    python benchmarks/run.py --size default --losses official,bg-softmax,bce --speed full

Quality numbers are percent (mIoU, precision, recall). ``--baseline F`` exits 1 and names every quality number that
fell below the baseline by more than its allowance, ``max(--tolerance X points, --relative Y x the baseline
value)`` (defaults 0.5 points, 5 %; speed is recorded, never gated: CI machines are shared). The allowance is
relative to each row: a flat 2 points let rows below 2 (the ci demo's DeepLab mIoU is 1.6) fall to 0 unnoticed,
while a 57-point row is allowed 2.9. The 0.5-point floor covers float-level noise of rows near 0. ``--write-baseline
F`` stores this run's quality numbers (and the tolerance) as the new baseline.

The demo trains its networks from scratch, so the last bits of a float reduction grow into points of mIoU by the
IRN and DeepLab rows, and those bits depend on the vector instructions torch, MKL and oneDNN choose for the CPU: the
same commit gave 1.39 and 1.73 DeepLab mIoU on an AVX-512 and an AVX2 machine. ``--cpu-isa avx2`` (the default)
caps all three at AVX2 before torch is imported, so x86-64 machines with AVX2 compute (nearly) the same floats: on
an AVX-512 machine it reproduced 33 of the 36 numbers of an AVX2 machine's baseline exactly and the other 3 within
0.5 points, for about 8 % more time (``MKL_CBWR=AVX2`` instead matched only 22). ``native`` lets each library
pick. The baseline records the setting, and a run with another one is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# speed benchmarks: (script, arguments for a quick run, arguments for the full run)
SPEED = {
    "fuse": ("bench_fuse.py", ["--n", "100"], []),
    "evaluate": ("bench_evaluate.py", ["--n", "500", "--n-small", "100", "--files", "50"], []),
    "random_walk": ("bench_random_walk.py", ["--repeats", "1"], []),
    "seeds": ("bench_seeds.py", ["--n", "11"], []),
    "orandnet": ("bench_orandnet.py", ["--height", "96", "--width", "128", "--repeats", "1"], []),
    "seg": ("bench_seg.py", ["--models", "deeplabv2-resnet18-os16", "--crop", "97", "--batch", "2",
                             "--segment-images", "2"], []),
}


def quality_metrics(record: dict) -> dict[str, float]:
    """Flat ``{"<row> <metric>": value}`` of a demo record, the numbers the baseline gate compares.

    >>> quality_metrics({"rows": [{"row": "OR", "mIoU": 40.0, "precision": 50.0, "recall": 60.0}], "deeplab": []})
    {'OR mIoU': 40.0, 'OR precision': 50.0, 'OR recall': 60.0}
    """
    out = {}
    for row in record.get("rows", []) + record.get("deeplab", []) + record.get("losses", []):
        for metric in ("mIoU", "precision", "recall"):
            if metric in row and row[metric] == row[metric]:  # skip NaN
                out[f"{row['row']} {metric}"] = round(float(row[metric]), 2)
    return out


# environment variables that cap each library's vector instructions; read when torch is imported
CPU_ISA = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
           "native": {}}


def pin_cpu_isa(isa: str) -> None:
    """Cap torch's, MKL's and oneDNN's vector instructions (see the module docstring); before torch is imported.

    >>> CPU_ISA["avx2"]["MKL_ENABLE_INSTRUCTIONS"], CPU_ISA["native"]
    ('AVX2', {})
    """
    if "torch" in sys.modules and CPU_ISA[isa]:
        raise RuntimeError("pin_cpu_isa must run before torch is imported")
    os.environ.update(CPU_ISA[isa])


TOLERANCE_POINTS = 0.5
TOLERANCE_RELATIVE = 0.05


def allowance(base: float, tolerance: float = TOLERANCE_POINTS, relative: float = TOLERANCE_RELATIVE) -> float:
    """How far a row of baseline value ``base`` may fall: ``max(tolerance points, relative x base)``.

    >>> allowance(1.61), allowance(19.11), round(allowance(57.54), 3)
    (0.5, 0.9555, 2.877)
    """
    return max(tolerance, relative * abs(base))


def regressions(current: dict[str, float], baseline: dict[str, float], tolerance: float = TOLERANCE_POINTS,
                relative: float = TOLERANCE_RELATIVE) -> list[str]:
    """Metrics that fell below the baseline by more than their :func:`allowance`, or missing from this run.

    >>> regressions({"a": 40.0, "b": 10.0, "d": 1.0}, {"a": 41.0, "b": 12.5, "c": 3.0, "d": 1.6}, 2.0, 0.05)
    ['b: 10.00 < baseline 12.50 - 2.00', 'c: missing (baseline 3.00)']
    >>> regressions({"d": 1.0}, {"d": 1.6}, 0.5, 0.05)
    ['d: 1.00 < baseline 1.60 - 0.50']
    """
    out = []
    for name, base in baseline.items():
        if name not in current:
            out.append(f"{name}: missing (baseline {base:.2f})")
        elif current[name] < base - allowance(base, tolerance, relative):
            out.append(f"{name}: {current[name]:.2f} < baseline {base:.2f} - {allowance(base, tolerance, relative):.2f}")
    return out


def loss_rows(workdir: Path, size: str, losses: list[str], seed: int) -> list[dict]:
    """ORANDNet trained with each loss on the demo's fused store (same plan), scored like the demo's rows."""
    from orand_addon.demo.run import SWEEP, plan_for
    from orand_addon.evaluation.stage import evaluate
    from orand_addon.orandnet import PredictConfig, TrainConfig, predict_orandnet, train_orandnet
    from orand_addon.demo.synthetic import load_dataset

    plan = plan_for(size)
    info = load_dataset(workdir / "data")
    rows = []
    for loss in losses:
        store = workdir / f"loss_{loss}.h5"
        run_dir = workdir / "runs" / f"orandnet_{loss}"
        shutil.copy(workdir / "fused.h5", store)
        shutil.rmtree(run_dir, ignore_errors=True)
        start = time.perf_counter()
        config = TrainConfig(iterations=plan.orandnet_iterations, lr=1e-2, momentum=0.9, weight_decay=5e-4, loss=loss,
                             pretrained="none",
                             arch="fcn8s-same", width_div=plan.orandnet_width_div, seed=seed, progress=False,
                             checkpoint_every=plan.orandnet_iterations)
        ckpt = train_orandnet(store, run_dir, config, echo=lambda _: None)
        predict_orandnet(store, ckpt, PredictConfig(progress=False, overwrite=True), echo=lambda _: None)
        result = evaluate(f"{store}:orandnet", info.masks, ids=list(info.train_ids), sweep=SWEEP,
                          classes=str(info.classes_path))
        s = result.scores[result.best]
        rows.append({"row": f"ORANDNet loss={loss}", "best_thres": result.best_threshold,
                     "mIoU": 100 * s["mean_iou"], "precision": 100 * s["mean_precision"],
                     "recall": 100 * s["mean_recall"], "seconds": round(time.perf_counter() - start, 1)})
        store.unlink()
    return rows


def run_speed(mode: str, outdir: Path) -> dict:
    results = {}
    for name, (script, quick, full) in SPEED.items():
        out = outdir / f"{name}.json"
        args = quick if mode == "quick" else full
        flag = "--out" if name in ("evaluate", "seg") else "--json"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / script), *args, flag, str(out)], capture_output=True,
                              text=True)
        entry = {"seconds": round(time.perf_counter() - start, 1), "returncode": proc.returncode}
        if proc.returncode == 0 and out.is_file():
            entry["result"] = json.loads(out.read_text())
        else:
            entry["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        results[name] = entry
        print(f"speed {name}: {'ok' if proc.returncode == 0 else 'FAILED: ' + entry['error']} ({entry['seconds']} s)")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="ci", help="demo size: ci, default, large (default: ci)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the run here (default: a temp dir)")
    parser.add_argument("--losses", default="", help="also compare ORANDNet losses, e.g. official,bg-softmax,bce")
    parser.add_argument("--speed", choices=["none", "quick", "full"], default="none")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/summary_<size>.json")
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE_POINTS,
                        help=f"allowed drop floor, points of mIoU/precision/recall (default {TOLERANCE_POINTS})")
    parser.add_argument("--relative", type=float, default=TOLERANCE_RELATIVE,
                        help=f"allowed drop as a fraction of each baseline value (default {TOLERANCE_RELATIVE})")
    parser.add_argument("--write-baseline", type=Path, default=None)
    parser.add_argument("--cpu-isa", choices=list(CPU_ISA), default="avx2",
                        help="vector instructions of torch/MKL/oneDNN: avx2 (the same floats on every AVX2 machine; "
                             "default) or native")
    args = parser.parse_args()
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    measured_isa = baseline.get("cpu_isa", "native") if baseline else args.cpu_isa
    if measured_isa != args.cpu_isa:
        print(f"{args.baseline} was measured with --cpu-isa {measured_isa}, this run would use {args.cpu_isa}: rerun "
              f"with --cpu-isa {measured_isa}, or write a new baseline with --write-baseline", file=sys.stderr)
        return 2
    pin_cpu_isa(args.cpu_isa)

    import torch

    from orand_addon.demo.run import machine, run_demo

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="orand_bench_"))
    try:
        start = time.perf_counter()
        demo = run_demo(workdir, size=args.size, seed=args.seed, device="cpu", progress=False,
                        echo=lambda line: print(line, flush=True))
        record = {"size": args.size, "seed": args.seed, "demo_seconds": round(time.perf_counter() - start, 1),
                  "timings_s": demo.timings, "rows": demo.rows, "deeplab": demo.seg_rows, "machine": machine("cpu"),
                  "cpu_isa": args.cpu_isa, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                  "date": time.strftime("%Y-%m-%d %H:%M %z")}
        if args.losses:
            record["losses"] = loss_rows(workdir, args.size, [x for x in args.losses.split(",") if x], args.seed)
            for row in record["losses"]:
                print(f"{row['row']:28s} best thr {row['best_thres']:.2f}  mIoU {row['mIoU']:.1f}  "
                      f"prec {row['precision']:.1f}  rec {row['recall']:.1f}  ({row['seconds']} s)")
        if args.speed != "none":
            record["speed"] = run_speed(args.speed, workdir / "speed")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    record["quality"] = quality_metrics(record)
    out = args.json or HERE / "results" / f"summary_{args.size.split(',')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    if args.write_baseline:
        args.write_baseline.write_text(json.dumps({"size": args.size, "seed": args.seed, "cpu_isa": args.cpu_isa,
                                                   "tolerance": args.tolerance, "relative": args.relative,
                                                   "quality": record["quality"]}, indent=2) + "\n")
        print(f"wrote baseline {args.write_baseline}")
    if baseline:
        failed = regressions(record["quality"], baseline["quality"], args.tolerance, args.relative)
        rule = f"tolerance max({args.tolerance} points, {100 * args.relative:g} % of the row)"
        if failed:
            print(f"REGRESSION against {args.baseline} ({rule}):")
            for line in failed:
                print(f"  {line}")
            return 1
        print(f"no regression against {args.baseline} ({len(baseline['quality'])} numbers, {rule})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

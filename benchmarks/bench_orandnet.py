"""ORANDNet speed: inference time per class map and training time per iteration, at VOC size (366x500).

For each geometry (``fcn8s`` as the paper, ``fcn8s-same`` padded to a multiple of 32) this measures, with random
weights (speed does not depend on them) and the real model / loss / optimizer code:

* inference, ms per class map: fp32 batch 1 and fp32 batched; on a GPU also bf16 batch 1 and bf16 batch 16
  (autocast, channels-last), which is what ``orand-addon predict`` runs;
* training, ms per iteration: one image with ``--train-maps`` class maps (VOC train_aug averages ~1.5), SGD step
  included; fp32 on CPU, bf16 autocast on a GPU.

On a GPU the table compares with the official FCN on an H200 (3.0 ms/map fp32 batch 1, 1.6 ms/map bf16 batch 16;
goal: <= 1.0 ms/map bf16 batched) and estimates full VOC prediction (~16,000 class maps).

Usage: ``python benchmarks/bench_orandnet.py [--height 366 --width 500] [--device auto] [--json PATH]``
(quick check: ``--height 64 --width 96 --repeats 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from orand_addon.orandnet.losses import get_loss
from orand_addon.orandnet.model import FCN8s
from orand_addon.orandnet.predict import predict_maps
from orand_addon.orandnet.train import TrainConfig, make_optimizer, resolve_precision, train_step
from orand_addon.runtime.devices import resolve_device

ANCHORS_H200_MS = {("fp32", 1): 3.0, ("bf16", 16): 1.6}
GOAL_MS = 1.0
VOC_CLASS_MAPS = 16_000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bench_inference(model: FCN8s, size: tuple[int, int], batch: int, precision: str, device: torch.device,
                    repeats: int, warmup: int) -> float:
    """ms per class map of ``predict_maps`` (forward, ReLU, max normalisation, copy back to the CPU)."""
    maps = torch.rand(batch, *size)
    seconds = timed(lambda: predict_maps(model, maps, batch, device, precision), device, repeats, warmup)
    return 1000 * seconds / batch


def bench_training(arch: str, width_div: int, size: tuple[int, int], maps: int, precision: str,
                   device: torch.device, repeats: int, warmup: int) -> float:
    """ms per training iteration (one image, ``maps`` class maps, forward + loss + backward + SGD step)."""
    torch.manual_seed(0)
    model = FCN8s(arch, width_div).to(device).train()
    optimizer = make_optimizer(model, TrainConfig())
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    batch = {"input": torch.rand(maps, *size), "target": torch.rand(maps, *size)}
    loss = get_loss("official")
    seconds = timed(lambda: train_step(model, optimizer, scaler, batch, loss, 1e-3, device, precision),
                    device, repeats, warmup)
    model = optimizer = None  # free them (the timed lambda keeps the names)
    return 1000 * seconds


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
    size = (args.height, args.width)
    half = resolve_precision(device, "auto")
    cases = [("fp32", 1), ("fp32", args.batch or (16 if gpu else 4))]
    if gpu:
        cases += [(half, 1), (half, 16)]
    repeats, warmup = args.repeats, (3 if gpu else 1)
    rows = []
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        model = FCN8s(arch, args.width_div).eval()
        model.to(device, memory_format=torch.channels_last if gpu else torch.contiguous_format)
        for precision, batch in cases:
            ms = bench_inference(model, size, batch, precision, device, repeats, warmup)
            rows.append({"arch": arch, "what": "inference", "precision": precision, "batch": batch,
                         "ms_per_map": round(ms, 3),
                         "anchor_h200_ms": ANCHORS_H200_MS.get((precision, batch)) if gpu else None})
        model = None
        precision = half if gpu else "fp32"
        ms = bench_training(arch, args.width_div, size, args.train_maps, precision, device, repeats, warmup)
        rows.append({"arch": arch, "what": "training", "precision": precision, "batch": args.train_maps,
                     "ms_per_iteration": round(ms, 1)})
    best = min(r["ms_per_map"] for r in rows if r["what"] == "inference")
    return {
        "device": torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or platform.machine()}, "
                                                                  f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads)",
        "torch": torch.__version__, "size": list(size), "width_div": args.width_div, "repeats": repeats,
        "rows": rows, "goal_ms_per_map_bf16_batched": GOAL_MS,
        "best_ms_per_map": best, "voc_prediction_minutes_estimate": round(best * VOC_CLASS_MAPS / 60_000, 1),
    }


def table(result: dict) -> str:
    lines = [f"ORANDNet at {result['size'][0]}x{result['size'][1]} on {result['device']} (torch {result['torch']}, "
             f"width_div {result['width_div']}, median of {result['repeats']})",
             f"{'arch':<11} {'what':<10} {'precision':<9} {'batch':>5} {'time':>16} {'H200 anchor':>12}"]
    for r in result["rows"]:
        if r["what"] == "inference":
            t = f"{r['ms_per_map']:.3f} ms/map"
            anchor = f"{r['anchor_h200_ms']} ms" if r["anchor_h200_ms"] else ""
        else:
            t, anchor = f"{r['ms_per_iteration']:.1f} ms/iter", ""
        lines.append(f"{r['arch']:<11} {r['what']:<10} {r['precision']:<9} {r['batch']:>5} {t:>16} {anchor:>12}")
    lines.append(f"best: {result['best_ms_per_map']:.3f} ms/map -> full VOC prediction ({VOC_CLASS_MAPS} class maps) "
                 f"~{result['voc_prediction_minutes_estimate']} min of network time")
    if "CPU" not in result["device"]:
        batched = [r["ms_per_map"] for r in result["rows"] if r["what"] == "inference" and r["batch"] >= 16
                   and r["precision"] != "fp32"]
        if batched:
            met = "met" if min(batched) <= GOAL_MS else "NOT met"
            lines.append(f"goal <= {GOAL_MS} ms/map in bf16 batched (H200): best {min(batched):.3f} ms -> {met}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=366)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--archs", default="fcn8s,fcn8s-same", help="comma-separated geometries")
    parser.add_argument("--batch", type=int, default=0, help="fp32 batched size (default 4 on CPU, 16 on GPU)")
    parser.add_argument("--train-maps", type=int, default=2, help="class maps per training image")
    parser.add_argument("--width-div", type=int, default=1, help="divide channels (1 = VGG16; >1 only for smoke runs)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "orandnet.json")
    args = parser.parse_args()
    result = run(args)
    print(table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

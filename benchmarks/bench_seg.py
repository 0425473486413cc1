"""Speed of the segmentation stage: training step time, `segment` images/s, and what scale scheduling saves.

    python benchmarks/bench_seg.py                                  # light model, CPU-sized defaults
    python benchmarks/bench_seg.py --models all --device cuda       # every model, fp32 and bf16 on a GPU

Training steps use random data (batch 10 at 321x321 by default) through the same ``train_step`` as
``train-seg`` (forward, CE loss, backward, SGD with a 10x head); data loading is not included. ``segment`` is
timed on random 375x500 images (a VOC-sized image), single scale and the default multi-scale + flip.
The scale-scheduling cost compares the paper schedule's first epochs (8:2,4:2,2:2) with full-size epochs,
from step times at crop/8, crop/4, crop/2 and crop. On a GPU the torchvision DeepLabV3-ResNet101 anchor
measured on an H200 (83 ms fp32, 65 ms bf16 per step, batch 10, 321x321) is shown next to our step.
Prints a table and writes JSON (default benchmarks/results/seg.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from orand_addon.runtime.devices import resolve_device
from orand_addon.segment.infer import DEFAULT_SCALES, segment_one
from orand_addon.segment.losses import build_loss
from orand_addon.segment.models import MODELS, build_model, param_groups
from orand_addon.segment.schedule import PAPER_SCHEDULE, factor_for_epoch, parse_schedule, schedule_length
from orand_addon.segment.train import train_step

ANCHOR_H200_MS = {"fp32": 83.0, "bf16": 65.0}  # torchvision DeepLabV3-ResNet101, batch 10, 321x321


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_ms(name: str, device: torch.device, precision: str, batch: int, crop: int, steps: int,
            warmup: int, bn: str = "train") -> float:
    """Median milliseconds of one training step of model ``name`` on random data."""
    torch.manual_seed(0)
    net = build_model(name, 21, bn=bn).to(device).train()
    optimizer = torch.optim.SGD(param_groups(net, 5e-4), lr=2.5e-4, momentum=0.9)
    loss_fn = build_loss("ce", 21)
    images = torch.randn(batch, 3, crop, crop, device=device)
    masks = torch.randint(0, 21, (batch, crop, crop), device=device)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        train_step(net, images, masks, loss_fn, optimizer, None, device, precision)
        _sync(device)
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def segment_rate(name: str, device: torch.device, precision: str, scales: tuple[float, ...], flip: bool,
                 images: int) -> float:
    """Images per second of ``segment`` (without CRF and file writing) on random 375x500 images."""
    net = build_model(name, 21).to(device).eval()
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(images)]
    segment_one(net, batch[0], device, scales, flip, False, precision)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for image in batch:
        segment_one(net, image, device, scales, flip, False, precision)
    _sync(device)
    return images / (time.perf_counter() - start)


def schedule_cost(step_by_factor: dict[int, float], spec: str = PAPER_SCHEDULE) -> dict:
    """Cost of the scheduled epochs relative to the same number of full-size epochs.

    >>> schedule_cost({8: 1.0, 4: 2.0, 2: 5.0, 1: 20.0})["relative"]
    0.133
    """
    schedule = parse_schedule(spec)
    epochs = schedule_length(schedule)
    scheduled = sum(step_by_factor[factor_for_epoch(schedule, e)] for e in range(epochs))
    full = epochs * step_by_factor[1]
    return {"schedule": spec, "epochs": epochs, "scheduled_step_ms_sum": round(scheduled, 2),
            "full_step_ms_sum": round(full, 2), "relative": round(scheduled / full, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None,
                        help="comma-separated names or 'all' (default: all on a GPU, deeplabv2-resnet18 on the CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--crop", type=int, default=321)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on a GPU, 2 on the CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 GPU, 1 CPU)")
    parser.add_argument("--segment-images", type=int, default=None, help="images timed (default 20 GPU, 1 CPU)")
    parser.add_argument("--segment-scales", default=",".join(str(x) for x in DEFAULT_SCALES),
                        help="scales of the multi-scale + flip measurement")
    parser.add_argument("--bn", choices=["train", "frozen"], default="train",
                        help="backbone batch norm (train: as torchvision's reference training of the anchor)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "seg.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    names = (list(MODELS) if args.models == "all" or (args.models is None and gpu) else
             (args.models or "deeplabv2-resnet18").split(","))
    steps, warmup = args.steps or (20 if gpu else 2), args.warmup if args.warmup is not None else (5 if gpu else 1)
    n_images = args.segment_images or (20 if gpu else 1)
    precisions = ["fp32", "bf16"] if gpu else ["fp32"]
    ms_scales = tuple(float(x) for x in args.segment_scales.split(","))
    device_name = torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu"
    rows = []
    for name in names:
        for precision in precisions:
            row = {"model": name, "precision": precision,
                   "step_ms": round(step_ms(name, device, precision, args.batch, args.crop, steps, warmup,
                                            args.bn), 2),
                   "segment_img_s_single": round(segment_rate(name, device, precision, (1.0,), False, n_images), 3),
                   "segment_img_s_ms_flip": round(segment_rate(name, device, precision, ms_scales, True,
                                                               n_images), 3)}
            if gpu and name == "deeplabv3-resnet101" and "H200" in device_name:
                row["anchor_ms"] = ANCHOR_H200_MS[precision]
                row["vs_anchor"] = round(row["step_ms"] / ANCHOR_H200_MS[precision], 3)
            by_factor = {1: row["step_ms"]}
            for factor in (8, 4, 2):
                by_factor[factor] = step_ms(name, device, precision, args.batch, max(1, args.crop // factor),
                                            steps, warmup, args.bn)
            row["step_ms_by_factor"] = {str(k): round(v, 2) for k, v in sorted(by_factor.items())}
            row["schedule_cost"] = schedule_cost(by_factor)
            rows.append(row)
            print_row(row, args.batch, args.crop)
    result = {"device": device_name, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "batch": args.batch, "crop": args.crop, "steps": steps, "bn": args.bn, "segment_scales": list(ms_scales),
              "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


def print_row(row: dict, batch: int, crop: int) -> None:
    if not getattr(print_row, "header", False):
        print(f"{'model':<25}{'prec':<6}{f'step ms (b{batch}, {crop}px)':>22}{'seg img/s 1x':>14}"
              f"{'seg img/s ms+flip':>19}{'sched/full':>12}{'vs anchor':>11}")
        print_row.header = True
    anchor = f"{row['vs_anchor']:.2f}x" if "vs_anchor" in row else "-"
    print(f"{row['model']:<25}{row['precision']:<6}{row['step_ms']:>22.1f}{row['segment_img_s_single']:>14.3f}"
          f"{row['segment_img_s_ms_flip']:>19.3f}{row['schedule_cost']['relative']:>12.3f}{anchor:>11}")


if __name__ == "__main__":
    main()

"""The one prepared GPU check: every GPU path of the package, measured and checked in one run (under 8 minutes on
one H100/H200), printed as a table and written as JSON.

What it measures (``--device cuda``, the real sizes):

* ORANDNet (full VGG16 FCN-8s, both geometries) at 366x500: ms per class map in fp32 and bf16 at batch 1 and 16
  (goal <= 1.0 ms/map bf16 batched; anchor: the official FCN at 1.6 ms bf16 batch 16 on an H200), training ms per
  iteration, and bf16-vs-fp32 agreement of the predicted maps;
* the random walk at VOC size (94x125 stride-4 maps) on the GPU: ms per image (goal <= 10 ms) and its agreement
  with the CPU walk (goal: relative error <= 1e-4);
* DeepLab: a training step at batch 10, 321x321 (anchor 65 ms bf16 for torchvision DeepLabV3-R101 on an H200) for
  ``deeplabv2-resnet101`` and ``deeplabv3-resnet101``, bf16-vs-fp32 agreement of their outputs, and ``segment``
  images per second (1 scale, and 5 scales + flip);
* a 1-GPU nccl DDP smoke run: ``torchrun --nproc-per-node 1 -m orand_addon train`` on a tiny store, which must
  finish and write its checkpoint.

``--device cpu`` is the dry run: the same code paths at tiny sizes (a narrow VGG16, small images, gloo instead of
nccl), so the test suite checks that the script works before it ever meets a GPU. Usage::

    python benchmarks/gpu_check.py --out results/gpu            # on the GPU machine (see gpu_check.sh)
    python benchmarks/gpu_check.py --device cpu --out /tmp/dry  # anywhere
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
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orand_addon.orandnet.losses import get_loss  # noqa: E402
from orand_addon.orandnet.model import FCN8s  # noqa: E402
from orand_addon.orandnet.predict import predict_maps  # noqa: E402
from orand_addon.orandnet.train import TrainConfig, make_optimizer, train_step  # noqa: E402
from orand_addon.refine.random_walk import random_walk  # noqa: E402
from orand_addon.segment.infer import segment_one  # noqa: E402
from orand_addon.segment.losses import build_loss  # noqa: E402
from orand_addon.segment.models import build_model, param_groups  # noqa: E402
from orand_addon.segment.train import train_step as seg_train_step  # noqa: E402

GOALS = {"orandnet_ms_per_map_bf16": 1.0, "walk_ms": 10.0, "walk_rel_error": 1e-4}
ANCHORS_H200 = {"orandnet_bf16_b16_ms": 1.6, "deeplabv3_r101_bf16_ms": 65.0}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median milliseconds of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the reference's largest magnitude."""
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def check_orandnet(device: torch.device, size: tuple[int, int], width_div: int, repeats: int) -> list[dict]:
    rows = []
    low = "bf16" if device.type == "cuda" else "fp32"
    for arch in ("fcn8s", "fcn8s-same"):
        torch.manual_seed(0)
        model = FCN8s(arch, width_div).eval().to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        maps = torch.rand(16, *size)
        reference = predict_maps(model, maps, 16, device, "fp32")
        for precision in ("fp32", low) if low != "fp32" else ("fp32",):
            for batch in (1, 16):
                ms = timed_ms(lambda: predict_maps(model, maps[:batch], batch, device, precision), device, repeats,
                              1) / batch
                rows.append({"what": "orandnet inference", "arch": arch, "precision": precision, "batch": batch,
                             "ms_per_map": round(ms, 3)})
        if low != "fp32":
            rows.append({"what": "orandnet bf16 vs fp32", "arch": arch,
                         "max_abs_diff_maps": round(float((predict_maps(model, maps, 16, device, low)
                                                           - reference).abs().max()), 5)})
        model = None
        torch.manual_seed(0)
        model = FCN8s(arch, width_div).to(device).train()
        optimizer = make_optimizer(model, TrainConfig())
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        batch = {"input": torch.rand(2, *size), "target": torch.rand(2, *size)}
        loss = get_loss("official")
        ms = timed_ms(lambda: train_step(model, optimizer, scaler, batch, loss, 1e-3, device, low), device, repeats, 1)
        rows.append({"what": "orandnet training", "arch": arch, "precision": low, "maps": 2,
                     "ms_per_iteration": round(ms, 1)})
        model = optimizer = None
    return rows


def walk_inputs(size: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    cams = [np.exp(-((yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2) / (2 * (min(h, w) / 5) ** 2))
            for _ in range(2)]
    edge = rng.uniform(0, 0.1, (h, w)).astype(np.float32)
    for _ in range(3):
        edge[int(rng.integers(0, h)), :] = 0.9
        edge[:, int(rng.integers(0, w))] = 0.9
    return torch.tensor(np.stack(cams)), torch.tensor(edge)


def check_walk(device: torch.device, size: tuple[int, int], repeats: int) -> list[dict]:
    cam, edge = walk_inputs(size)
    cpu = random_walk(cam, edge)
    if device.type == "cpu":
        ms = timed_ms(lambda: random_walk(cam, edge), device, repeats, 0)
        return [{"what": "random walk", "device": "cpu", "size": list(size), "ms_per_image": round(ms, 2),
                 "rel_error_vs_cpu": 0.0}]
    rows = []
    c, e = cam.to(device), edge.to(device)
    for dtype in (torch.float64, torch.float32):
        out = random_walk(c, e, dtype=dtype)
        ms = timed_ms(lambda: random_walk(c, e, dtype=dtype), device, repeats, 2)
        rows.append({"what": "random walk", "device": str(device), "dtype": str(dtype).split(".")[-1],
                     "size": list(size), "ms_per_image": round(ms, 2), "rel_error_vs_cpu": agreement(out, cpu)})
    return rows


def check_deeplab(device: torch.device, batch: int, crop: int, repeats: int, image: tuple[int, int]) -> list[dict]:
    rows = []
    low = "bf16" if device.type == "cuda" else "fp32"
    names = ("deeplabv2-resnet101", "deeplabv3-resnet101") if device.type == "cuda" else ("deeplabv2-resnet18",)
    for name in names:
        torch.manual_seed(0)
        net = build_model(name, 21, bn="train").to(device).train()
        optimizer = torch.optim.SGD(param_groups(net, 5e-4), lr=2.5e-4, momentum=0.9)
        loss_fn = build_loss("ce", 21)
        images = torch.randn(batch, 3, crop, crop, device=device)
        masks = torch.randint(0, 21, (batch, crop, crop), device=device)
        for precision in ("fp32", low) if low != "fp32" else ("fp32",):
            ms = timed_ms(lambda: seg_train_step(net, images, masks, loss_fn, optimizer, None, device, precision),
                          device, repeats, 2 if device.type == "cuda" else 0)
            rows.append({"what": "deeplab training step", "model": name, "precision": precision, "batch": batch,
                         "crop": crop, "ms_per_step": round(ms, 1)})
        net.eval()
        with torch.no_grad():
            x = images[:2]
            ref = net(x).float()
            if low != "fp32":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = net(x).float()
                rows.append({"what": "deeplab bf16 vs fp32", "model": name, "rel_diff_logits": round(agreement(out, ref), 5),
                             "argmax_agreement": round(float((out.argmax(1) == ref.argmax(1)).float().mean()), 5)})
        rng = np.random.default_rng(0)
        pictures = [rng.integers(0, 256, (*image, 3), dtype=np.uint8) for _ in range(4)]
        for scales, flip in (((1.0,), False), ((0.5, 0.75, 1.0, 1.25, 1.5), True)):
            segment_one(net, pictures[0], device, scales, flip, False, low)
            sync(device)
            start = time.perf_counter()
            for picture in pictures:
                segment_one(net, picture, device, scales, flip, False, low)
            sync(device)
            rows.append({"what": "segment", "model": name, "scales": len(scales), "flip": flip,
                         "images_per_s": round(len(pictures) / (time.perf_counter() - start), 2)})
        net = optimizer = None
    return rows


def check_ddp(device: torch.device, size: tuple[int, int]) -> dict:
    """``torchrun --nproc-per-node 1 -m orand_addon train`` on a tiny store (nccl on CUDA, gloo on the CPU)."""
    from orand_addon.store.store import Store

    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    store = work / "tiny.h5"
    rng = np.random.default_rng(0)
    with Store(store, mode="a") as s:
        for n in range(2):
            maps = rng.random((2, *size), dtype=np.float32)
            s.write_maps("or", f"img{n}", maps, [0, 1], dtype="float32")
            s.write_maps("and", f"img{n}", maps * maps, [0, 1], dtype="float32")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "--master-addr", "127.0.0.1",
           "--master-port", str(29500 + os.getpid() % 1000), "-m", "orand_addon", "train", "--store", str(store),
           "--out", str(work / "run"), "--iterations", "2", "--pretrained", "none", "--width-div", "8",
           "--device", "cuda" if device.type == "cuda" else "cpu", "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    ok = proc.returncode == 0 and any((work / "run").glob("*.pt"))
    return {"what": "ddp smoke", "backend": "nccl" if device.type == "cuda" else "gloo", "ok": ok,
            "seconds": round(time.perf_counter() - start, 1), "log_tail": (proc.stdout + proc.stderr)[-600:]}


def run(device: torch.device, out: Path) -> dict:
    gpu = device.type == "cuda"
    started = time.perf_counter()
    result = {"device": torch.cuda.get_device_name(device) if gpu else f"CPU dry run ({platform.machine()})",
              "torch": torch.__version__, "dry_run": not gpu, "goals": GOALS, "anchors_h200": ANCHORS_H200}
    size = (366, 500) if gpu else (48, 64)
    result["orandnet"] = check_orandnet(device, size, 1 if gpu else 16, 10 if gpu else 1)
    result["random_walk"] = check_walk(device, (94, 125) if gpu else (24, 32), 10 if gpu else 1)
    result["deeplab"] = check_deeplab(device, 10 if gpu else 2, 321 if gpu else 65, 10 if gpu else 1,
                                      (375, 500) if gpu else (48, 64))
    result["ddp"] = check_ddp(device, size if gpu else (16, 20))
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["goals_met"] = goals_met(result) if gpu else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def goals_met(result: dict) -> dict:
    maps = [r["ms_per_map"] for r in result["orandnet"] if r["what"] == "orandnet inference"
            and r["precision"] == "bf16" and r["batch"] == 16]
    walks = [r for r in result["random_walk"] if r.get("dtype") == "float64"]
    return {"orandnet_bf16_ms_per_map": bool(maps) and min(maps) <= GOALS["orandnet_ms_per_map_bf16"],
            "walk_ms": bool(walks) and walks[0]["ms_per_image"] <= GOALS["walk_ms"],
            "walk_rel_error": bool(walks) and walks[0]["rel_error_vs_cpu"] <= GOALS["walk_rel_error"],
            "ddp": result["ddp"]["ok"]}


def table(result: dict) -> str:
    lines = [f"GPU check on {result['device']} (torch {result['torch']}), {result['seconds']} s"]
    for section in ("orandnet", "random_walk", "deeplab"):
        for row in result[section]:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    ddp = result["ddp"]
    lines.append(f"  ddp smoke ({ddp['backend']}): {'ok' if ddp['ok'] else 'FAILED'} in {ddp['seconds']} s")
    if result["goals_met"] is not None:
        lines.append("goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in result["goals_met"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the dry run at tiny sizes)")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU here; use --device cpu for the dry run")
    result = run(torch.device(args.device), args.out)
    print(table(result))
    print(f"wrote {args.out / 'gpu_check.json'}")
    if not result["ddp"]["ok"]:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()

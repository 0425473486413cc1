"""Training shell of the segmentation stage: DeepLab on images + pseudo-masks with scale scheduling.

The pieces are small functions so that a distributed variant can replace one at a time: :func:`prepare_data`
(validation of every input, before anything trains), :func:`build_training` (model, optimizer, loss),
:func:`make_loader` (sampler and DataLoader of one epoch), :func:`train_step`, :func:`save_state` /
:func:`restore_state` (exact resume: weights, optimizer, RNG, position inside the epoch).

Run folder: ``last.pt`` (resumable checkpoint, written every epoch and on Ctrl-C), ``model.pt`` (final weights
for ``segment``), ``config.json``, ``log.csv`` (one row per epoch), ``train.log``, and TensorBoard events in
``tb/`` when TensorBoard is installed.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..classes import get_class_set, read_id_list
from ..errors import OrandError
from ..runtime import (Interrupted, atomic_save, load_checkpoint, poly_lr, progress, resolve_device,
                       seed_everything)
from .data import (EpochSampler, MaskReader, MaskSource, TrainPairs, batches_per_epoch, check_pairs,
                   downsample_pair, parse_mask_source)
from .infer import evaluate_model
from .losses import LOSSES, build_loss
from .models import BN_MODES, MODELS, SegNet, build_model, param_groups
from .schedule import PAPER_SCHEDULE, Schedule, check_fits, describe_epoch, factor_for_epoch, parse_schedule

# Config fields that define a run: --resume refuses to continue a run when one of them changed.
RUN_DEFINING = ("model", "class_names", "epochs", "batch_size", "crop_size", "lr", "momentum", "weight_decay",
                "power", "head_lr_mult", "optimizer", "scale_schedule", "scale_range", "loss", "smoothing", "seed",
                "train_ids")
OPTIMIZERS = ("sgd", "adamw")
LOG_FIELDS = ("epoch", "factor", "input_px", "steps", "loss", "lr", "val_miou", "seconds")


@dataclass
class SegTrainConfig:
    """Everything a segmentation training run needs (the CLI fills it from ``train-seg`` options)."""

    images: str
    masks: str
    train_list: str | Sequence[str]
    out: str
    val_list: str | Sequence[str] | None = None
    gt: str | None = None
    model: str = "deeplabv2-resnet101"
    classes: str | None = None
    scale_schedule: str = PAPER_SCHEDULE
    epochs: int = 20
    batch_size: int = 10
    crop_size: int = 321
    scale_range: tuple[float, float] = (0.5, 1.5)
    lr: float = 2.5e-4
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9
    optimizer: str = "sgd"
    loss: str = "ce"
    smoothing: float = 0.1
    pretrained: str = "imagenet"
    bn: str = "auto"
    resume: bool = False
    device: str = "auto"
    precision: str = "auto"
    workers: int = 1
    seed: int = 0
    show_progress: bool = True


@dataclass
class PreparedData:
    train_ids: list[str]
    val_ids: list[str]
    masks: MaskReader
    class_names: list[str]
    class_counts: np.ndarray
    schedule: Schedule = field(default_factory=tuple)


def _ids(spec: str | Sequence[str]) -> list[str]:
    return read_id_list(spec) if isinstance(spec, (str, Path)) else list(spec)


def check_config(c: SegTrainConfig) -> Schedule:
    """Numbers in range and a schedule that parses and fits the training; returns the schedule."""
    minimums = (("--epochs", c.epochs, 1), ("--batch-size", c.batch_size, 1), ("--crop-size", c.crop_size, 8))
    for name, value, low in minimums:
        if value < low:
            raise OrandError(f"{name} {value} must be at least {low}")
    if not c.lr > 0:
        raise OrandError(f"--lr {c.lr} must be positive")
    if not 0 < c.scale_range[0] <= c.scale_range[1]:
        raise OrandError(f"--scale-range {c.scale_range[0]},{c.scale_range[1]}: need 0 < low <= high")
    if (c.val_list is None) != (c.gt is None):
        raise OrandError("--val-list and --gt go together: per-epoch validation needs both")
    if c.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise OrandError(f"unknown precision {c.precision!r}; valid: auto, fp32, bf16, fp16")
    registries = (("--model", c.model, MODELS), ("--loss", c.loss, LOSSES), ("--bn", c.bn, BN_MODES),
                  ("--optimizer", c.optimizer, OPTIMIZERS))
    for option, value, registry in registries:
        if value not in registry:
            raise OrandError(f"{option} {value!r} is unknown; valid: {', '.join(registry)}")
    schedule = parse_schedule(c.scale_schedule)
    check_fits(schedule, c.epochs, c.scale_schedule)
    return schedule


def prepare_data(c: SegTrainConfig, schedule: Schedule) -> PreparedData:
    """Read the lists and check every training pair (and validation GT) before anything trains."""
    train_ids = _ids(c.train_list)
    if not train_ids:
        raise OrandError("the training list is empty: nothing to train on")
    masks = MaskReader(parse_mask_source(c.masks))
    names = masks.class_names()
    if names is None:
        names = list(get_class_set(c.classes or "voc").names)
    elif c.classes is not None and list(get_class_set(c.classes).names) != names:
        raise OrandError(f"{masks.source.path}: store classes ({len(names)}) differ from --classes {c.classes}")
    if len(train_ids) < c.batch_size:
        raise OrandError(f"the training list has {len(train_ids)} images, fewer than --batch-size {c.batch_size}")
    counts = check_pairs(train_ids, c.images, masks, len(names), "training", c.show_progress)
    val_ids = _ids(c.val_list) if c.val_list is not None else []
    if c.gt is not None:
        check_pairs(val_ids, c.images, MaskReader(MaskSource("png", Path(c.gt))), len(names), "validation",
                    c.show_progress, noun="ground truth")
    return PreparedData(train_ids, val_ids, masks, names, counts, schedule)


def build_training(c: SegTrainConfig, data: PreparedData, device: torch.device):
    """Model (on ``device``), optimizer with a 10x head, loss, and a GradScaler for fp16 (else None)."""
    net = build_model(c.model, len(data.class_names), c.pretrained, c.bn).to(device)
    optimizer = build_optimizer(c, param_groups(net, c.weight_decay, c.head_lr_mult))
    loss_fn = build_loss(c.loss, len(data.class_names), data.class_counts, c.smoothing).to(device)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and c.precision == "fp16" else None
    return net, optimizer, loss_fn, scaler


def build_optimizer(c: SegTrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """``sgd`` (the DeepLab recipe, momentum ``c.momentum``) or ``adamw`` (faster from scratch: the CPU demo)."""
    if c.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum)


def make_loader(c: SegTrainConfig, dataset: TrainPairs, epoch: int, start_batch: int, pin_memory: bool = False,
                rank: int = 0, world_size: int = 1) -> torch.utils.data.DataLoader:
    sampler = EpochSampler(len(dataset), c.batch_size, c.seed, epoch, start_batch, rank, world_size)
    # an own generator keeps the DataLoader from drawing on the global RNG (exact resume)
    generator = torch.Generator().manual_seed(c.seed * 100003 + epoch)
    return torch.utils.data.DataLoader(dataset, batch_size=c.batch_size, sampler=sampler, drop_last=True,
                                       num_workers=c.workers if c.workers > 1 else 0, generator=generator,
                                       pin_memory=pin_memory)


def set_lr(optimizer: torch.optim.Optimizer, c: SegTrainConfig, step: int, total: int) -> float:
    lr = poly_lr(c.lr, step, total, c.power)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr


def train_step(net: SegNet, images: torch.Tensor, masks: torch.Tensor, loss_fn, optimizer, scaler,
               device: torch.device, precision: str) -> float:
    """One optimizer step (autocast on a GPU, gradient scaling for fp16); returns the loss."""
    from ..runtime import autocast

    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        logits = net(images)
    loss = loss_fn(logits, masks)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def save_state(path: Path, net, optimizer, scaler, position: dict, run: dict, meta: dict) -> None:
    atomic_save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "meta": meta, "run": run,
                 "scaler": scaler.state_dict() if scaler is not None else None, "position": position,
                 "rng": {"torch": torch.get_rng_state()}}, path)


def restore_state(path: Path, net, optimizer, scaler, run: dict) -> dict:
    """Load ``last.pt`` into the objects (after checking the run is the same); returns its position."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "position" not in state or "run" not in state:
        raise OrandError(f"{path}: not a resumable train-seg checkpoint")
    changed = [k for k in RUN_DEFINING if state["run"].get(k) != run.get(k)]
    if changed:
        raise OrandError(f"--resume: {path} was trained with other settings ({', '.join(changed)} differ); "
                         f"use the original options or a new --out")
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    return dict(state["position"])


def _run_record(c: SegTrainConfig, data: PreparedData) -> dict:
    from .schedule import format_schedule

    record = {k: v for k, v in asdict(c).items() if k in RUN_DEFINING}
    record.update(class_names=data.class_names, scale_schedule=format_schedule(data.schedule),
                  scale_range=[float(x) for x in c.scale_range], train_ids=len(data.train_ids))
    return record


class RunLog:
    """Messages to stderr + train.log, epoch rows to log.csv, and TensorBoard when installed."""

    def __init__(self, out: Path):
        self.out = out
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tb"))
        except ImportError:
            pass

    def message(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
        with open(self.out / "train.log", "a") as fh:
            fh.write(text + "\n")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

    def epoch(self, row: dict) -> None:
        path = self.out / "log.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.tb is not None:
            for key in ("loss", "lr", "val_miou", "factor"):
                if row.get(key) not in (None, ""):
                    self.tb.add_scalar(f"train/{key}", float(row[key]), int(row["epoch"]))
            self.tb.flush()


def train_segmentation(c: SegTrainConfig) -> Path:
    """Train per ``c``; returns the path of the final ``model.pt``. Ctrl-C saves ``last.pt`` and raises
    :class:`~orand_addon.runtime.Interrupted`; rerunning with ``resume=True`` continues exactly."""
    out = Path(c.out)
    schedule = check_config(c)
    if (out / "last.pt").is_file() and not c.resume:
        raise OrandError(f"{out}: already holds a training run (last.pt); pass --resume to continue it or "
                         f"choose a new --out")
    if c.resume and not (out / "last.pt").is_file():
        raise OrandError(f"--resume: {out / 'last.pt'} not found")
    device = resolve_device(c.device)
    data = prepare_data(c, schedule)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # a few input sizes only (one per scale-schedule phase)
    seed_everything(c.seed)
    net, optimizer, loss_fn, scaler = build_training(c, data, device)
    run = _run_record(c, data)
    meta = {"model": c.model, "num_classes": len(data.class_names), "class_names": data.class_names}
    position = {"epoch": 0, "batch": 0, "loss_sum": 0.0, "seconds": 0.0}
    if c.resume:
        position = restore_state(out / "last.pt", net, optimizer, scaler, run)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**asdict(c), **run}, indent=1, default=str))
    log = RunLog(out)
    dataset = TrainPairs(data.train_ids, c.images, data.masks, c.crop_size, tuple(c.scale_range), c.seed)
    steps = batches_per_epoch(len(dataset), c.batch_size)
    net.train()
    try:
        for epoch in range(position["epoch"], c.epochs):
            _train_epoch(c, epoch, position, steps, net, optimizer, loss_fn, scaler, device, dataset, data, log)
            save_state(out / "last.pt", net, optimizer, scaler, position, run, meta)
    except KeyboardInterrupt:
        save_state(out / "last.pt", net, optimizer, scaler, position, run, meta)
        raise Interrupted(f"interrupted at epoch {position['epoch'] + 1}, step {position['batch']}; "
                          f"{out / 'last.pt'} saved, rerun with --resume to continue") from None
    final = out / "model.pt"
    atomic_save({"model": net.state_dict(), "meta": meta, "run": run}, final)
    log.close()
    return final


def _train_epoch(c, epoch, position, steps, net, optimizer, loss_fn, scaler, device, dataset, data, log) -> None:
    """Train one epoch from ``position['batch']``, updating ``position`` after every step (for Ctrl-C)."""
    factor = factor_for_epoch(data.schedule, epoch)
    if position["batch"] == 0:
        log.message(describe_epoch(data.schedule, epoch, c.crop_size))
    started = time.perf_counter() - position["seconds"]
    bar = progress(total=steps, initial=position["batch"], desc=f"epoch {epoch + 1}/{c.epochs}",
                   enabled=c.show_progress, unit="step")
    lr = c.lr
    with bar:
        for images, masks in make_loader(c, dataset, epoch, position["batch"], device.type == "cuda"):
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            images, masks = downsample_pair(images, masks, factor)
            lr = set_lr(optimizer, c, epoch * steps + position["batch"], c.epochs * steps)
            loss = train_step(net, images, masks, loss_fn, optimizer, scaler, device, c.precision)
            position.update(batch=position["batch"] + 1, loss_sum=position["loss_sum"] + loss,
                            seconds=time.perf_counter() - started)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
    val = evaluate_model(net, data.val_ids, c.images, c.gt, device, c.precision) if data.val_ids else None
    row = {"epoch": epoch + 1, "factor": factor, "input_px": max(1, c.crop_size // factor), "steps": steps,
           "loss": f"{position['loss_sum'] / max(steps, 1):.6f}", "lr": f"{lr:.6g}",
           "val_miou": "" if val is None else f"{val:.6f}", "seconds": f"{time.perf_counter() - started:.2f}"}
    log.epoch(row)
    log.message(f"epoch {epoch + 1}: loss {row['loss']}" + ("" if val is None else f", val mIoU {100 * val:.2f}"))
    position.update(epoch=epoch + 1, batch=0, loss_sum=0.0, seconds=0.0)

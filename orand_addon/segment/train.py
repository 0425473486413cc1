"""Training shell of the segmentation stage: DeepLab on images + pseudo-masks with scale scheduling.

The pieces are small functions: :func:`prepare_data` (validation of every input, before anything trains),
:func:`build_training` (model, optimizer, loss), :func:`make_loader` (sampler and DataLoader of one epoch),
:func:`train_step`, and :mod:`.state` (exact resume: weights, optimizer, RNG, position inside the epoch).

Run folder: ``last.pt`` (resumable checkpoint, written every epoch and on Ctrl-C), ``model.pt`` (final weights
for ``segment``), ``config.json``, ``log.csv`` (one row per epoch), ``train.log``, and TensorBoard events in
``tb/`` when TensorBoard is installed.

Under ``torchrun --nproc-per-node N`` (one or several machines) the same command trains one model with
DistributedDataParallel (gloo on the CPU, nccl on CUDA, rank r on ``cuda:LOCAL_RANK``):

* ``--batch-size`` is the **global** batch; each rank takes ``batch_size / N`` images per step (an error when N
  does not divide it). The seeded :class:`~.data.EpochSampler` order is split so that the ranks' shares of step
  ``s`` together are exactly the one-process batch ``s``; augmentation is seeded per sample, not per process.
* The loss of a step is normalised by the labelled pixels (class weights) of the **global** batch
  (:func:`train_step`), so DDP's mean of the ranks' gradients is the gradient one process computes on the whole
  batch; the logged loss is the global batch's.
* BatchNorm layers that train become SyncBatchNorm on CUDA (statistics over the global batch). PyTorch's
  SyncBatchNorm needs GPUs: on the CPU, trained BatchNorm normalises each rank's share with its own statistics
  (the running statistics are averaged over the ranks after every step,
  :func:`~orand_addon.runtime.distributed.average_running_stats`), so there a DDP run equals one process only with frozen
  BatchNorm (``--bn frozen``, or ``auto`` with pretrained weights; the DeepLab-v2 models, whose head has no
  BatchNorm and no dropout).
* Rank 0 alone logs, shows progress and writes the run folder; validation is split over the ranks and their
  confusion matrices summed (the same mIoU as one process). Ctrl-C: every rank finishes the current step (a
  second Ctrl-C during a step is held until it ends, so ``last.pt`` is always consistent), rank 0 saves
  ``last.pt``, all stop (``--resume`` continues, with any number of processes dividing ``--batch-size``); Ctrl-C
  during the validation stops after it. DataLoader workers leave Ctrl-C to the main process.

So one process with the same ``--batch-size`` takes the same steps, within float tolerance.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..engine.training import TrainingLoop, poly_lr
from ..errors import Interrupted
from ..evaluation.functional import segmentation_scores
from ..runtime.devices import autocast, cudnn_mode, grad_scaler, resolve_precision
from ..runtime.distributed import (DistInfo, average_running_stats, barrier, convert_sync_batchnorm, dist_info,
                                   process_group, rank_batch, shard, sum_across_ranks, unwrap, wrap_ddp)
from ..runtime.files import atomic_write_text
from ..runtime.provenance import ids_digest
from ..runtime.seeding import seed_everything
from ..runtime.workers import ignore_sigint
from .config import OPTIMIZERS, PreparedData, SegTrainConfig, check_config, prepare_data
from .data import EpochSampler, TrainPairs, batches_per_epoch, downsample_pair
from .infer import validation_confusion
from .losses import build_loss
from .models import SegNet, build_model, param_groups
from .runlog import QuietLog, RunLog, open_log
from .schedule import Schedule, describe_epoch, factor_for_epoch
from .state import CHECKPOINT, FINAL, RUN_DEFINING, check_run_folder, restore_state, save_final, save_state

__all__ = ["SegTrainConfig", "OPTIMIZERS", "train_segmentation", "train_step", "make_loader", "rank_batch",
           "prepare_data", "build_training"]


def build_training(c: SegTrainConfig, data: PreparedData, device: torch.device):
    """Model (on ``device``; SyncBatchNorm under DDP on CUDA), optimizer with a 10x head, loss, and a GradScaler
    when the resolved precision is fp16 (else None)."""
    net = build_model(c.model, len(data.class_names), c.pretrained, c.bn).to(device)
    net = convert_sync_batchnorm(net, device)
    optimizer = build_optimizer(c, param_groups(net, c.weight_decay, c.head_lr_mult))
    loss_fn = build_loss(c.loss, len(data.class_names), data.class_counts, c.smoothing).to(device)
    precision = resolve_precision(device, c.precision)
    scaler = grad_scaler(precision) if precision == "fp16" else None
    return net, optimizer, loss_fn, scaler


def build_optimizer(c: SegTrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """``sgd`` (the DeepLab recipe, momentum ``c.momentum``) or ``adamw`` (faster from scratch: the CPU demo)."""
    if c.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum)


def make_loader(c: SegTrainConfig, dataset: TrainPairs, epoch: int, start_batch: int, pin_memory: bool = False,
                rank: int = 0, world_size: int = 1) -> torch.utils.data.DataLoader:
    """Rank ``rank``'s batches of one epoch from global step ``start_batch`` (``c.batch_size / world_size`` images
    each)."""
    batch = rank_batch(c.batch_size, world_size)
    sampler = EpochSampler(len(dataset), batch, c.seed, epoch, start_batch, rank, world_size)
    # an own generator keeps the DataLoader from drawing on the global RNG (exact resume)
    generator = torch.Generator().manual_seed(c.seed * 100003 + epoch)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True,
                                       num_workers=c.workers if c.workers > 1 else 0, generator=generator,
                                       pin_memory=pin_memory, worker_init_fn=ignore_sigint)


def set_lr(optimizer: torch.optim.Optimizer, c: SegTrainConfig, step: int, total: int) -> float:
    lr = poly_lr(c.lr, step, total, c.power)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr


def train_step(net: SegNet, images: torch.Tensor, masks: torch.Tensor, loss_fn, optimizer, scaler,
               device: torch.device, precision: str, ranks: DistInfo = DistInfo(),
               commit: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> float:
    """One optimizer step (autocast on a GPU at the resolved ``precision``, gradient scaling for fp16); returns the
    loss of the global batch.

    Under DDP (``net`` wrapped, ``ranks`` of the process group) ``images`` are this rank's share: its loss sum is
    divided by the weight (labelled pixels) of the whole global batch times the number of ranks, so that DDP's
    mean over the ranks' gradients is the gradient of the global batch's loss, as one process computes it; the
    BatchNorm statistics each rank updated are then averaged over the ranks.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        logits = net(images)
    total, weight = loss_fn.parts(logits, masks)
    values = torch.stack([total.detach().double(), weight.double()]).tolist()  # one device sync
    total_all, weight_all = sum_across_ranks(values, device) if ranks.enabled else values
    norm = max(weight_all, loss_fn.min_weight)
    loss = total / (norm / ranks.world_size)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    with commit():
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        average_running_stats(unwrap(net), ranks)
    return total_all / norm


def _run_record(c: SegTrainConfig, data: PreparedData) -> dict:
    """The run-defining settings (:data:`~.state.RUN_DEFINING`); ``train_ids`` is a digest of the training list
    (another list of as many images is another run)."""
    from .schedule import format_schedule

    record = {k: v for k, v in asdict(c).items() if k in RUN_DEFINING}
    record.update(class_names=data.class_names, scale_schedule=format_schedule(data.schedule),
                  scale_range=[float(x) for x in c.scale_range], train_ids=ids_digest(data.train_ids),
                  n_train_ids=len(data.train_ids))
    return record


@dataclass
class _Training:
    """One training run in this process: settings, rank, model (``net`` DDP-wrapped, ``model`` plain), data, log."""

    c: SegTrainConfig
    info: DistInfo
    device: torch.device
    precision: str  # resolved: fp32 on the CPU
    net: torch.nn.Module
    model: SegNet
    optimizer: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    scaler: "torch.amp.GradScaler | None"
    data: PreparedData
    dataset: TrainPairs
    log: RunLog | QuietLog
    run: dict
    meta: dict

    @property
    def steps(self) -> int:
        return batches_per_epoch(len(self.dataset), self.c.batch_size)

    def checkpoint(self, position: dict) -> None:
        """Rank 0 writes ``last.pt``; the other ranks wait for it."""
        if self.info.is_main:
            save_state(Path(self.c.out) / CHECKPOINT, self.model, self.optimizer, self.scaler, position, self.run,
                       self.meta)
        barrier()


def train_segmentation(c: SegTrainConfig) -> Path:
    """Train per ``c``; returns the path of the final ``model.pt``. Ctrl-C saves ``last.pt`` and raises
    :class:`~orand_addon.errors.Interrupted`; rerunning with ``resume=True`` continues exactly. Launched by
    torchrun, every rank calls this and they train one model with DDP (see the module docstring)."""
    schedule = check_config(c)
    rank_batch(c.batch_size, dist_info().world_size)
    check_run_folder(Path(c.out), c.resume)
    with process_group(c.device) as (info, device):
        return _train(c, schedule, info, device)


def _start(c: SegTrainConfig, schedule: Schedule, info: DistInfo, device: torch.device) -> tuple[_Training, dict]:
    """Everything checked and built, the checkpoint restored; returns the run and its position."""
    out = Path(c.out)
    data = prepare_data(c, schedule, info, device)
    seed_everything(c.seed)
    model, optimizer, loss_fn, scaler = build_training(c, data, device)
    run = _run_record(c, data)
    meta = {"model": c.model, "num_classes": len(data.class_names), "class_names": data.class_names}
    position = {"epoch": 0, "batch": 0, "loss_sum": 0.0, "seconds": 0.0}
    if c.resume:
        position = restore_state(out / CHECKPOINT, model, optimizer, scaler, run)
    log = open_log(out, info)
    if info.is_main:
        record = {**asdict(c), **run, "processes": info.world_size}
        atomic_write_text(out / "config.json", json.dumps(record, indent=1, default=str), what="run settings")
    if info.enabled:
        log.message(f"training on {info.world_size} processes, {rank_batch(c.batch_size, info.world_size)} images "
                    f"each per step (global batch {c.batch_size})")
    dataset = TrainPairs(data.train_ids, c.images, data.masks, c.crop_size, tuple(c.scale_range), c.seed)
    net = wrap_ddp(model, device, broadcast_buffers=False)  # BatchNorm statistics: averaged after every step
    job = _Training(c, info, device, resolve_precision(device, c.precision), net, model, optimizer, loss_fn, scaler,
                    data, dataset, log, run, meta)
    return job, position


def _train(c: SegTrainConfig, schedule: Schedule, info: DistInfo, device: torch.device) -> Path:
    out = Path(c.out)
    job, position = _start(c, schedule, info, device)
    job.model.train()
    start = position["epoch"] * job.steps + position["batch"]
    loop = TrainingLoop(c.epochs * job.steps, start, info, device, "train-seg", c.show_progress, _stderr)
    try:  # cuDNN picks its fastest kernels: a few input sizes only (one per scale-schedule phase)
        with loop, cudnn_mode(deterministic=False, benchmark=True):
            for epoch in range(position["epoch"], c.epochs):
                stopped = _train_epoch(job, epoch, position, loop)
                with loop.saving():
                    job.checkpoint(position)
                if stopped and position["epoch"] < c.epochs:
                    raise Interrupted(_interrupted(position, out))
    except KeyboardInterrupt:  # one process: the step in progress was abandoned, ``position`` is the last one done
        if info.is_main:
            with TrainingLoop.saving():
                save_state(out / CHECKPOINT, job.model, job.optimizer, job.scaler, position, job.run, job.meta)
        raise Interrupted(_interrupted(position, out)) from None
    finally:
        job.log.close()
    if info.is_main:
        save_final(out / FINAL, job.model, job.run, job.meta)
    barrier()
    return out / FINAL


def _stderr(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _interrupted(position: dict, out: Path) -> str:
    return (f"interrupted at epoch {position['epoch'] + 1}, step {position['batch']}; {out / CHECKPOINT} saved, "
            f"rerun with --resume to continue")


def _train_epoch(job: _Training, epoch: int, position: dict, loop: TrainingLoop) -> bool:
    """Train one epoch from ``position['batch']``, updating ``position`` after every step, then validate and log
    it; returns True when the ranks agreed to stop (Ctrl-C) after a step, leaving the epoch's end (even just its
    validation) to the resumed run. In one process Ctrl-C abandons the step in progress, or the validation."""
    c, info, device = job.c, job.info, job.device
    factor = factor_for_epoch(job.data.schedule, epoch)
    if position["batch"] == 0:
        job.log.message(describe_epoch(job.data.schedule, epoch, c.crop_size))
    started = time.perf_counter() - position["seconds"]
    total = c.epochs * job.steps
    lr = poly_lr(c.lr, max(epoch * job.steps + position["batch"] - 1, 0), total, c.power)  # of the last step
    loader = make_loader(c, job.dataset, epoch, position["batch"], device.type == "cuda", info.rank, info.world_size)
    for images, masks in loader:
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        images, masks = downsample_pair(images, masks, factor)
        with loop.step(job.model):
            lr = set_lr(job.optimizer, c, epoch * job.steps + position["batch"], total)
            loss = train_step(job.net, images, masks, job.loss_fn, job.optimizer, job.scaler, device, job.precision,
                              info, commit=loop.commit)
            position.update(batch=position["batch"] + 1, loss_sum=position["loss_sum"] + loss,
                            seconds=time.perf_counter() - started)
        loop.done(loss=f"{loss:.4f}")
        if loop.stopping():
            return True
    val = validate(job)
    row = {"epoch": epoch + 1, "factor": factor, "input_px": max(1, c.crop_size // factor), "steps": job.steps,
           "loss": f"{position['loss_sum'] / max(job.steps, 1):.6f}", "lr": f"{lr:.6g}",
           "val_miou": "" if val is None else f"{val:.6f}", "seconds": f"{time.perf_counter() - started:.2f}"}
    job.log.epoch(row)
    job.log.message(f"epoch {epoch + 1}: loss {row['loss']}" + ("" if val is None else f", val mIoU {100 * val:.2f}"))
    position.update(epoch=epoch + 1, batch=0, loss_sum=0.0, seconds=0.0)
    return loop.stopping()


def validate(job: _Training) -> float | None:
    """Single-scale mIoU of the validation list (None without one); each rank scores its share with the same model
    (the ranks' weights and averaged statistics are equal) and the confusion matrices are summed, so the result is
    the one-process mIoU."""
    if not job.data.val_ids:
        return None
    info = job.info
    mine = shard(job.data.val_ids, info.rank, info.world_size)
    conf = validation_confusion(job.model, mine, job.c.images, job.c.gt, job.device, job.precision)
    if info.enabled:
        conf = np.rint(sum_across_ranks(conf.ravel().tolist(), job.device)).astype(np.int64).reshape(conf.shape)
    return float(segmentation_scores(conf)["mean_iou"])

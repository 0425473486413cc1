"""Training IRN from the seeds in the store (``step/train_irn.py``): model, data, step and checkpoint as
separate small functions.

Reference schedule: crop 512, batch 32, 3 epochs of ``N // 32`` steps, SGD with lr 0.1 for the boundary head and
1.0 for the displacement head, weight decay 1e-4, poly decay (power 0.9). (IRN's ``PolyOptimizer`` passes the
weight decay positionally into SGD's momentum slot, i.e. momentum 1e-4, effectively none: momentum is 0 here
unless asked; ``--recipe official`` sets 1e-4.) ORANDNet's release ran IRN with batch 16 (``--irn_batch_size``,
1,983 steps on train_aug): ``--recipe official`` sets it. The stride-4 labels of the crops are sampled as IRN
(``label_sampling``, :mod:`.data`).

Files in the run folder: ``irn_last.pt`` (model, optimizer, step; written every ``checkpoint_every`` steps, on
Ctrl-C and at the end) and ``irn.pt`` (the trained weights and settings, used by the walk). A rerun resumes
from ``irn_last.pt`` when its settings are the same, and skips training when ``irn.pt`` exists.

Under ``torchrun --nproc-per-node N`` the same call trains one model with DistributedDataParallel (gloo on CPU,
nccl on CUDA, rank r on ``cuda:LOCAL_RANK``). ``batch_size`` stays the global batch (each rank takes
``batch_size / N`` crops of it) and the steps are those of one process with the same ``batch_size``: the losses
are normalised by the pair counts of the whole global batch and the buffers updated per rank are averaged
(:mod:`.ddp`). A trainable backbone's BatchNorm becomes ``SyncBatchNorm`` on GPUs (statistics over the global
batch, as one process); on CPUs PyTorch has no SyncBatchNorm, so there each rank normalises its own crops. Rank 0
alone shows progress and writes the checkpoints (the other ranks wait at a barrier); Ctrl-C on any rank stops all
of them after the same step. A checkpoint continues with any number of processes (the global batch, recorded
in the options, must be the same); ``RUN_DIR`` must then be on a filesystem every rank reads.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..engine.training import TrainingLoop, restore_state, set_poly_lr, training_state
from ..errors import Interrupted, OrandError, first_line
from ..pretrained import load_pretrained_state
from ..runtime.devices import autocast, grad_scaler, resolve_precision
from ..runtime.distributed import (DistInfo, average_running_stats, barrier, convert_sync_batchnorm, process_group,
                                   rank_batch, sum_across_ranks, unwrap, wrap_ddp)
from ..runtime.files import atomic_save, load_checkpoint
from ..runtime.provenance import ids_digest
from ..runtime.seeding import seed_everything
from ..runtime.workers import ignore_sigint
from ..store.store import Store
from .data import CropSpec, SeedCrops, StepSampler
from .ddp import global_pair_counts, ranks_agree
from .checks import check_images, select_ids
from .losses import edge_affinity, irn_losses, pair_counts, pair_displacement, pair_labels
from .network import IRNet, build_irnet
from .paths import PathTable, path_table

LAST, FINAL = "irn_last.pt", "irn.pt"
LOSS_NAMES = ("pos", "neg", "dp_fg", "dp_bg", "total")


@dataclass(frozen=True)
class TrainOptions:
    """Everything that changes the trained weights (a resumed run must use the same)."""

    crop_size: int = 512
    batch_size: int = 32
    epochs: int = 3
    lr: float = 0.1
    dp_lr: float = 1.0
    backbone_lr: float | None = None  # trainable backbone only; None: ``lr``
    weight_decay: float = 1e-4
    momentum: float = 0.0
    poly_power: float = 0.9
    scale_range: tuple[float, float] = (0.5, 1.5)
    label_sampling: str = "nearest"
    radius: int = 10
    backbone: str = "frozen"
    arch: str = "resnet50"  # the backbone network (IRN_BACKBONES)
    pretrained: str = "imagenet"
    max_steps: int | None = None  # stop after this many steps (the poly schedule spans them); None: all epochs
    seed: int = 0


@dataclass
class TrainResult:
    weights: Path
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    skipped: bool = False

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"train: {self.weights} already trained ({self.steps} steps); skipped"]
        loss = f", loss {self.history[0]['total']:.4f} -> {self.history[-1]['total']:.4f}" if self.history else ""
        return [f"train: {self.steps} steps{loss}; weights {self.weights}"]


def total_steps(n_images: int, options: TrainOptions) -> int:
    """Optimizer steps of the run: ``epochs × (n // batch)``, capped by ``max_steps``.

    >>> total_steps(10582, TrainOptions()), total_steps(10, TrainOptions(batch_size=4, max_steps=3))
    (990, 3)
    """
    steps = options.epochs * (n_images // options.batch_size)
    return min(steps, options.max_steps) if options.max_steps is not None else steps


def options_record(options: TrainOptions) -> dict:
    return json.loads(json.dumps(asdict(options)))


def build_model(options: TrainOptions, device: torch.device) -> IRNet:
    if options.backbone == "frozen" and options.pretrained == "none":
        raise OrandError("--pretrained none with a frozen backbone would train on random features; "
                         "use --backbone trainable (or ImageNet weights)")
    state = load_pretrained_state(options.arch, options.pretrained)
    return build_irnet(options.backbone, state, source=options.pretrained, arch=options.arch).to(device)


def build_optimizer(model: IRNet, options: TrainOptions) -> torch.optim.SGD:
    groups = model.parameter_groups()
    lrs = {"edge": options.lr, "dp": options.dp_lr,
           "backbone": options.lr if options.backbone_lr is None else options.backbone_lr}
    param_groups = [{"params": groups[name], "lr": lrs[name], "initial_lr": lrs[name], "name": name}
                    for name in ("edge", "dp", "backbone") if groups[name]]
    return torch.optim.SGD(param_groups, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay)


def build_loader(dataset: SeedCrops, options: TrainOptions, start: int, total: int, workers: int,
                 pin_memory: bool, info: DistInfo = DistInfo()) -> torch.utils.data.DataLoader:
    """Batches of steps ``start .. total``; rank ``info.rank`` gets its part of every global batch."""
    sampler = StepSampler(len(dataset), options.batch_size, total, seed=options.seed, start=start, rank=info.rank,
                          world_size=info.world_size)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                                       worker_init_fn=ignore_sigint)  # Ctrl-C is the main process's


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor],
               table: PathTable, device: torch.device, precision: str = "fp32",
               info: DistInfo = DistInfo(), scaler: "torch.amp.GradScaler | None" = None,
               commit: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> dict[str, float]:
    """One SGD step on a batch of (images, stride-4 seeds); returns the losses. ``precision``: the resolved one
    (:func:`~orand_addon.runtime.devices.resolve_precision`); ``scaler`` scales the gradients of fp16 steps;
    ``commit``: the context of the weight update (:meth:`~orand_addon.engine.training.TrainingLoop.commit`).

    Under DDP (``model`` wrapped, ``info`` of this rank) the batch is this rank's part of the global batch: the
    losses are its share of the global batch's (pair counts summed over the ranks), ``world_size ×`` that share is
    backpropagated (DDP averages the gradients over the ranks) and the returned losses are the global batch's.
    """
    images, labels = (t.to(device, non_blocking=True) for t in batch)
    bg_pos, fg_pos, neg = pair_labels(labels, table)
    counts = global_pair_counts(pair_counts(bg_pos, fg_pos, neg), info)
    with autocast(device, precision):
        edge_logits, dp = model(images)
    aff = edge_affinity(torch.sigmoid(edge_logits.float()), table)
    losses = irn_losses(aff, pair_displacement(dp.float(), table), bg_pos, fg_pos, neg, table, counts=counts)
    optimizer.zero_grad(set_to_none=True)
    scaled = scaler is not None and scaler.is_enabled()
    (scaler.scale(losses["total"] * info.world_size) if scaled else losses["total"] * info.world_size).backward()
    with commit():
        if scaled:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        average_running_stats(unwrap(model), info)
    shares = torch.stack([losses[k].detach() for k in LOSS_NAMES]).tolist()
    return dict(zip(LOSS_NAMES, sum_across_ranks(shares, device)))


def run_inputs(store_path: str | Path, ids: Sequence[str]) -> dict:
    """What a run trains on, recorded in its checkpoints: a digest of the sorted ids, the store, and the parameters
    that wrote its ``/seeds`` (new seeds, or seeds of rewritten maps, make another run)."""
    with Store(store_path, "r") as store:
        seeds = (store.group_provenance("seeds") or {}).get("parameters")
    return {"ids": ids_digest(sorted(ids)), "n_ids": len(ids), "store": str(Path(store_path).resolve()),
            "seeds": json.loads(json.dumps(seeds, default=str))}


def save_state(path: Path, model: IRNet, optimizer: torch.optim.Optimizer | None, step: int, total: int,
               options: TrainOptions, history: list[dict[str, float]], world_size: int = 1, inputs: dict | None = None,
               scaler: "torch.amp.GradScaler | None" = None) -> Path:
    """``model`` (unwrapped), step, options (``batch_size``: the global batch) and ``inputs`` (:func:`run_inputs`);
    ``world_size`` for the record."""
    record = {"step": step, "total_steps": total, "options": options_record(options), "inputs": inputs or {},
              "history": history, "global_batch": options.batch_size, "world_size": world_size}
    if optimizer is None:  # the trained weights only (irn.pt)
        return atomic_save({"model": model.state_dict(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record},
                           path)
    return atomic_save(training_state(model, optimizer, scaler, **record), path)


def check_same_run(path: Path, saved: object, options: TrainOptions, inputs: dict, hint: str) -> dict:
    """``saved`` (a loaded checkpoint) when it was trained with these options on these inputs; else a one-line
    error naming what differs. Returns it as a dict."""
    if not isinstance(saved, dict) or not isinstance(saved.get("options", {}), dict):
        raise OrandError(f"{path}: not an IRN training checkpoint (no options record); {hint}")
    now, old = options_record(options), saved.get("options", {})
    differ = sorted(k for k in set(now) | set(old) if now.get(k) != old.get(k))
    if differ:
        raise OrandError(f"{path} was trained with other settings ({', '.join(differ)} differ); {hint}")
    recorded = saved.get("inputs") if isinstance(saved.get("inputs"), dict) else {}
    changed = []
    if recorded.get("ids") != inputs.get("ids"):
        changed.append("other image ids")
    if recorded.get("store") != inputs.get("store"):
        changed.append(f"store {recorded.get('store')} -> {inputs.get('store')}")
    if recorded.get("seeds") != inputs.get("seeds"):
        changed.append("seeds written with other parameters")
    if changed:
        raise OrandError(f"{path} was trained on other inputs ({'; '.join(changed)}); {hint}")
    return saved


@dataclass
class _Start:
    """Where a run starts: step 0, or the state of ``irn_last.pt``."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    model: dict | None = None
    optimizer: dict | None = None
    scaler: dict | None = None
    rng: dict | None = None


RERUN_HINT = "use another --run-dir, or --no-resume to train again"


def finished_run(final: Path, options: TrainOptions, resume: bool, inputs: dict) -> TrainResult | None:
    """The finished run in ``final`` (``irn.pt``) when resuming and its settings and inputs are these; None to
    train."""
    if not (resume and final.is_file()):
        return None
    saved = check_same_run(final, load_checkpoint(final), options, inputs, RERUN_HINT)
    try:
        return TrainResult(final, int(saved.get("step", 0)), list(saved.get("history", [])), skipped=True)
    except (TypeError, ValueError) as exc:
        raise OrandError(f"{final}: damaged IRN checkpoint ({first_line(exc)}); {RERUN_HINT}") from None


def resume_point(last: Path, options: TrainOptions, resume: bool, device: torch.device, inputs: dict) -> _Start:
    """The state of ``irn_last.pt`` when resuming and its settings and inputs are these (any number of ranks)."""
    if not (resume and last.is_file()):
        return _Start()
    saved = check_same_run(last, load_checkpoint(last, map_location=device), options, inputs, RERUN_HINT)
    try:
        return _Start(int(saved["step"]), list(saved.get("history", [])), dict(saved["model"]),
                      dict(saved["optimizer"]), saved.get("scaler"), saved.get("rng"))
    except (KeyError, TypeError, ValueError) as exc:
        raise OrandError(f"{last}: damaged IRN training state ({type(exc).__name__}: {first_line(exc)}); "
                         f"{RERUN_HINT}") from None


def restore(start: _Start, where: Path, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler") -> None:
    """Load the state of ``irn_last.pt`` into the optimizer, scaler and RNG (the weights: :func:`load_weights`); a
    one-line error naming the file when it does not fit."""
    if start.optimizer is not None:
        restore_state({"optimizer": start.optimizer, "scaler": start.scaler, "rng": start.rng}, None, optimizer,
                      scaler, where, "IRN training state", RERUN_HINT)


def load_weights(model: IRNet, state: dict, where: Path) -> None:
    """``model.load_state_dict(state)`` with a one-line error naming the file."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as exc:
        raise OrandError(f"{where}: not weights of this IRN ({first_line(exc)}); {RERUN_HINT}") from None


def training_ids(store_path: str | Path, images: str | Path, ids: Sequence[str] | None,
                 options: TrainOptions) -> list[str]:
    """The ids to train on, after every check that needs no model (one-line errors, the same on every rank)."""
    with Store(store_path, "r") as store:
        todo = select_ids(store, "seeds", ids, "run the seeds step first")
        check_images(images, todo, lambda i: store.mask_shape("seeds", i), "seeds")
    side = (options.crop_size + 3) // 4
    if side < 2 * options.radius - 1:
        raise OrandError(f"--crop-size {options.crop_size} is too small for pairs within radius {options.radius} "
                         f"(at least {4 * (2 * options.radius - 1) - 3} pixels)")
    if len(todo) < options.batch_size or total_steps(len(todo), options) < 1:
        raise OrandError(f"{len(todo)} images have seeds; --batch-size {options.batch_size} needs at least that "
                         f"many (use a smaller --batch-size)")
    return todo


def checkpoint(path: Path, model: IRNet, optimizer: torch.optim.Optimizer | None, step: int, total: int,
               options: TrainOptions, history: list[dict[str, float]], info: DistInfo, inputs: dict | None = None,
               scaler: "torch.amp.GradScaler | None" = None) -> None:
    """Rank 0 writes the checkpoint; every rank waits until it is there."""
    if info.is_main:
        save_state(path, model, optimizer, step, total, options, history, info.world_size, inputs, scaler)
    barrier()


def train_irn(store_path: str | Path, images: str | Path, run_dir: str | Path, ids: Sequence[str] | None = None,
              options: TrainOptions = TrainOptions(), device: str = "auto", precision: str = "auto",
              workers: int = 0, checkpoint_every: int = 100, resume: bool = True,
              progress: bool = True, dist: DistInfo = DistInfo(),
              echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> TrainResult:
    """Train IRN on the images with seeds in the store; returns the path of the weights (``RUN_DIR/irn.pt``).

    ``dist``: this process under torchrun (``dist_info()``); every rank calls this and they train one model with
    DDP (see the module docstring). ``device`` auto/cuda then means ``cuda:LOCAL_RANK``.
    """
    run_dir = Path(run_dir)
    rank_batch(options.batch_size, dist.world_size)  # before the rendezvous: every rank fails at once
    with process_group(device, dist) as (info, dev):
        todo = training_ids(store_path, images, ids, options)
        inputs = run_inputs(store_path, todo)
        finished = finished_run(run_dir / FINAL, options, resume, inputs)
        if not ranks_agree([finished is not None], info, dev):
            raise OrandError(f"{run_dir / FINAL}: exists for some ranks only; put --run-dir on a filesystem that "
                             f"every rank shares")
        if finished is not None:
            return finished
        return _train(store_path, images, run_dir, todo, inputs, options, precision, workers, checkpoint_every,
                      resume, progress, info, dev, echo)


def _train(store_path: str | Path, images: str | Path, run_dir: Path, todo: list[str], inputs: dict,
           options: TrainOptions, precision: str, workers: int, checkpoint_every: int, resume: bool, progress: bool,
           info: DistInfo, dev: torch.device, echo: Callable[[str], None]) -> TrainResult:
    final, last = run_dir / FINAL, run_dir / LAST
    total = total_steps(len(todo), options)
    precision = resolve_precision(dev, precision)
    seed_everything(options.seed)
    model = build_model(options, dev)
    start = resume_point(last, options, resume, dev, inputs)
    if not ranks_agree([start.step], info, dev):
        raise OrandError(f"{last}: rank {info.rank} resumes at step {start.step}, another rank elsewhere; put "
                         f"--run-dir on a filesystem that every rank shares")
    if start.model is not None:
        load_weights(model, start.model, last)
    if options.backbone == "trainable":
        model = convert_sync_batchnorm(model, dev)  # CUDA only: CPU ranks keep their own BN statistics
    optimizer = build_optimizer(model, options)
    scaler = grad_scaler(precision)
    restore(start, last, optimizer, scaler)
    net = wrap_ddp(model, dev, broadcast_buffers=False)  # running statistics: averaged after every step
    step, history = start.step, start.history
    del start
    table = path_table(options.radius)
    spec = CropSpec(options.crop_size, tuple(options.scale_range), options.label_sampling)
    dataset = SeedCrops(store_path, images, todo, spec, options.seed)
    loader = build_loader(dataset, options, step, total, workers, pin_memory=dev.type == "cuda", info=info)
    model.train()
    loop = TrainingLoop(total, step, info, dev, "irn train", progress, echo, resume_hint="the same command continues")
    try:
        with loop:
            for batch in loader:
                with loop.step(model):
                    set_poly_lr(optimizer, step, total, options.poly_power)
                    losses = train_step(net, optimizer, batch, table, dev, precision, info, scaler, commit=loop.commit)
                    step += 1
                    history.append(losses)
                loop.done(loss=f"{losses['total']:.4f}")
                if loop.stopping():
                    raise KeyboardInterrupt
                if step % checkpoint_every == 0 and step < total:
                    with loop.saving():
                        checkpoint(last, model, optimizer, step, total, options, history, info, inputs, scaler)
    except KeyboardInterrupt:  # the step in progress (one process) was abandoned: the state is that of ``step``
        with TrainingLoop.saving():
            checkpoint(last, model, optimizer, step, total, options, history, info, inputs, scaler)
        raise Interrupted(f"IRN training interrupted at step {step}/{total}; saved {last}; "
                          f"the same command resumes") from None
    finally:
        dataset.close()
    checkpoint(final, model, None, step, total, options, history, info, inputs)
    if info.is_main:
        last.unlink(missing_ok=True)
    return TrainResult(final, step, history)



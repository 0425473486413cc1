"""Training IRN from the seeds in the store (``step/train_irn.py``): model, data, step and checkpoint as
separate small functions.

Reference schedule: crop 512, batch 32, 3 epochs of ``N // 32`` steps, SGD with lr 0.1 for the boundary head and
1.0 for the displacement head, weight decay 1e-4, poly decay (power 0.9). (IRN's ``PolyOptimizer`` passes the
weight decay positionally into SGD's momentum slot, i.e. momentum 1e-4, effectively none: momentum is 0 here.)

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
import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from ..distributed import DistInfo, barrier, convert_sync_batchnorm, process_group, sum_across_ranks, unwrap
from ..distributed import wrap_ddp
from ..errors import OrandError
from ..pretrained import load_pretrained_state
from ..runtime import Interrupted, atomic_save, autocast, load_checkpoint, poly_lr, progress as progress_bar
from ..runtime import seed_everything
from ..store import Store
from .data import CropSpec, SeedCrops, StepSampler
from .ddp import any_rank, average_running_stats, check_global_batch, global_pair_counts, ranks_agree
from .inputs import check_images, select_ids
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
    radius: int = 10
    backbone: str = "frozen"
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
    state = load_pretrained_state("resnet50", options.pretrained)
    return build_irnet(options.backbone, state, source=options.pretrained).to(device)


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
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor],
               table: PathTable, device: torch.device, precision: str = "auto",
               info: DistInfo = DistInfo()) -> dict[str, float]:
    """One SGD step on a batch of (images, stride-4 seeds); returns the losses.

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
    (losses["total"] * info.world_size).backward()
    optimizer.step()
    average_running_stats(unwrap(model), info)
    shares = torch.stack([losses[k].detach() for k in LOSS_NAMES]).tolist()
    return dict(zip(LOSS_NAMES, sum_across_ranks(shares, device)))


def set_poly_lr(optimizer: torch.optim.Optimizer, step: int, total: int, power: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["initial_lr"], step, total, power)


def save_state(path: Path, model: IRNet, optimizer: torch.optim.Optimizer | None, step: int, total: int,
               options: TrainOptions, history: list[dict[str, float]], world_size: int = 1) -> Path:
    """``model`` (unwrapped), step and options (``batch_size``: the global batch); ``world_size`` for the record."""
    state = {"model": model.state_dict(), "step": step, "total_steps": total, "options": options_record(options),
             "history": history, "global_batch": options.batch_size, "world_size": world_size}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    return atomic_save(state, path)


def check_same_options(path: Path, saved: dict, options: TrainOptions, hint: str) -> None:
    now = options_record(options)
    differ = sorted(k for k in set(now) | set(saved) if now.get(k) != saved.get(k))
    if differ:
        raise OrandError(f"{path} was trained with other settings ({', '.join(differ)} differ); {hint}")


class _Flag:
    requested = False


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[_Flag]:
    """Hold Ctrl-C (SIGINT) until the block ends and report it in ``flag.requested`` (main thread only)."""
    flag = _Flag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def remember(signum, frame) -> None:
        flag.requested = True

    previous = signal.signal(signal.SIGINT, remember)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def holding_interrupts(info: DistInfo) -> contextlib.AbstractContextManager[_Flag]:
    """Under torchrun, Ctrl-C (which torchrun forwards to every rank) is held for the whole loop and acted on by
    all ranks together after a step; one process keeps Ctrl-C immediate between steps."""
    return deferred_interrupt() if info.enabled else contextlib.nullcontext(_Flag())


@dataclass
class _Start:
    """Where a run starts: step 0, or the state of ``irn_last.pt``."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    model: dict | None = None
    optimizer: dict | None = None


def finished_run(final: Path, options: TrainOptions, resume: bool) -> TrainResult | None:
    """The finished run in ``final`` (``irn.pt``) when resuming and its settings are these; None to train."""
    if not (resume and final.is_file()):
        return None
    saved = load_checkpoint(final)
    check_same_options(final, saved.get("options", {}), options, "use another --run-dir, or --no-resume to train again")
    return TrainResult(final, int(saved.get("step", 0)), list(saved.get("history", [])), skipped=True)


def resume_point(last: Path, options: TrainOptions, resume: bool, device: torch.device) -> _Start:
    """The state of ``irn_last.pt`` when resuming and its settings are these (any number of ranks)."""
    if not (resume and last.is_file()):
        return _Start()
    saved = load_checkpoint(last, map_location=device)
    check_same_options(last, saved.get("options", {}), options, "use another --run-dir, or --no-resume to train again")
    return _Start(int(saved["step"]), list(saved.get("history", [])), saved["model"], saved["optimizer"])


def training_ids(store_path: str | Path, images: str | Path, ids: Sequence[str] | None,
                 options: TrainOptions) -> list[str]:
    """The ids to train on, after every check that needs no model (one-line errors, the same on every rank)."""
    with Store(store_path, "r") as store:
        todo = select_ids(store, "seeds", ids, "run the seeds step first")
        check_images(images, todo, lambda i: store.map_shape("seeds", i), "seeds")
    side = (options.crop_size + 3) // 4
    if side < 2 * options.radius - 1:
        raise OrandError(f"--crop-size {options.crop_size} is too small for pairs within radius {options.radius} "
                         f"(at least {4 * (2 * options.radius - 1) - 3} pixels)")
    if len(todo) < options.batch_size or total_steps(len(todo), options) < 1:
        raise OrandError(f"{len(todo)} images have seeds; --batch-size {options.batch_size} needs at least that "
                         f"many (use a smaller --batch-size)")
    return todo


def checkpoint(path: Path, model: IRNet, optimizer: torch.optim.Optimizer | None, step: int, total: int,
               options: TrainOptions, history: list[dict[str, float]], info: DistInfo) -> None:
    """Rank 0 writes the checkpoint; every rank waits until it is there."""
    if info.is_main:
        save_state(path, model, optimizer, step, total, options, history, info.world_size)
    barrier()


def train_irn(store_path: str | Path, images: str | Path, run_dir: str | Path, ids: Sequence[str] | None = None,
              options: TrainOptions = TrainOptions(), device: str = "auto", precision: str = "auto",
              workers: int = 0, checkpoint_every: int = 100, resume: bool = True,
              progress: bool = True, dist: DistInfo = DistInfo()) -> TrainResult:
    """Train IRN on the images with seeds in the store; returns the path of the weights (``RUN_DIR/irn.pt``).

    ``dist``: this process under torchrun (``dist_info()``); every rank calls this and they train one model with
    DDP (see the module docstring). ``device`` auto/cuda then means ``cuda:LOCAL_RANK``.
    """
    run_dir = Path(run_dir)
    check_global_batch(options.batch_size, dist)  # before the rendezvous: every rank fails at once
    with process_group(device, dist) as (info, dev):
        finished = finished_run(run_dir / FINAL, options, resume)
        if not ranks_agree([finished is not None], info, dev):
            raise OrandError(f"{run_dir / FINAL}: exists for some ranks only; put --run-dir on a filesystem that "
                             f"every rank shares")
        if finished is not None:
            return finished
        todo = training_ids(store_path, images, ids, options)
        return _train(store_path, images, run_dir, todo, options, precision, workers, checkpoint_every, resume,
                      progress, info, dev)


def _train(store_path: str | Path, images: str | Path, run_dir: Path, todo: list[str], options: TrainOptions,
           precision: str, workers: int, checkpoint_every: int, resume: bool, progress: bool, info: DistInfo,
           dev: torch.device) -> TrainResult:
    final, last = run_dir / FINAL, run_dir / LAST
    total = total_steps(len(todo), options)
    seed_everything(options.seed)
    model = build_model(options, dev)
    start = resume_point(last, options, resume, dev)
    if not ranks_agree([start.step], info, dev):
        raise OrandError(f"{last}: rank {info.rank} resumes at step {start.step}, another rank elsewhere; put "
                         f"--run-dir on a filesystem that every rank shares")
    if start.model is not None:
        model.load_state_dict(start.model)
    if options.backbone == "trainable":
        model = convert_sync_batchnorm(model, dev)  # CUDA only: CPU ranks keep their own BN statistics
    optimizer = build_optimizer(model, options)
    if start.optimizer is not None:
        optimizer.load_state_dict(start.optimizer)
    net = wrap_ddp(model, dev, broadcast_buffers=False)  # running statistics: averaged after every step
    step, history = start.step, start.history
    del start
    table = path_table(options.radius)
    dataset = SeedCrops(store_path, images, todo, CropSpec(options.crop_size, tuple(options.scale_range)), options.seed)
    loader = build_loader(dataset, options, step, total, workers, pin_memory=dev.type == "cuda", info=info)
    model.train()
    bar = progress_bar(total=total, initial=step, desc="irn train", unit="step", enabled=progress and info.is_main)
    try:
        with holding_interrupts(info) as held:
            for batch in loader:
                with deferred_interrupt() as interrupt:  # a step is never cut in half: the checkpoint stays consistent
                    set_poly_lr(optimizer, step, total, options.poly_power)
                    losses = train_step(net, optimizer, batch, table, dev, precision, info)
                    step += 1
                    history.append(losses)
                if any_rank(interrupt.requested or held.requested, info, dev):
                    raise KeyboardInterrupt
                bar.update(1)
                bar.set_postfix(loss=f"{losses['total']:.4f}")
                if step % checkpoint_every == 0 and step < total:
                    checkpoint(last, model, optimizer, step, total, options, history, info)
    except KeyboardInterrupt:
        checkpoint(last, model, optimizer, step, total, options, history, info)
        raise Interrupted(f"IRN training interrupted at step {step}/{total}; saved {last}; "
                          f"the same command resumes") from None
    finally:
        bar.close()
        dataset.close()
    checkpoint(final, model, None, step, total, options, history, info)
    if info.is_main:
        last.unlink(missing_ok=True)
    return TrainResult(final, step, history)


def load_trained(path: str | Path, device: torch.device) -> IRNet:
    """The trained :class:`IRNet` of ``irn.pt`` (or ``irn_last.pt``), in eval mode on ``device``."""
    saved = load_checkpoint(path, map_location=device)
    if not isinstance(saved, dict) or "model" not in saved:
        raise OrandError(f"{path}: not an IRN checkpoint (no 'model' entry)")
    backbone = saved.get("options", {}).get("backbone", "frozen")
    model = IRNet(backbone if backbone in ("frozen", "trainable") else "frozen")
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as exc:
        raise OrandError(f"{path}: not IRN weights ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval()

"""Training ORANDNet on the store: ``or`` maps in, ``and`` maps as targets (``orand-addon train``).

One step = one image, all its present classes as a batch of class maps, full resolution, no augmentation (as the
paper); SGD with a polynomial learning-rate decay. The loop is made of small pieces so that torch.distributed can
be added around them: :func:`build_training_model`, :func:`make_optimizer`, the seeded
:class:`~.data.IterationSampler` (takes ``rank``/``world_size``), :func:`train_step` and
:func:`save_training_state` / :func:`restore_training_state`.

Under ``torchrun --nproc-per-node N`` the same command trains with DistributedDataParallel (gloo on CPU, nccl on
CUDA, rank r on ``cuda:LOCAL_RANK``): one iteration is one optimizer step over a global batch of
``world_size x accumulate`` images (each rank its own ``accumulate`` images of the seeded order, gradients averaged
over all of them), and ``--iterations``, the poly schedule and ``--checkpoint-every`` count these steps. One
process with ``--accumulate N`` takes the same steps (same images, same dropout masks) within float tolerance, and
can resume a checkpoint of an N-rank run. Rank 0 alone logs, shows progress and writes checkpoints; the other
ranks wait at a barrier meanwhile.

Optimizer facts (official ``module/optimizer.py``): one parameter group (no 10x rule for the head), lr 1e-3, poly
power 0.9 over 5,000 steps. Its ``PolyOptimizer`` passes ``weight_decay`` positionally into ``SGD``'s ``momentum``
slot, so the official run used momentum = 1e-4 (AMN+MCTformer script; 0 in the ResNet+ViT one) and no weight
decay. The paper states "lr 0.001, poly, no weight decay" and no momentum: the defaults are lr 1e-3, poly 0.9,
weight decay 0 and momentum 0 (plain SGD, the effective behaviour of the released run: a momentum of 1e-4 changes
an update by a ten-thousandth of the previous one); ``--recipe official`` sets momentum 1e-4 to reproduce it bit
for bit (the README's recipe table, docs/decisions.md).

The official loop (``encdec_train.py``) tests ``iteration > max_iters`` after the step, so it takes 5,002 steps,
and its ``PolyOptimizer`` stops updating the lr once ``global_step >= max_step``: the last two steps run at step
4,999's lr. ``lr_schedule="official"`` (:func:`total_steps`, :func:`step_lr`) reproduces that sequence; the image
order and dropout masks of the official run come from its global RNG stream and are not reproduced.

Run folder: ``last.pt`` while training (weights, optimizer state, RNG states: what ``--resume`` needs; about twice
the weights with momentum, 1.07 GB for the full VGG16 FCN-8s), replaced at the end by ``model.pt`` (the weights,
the architecture and the settings, no optimizer state: 537 MB for the full network, 4 bytes per parameter), and
``train_log.json``. ``predict`` reads either file.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..engine.training import TrainingLoop, poly_lr, restore_state, training_state
from ..errors import Interrupted, OrandError
from ..registries import ORANDNET_LR_SCHEDULES, check_choice
from ..runtime.devices import autocast, check_precision, cudnn_mode, grad_scaler, resolve_precision
from ..runtime.distributed import DistInfo, barrier, main_only, mean_across_ranks, process_group, wrap_ddp
from ..runtime.files import atomic_save, atomic_write_text
from ..runtime.seeding import seed_everything
from .data import IterationSampler, OrAndMaps, group_steps, make_loader, sample_numbers, sample_seed, training_set
from .losses import DEFAULT_LOSS, LossFn, get_loss
from .model import (ARCHS, CHECKPOINT_FORMAT, FCN8s, build_model, check_crop, check_full_state, get_geometry,
                    read_checkpoint)

CHECKPOINT_NAME = "last.pt"  # the resumable state, while training
FINAL_NAME = "model.pt"  # the trained weights, at the end
OUTPUT_FILES = (CHECKPOINT_NAME, FINAL_NAME)
RESUME_ONLY = ("optimizer", "scaler", "rng")  # what last.pt holds beyond model.pt
LOG_NAME = "train_log.json"
# Settings a resumed run must share with the checkpoint (they change the mathematics of the remaining steps).
RESUME_FIXED = ("iterations", "lr", "momentum", "weight_decay", "power", "loss", "arch", "width_div", "seed", "crop",
                "lr_schedule")
# the value of a setting a checkpoint written before it existed was trained with
LEGACY_SETTINGS = {"crop": "aligned", "lr_schedule": "poly"}
OFFICIAL_TAIL_STEPS = 2


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (recorded in the checkpoint)."""

    iterations: int = 5000
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    power: float = 0.9
    lr_schedule: str = "poly"
    loss: str = DEFAULT_LOSS
    pretrained: str = "imagenet"
    arch: str = "fcn8s"
    width_div: int = 1
    crop: str = "aligned"
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int = 1
    accumulate: int = 1
    ids: tuple[str, ...] | None = None
    progress: bool = True

    def check(self) -> None:
        """One-line errors for impossible settings.

        >>> TrainConfig(iterations=0).check()
        Traceback (most recent call last):
        ...
        orand_addon.errors.OrandError: --iterations must be at least 1, got 0
        """
        if self.iterations < 1:
            raise OrandError(f"--iterations must be at least 1, got {self.iterations}")
        if self.accumulate < 1:
            raise OrandError(f"--accumulate must be at least 1, got {self.accumulate}")
        if self.checkpoint_every < 1:
            raise OrandError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise OrandError("--lr must be > 0, --momentum and --weight-decay >= 0")
        check_precision(self.precision)
        get_loss(self.loss)
        get_geometry(self.arch)
        check_crop(self.arch, self.crop)
        check_choice(ORANDNET_LR_SCHEDULES, self.lr_schedule, "lr schedule")


def total_steps(config: TrainConfig) -> int:
    """Optimizer steps of a run: ``iterations``, plus the official loop's two extra steps.

    >>> total_steps(TrainConfig()), total_steps(TrainConfig(lr_schedule="official"))
    (5000, 5002)
    """
    return config.iterations + (OFFICIAL_TAIL_STEPS if config.lr_schedule == "official" else 0)


def step_lr(config: TrainConfig, step: int) -> float:
    """The learning rate of 0-based ``step``: poly decay over ``iterations``; under the official schedule the steps
    after the last one keep its lr (the official ``PolyOptimizer`` stops updating it).

    >>> c = TrainConfig(lr_schedule="official")
    >>> step_lr(c, 0), f"{step_lr(c, 1):.10e}", f"{step_lr(c, 4999):.7e}", step_lr(c, 5001) == step_lr(c, 4999)
    (0.001, '9.9981999820e-04', '4.6873458e-07', True)
    """
    if config.lr_schedule == "official":
        step = min(step, config.iterations - 1)
    return poly_lr(config.lr, step, config.iterations, config.power)


# -- pieces of the loop ----------------------------------------------------------------------------------------

def build_training_model(config: TrainConfig, resuming: bool) -> FCN8s:
    """The network to train; a resumed run skips the pretrained weights (the checkpoint replaces them)."""
    return build_model(config.arch, config.width_div, "none" if resuming else config.pretrained, config.crop)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """Plain SGD over all parameters, one group (as the official code); the lr is set per step by poly decay."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               batch: dict | Sequence[dict], loss_fn: LossFn, lr: float, device: torch.device, precision: str,
               seeds: Sequence[int] | None = None,
               commit: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> float:
    """One SGD step on one image (its K class maps as a batch) or on several (gradient accumulation: the
    gradient of their mean loss); returns that mean loss. ``seeds``: one per image, set before its forward pass
    (dropout). ``model`` may be DDP-wrapped: it then averages the gradient over the ranks at the last image.
    ``commit``: the context of the weight update (:meth:`~orand_addon.engine.training.TrainingLoop.commit`)."""
    items = [batch] if isinstance(batch, dict) else list(batch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for j, item in enumerate(items):
        if seeds is not None:
            torch.manual_seed(seeds[j])
        inputs = item["input"].to(device, non_blocking=True)[:, None]
        targets = item["target"].to(device, non_blocking=True)
        sync = j == len(items) - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            with autocast(device, precision):
                scores = model(inputs)[:, 0]
            loss = loss_fn(scores, targets)
            scaler.scale(loss / len(items) if len(items) > 1 else loss).backward()
        total += float(loss.detach())
    with commit():
        scaler.step(optimizer)
        scaler.update()
    return total / len(items)


def save_training_state(path: Path, model: FCN8s, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                        iteration: int, config: TrainConfig, ids: Sequence[str], history: list[float],
                        store_path: str | Path, global_batch: int = 1, final: bool = False) -> Path:
    """Checkpoint everything a resumed run needs (loadable with ``weights_only=True``), written atomically;
    ``final``: the weights and the record only (``model.pt``: no optimizer, scaler or RNG state)."""
    from ..version import __version__

    state = training_state(
        model, optimizer, scaler, format=CHECKPOINT_FORMAT, orand_addon_version=__version__,
        model_config=model.config(), iteration=iteration, global_batch=global_batch,
        train_config={k: v for k, v in asdict(config).items() if k != "ids"}, ids=list(ids),
        store=str(Path(store_path).resolve()), history=list(history))
    if final:
        state = {k: v for k, v in state.items() if k not in RESUME_ONLY}
    return atomic_save(state, path)


def check_resumable(ckpt: dict, config: TrainConfig, ids: Sequence[str], where: Path, global_batch: int = 1) -> None:
    """A resumed run must use the settings and images of the checkpoint (else it would not continue it)."""
    saved = ckpt.get("train_config")
    if not isinstance(saved, dict) or "iteration" not in ckpt:
        raise OrandError(f"{where}: holds weights only, not a training state to resume (use --pretrained {where})")
    current = asdict(config)
    saved = {**LEGACY_SETTINGS, **saved}
    diff = [f"{k} {saved.get(k)!r} -> {current[k]!r}" for k in RESUME_FIXED if saved.get(k) != current[k]]
    if diff:
        raise OrandError(f"{where}: was trained with other settings ({'; '.join(diff)}); resume with the same "
                         f"options or start a new --out")
    saved_batch = int(ckpt.get("global_batch", 1))
    if saved_batch != global_batch:
        raise OrandError(f"{where}: was trained with {saved_batch} images per step, this run takes {global_batch} "
                         f"(ranks x --accumulate); resume with the same global batch")
    if list(ckpt.get("ids", [])) != list(ids):
        raise OrandError(f"{where}: was trained on other images ({len(ckpt.get('ids', []))} ids, now {len(ids)}); "
                         f"resume with the same --store and --ids")


def restore_training_state(ckpt: dict, model: FCN8s, optimizer: torch.optim.Optimizer,
                           scaler: torch.amp.GradScaler, where: Path) -> tuple[int, list[float]]:
    """Load model, optimizer, scaler and RNG states; returns ``(iteration, loss history)``."""
    check_full_state(model, ckpt["model"], str(where))
    restore_state(ckpt, model, optimizer, scaler, where, "training state", "start a new --out")
    return int(ckpt["iteration"]), [float(x) for x in ckpt.get("history", [])]


def write_log(out_dir: Path, config: TrainConfig, iteration: int, history: list[float], notes: list[str]) -> None:
    """``train_log.json``: settings, iteration and per-step losses (rewritten with each checkpoint)."""
    record = {"iteration": iteration, "config": {k: v for k, v in asdict(config).items() if k != "ids"},
              "notes": notes, "losses": history}
    atomic_write_text(out_dir / LOG_NAME, json.dumps(record), what="training log")


# -- the run ---------------------------------------------------------------------------------------------------

def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def prepare_out_dir(out_dir: Path, resume: bool) -> Path:
    """The checkpoint path (``last.pt``, or ``model.pt`` of a finished run when resuming); refuses to overwrite
    an earlier run unless resuming it."""
    ckpt = out_dir / CHECKPOINT_NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise OrandError(f"{out_dir}: --out must be a folder, this is a file")
    if resume and not ckpt.is_file():
        if (out_dir / FINAL_NAME).is_file():
            return out_dir / FINAL_NAME
        raise OrandError(f"{ckpt}: no checkpoint to resume (run without --resume to start)")
    existing = [out_dir / name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if not resume and existing:
        raise OrandError(f"{existing[0]} exists; pass --resume to continue that run or choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OrandError(f"{out_dir}: cannot create the run folder ({exc.strerror})") from None
    return ckpt


def train_orandnet(store_path: str | Path, out_dir: str | Path, config: TrainConfig = TrainConfig(),
                   resume: bool = False, echo: Callable[[str], None] = _stderr) -> Path:
    """Train ORANDNet on ``store_path`` (kinds ``or`` and ``and``); returns the weights ``out_dir/model.pt``.

    Checkpoints ``out_dir/last.pt`` every ``config.checkpoint_every`` steps and on Ctrl-C (then raises
    :class:`~orand_addon.errors.Interrupted`); ``resume=True`` continues it exactly. At the end ``model.pt`` (no
    optimizer state) replaces ``last.pt``. Launched
    by torchrun, every rank calls this and they train one model with DDP (see the module docstring).
    """
    config.check()
    with process_group(config.device) as (info, device):
        return _train(store_path, Path(out_dir), config, resume, main_only(echo, info), info, device)


def _train(store_path: str | Path, out_dir: Path, config: TrainConfig, resume: bool, echo: Callable[[str], None],
           info: DistInfo, device: torch.device) -> Path:
    ckpt_path = prepare_out_dir(out_dir, resume)
    data = training_set(store_path, config.ids)
    precision = resolve_precision(device, config.precision)
    global_batch = info.world_size * config.accumulate
    total = total_steps(config)
    saved = None
    if resume:
        saved = read_checkpoint(ckpt_path)
        check_resumable(saved, config, data.ids, ckpt_path, global_batch)
    final = out_dir / FINAL_NAME
    if saved is not None and ckpt_path == final:  # a finished run: its settings checked, nothing to do
        echo(f"{final} is already complete ({saved.get('iteration')} of {config.iterations} iterations)")
        return final
    seed_everything(config.seed)
    model = build_training_model(config, resuming=resume).to(device).train()
    notes = data.notes() + list(model.notes)
    for line in notes:
        echo(line)
    optimizer = make_optimizer(model, config)
    scaler = grad_scaler(precision)
    start, history = 0, []
    if saved is not None:
        start, history = restore_training_state(saved, model, optimizer, scaler, ckpt_path)
        del saved
        if start >= total:  # a last.pt of the final iteration: write model.pt from it
            echo(f"{ckpt_path} is already complete ({start} of {total} iterations)")
            if info.is_main:
                save_training_state(final, model, optimizer, scaler, start, config, data.ids, history, store_path,
                                    global_batch, final=True)
                ckpt_path.unlink(missing_ok=True)
            barrier()
            return final
        echo(f"resuming {ckpt_path} at iteration {start} of {total}")
    net = wrap_ddp(model, device)
    loss_fn = get_loss(config.loss)
    dataset = OrAndMaps(store_path, data.ids)
    sampler = IterationSampler(len(data.ids), config.seed, start, total, info.rank, info.world_size,
                               config.accumulate)
    loader = make_loader(dataset, sampler, config.workers, pin_memory=device.type == "cuda")

    def checkpoint(done: int, last: bool = False) -> None:
        """``last.pt`` (resumable), or at the end ``model.pt`` in its place."""
        if info.is_main:
            save_training_state(final if last else ckpt_path, model, optimizer, scaler, done, config, data.ids,
                                history, store_path, global_batch, final=last)
            write_log(out_dir, config, done, history, notes)
            if last:
                ckpt_path.unlink(missing_ok=True)
        barrier()

    done = start
    recent: deque[float] = deque(maxlen=50)
    loop = TrainingLoop(total, start, info, device, "train", config.progress, echo, unit="iteration")
    try:
        with loop, cudnn_mode(deterministic=True, benchmark=False):
            for step, batch in zip(range(start, total), group_steps(loader, config.accumulate)):
                with loop.step(model):
                    lr = step_lr(config, step)
                    seeds = [sample_seed(config.seed, n)
                             for n in sample_numbers(step, info.rank, info.world_size, config.accumulate)]
                    loss = train_step(net, optimizer, scaler, batch, loss_fn, lr, device, precision, seeds=seeds,
                                      commit=loop.commit)
                    loss = mean_across_ranks([loss], device)[0]
                    history.append(loss)
                    recent.append(loss)
                    done = step + 1
                loop.done(loss=f"{sum(recent) / len(recent):.4f}", lr=f"{lr:.2e}")
                stopping = loop.stopping() and done < total
                if (done % config.checkpoint_every == 0 and done < total) or stopping:
                    with loop.saving():
                        checkpoint(done)
                if stopping:
                    raise Interrupted(f"interrupted at iteration {done} of {total}; saved {ckpt_path}; "
                                      f"continue with the same command and --resume")
    except KeyboardInterrupt:  # one process: the step in progress was abandoned, the state is that of ``done``
        with TrainingLoop.saving():
            checkpoint(done)
        raise Interrupted(f"interrupted at iteration {done} of {total}; saved {ckpt_path}; continue "
                          f"with the same command and --resume") from None
    finally:
        dataset.close()
    with TrainingLoop.saving():
        checkpoint(done, last=True)
    return final


__all__ = ["TrainConfig", "train_orandnet", "train_step", "make_optimizer", "build_training_model", "ARCHS", "step_lr",
           "total_steps"]

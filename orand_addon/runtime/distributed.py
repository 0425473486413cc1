"""torch.distributed helpers: who am I, which ids are mine, the process group, DDP, shard files.

The engine is ``torch.distributed`` launched by ``torchrun``; nothing here schedules anything. Every helper is a
no-op for one process (``WORLD_SIZE`` unset or 1), so a stage written with them runs unchanged with and without
``torchrun``.

**Training stages** (ORANDNet ``train`` and IRN training do exactly this; ``train-seg`` plugs in the same way)::

    from orand_addon import distributed as dist_

    with dist_.process_group(config.device) as (info, device):  # gloo on CPU, nccl on CUDA; cuda:LOCAL_RANK
        say = dist_.main_only(echo, info)                         # notes and logs from rank 0 only
        model = build_model(...).to(device)
        model = dist_.convert_sync_batchnorm(model, device)       # only where BatchNorm trains (CUDA only)
        net = dist_.wrap_ddp(model, device)                       # DistributedDataParallel, or model itself
        optimizer = make_optimizer(model)                         # the unwrapped parameters (same tensors)
        sampler = YourSampler(..., rank=info.rank, world_size=info.world_size)   # or:
        sampler = dist_.distributed_sampler(dataset, info, shuffle=True, seed=seed)  # + set_epoch(epoch)
        for step, batch in ...:                                   # per-rank batch = global batch / world size
            loss = loss_fn(net(x), y); loss.backward(); optimizer.step()   # DDP averages the gradients
            loss_mean, = dist_.mean_across_ranks([float(loss)], device)    # what one process would log
            if info.is_main and time_to_save:
                atomic_save({"model": dist_.unwrap(net).state_dict(), ...}, path)
            dist_.barrier()                                       # the other ranks wait for the checkpoint

Rules that make the DDP run equal one process with the same global batch: the per-rank batch is the global batch
divided by the world size; iterations, the lr schedule and checkpoint intervals count optimizer steps; DDP
averages gradients over ranks, so the one-process reference averages the losses of the same samples (gradient
accumulation, each loss divided by their number); randomness that must not depend on the rank (dropout,
augmentation) is seeded per *sample*, not per process (:func:`orand_addon.orandnet.data.sample_seed`); the
checkpoint records the global batch and a resume refuses another one; a global batch that does not split evenly
over the ranks is refused (:func:`rank_batch`). Ctrl-C: :class:`~orand_addon.runtime.interrupts.StopRequest`
``(repeat_interrupts=False)`` (torchrun forwards the terminal's Ctrl-C a second time) and :func:`any_rank`
``(stop.requested, ...)`` after every step, so all ranks stop after the same step. Buffers that every rank updates
from its own samples (BatchNorm statistics without SyncBatchNorm, on CPUs) are averaged after each optimizer step
(:func:`average_running_stats`), as one process over the global batch would update them.

**Per-image stages** (``fuse``, ``predict``, ``refine``'s seeds and walk; later segment) need no process group at all: rank ``r``
of ``w`` (from ``RANK``/``WORLD_SIZE``) writes its own shard store, and ``orand-addon merge --from-shards OUT``
joins the shards (any group, ``masks``/``seeds`` included)::

    from orand_addon.runtime.distributed import dist_info, shard
    from orand_addon.store.merge import done_in_main, finish_shard, open_shard, start_shard

    info = dist_info()
    if info.enabled:
        mine = shard(ids, info.rank, info.world_size)            # or shard the batches of the one-process plan
        skip = done_in_main(out, groups, parameters, overwrite)   # ids the main store already has (read-only)
        with open_shard(out, info, class_names) as store:         # OUT.rank{r}-of-{w}.h5
            store.begin(groups, command, parameters, force=overwrite)
            start_shard(store, info, len(mine))                   # complete: false, flushed
            for image_id in mine:
                if image_id in skip or all(store.has(g, image_id) for g in groups):
                    continue
                store.write_mask("seeds", image_id, ...)
                store.flush()                                     # a killed rank keeps every id it wrote
            finish_shard(store, info, len(mine))                  # complete: true (merge checks it)
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

from ..errors import OrandError

if TYPE_CHECKING:  # torch is imported inside the functions: ``--help`` and pure helpers stay fast
    import torch

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank and world size from the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    >>> dist_info() if "WORLD_SIZE" not in os.environ else DistInfo()
    DistInfo(rank=0, world_size=1, local_rank=0)
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return DistInfo()
        info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise OrandError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers, got RANK={os.environ.get('RANK')!r} "
                         f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}") from None
    if not 0 <= info.rank < world:
        raise OrandError(f"RANK={info.rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    return info


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items of ``rank``: a strided split, so every rank gets a similar mix.

    >>> shard(list("abcdefg"), 1, 3)
    ['b', 'e']
    """
    return list(items[rank::world_size])


# -- shard files ---------------------------------------------------------------------------------------------


# -- devices and the process group ----------------------------------------------------------------------------

def backend_for(device: "torch.device") -> str:
    """The process-group backend of a device: nccl for CUDA, gloo otherwise.

    >>> import torch
    >>> backend_for(torch.device("cpu"))
    'gloo'
    """
    return "nccl" if device.type == "cuda" else "gloo"


def pinned(spec: str) -> bool:
    """Whether ``--device`` names one GPU (``cuda:N``) rather than letting the rank choose.

    >>> pinned("cuda:1"), pinned("cuda"), pinned("auto")
    (True, False, False)
    """
    return ":" in (spec or "")


def pick_device(spec: str, info: DistInfo) -> "torch.device":
    """The device of this rank: ``--device cuda:N`` is used as given (pinned); ``auto``/``cuda`` under torchrun
    mean ``cuda:LOCAL_RANK`` (modulo the GPUs visible: indices count those in ``CUDA_VISIBLE_DEVICES``); one
    process as :func:`~orand_addon.runtime.devices.resolve_device`.

    >>> str(pick_device("cpu", DistInfo(1, 2, 1)))
    'cpu'
    """
    import torch

    from .devices import resolve_device

    device = resolve_device(spec)
    if device.type != "cuda" or pinned(spec) or not info.enabled:
        return device
    return torch.device("cuda", info.local_rank % torch.cuda.device_count())


def check_one_gpu_per_process(spec: str, device: "torch.device") -> None:
    """NCCL needs a GPU of its own for every process of a node (``LOCAL_WORLD_SIZE``, set by torchrun)."""
    import torch

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type != "cuda" or local <= 1:
        return
    if pinned(spec):
        raise OrandError(f"--device {spec} puts all {local} processes of this node on one GPU, which NCCL refuses; "
                         f"use --device auto or cuda (rank r on cuda:LOCAL_RANK)")
    if local > torch.cuda.device_count():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise OrandError(f"{local} processes on this node but only {torch.cuda.device_count()} GPU(s) visible"
                         + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")
                         + "; training needs one GPU per process: start fewer, or use --device cpu")


@contextlib.contextmanager
def process_group(device: str = "auto", info: DistInfo | None = None) -> Iterator[tuple[DistInfo, "torch.device"]]:
    """Join the torchrun process group for a block and leave it after; yields ``(info, device)``.

    One process: no group, only the device. Under torchrun: ``init_process_group`` with the backend of the
    device (:func:`backend_for`) from torchrun's ``MASTER_ADDR``/``MASTER_PORT``; a group the caller already
    set up is used as it is and left alone.
    """
    import torch
    import torch.distributed as dist

    info = info or dist_info()
    dev = pick_device(device, info)
    if not info.enabled or dist.is_initialized():
        yield info, dev
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise OrandError(f"WORLD_SIZE={info.world_size} but {' and '.join(missing)} not set; launch training with "
                         f"torchrun (see docs/distributed.md)")
    check_one_gpu_per_process(device, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    try:
        dist.init_process_group(backend_for(dev), rank=info.rank, world_size=info.world_size)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OrandError(f"rank {info.rank}: cannot join the process group at {os.environ['MASTER_ADDR']}:"
                         f"{os.environ['MASTER_PORT']} ({first})") from None
    try:
        yield info, dev
    finally:
        with contextlib.suppress(RuntimeError, ValueError):
            dist.destroy_process_group()


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if _initialized():
        dist.barrier()


# -- models and data ------------------------------------------------------------------------------------------

def wrap_ddp(model: "torch.nn.Module", device: "torch.device", **ddp_kwargs: Any) -> "torch.nn.Module":
    """``DistributedDataParallel(model)`` in a process group, the model itself otherwise.

    >>> import torch
    >>> layer = torch.nn.Linear(2, 2)
    >>> wrap_ddp(layer, torch.device("cpu")) is layer
    True
    """
    if not _initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None, **ddp_kwargs)


def unwrap(model: "torch.nn.Module") -> "torch.nn.Module":
    """The plain module inside DDP (what checkpoints store), or ``model`` itself.

    >>> import torch
    >>> layer = torch.nn.Linear(2, 2)
    >>> unwrap(layer) is layer
    True
    """
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def convert_sync_batchnorm(model: "torch.nn.Module", device: "torch.device") -> "torch.nn.Module":
    """BatchNorm layers as ``SyncBatchNorm`` (statistics over the global batch) when training on CUDA in a
    process group; otherwise the model unchanged (PyTorch's SyncBatchNorm needs a GPU: CPU/gloo runs keep
    per-rank statistics). Call before :func:`wrap_ddp`; frozen BN (``eval()``) is never synchronised anyway.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    >>> type(convert_sync_batchnorm(net, torch.device("cpu"))[1]).__name__
    'BatchNorm2d'
    """
    if not _initialized() or device.type != "cuda":
        return model
    import torch

    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def distributed_sampler(dataset: Any, info: DistInfo, shuffle: bool = True, seed: int = 0,
                        drop_last: bool = False) -> "torch.utils.data.Sampler":
    """torch's ``DistributedSampler`` for rank ``info.rank`` (call ``set_epoch(epoch)`` every epoch).

    >>> list(distributed_sampler(list(range(5)), DistInfo(1, 2), shuffle=False))
    [1, 3, 0]
    """
    from torch.utils.data import DistributedSampler

    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed,
                              drop_last=drop_last)


def sum_across_ranks(values: Sequence[float], device: "torch.device") -> list[float]:
    """Element-wise sums of ``values`` over all ranks (float64; ``values`` itself without a process group).

    >>> import torch
    >>> sum_across_ranks([1.5, 2.0], torch.device("cpu"))
    [1.5, 2.0]
    """
    if not _initialized():
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def mean_across_ranks(values: Sequence[float], device: "torch.device") -> list[float]:
    """Element-wise means over all ranks (what one process seeing the whole global batch would report).

    >>> import torch
    >>> mean_across_ranks([3.0], torch.device("cpu"))
    [3.0]
    """
    if not _initialized():
        return [float(v) for v in values]
    import torch.distributed as dist

    world = dist.get_world_size()
    return [v / world for v in sum_across_ranks(values, device)]


def main_only(echo: Callable[[str], None], info: DistInfo) -> Callable[[str], None]:
    """``echo`` on rank 0, a no-op on the other ranks (notes, logs and summaries are printed once).

    >>> main_only(print, DistInfo(1, 2))("hidden")
    >>> main_only(print, DistInfo(0, 2))("shown")
    shown
    """
    return echo if info.is_main else _silent


def _silent(_: str) -> None:
    return None


def any_rank(flag: bool, info: DistInfo, device: "torch.device") -> bool:
    """Whether ``flag`` is set on some rank (Ctrl-C: every rank stops after the same step); ``flag`` itself without a
    process group.

    >>> import torch
    >>> any_rank(True, DistInfo(), torch.device("cpu")), any_rank(False, DistInfo(), torch.device("cpu"))
    (True, False)
    """
    if not info.enabled or not _initialized():
        return bool(flag)
    return sum_across_ranks([float(flag)], device)[0] > 0


def rank_batch(batch_size: int, world_size: int) -> int:
    """Samples per rank and step: the global ``--batch-size`` divided by the number of processes; a one-line error
    with the nearest valid sizes when it does not divide.

    >>> rank_batch(10, 2)
    5
    >>> rank_batch(10, 4)
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: --batch-size 10 is the global batch and must be a multiple of the 4 processes (WORLD_SIZE=4); use --batch-size 8 or 12
    """
    if batch_size % world_size == 0:
        return batch_size // world_size
    low, high = batch_size // world_size * world_size, -(-batch_size // world_size) * world_size
    choices = f"{low} or {high}" if low else f"{high}"
    raise OrandError(f"--batch-size {batch_size} is the global batch and must be a multiple of the {world_size} "
                     f"processes (WORLD_SIZE={world_size}); use --batch-size {choices}")


def running_stats(model: "torch.nn.Module") -> list["torch.Tensor"]:
    """Buffers each rank updates from its own samples: the running mean and variance of BatchNorm layers in
    training mode that are not ``SyncBatchNorm`` (whose statistics are global already), and the buffers a module
    names in its ``rank_local_buffers`` attribute (e.g. IRN's ``MeanShift`` running mean).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    >>> len(running_stats(net.train())), len(running_stats(net.eval()))
    (2, 0)
    """
    import torch.nn as nn

    found: list[torch.Tensor] = []
    for module in model.modules():
        found += [getattr(module, name) for name in getattr(module, "rank_local_buffers", ())]
        if (isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.SyncBatchNorm)
                and module.training and module.track_running_stats):
            found += [module.running_mean, module.running_var]
    return found


def average_running_stats(model: "torch.nn.Module", info: DistInfo) -> None:
    """Replace :func:`running_stats` by their mean over the ranks (one all-reduce), keeping all ranks equal: a
    running mean updated per rank and averaged is the update of one process over the whole global batch (running
    variances come close). Call after every optimizer step of a model wrapped with ``broadcast_buffers=False``;
    a no-op without a process group or without such buffers."""
    buffers = running_stats(model)
    if not info.enabled or not buffers or not _initialized():
        return
    import torch
    import torch.distributed as dist

    flat = torch.cat([b.detach().reshape(-1).double() for b in buffers])
    dist.all_reduce(flat)
    flat /= info.world_size
    for buffer, part in zip(buffers, flat.split([b.numel() for b in buffers])):
        buffer.copy_(part.view_as(buffer))

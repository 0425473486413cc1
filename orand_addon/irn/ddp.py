"""IRN training under torchrun: the pieces that make a DDP step equal one process on the same global batch.

``--batch-size`` is the global batch: rank ``r`` of ``w`` takes ``batch_size / w`` of its crops
(:class:`~.data.StepSampler`). IRN's losses are means over the pairs of the whole batch, so every rank needs the
pair counts of the whole batch (:func:`global_pair_counts`) and backpropagates ``w ×`` its share of the losses:
DDP averages the gradients over the ``w`` ranks, which gives the gradient of the whole batch's loss, i.e. of one
process with the same ``--batch-size``. Buffers that each rank updates from its own crops (the displacement head's
``MeanShift`` running mean; BatchNorm statistics where BN trains without ``SyncBatchNorm``, i.e. on CPUs) are
averaged after each step (:func:`average_running_stats`); the mean shift is linear in the batch mean, so this is
exactly the update of one process.

Everything here is a no-op without a process group.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..distributed import DistInfo, sum_across_ranks
from ..errors import OrandError
from .network import MeanShift


def check_global_batch(batch_size: int, info: DistInfo) -> None:
    """The global batch must split evenly over the ranks.

    >>> check_global_batch(32, DistInfo(0, 4))
    >>> check_global_batch(6, DistInfo(0, 4))
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: --batch-size 6 (the global batch) does not split evenly over 4 processes; use a multiple of 4
    """
    if batch_size % info.world_size:
        raise OrandError(f"--batch-size {batch_size} (the global batch) does not split evenly over {info.world_size} "
                         f"processes; use a multiple of {info.world_size}")


def global_pair_counts(counts: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's pair counts (:func:`~.losses.pair_counts`) summed over all ranks (float32, same device).

    >>> global_pair_counts(torch.tensor([3.0, 0.0, 5.0]), DistInfo()).tolist()
    [3.0, 0.0, 5.0]
    """
    if not info.enabled:
        return counts
    total = sum_across_ranks(counts.tolist(), counts.device)
    return torch.tensor(total, dtype=torch.float32, device=counts.device)


def running_stats(model: nn.Module) -> list[torch.Tensor]:
    """Buffers each rank updates from its own crops: every ``MeanShift`` running mean, and the running mean and
    variance of BatchNorm layers in training mode that are not ``SyncBatchNorm`` (whose statistics are global).

    >>> from .network import IRNet
    >>> len(running_stats(IRNet("frozen").train())), len(running_stats(IRNet("trainable").train()))
    (1, 107)
    """
    found: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, MeanShift):
            found.append(module.running_mean)
        elif (isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.SyncBatchNorm)
              and module.training and module.track_running_stats):
            found += [module.running_mean, module.running_var]
    return found


def average_running_stats(model: nn.Module, info: DistInfo) -> None:
    """Replace :func:`running_stats` by their mean over the ranks (one all-reduce), keeping all ranks equal."""
    buffers = running_stats(model)
    if not info.enabled or not buffers:
        return
    import torch.distributed as dist

    flat = torch.cat([b.detach().reshape(-1).double() for b in buffers])
    dist.all_reduce(flat)
    flat /= info.world_size
    for buffer, part in zip(buffers, flat.split([b.numel() for b in buffers])):
        buffer.copy_(part.view_as(buffer))


def ranks_agree(values: Sequence[int], info: DistInfo, device: torch.device) -> bool:
    """Whether every rank passed the same ``values`` (every rank gets the same answer: the variance over ranks).

    >>> ranks_agree([3, 1], DistInfo(), torch.device("cpu"))
    True
    """
    if not info.enabled:
        return True
    sums = sum_across_ranks([float(v) for v in values] + [float(v) ** 2 for v in values], device)
    n, k = info.world_size, len(values)
    return all(abs(sums[k + j] / n - (sums[j] / n) ** 2) < 1e-6 for j in range(k))


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether ``flag`` is set on some rank (e.g. Ctrl-C, so every rank stops after the same step).

    >>> any_rank(True, DistInfo(), torch.device("cpu"))
    True
    """
    if not info.enabled:
        return flag
    return sum_across_ranks([float(flag)], device)[0] > 0

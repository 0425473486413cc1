"""IRN training under torchrun: the pieces that make a DDP step equal one process on the same global batch.

``--batch-size`` is the global batch: rank ``r`` of ``w`` takes ``batch_size / w`` of its crops
(:class:`~.data.StepSampler`). IRN's losses are means over the pairs of the whole batch, so every rank needs the
pair counts of the whole batch (:func:`global_pair_counts`) and backpropagates ``w ×`` its share of the losses:
DDP averages the gradients over the ``w`` ranks, which gives the gradient of the whole batch's loss, i.e. of one
process with the same ``--batch-size``. Buffers that each rank updates from its own crops (the displacement head's
``MeanShift`` running mean; BatchNorm statistics where BN trains without ``SyncBatchNorm``, i.e. on CPUs) are
averaged after each step (:func:`orand_addon.runtime.distributed.average_running_stats`); the mean shift is linear in the
batch mean, so this is exactly the update of one process. The global batch must split evenly over the ranks
(:func:`orand_addon.runtime.distributed.rank_batch`); Ctrl-C on any rank stops them all
(:func:`orand_addon.runtime.distributed.any_rank`).

Everything here is a no-op without a process group.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..runtime.distributed import DistInfo, sum_across_ranks


def global_pair_counts(counts: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's pair counts (:func:`~.losses.pair_counts`) summed over all ranks (float32, same device).

    >>> global_pair_counts(torch.tensor([3.0, 0.0, 5.0]), DistInfo()).tolist()
    [3.0, 0.0, 5.0]
    """
    if not info.enabled:
        return counts
    total = sum_across_ranks(counts.tolist(), counts.device)
    return torch.tensor(total, dtype=torch.float32, device=counts.device)


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

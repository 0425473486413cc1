"""torch.distributed helpers: who am I, which ids are mine (single process when not launched by torchrun)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

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
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items of ``rank``: a strided split, so every rank gets a similar mix.

    >>> shard(list("abcdefg"), 1, 3)
    ['b', 'e']
    """
    return list(items[rank::world_size])

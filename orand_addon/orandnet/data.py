"""Training data of ORANDNet from the HDF5 store: per image, the OR maps of its classes (input) and AND maps
(target), one image per step at full resolution, in a seeded order that a resumed run continues exactly.

Under torchrun every rank walks the same seeded sequence of samples: a global step takes ``world_size x per_step``
consecutive samples, rank ``r`` the ``r``-th run of ``per_step`` of them (:func:`flat_sample`), so DDP over ``w``
ranks sees exactly the images of one process accumulating ``w x per_step`` per step; :func:`sample_seed` makes the
dropout masks a function of the sample, not of the process.

The store is only read here. :class:`OrAndMaps` opens it lazily in whichever process reads (each DataLoader
worker opens its own read-only handle), so nothing is shared across ``fork``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import OrandError, StoreError
from ..runtime.workers import ignore_sigint
from ..store.store import Store

INPUT_KIND, TARGET_KIND = "or", "and"
READ_ERROR = "read_error"
T = TypeVar("T")


@dataclass
class TrainingSet:
    """The ids to train on and the ones left out (with why)."""

    ids: list[str]
    skipped_empty: list[str] = field(default_factory=list)

    def notes(self, examples: int = 3) -> list[str]:
        if not self.skipped_empty:
            return []
        return [f"skipped {len(self.skipped_empty)} images with no classes (nothing to learn): "
                f"{', '.join(self.skipped_empty[:examples])}"]


def require_kinds(store: Store, kinds: Sequence[str], hint: str) -> None:
    """A one-line error when the store lacks one of ``kinds``."""
    missing = [k for k in kinds if not store.ids(k)]
    if missing:
        have = ", ".join(store.groups()) or "nothing"
        raise StoreError(f"{store.path}: no /{missing[0]} maps (has: {have}); {hint}")


def training_set(store_path: str | Path, ids: Sequence[str] | None = None) -> TrainingSet:
    """Check the store for training and list the ids: each needs ``or`` and ``and`` maps with the same classes
    and size; images with no classes are skipped (reported), and none left at all is an error."""
    with Store(store_path) as store:
        require_kinds(store, (INPUT_KIND, TARGET_KIND), "fuse with --kinds or,and first")
        have_or, have_and = set(store.ids(INPUT_KIND)), set(store.ids(TARGET_KIND))
        wanted = list(dict.fromkeys(ids)) if ids is not None else sorted(have_or)
        for kind, have in ((INPUT_KIND, have_or), (TARGET_KIND, have_and)):
            absent = [i for i in wanted if i not in have]
            if absent:
                raise StoreError(f"{store.path}: {len(absent)} ids have no /{kind} maps, e.g. {', '.join(absent[:3])}")
        out = TrainingSet(ids=[])
        for image_id in wanted:
            shape_or, shape_and = store.map_shape(INPUT_KIND, image_id), store.map_shape(TARGET_KIND, image_id)
            keys_or, keys_and = store.read_keys(INPUT_KIND, image_id), store.read_keys(TARGET_KIND, image_id)
            if shape_or != shape_and or keys_or.tolist() != keys_and.tolist():
                raise StoreError(f"{store.path}: {image_id}: /or and /and differ (classes {keys_or.tolist()} vs "
                                 f"{keys_and.tolist()}, shapes {shape_or} vs {shape_and})")
            (out.ids if shape_or[0] > 0 else out.skipped_empty).append(image_id)
    if not out.ids:
        raise StoreError(f"{store_path}: no image with classes to train on ({len(out.skipped_empty)} have none)")
    return out


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` images in ``epoch``: a permutation that depends only on ``(seed, epoch)``.

    >>> sorted(epoch_permutation(5, seed=0, epoch=3).tolist())
    [0, 1, 2, 3, 4]
    >>> bool((epoch_permutation(50, 0, 1) == epoch_permutation(50, 0, 1)).all())
    True
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def flat_sample(step: int, rank: int = 0, world_size: int = 1, per_step: int = 1, j: int = 0) -> int:
    """Position in the seeded sample sequence of the ``j``-th image of ``rank`` at ``step``.

    >>> [flat_sample(3, rank, 2, 2, j) for rank in range(2) for j in range(2)]  # = one process, per_step 4
    [12, 13, 14, 15]
    >>> [flat_sample(3, 0, 1, 4, j) for j in range(4)]
    [12, 13, 14, 15]
    """
    return (step * world_size + rank) * per_step + j


def sample_numbers(step: int, rank: int = 0, world_size: int = 1, per_step: int = 1) -> list[int]:
    """The :func:`flat_sample` positions ``rank`` trains on at ``step``.

    >>> sample_numbers(5, 1, 2)
    [11]
    """
    return [flat_sample(step, rank, world_size, per_step, j) for j in range(per_step)]


def sample_seed(seed: int, sample: int) -> int:
    """Seed of the random draws (dropout) of one sample: a function of the run's seed and the sample's position,
    so DDP ranks and one process accumulating the same global batch draw the same masks.

    >>> sample_seed(0, 5) == sample_seed(0, 5) != sample_seed(0, 6)
    True
    """
    return int(np.random.SeedSequence([seed, sample]).generate_state(1)[0])


def sample_index(step: int, n: int, seed: int, rank: int = 0, world_size: int = 1, per_step: int = 1,
                 j: int = 0) -> int:
    """Index of the image that ``rank`` trains on at ``step``: every process walks the same seeded epochs and
    takes its positions (:func:`flat_sample`), so the order is a pure function of the step (exact resume).

    >>> [sample_index(s, 3, seed=7) for s in range(6)] == (
    ...     epoch_permutation(3, 7, 0).tolist() + epoch_permutation(3, 7, 1).tolist())
    True
    """
    flat = flat_sample(step, rank, world_size, per_step, j)
    return int(epoch_permutation(n, seed, flat // n)[flat % n])


class IterationSampler(Sampler[int]):
    """Yields :func:`sample_index` for steps ``start .. stop-1``, ``per_step`` images per step."""

    def __init__(self, n: int, seed: int, start: int, stop: int, rank: int = 0, world_size: int = 1,
                 per_step: int = 1):
        self.n, self.seed, self.start, self.stop = n, seed, start, stop
        self.rank, self.world_size, self.per_step = rank, world_size, per_step

    def __iter__(self) -> Iterator[int]:
        epoch, perm = -1, np.zeros(0, np.int64)
        for step in range(self.start, self.stop):
            for flat in sample_numbers(step, self.rank, self.world_size, self.per_step):
                if flat // self.n != epoch:
                    epoch = flat // self.n
                    perm = epoch_permutation(self.n, self.seed, epoch)
                yield int(perm[flat % self.n])

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.per_step


def group_steps(items: Iterable[T], per_step: int) -> Iterator[list[T]]:
    """Consecutive groups of ``per_step`` items (one training step each); an incomplete tail is dropped.

    >>> list(group_steps(range(5), 2))
    [[0, 1], [2, 3]]
    """
    group: list[T] = []
    for item in items:
        if isinstance(item, dict) and READ_ERROR in item:  # what a DataLoader worker could not read (OrAndMaps)
            raise StoreError(item[READ_ERROR])
        group.append(item)
        if len(group) == per_step:
            yield group
            group = []


class OrAndMaps(Dataset):
    """Item ``i``: ``{"id", "keys", "input": OR (K, H, W) float32, "target": AND (K, H, W) float32}``."""

    def __init__(self, store_path: str | Path, ids: Sequence[str]):
        self.store_path, self.ids = Path(store_path), list(ids)
        self._store: Store | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.ids)

    def _open(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            self._store, self._pid = Store(self.store_path, mode="r"), os.getpid()
        return self._store

    def __getitem__(self, index: int) -> dict:
        store, image_id = self._open(), self.ids[index]
        try:  # maps holding NaN/Inf, or an entry a reader refuses: one line naming the id
            inputs, keys = store.read_maps(INPUT_KIND, image_id)
            targets, _ = store.read_maps(TARGET_KIND, image_id)
        except OrandError as exc:
            if torch.utils.data.get_worker_info() is None:
                raise
            return {"id": image_id, READ_ERROR: str(exc)}  # a DataLoader worker would wrap it in its traceback
        return {"id": image_id, "keys": torch.from_numpy(keys), "input": torch.from_numpy(inputs),
                "target": torch.from_numpy(targets)}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None, "_pid": -1}

    def close(self) -> None:
        if self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._store = None


def make_loader(dataset: OrAndMaps, sampler: Sampler[int], workers: int, pin_memory: bool) -> DataLoader:
    """One image per item (no collation); ``workers`` <= 1 reads in the main process.

    The loader gets its own generator: by default a DataLoader draws its workers' base seed from the global torch
    RNG when iterated, which would shift the dropout masks of a resumed run. Workers ignore Ctrl-C: the main process
    finishes the step and saves a checkpoint.
    """
    kwargs = dict(batch_size=None, sampler=sampler, pin_memory=pin_memory, generator=torch.Generator().manual_seed(0))
    if workers > 1:
        return DataLoader(dataset, num_workers=workers, worker_init_fn=ignore_sigint, prefetch_factor=2, **kwargs)
    return DataLoader(dataset, num_workers=0, **kwargs)


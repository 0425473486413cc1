"""Applying a trained ORANDNet to every image of the store: ``or`` maps in, kind ``orandnet`` out
(``orand-addon predict``).

Per class map: the network's score, ReLU, then divided by its own maximum (a map that is zero everywhere stays
zero; the official code adds 1e-5 to the max instead). The result has the keys and size of ``or``, so
``orand-addon export --kind orandnet --to irn`` gives IRN's layout (``keys``, stride-4 ``cam``, ``high_res``).

Throughput: images of equal size are batched together, all class maps of an image in the same batch where they
fit (``batch_size`` class maps per forward pass); bf16 autocast and channels-last on a GPU. The store is read and
written in this process only (HDF5 allows one writer). Images already in ``orandnet`` are skipped, so an
interrupted run resumes; an image with no classes gets an empty (0, H, W) entry so every id of ``or`` has one.

Under torchrun each rank reads the store (read-only) and writes its share, ``shard(batches, rank, world)`` of the
one-process run's batches (:func:`plan_work`, so every map is computed as in that run), into its own shard
``STEM.rank{r}-of-{w}.h5`` (flushed after every batch, no process group needed);
``orand-addon merge --from-shards STORE.h5`` then adds kind ``orandnet`` to the store.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Container, Sequence

import numpy as np
import torch

from ..distributed import DistInfo, main_only, pick_device, shard
from ..errors import OrandError, StoreError
from .losses import score_to_map
from ..merge import done_ids, finish_shard, open_shard, start_shard
from ..runtime import Interrupted, autocast, check_precision, cudnn_mode, progress, resolve_precision
from ..store import Store
from .data import INPUT_KIND, require_kinds
from .model import FCN8s, load_orandnet

OUTPUT_KIND = "orandnet"
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class PredictConfig:
    """Settings of a prediction run; ``batch_size`` 0 means 16 class maps on a GPU, 4 on a CPU."""

    batch_size: int = 0
    device: str = "auto"
    precision: str = "auto"
    dtype: str = "float16"
    ids: tuple[str, ...] | None = None
    overwrite: bool = False
    progress: bool = True


def relu_max_normalize(scores: torch.Tensor, activation: str = "relu") -> torch.Tensor:
    """ReLU (or sigmoid, for models trained with ``bce``/``bg-softmax``), then each (H, W) map divided by its own
    maximum; an all-zero map stays zero.

    >>> relu_max_normalize(torch.tensor([[[-1.0, 2.0], [4.0, 0.0]], [[-3.0, -1.0], [0.0, -2.0]]])).tolist()
    [[[0.0, 0.5], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]
    >>> relu_max_normalize(torch.tensor([[[0.0, 100.0]]]), "sigmoid").tolist()
    [[[0.5, 1.0]]]
    """
    x = torch.sigmoid(scores.float()) if activation == "sigmoid" else scores.float().clamp_min(0)
    peak = x.amax(dim=(-2, -1), keepdim=True)
    return x / torch.where(peak > 0, peak, torch.ones_like(peak))


def plan_batches(items: Sequence[tuple[str, tuple[int, int], int]], batch_size: int) -> list[list[str]]:
    """Group ``(id, (H, W), K)`` into batches of images of one size holding at most ``batch_size`` class maps
    (an image with more maps than that forms a batch alone); images with K = 0 are left out.

    >>> plan_batches([("a", (2, 3), 2), ("b", (4, 4), 1), ("c", (2, 3), 3), ("d", (2, 3), 1), ("e", (2, 3), 0)], 4)
    [['a', 'd'], ['c'], ['b']]
    """
    by_size: OrderedDict[tuple[int, int], list[tuple[str, int]]] = OrderedDict()
    for image_id, size, k in items:
        if k > 0:
            by_size.setdefault(tuple(size), []).append((image_id, k))
    batches: list[list[str]] = []
    for group in by_size.values():
        open_batches: list[tuple[list[str], int]] = []  # first-fit packing keeps the input order within a size
        for image_id, k in group:
            for n, (ids, used) in enumerate(open_batches):
                if used + k <= batch_size:
                    ids.append(image_id)
                    open_batches[n] = (ids, used + k)
                    break
            else:
                open_batches.append(([image_id], k))
        batches += [ids for ids, _ in open_batches]
    return batches


@torch.inference_mode()
def predict_maps(model: FCN8s, or_maps: torch.Tensor, batch_size: int, device: torch.device,
                 precision: str, activation: str = "relu") -> torch.Tensor:
    """``(N, H, W)`` OR maps -> ``(N, H, W)`` ORANDNet maps (ReLU or sigmoid + per-map max normalisation), CPU."""
    outputs = []
    for chunk in or_maps.split(batch_size):
        x = chunk[:, None].to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            scores = model(x)[:, 0]
        outputs.append(relu_max_normalize(scores, activation).cpu())
    return torch.cat(outputs)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass
class _Job:
    """What one prediction run writes, and how."""

    model: FCN8s
    device: torch.device
    precision: str
    batch_size: int
    dtype: str
    activation: str = "relu"


def write_batch(store: Store, job: _Job, batch: Sequence[str], sink: Store | None = None,
                skip: Container[str] = frozenset()) -> None:
    """Predict the class maps of ``batch`` (images of one size) in one go and write those of the ids not in
    ``skip`` to ``sink`` (default: the store they are read from)."""
    sink = sink or store
    read = [store.read_maps(INPUT_KIND, i) for i in batch]
    maps = predict_maps(job.model, torch.from_numpy(np.concatenate([m for m, _ in read])), job.batch_size,
                        job.device, job.precision, job.activation).numpy()
    parts = np.split(maps, np.cumsum([len(keys) for _, keys in read])[:-1])
    for image_id, part, (_, keys) in zip(batch, parts, read):
        if image_id not in skip:
            sink.write_maps(OUTPUT_KIND, image_id, part, keys, dtype=job.dtype)


def plan_work(store: Store, ids: Sequence[str], batch_size: int) -> list[list[str]]:
    """The units of work over ``ids``: each image without classes alone, then :func:`plan_batches` of the rest.

    The plan depends on ``ids`` only, not on what is already written: a resumed run recomputes a partly written
    batch whole and a sharded run hands whole batches to the ranks, so every map is computed in the same batch as
    in one straight one-process run (bit-identical on a CPU).
    """
    shapes = {i: store.map_shape(INPUT_KIND, i) for i in ids}
    empty = [[i] for i in ids if shapes[i][0] == 0]
    return empty + plan_batches([(i, shapes[i][1:], shapes[i][0]) for i in ids], batch_size)


def write_all(store: Store, job: _Job, work: Sequence[Sequence[str]], done: Container[str], bar, sink: Store | None = None,
              flush_every: int = 64) -> tuple[int, list[str]]:
    """Write ``orandnet`` into ``sink`` (default: ``store``) for the ids of ``work`` (see :func:`plan_work`) not in
    ``done``, flushing every ``flush_every`` images; returns ``(written, ids with no classes)``. Ctrl-C keeps what
    is written."""
    sink = sink or store
    todo = [i for batch in work for i in batch if i not in done]
    empty, written, unflushed = [], 0, 0
    try:
        with cudnn_mode(deterministic=False, benchmark=True):
            for batch in work:
                missing = [i for i in batch if i not in done]
                if not missing:
                    continue
                shape = store.map_shape(INPUT_KIND, batch[0])
                if shape[0] == 0:
                    sink.write_maps(OUTPUT_KIND, batch[0], np.zeros(shape, np.float32),
                                    store.read_keys(INPUT_KIND, batch[0]), dtype=job.dtype)
                    empty.append(batch[0])
                else:
                    write_batch(store, job, batch, sink, skip=done)
                written += len(missing)
                unflushed += len(missing)
                bar.update(len(missing))
                if unflushed >= flush_every:
                    sink.flush()
                    unflushed = 0
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {written} of {len(todo)} images; {sink.path} keeps them and the "
                          f"same command resumes") from None
    return written, empty


def wanted_ids(store: Store, ids: Sequence[str] | None) -> list[str]:
    """The ids to predict: ``ids`` (each must have ``or`` maps) or every id of ``or``."""
    require_kinds(store, (INPUT_KIND,), "run 'orand-addon fuse' first")
    all_ids = store.ids(INPUT_KIND)
    wanted = list(dict.fromkeys(ids)) if ids is not None else all_ids
    absent = sorted(set(wanted) - set(all_ids))
    if absent:
        raise OrandError(f"{store.path}: {len(absent)} ids have no /{INPUT_KIND} maps, e.g. {', '.join(absent[:3])}")
    return wanted


def predict_orandnet(store_path: str | Path, checkpoint: str | Path, config: PredictConfig = PredictConfig(),
                     command: str = "orand-addon predict", echo: Callable[[str], None] = _stderr,
                     dist: DistInfo = DistInfo()) -> int:
    """Write kind ``orandnet`` for every image of ``or`` (or ``config.ids``) missing it; returns how many.

    With ``dist.world_size`` > 1: this rank's share into its shard of ``store_path`` (see the module docstring),
    skipping ids already in the shard or in the store; ``device`` auto/cuda means ``cuda:LOCAL_RANK``.
    """
    if config.dtype not in DTYPES:
        raise OrandError(f"unknown map dtype {config.dtype!r}; valid: {', '.join(DTYPES)}")
    check_precision(config.precision)
    if config.batch_size < 0:
        raise OrandError(f"--batch-size must be >= 1 (or 0 for automatic), got {config.batch_size}")
    if not Path(store_path).is_file():
        raise StoreError(f"{store_path}: store not found")
    device = pick_device(config.device, dist)
    say = main_only(echo, dist)
    model, ckpt = load_orandnet(checkpoint)
    model.eval().to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)
    activation = score_to_map((ckpt.get("train_config") or {}).get("loss"))
    job = _Job(model, device, resolve_precision(device, config.precision),
               config.batch_size or (16 if device.type == "cuda" else 4), config.dtype, activation)
    done_at, planned = ckpt.get("iteration"), (ckpt.get("train_config") or {}).get("iterations")
    if isinstance(done_at, int) and isinstance(planned, int) and done_at < planned:
        say(f"note: {checkpoint} is at iteration {done_at} of {planned} (training not finished)")
    parameters = {"checkpoint": str(Path(checkpoint).resolve()), "iteration": done_at, "saved_at": ckpt.get("saved_at"),
                  "model": model.config(), "input": INPUT_KIND, "postprocess": f"{activation}, per-map max normalisation",
                  "dtype": config.dtype}
    del ckpt
    if dist.enabled:
        return predict_shard(store_path, job, parameters, config, command, echo, dist)
    with Store(store_path, mode="a") as store:
        wanted = wanted_ids(store, config.ids)
        store.begin([OUTPUT_KIND], command, parameters, force=config.overwrite)
        done = {i for i in wanted if store.has(OUTPUT_KIND, i)}
        if done:
            echo(f"{len(done)} images already have /{OUTPUT_KIND} (skipped)")
        bar = progress(desc="predict", total=len(wanted) - len(done), enabled=config.progress, unit="img")
        try:
            written, empty = write_all(store, job, plan_work(store, wanted, job.batch_size), done, bar)
        finally:
            bar.close()
    if empty:
        echo(f"{len(empty)} images with no classes got an empty /{OUTPUT_KIND} entry: {', '.join(empty[:3])}")
    return written


def predict_shard(store_path: str | Path, job: _Job, parameters: dict, config: PredictConfig, command: str,
                  echo: Callable[[str], None], dist: DistInfo) -> int:
    """This rank's share of the ids into its shard of ``store_path`` (which is only read); returns how many."""
    with Store(store_path) as source:
        work = shard(plan_work(source, wanted_ids(source, config.ids), job.batch_size), dist.rank, dist.world_size)
        mine = [i for batch in work for i in batch]
        in_main = done_ids(source, [OUTPUT_KIND], parameters, config.overwrite)
        with open_shard(store_path, dist, source.class_names) as sink:
            sink.begin([OUTPUT_KIND], command, parameters, force=config.overwrite)
            start_shard(sink, dist, len(mine), plan={"batch_size": job.batch_size})
            done = {i for i in mine if i in in_main or sink.has(OUTPUT_KIND, i)}
            if done:
                echo(f"rank {dist.rank}: {len(done)} of its {len(mine)} images already have /{OUTPUT_KIND} (skipped)")
            bar = progress(desc="predict", total=len(mine) - len(done), enabled=config.progress and dist.is_main,
                           unit="img")
            try:
                written, empty = write_all(source, job, work, done, bar, sink=sink, flush_every=1)
            finally:
                bar.close()
            finish_shard(sink, dist, len(mine), plan={"batch_size": job.batch_size})
    if empty:
        echo(f"rank {dist.rank}: {len(empty)} images with no classes got an empty /{OUTPUT_KIND} entry: "
             f"{', '.join(empty[:3])}")
    return written

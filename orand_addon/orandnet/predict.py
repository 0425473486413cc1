"""Applying a trained ORANDNet to every image of the store: ``or`` maps in, kind ``orandnet`` out
(``orand-addon predict``).

Per class map: the network's score, ReLU, then divided by its own maximum (``map_norm="max"``: a map that is
zero everywhere stays zero), or by its maximum + 1e-5 as the official ``encdec_pred.py`` (``"max-eps"``). The crop
rule of the network is the one it was trained with (recorded in the checkpoint). The result has the keys and size of ``or``, so
``orand-addon export --kind orandnet --to irn`` gives IRN's layout (``keys``, stride-4 ``cam``, ``high_res``).

Throughput: images of equal size are batched together, all class maps of an image in the same batch where they
fit (``batch_size`` class maps per forward pass); bf16 autocast and channels-last on a GPU. :class:`PredictStage`
runs on the stage engine (:mod:`orand_addon.engine.stage`): images already in ``orandnet`` are skipped, so an
interrupted run resumes, and a crash loses at most the images since the last sealed part; an image with no
classes gets an empty (0, H, W) entry so every id of ``or`` has one.

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
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch

from ..engine.stage import ImageResult, RunOptions, Stage, StageReport, run_stage
from ..runtime.distributed import DistInfo, main_only, pick_device
from ..errors import OrandError, StoreError
from ..registries import MAP_NORMS, check_choice
from .losses import score_to_map
from ..runtime.devices import autocast, check_precision, cudnn_mode, resolve_precision
from ..store.store import Store
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
    map_norm: str = "max"
    ids: tuple[str, ...] | None = None
    overwrite: bool = False
    progress: bool = True

    def check(self) -> None:
        check_choice(MAP_NORMS, self.map_norm, "map normalisation")


OFFICIAL_EPS = 1e-5


def relu_max_normalize(scores: torch.Tensor, activation: str = "relu", map_norm: str = "max") -> torch.Tensor:
    """ReLU (or sigmoid, for models trained with ``bce``/``bg-softmax``), then each (H, W) map divided by its own
    maximum (``max``: an all-zero map stays zero) or by its maximum + 1e-5 (``max-eps``, the official rule).

    >>> relu_max_normalize(torch.tensor([[[-1.0, 2.0], [4.0, 0.0]], [[-3.0, -1.0], [0.0, -2.0]]])).tolist()
    [[[0.0, 0.5], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]
    >>> relu_max_normalize(torch.tensor([[[0.0, 100.0]]]), "sigmoid").tolist()
    [[[0.5, 1.0]]]
    >>> relu_max_normalize(torch.tensor([[[0.0, 1e-5]]]), map_norm="max-eps").tolist()
    [[[0.0, 0.5]]]
    """
    x = torch.sigmoid(scores.float()) if activation == "sigmoid" else scores.float().clamp_min(0)
    peak = x.amax(dim=(-2, -1), keepdim=True)
    if map_norm == "max-eps":
        return x / (peak + OFFICIAL_EPS)
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
                 precision: str, activation: str = "relu", map_norm: str = "max") -> torch.Tensor:
    """``(N, H, W)`` OR maps -> ``(N, H, W)`` ORANDNet maps (ReLU or sigmoid + per-map max normalisation), CPU."""
    outputs = []
    for chunk in or_maps.split(batch_size):
        x = chunk[:, None].to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            scores = model(x)[:, 0]
        outputs.append(relu_max_normalize(scores, activation, map_norm).cpu())
    return torch.cat(outputs)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass
class _Job:
    """How one prediction run computes its maps."""

    model: FCN8s
    device: torch.device
    precision: str
    batch_size: int
    dtype: str
    activation: str = "relu"
    map_norm: str = "max"


def plan_work(store: Store, ids: Sequence[str], batch_size: int) -> list[list[str]]:
    """The units of work over ``ids``: each image without classes alone, then :func:`plan_batches` of the rest.

    The plan depends on ``ids`` only, not on what is already written: a resumed run recomputes a partly written
    batch whole and a sharded run hands whole batches to the ranks, so every map is computed in the same batch as
    in one straight one-process run (bit-identical on a CPU).
    """
    shapes = {i: store.map_shape(INPUT_KIND, i) for i in ids}
    empty = [[i] for i in ids if shapes[i][0] == 0]
    return empty + plan_batches([(i, shapes[i][1:], shapes[i][0]) for i in ids], batch_size)


def wanted_ids(store: Store, ids: Sequence[str] | None) -> list[str]:
    """The ids to predict: ``ids`` (each must have ``or`` maps) or every id of ``or``."""
    require_kinds(store, (INPUT_KIND,), "run 'orand-addon fuse' first")
    all_ids = store.ids(INPUT_KIND)
    wanted = list(dict.fromkeys(ids)) if ids is not None else all_ids
    absent = sorted(set(wanted) - set(all_ids))
    if absent:
        raise OrandError(f"{store.path}: {len(absent)} ids have no /{INPUT_KIND} maps, e.g. {', '.join(absent[:3])}")
    return wanted


class PredictStage(Stage):
    """ORANDNet over the ``or`` maps of the store, a batch of images of one size per unit, into kind ``orandnet``."""

    name: ClassVar[str] = "predict"

    def __init__(self, store_path: str | Path, checkpoint: str | Path, config: PredictConfig, command: str,
                 device: torch.device):
        self.store_path, self.config, self.command, self.dtype = Path(store_path), config, command, config.dtype
        model, ckpt = load_orandnet(checkpoint)
        diverged = [name for name, value in model.state_dict().items()
                    if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        if diverged:
            raise OrandError(f"{checkpoint}: {len(diverged)} weight tensors hold NaN/Inf (e.g. {diverged[0]}): the "
                             f"training diverged; train again (a lower --lr)")
        model.eval().to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)
        activation = score_to_map((ckpt.get("train_config") or {}).get("loss"))
        self.job = _Job(model, device, resolve_precision(device, config.precision),
                        config.batch_size or (16 if device.type == "cuda" else 4), config.dtype, activation,
                        config.map_norm)
        self.iteration, planned = ckpt.get("iteration"), (ckpt.get("train_config") or {}).get("iterations")
        self.unfinished = isinstance(self.iteration, int) and isinstance(planned, int) and self.iteration < planned
        self.planned_iterations = planned
        self._parameters = {"checkpoint": str(Path(checkpoint).resolve()), "iteration": self.iteration,
                            "saved_at": ckpt.get("saved_at"), "model": model.config(), "input": INPUT_KIND,
                            "postprocess": f"{activation}, per-map max normalisation", "dtype": config.dtype}
        if config.map_norm != "max":  # recorded only when not the default: stores written before it resume
            self._parameters["map_norm"] = config.map_norm
        self._source: Store | None = None
        self._modes = None

    def groups(self) -> tuple[str, ...]:
        return (OUTPUT_KIND,)

    def parameters(self, source: Store | None) -> dict:
        return self._parameters

    def plan(self, source: Store | None) -> list[tuple[str, ...]]:
        if source is None:
            raise StoreError(f"{self.store_path}: store not found")
        return [tuple(b) for b in plan_work(source, wanted_ids(source, self.config.ids), self.job.batch_size)]

    def plan_settings(self) -> dict:
        return {"batch_size": self.job.batch_size}

    def setup(self) -> None:
        self._source = Store(self.store_path)
        self._modes = cudnn_mode(deterministic=False, benchmark=True)
        self._modes.__enter__()

    def teardown(self) -> None:
        if self._modes is not None:
            self._modes.__exit__(None, None, None)
        if self._source is not None:
            self._source.close()

    def compute(self, unit: tuple[str, ...]) -> list[ImageResult]:
        store, job = self._source, self.job
        shape = store.map_shape(INPUT_KIND, unit[0])
        if shape[0] == 0:
            keys = store.read_keys(INPUT_KIND, unit[0])
            return [ImageResult(unit[0], maps={OUTPUT_KIND: (np.zeros(shape, np.float32), keys)},
                                notes=[("images with no classes got an empty entry", unit[0])])]
        read = [store.read_maps(INPUT_KIND, i) for i in unit]
        maps = predict_maps(job.model, torch.from_numpy(np.concatenate([m for m, _ in read])), job.batch_size,
                            job.device, job.precision, job.activation, job.map_norm).numpy()
        parts = np.split(maps, np.cumsum([len(keys) for _, keys in read])[:-1])
        for image_id, part in zip(unit, parts):
            if not np.isfinite(part).all():
                raise OrandError(f"{image_id}: ORANDNet gave non-finite maps (NaN/Inf) from finite /{INPUT_KIND} maps; "
                                 f"nothing of it was written (try --precision fp32)")
        return [ImageResult(i, maps={OUTPUT_KIND: (part, keys)}) for i, part, (_, keys) in zip(unit, parts, read)]

    def summary(self, report: StageReport) -> list[str]:
        return [f"predict: wrote {report.written} images, {report.skipped_existing} already had /{OUTPUT_KIND}",
                *report.recovered, *report.note_lines()]


def predict_orandnet(store_path: str | Path, checkpoint: str | Path, config: PredictConfig = PredictConfig(),
                     command: str = "orand-addon predict", echo: Callable[[str], None] = _stderr,
                     dist: DistInfo = DistInfo()) -> int:
    """Write kind ``orandnet`` for every image of ``or`` (or ``config.ids``) missing it; returns how many.

    With ``dist.world_size`` > 1: this rank's share (whole batches of the one-process plan) into its shard of
    ``store_path`` (see the module docstring); ``device`` auto/cuda means ``cuda:LOCAL_RANK``.
    """
    if config.dtype not in DTYPES:
        raise OrandError(f"unknown map dtype {config.dtype!r}; valid: {', '.join(DTYPES)}")
    config.check()
    check_precision(config.precision)
    if config.batch_size < 0:
        raise OrandError(f"--batch-size must be >= 1 (or 0 for automatic), got {config.batch_size}")
    if not Path(store_path).is_file():
        raise StoreError(f"{store_path}: store not found")
    say = main_only(echo, dist)
    stage = PredictStage(store_path, checkpoint, config, command, pick_device(config.device, dist))
    if stage.unfinished:
        say(f"note: {checkpoint} is at iteration {stage.iteration} of {stage.planned_iterations} (training not finished)")
    report = run_stage(stage, store_path, RunOptions(overwrite=config.overwrite, progress=config.progress, dist=dist))
    where = f"rank {dist.rank}: " if dist.enabled else ""
    if report.skipped_existing:
        share = f" of its {report.planned}" if dist.enabled else ""
        echo(f"{where}{report.skipped_existing}{share} images already have /{OUTPUT_KIND} (skipped)")
    for line in report.recovered:
        echo(line)
    empty = report.notes.get("images with no classes got an empty entry", [])
    if empty:
        echo(f"{where}{len(empty)} images with no classes got an empty /{OUTPUT_KIND} entry: {', '.join(empty[:3])}")
    return report.written

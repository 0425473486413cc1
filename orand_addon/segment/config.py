"""Settings and inputs of ``train-seg``: :class:`SegTrainConfig`, the checks of the numbers and the schedule, and
:func:`prepare_data`, which reads every training pair (and the validation ground truth) once before anything trains.
Under torchrun the ranks check the lists together (each its share, :func:`check_share`) and ``--batch-size`` is
the global batch (:func:`~orand_addon.runtime.distributed.rank_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..classes import get_class_set, read_id_list
from ..runtime.distributed import DistInfo, shard, sum_across_ranks
from ..errors import OrandError
from ..runtime.devices import check_precision
from .data import MaskReader, MaskSource, check_pairs, parse_mask_source
from .losses import LOSSES
from .models import BN_MODES, MODELS, check_pretrained
from .schedule import PAPER_SCHEDULE, Schedule, check_fits, parse_schedule

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class SegTrainConfig:
    """Everything a segmentation training run needs (the CLI fills it from ``train-seg`` options)."""

    images: str
    masks: str
    train_list: str | Sequence[str]
    out: str
    val_list: str | Sequence[str] | None = None
    gt: str | None = None
    model: str = "deeplabv2-resnet101"
    classes: str | None = None
    scale_schedule: str = PAPER_SCHEDULE
    epochs: int = 20
    batch_size: int = 10
    crop_size: int = 321
    scale_range: tuple[float, float] = (0.5, 1.5)
    lr: float = 2.5e-4
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9
    optimizer: str = "sgd"
    loss: str = "ce"
    smoothing: float = 0.1
    pretrained: str = "imagenet"
    bn: str = "auto"
    resume: bool = False
    device: str = "auto"
    precision: str = "auto"
    workers: int = 1
    seed: int = 0
    show_progress: bool = True


@dataclass
class PreparedData:
    train_ids: list[str]
    val_ids: list[str]
    masks: MaskReader
    class_names: list[str]
    class_counts: np.ndarray
    schedule: Schedule = field(default_factory=tuple)


def _ids(spec: str | Sequence[str]) -> list[str]:
    return read_id_list(spec) if isinstance(spec, (str, Path)) else list(spec)


def check_config(c: SegTrainConfig) -> Schedule:
    """Numbers in range and a schedule that parses and fits the training; returns the schedule."""
    minimums = (("--epochs", c.epochs, 1), ("--batch-size", c.batch_size, 1), ("--crop-size", c.crop_size, 8))
    for name, value, low in minimums:
        if value < low:
            raise OrandError(f"{name} {value} must be at least {low}")
    if not c.lr > 0:
        raise OrandError(f"--lr {c.lr} must be positive")
    if not 0 < c.scale_range[0] <= c.scale_range[1]:
        raise OrandError(f"--scale-range {c.scale_range[0]},{c.scale_range[1]}: need 0 < low <= high")
    if (c.val_list is None) != (c.gt is None):
        raise OrandError("--val-list and --gt go together: per-epoch validation needs both")
    check_precision(c.precision)
    registries = (("--model", c.model, MODELS), ("--loss", c.loss, LOSSES), ("--bn", c.bn, BN_MODES),
                  ("--optimizer", c.optimizer, OPTIMIZERS))
    for option, value, registry in registries:
        if value not in registry:
            raise OrandError(f"{option} {value!r} is unknown; valid: {', '.join(registry)}")
    schedule = parse_schedule(c.scale_schedule)
    check_fits(schedule, c.epochs, c.scale_schedule)
    check_pretrained(c.model, c.pretrained)
    return schedule


def check_share(ids: Sequence[str], images: str | Path, masks: MaskReader, num_classes: int, what: str,
                show_progress: bool, info: DistInfo, device: torch.device, noun: str = "mask") -> np.ndarray:
    """:func:`~.data.check_pairs` of this rank's share of ``ids`` (the ranks check the list together); returns the
    pixel counts per class of the whole list (summed over the ranks)."""
    if not ids or not info.enabled:
        return check_pairs(ids, images, masks, num_classes, what, show_progress, noun)
    mine = shard(ids, info.rank, info.world_size)
    counts = (check_pairs(mine, images, masks, num_classes, what, show_progress and info.is_main, noun) if mine
              else np.zeros(num_classes, np.int64))
    return np.rint(sum_across_ranks(counts.tolist(), device)).astype(np.int64)


def prepare_data(c: SegTrainConfig, schedule: Schedule, info: DistInfo = DistInfo(),
                 device: torch.device = torch.device("cpu")) -> PreparedData:
    """Read the lists and check every training pair (and validation GT) before anything trains."""
    train_ids = _ids(c.train_list)
    if not train_ids:
        raise OrandError("the training list is empty: nothing to train on")
    masks = MaskReader(parse_mask_source(c.masks))
    names = masks.class_names()
    if names is None:
        names = list(get_class_set(c.classes or "voc").names)
    elif c.classes is not None and list(get_class_set(c.classes).names) != names:
        raise OrandError(f"{masks.source.path}: store classes ({len(names)}) differ from --classes {c.classes}")
    if len(train_ids) < c.batch_size:
        raise OrandError(f"the training list has {len(train_ids)} images, fewer than --batch-size {c.batch_size}")
    counts = check_share(train_ids, c.images, masks, len(names), "training", c.show_progress, info, device)
    val_ids = _ids(c.val_list) if c.val_list is not None else []
    if c.gt is not None:
        check_share(val_ids, c.images, MaskReader(MaskSource("png", Path(c.gt))), len(names), "validation",
                    c.show_progress, info, device, noun="ground truth")
    return PreparedData(train_ids, val_ids, masks, names, counts, schedule)

"""Training data of the segmentation stage: image + pseudo-mask pairs, augmentation, scale scheduling.

Masks come from the HDF5 store (``STORE.h5`` reads group ``masks``; ``STORE.h5:GROUP`` another mask group) or a
folder of label PNGs (``<id>.png``). DataLoader workers open the store read-only, each in its own process.
:func:`check_pairs` reads every pair once before training so that bad input stops the run before it starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import OrandError
from ..io.images import (image_size, IMAGENET_MEAN, imagenet_normalize, IMAGENET_STD, load_image, load_label_png)  # noqa: F401 (re-exported)
from ..runtime.progress import progress

IGNORE = 255
STORE_SUFFIXES = (".h5", ".hdf5")


@dataclass(frozen=True)
class MaskSource:
    """Where masks live: ``kind`` ``store`` (``path`` + ``group``) or ``png`` (folder ``path``)."""

    kind: str
    path: Path
    group: str = "masks"


def parse_mask_source(spec: str | Path) -> MaskSource:
    """``STORE.h5``, ``STORE.h5:GROUP`` or a PNG folder.

    >>> parse_mask_source("run/fused.h5:seeds")
    MaskSource(kind='store', path=PosixPath('run/fused.h5'), group='seeds')
    """
    text = str(spec)
    path, _, group = text.rpartition(":") if ":" in Path(text).name else (text, "", "")
    if Path(path).suffix.lower() in STORE_SUFFIXES:
        return MaskSource("store", Path(path), group or "masks")
    if Path(text).is_dir():
        return MaskSource("png", Path(text))
    raise OrandError(f"--masks {text}: not an HDF5 store (.h5, optionally :GROUP) or a folder of label PNGs")


class MaskReader:
    """Reads masks by id; a store is opened lazily and once per process (safe for DataLoader workers)."""

    def __init__(self, source: MaskSource):
        self.source = source
        self._store = None
        self._pid = -1
        if source.kind == "store":
            has_group = source.group in self._open().h5  # validate the file and group now
            self.close()
            if not has_group:
                raise OrandError(f"{source.path}: no /{source.group} group (write masks first, or use :GROUP)")
        elif not source.path.is_dir():
            raise OrandError(f"{source.path}: mask folder not found")

    def _open(self):
        from ..store.store import Store

        if self._store is None or self._pid != os.getpid():
            self._store = Store(self.source.path, "r")
            self._pid = os.getpid()
        return self._store

    def class_names(self) -> list[str] | None:
        if self.source.kind != "store":
            return None
        names = self._open().class_names
        self.close()
        return names

    def read(self, image_id: str) -> np.ndarray:
        if self.source.kind == "png":
            path = self.source.path / f"{image_id}.png"
            if not path.is_file():
                raise OrandError(f"{image_id}: no mask {path.name} in {self.source.path}")
            return load_label_png(path)
        store = self._open()
        if not store.has(self.source.group, image_id):
            raise OrandError(f"{image_id}: no /{self.source.group}/{image_id} in {self.source.path}")
        return store.read_mask(self.source.group, image_id)

    def close(self) -> None:
        if self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._store = None

    def __getstate__(self) -> dict:
        return {"source": self.source, "_store": None, "_pid": -1}


def invalid_values(mask: np.ndarray, num_classes: int) -> list[int]:
    """Values of ``mask`` outside ``0..num_classes-1`` and 255.

    >>> invalid_values(np.array([[0, 3, 255], [21, 7, 21]], np.uint8), 21)
    [21]
    """
    values = np.unique(mask)
    return [int(v) for v in values if v >= num_classes and v != IGNORE]


def check_pairs(ids: Sequence[str], images: str | Path, masks: MaskReader, num_classes: int,
                what: str = "training", show_progress: bool = True, noun: str = "mask") -> np.ndarray:
    """Read every mask once: sizes equal their images, values valid. Returns pixel counts per class (C,)."""
    if not ids:
        raise OrandError(f"the {what} list is empty: nothing to train on")
    counts = np.zeros(num_classes, dtype=np.int64)
    for image_id in progress(ids, desc=f"checking {what} data", enabled=show_progress, unit="img"):
        size = image_size(images, image_id)
        mask = masks.read(image_id)
        if mask.shape != size:
            raise OrandError(
                f"{image_id}: {noun} is {mask.shape[0]}x{mask.shape[1]} but its image is {size[0]}x{size[1]} (HxW)"
            )
        bad = invalid_values(mask, num_classes)
        if bad:
            shown = ", ".join(str(v) for v in bad[:5])
            raise OrandError(f"{image_id}: {noun} has values {shown} outside 0..{num_classes - 1} and 255")
        counts += np.bincount(mask[mask != IGNORE].ravel(), minlength=num_classes)[:num_classes]
    masks.close()
    return counts


normalize = imagenet_normalize  # RGB uint8 (H, W, 3) -> float32, ImageNet mean/std (padding with 0 = the mean)


def random_scale_crop_flip(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, crop: int,
                           scale_range: tuple[float, float] = (0.5, 1.5)) -> tuple[np.ndarray, np.ndarray]:
    """Random rescale (image bilinear, mask nearest), pad to ``crop`` (image 0 = mean, mask 255), crop, flip.

    ``image`` is normalised float32 (H, W, 3); returns ``(crop, crop, 3)`` and ``(crop, crop)`` uint8.

    >>> img, m = random_scale_crop_flip(np.zeros((5, 7, 3), np.float32), np.ones((5, 7), np.uint8),
    ...                                 np.random.default_rng(0), crop=9, scale_range=(1.0, 1.0))
    >>> img.shape, m.shape, int((m == 1).sum()), int((m == 255).sum())
    ((9, 9, 3), (9, 9), 35, 46)
    """
    h, w = mask.shape
    scale = float(rng.uniform(*scale_range))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        image = np.stack([np.asarray(Image.fromarray(image[..., c], mode="F").resize(size, Image.BILINEAR))
                          for c in range(3)], axis=-1)
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    h, w = mask.shape
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0.0)
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE)
    y = int(rng.integers(0, mask.shape[0] - crop + 1))
    x = int(rng.integers(0, mask.shape[1] - crop + 1))
    image, mask = image[y:y + crop, x:x + crop], mask[y:y + crop, x:x + crop]
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(mask, dtype=np.uint8)


def downsample_pair(images: torch.Tensor, masks: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale scheduling on a batch: images (B, 3, H, W) by area (mean of each factor x factor block), masks
    (B, H, W) by nearest (the centre pixel of the same block), so both stay aligned and thin noise disappears.

    >>> img = torch.arange(16.).reshape(1, 1, 4, 4).expand(1, 3, 4, 4)
    >>> m = torch.arange(16).reshape(1, 4, 4)
    >>> i2, m2 = downsample_pair(img, m, 2)
    >>> i2[0, 0].tolist(), m2[0].tolist()
    ([[2.5, 4.5], [10.5, 12.5]], [[5, 7], [13, 15]])
    """
    if factor <= 1:
        return images, masks
    h, w = masks.shape[-2:]
    h2, w2 = max(1, h // factor), max(1, w // factor)
    f = min(factor, h, w)
    small = torch.nn.functional.avg_pool2d(images[..., : h2 * f, : w2 * f], kernel_size=f, stride=f)
    centre = f // 2
    return small, masks[..., centre: h2 * f: f, centre: w2 * f: f].contiguous()


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)``: a shuffle seeded by (seed, epoch), starting at ``start`` (exact resume),
    drop-last batches; ``rank``/``world_size`` give each process its share (for DDP)."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start_batch: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size

    def order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        perm = perm[: self.n // self.world_size * self.world_size][self.rank::self.world_size]  # equal shares
        return perm[: len(perm) // self.batch_size * self.batch_size][self.start_batch * self.batch_size:]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self.order()])

    def __len__(self) -> int:
        return len(self.order())


def batches_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch (incomplete last batch dropped).

    >>> batches_per_epoch(10582, 10)
    1058
    """
    return (n // world_size) // batch_size


class TrainPairs(torch.utils.data.Dataset):
    """Augmented (image, mask) pairs; item ``(epoch, index)`` draws its randomness from (seed, epoch, index),
    so the result does not depend on worker count or on resuming."""

    def __init__(self, ids: Sequence[str], images: str | Path, masks: MaskReader, crop: int,
                 scale_range: tuple[float, float], seed: int):
        self.ids, self.images, self.masks = list(ids), Path(images), masks
        self.crop, self.scale_range, self.seed = crop, scale_range, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        image_id = self.ids[index]
        image = normalize(load_image(self.images, image_id))
        rng = np.random.default_rng([self.seed, epoch, index])
        image, mask = random_scale_crop_flip(image, self.masks.read(image_id), rng, self.crop, self.scale_range)
        return torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(mask.astype(np.int64))


def load_gt(folder: str | Path, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Ground-truth label PNG ``folder/<id>.png``; its size must match ``shape`` when given."""
    path = Path(folder) / f"{image_id}.png"
    if not path.is_file():
        raise OrandError(f"{image_id}: no ground truth {path.name} in {folder}")
    gt = load_label_png(path)
    if shape is not None and gt.shape != tuple(shape):
        raise OrandError(f"{image_id}: ground truth is {gt.shape[0]}x{gt.shape[1]} but the image is "
                         f"{shape[0]}x{shape[1]} (HxW)")
    return gt


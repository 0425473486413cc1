"""Training crops for IRN (``VOC12AffinityDataset``): image + seed, random scale, flip, crop, stride-4 label.

Each sample is drawn by a generator seeded with ``(seed, epoch, index)``, so a run gives the same batches
whatever the number of loader workers, and a resumed run continues with exactly the batches it would have seen.
Crop steps, as IRN: random scale in ``scale_range`` (image bicubic, seed nearest), ImageNet normalisation,
horizontal flip with probability 1/2, a random ``crop_size`` square (an image larger than the crop is cropped at
a random place; a smaller one is placed at a random place in a container filled with 0 for the image and 255
for the seed), and the seed reduced to the network's stride-4 grid (``label_sampling``):

* ``nearest`` (default, IRN): Pillow's NEAREST resize to 1/4 (``pil_rescale(label, 0.25, 0)``), which takes
  source pixel ``floor((i + 0.5) * c / n)``: pixel ``4i + 2`` of a 512 crop, the centre of each 4x4 cell
  (:func:`nearest_indices`; ``n = ceil(c / 4)``, the size of the network's output).
* ``top-left``: every fourth pixel from the corner, ``4i`` (what orand-addon did before: half a cell off).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..io.images import imagenet_normalize, load_image
from ..registries import IRN_LABEL_SAMPLING, check_choice, implementations
from ..runtime.distributed import rank_batch
from ..store.store import Store


@dataclass(frozen=True)
class CropSpec:
    crop_size: int = 512
    scale_range: tuple[float, float] = (0.5, 1.5)
    label_sampling: str = "nearest"


def nearest_indices(size: int, out: int) -> np.ndarray:
    """Source indices of a nearest-neighbour resize of ``size`` pixels to ``out``, as Pillow's NEAREST:
    ``floor((i + 0.5) * size / out)``, computed exactly in integers.

    >>> nearest_indices(512, 128)[:4].tolist(), nearest_indices(10, 3).tolist()
    ([2, 6, 10, 14], [1, 5, 8])
    """
    i = np.arange(out, dtype=np.int64)
    return ((2 * i + 1) * size) // (2 * out)


def _nearest(label: np.ndarray) -> np.ndarray:
    h, w = label.shape
    rows, cols = nearest_indices(h, -(-h // 4)), nearest_indices(w, -(-w // 4))
    return label[rows[:, None], cols[None, :]]


def _top_left(label: np.ndarray) -> np.ndarray:
    return label[::4, ::4]


LABEL_SAMPLERS = implementations(IRN_LABEL_SAMPLING, {"nearest": _nearest, "top-left": _top_left})


def stride4_label(label: np.ndarray, sampling: str = "nearest") -> np.ndarray:
    """The (⌈h/4⌉, ⌈w/4⌉) stride-4 label of a (h, w) crop label (module docstring).

    >>> lab = np.arange(64).reshape(8, 8)
    >>> stride4_label(lab).tolist(), stride4_label(lab, "top-left").tolist()
    ([[18, 22], [50, 54]], [[0, 4], [32, 36]])
    """
    return LABEL_SAMPLERS[check_choice(IRN_LABEL_SAMPLING, sampling, "label sampling")](label)


def rescale_pair(image: np.ndarray, seed: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale an RGB uint8 image (bicubic) and its seed (nearest) by ``factor`` (sizes rounded, at least 1).

    >>> img, lab = rescale_pair(np.zeros((10, 20, 3), np.uint8), np.zeros((10, 20), np.uint8), 0.55)
    >>> img.shape, lab.shape
    ((6, 11, 3), (6, 11))
    """
    h, w = seed.shape
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    if size == (w, h):
        return image, seed
    img = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
    lab = np.asarray(Image.fromarray(seed).resize(size, Image.NEAREST))
    return img, lab


def crop_box(size: tuple[int, int], crop: int, rng: np.random.Generator) -> tuple[int, int, int, int, int, int]:
    """IRN's random crop box: ``(cont_top, cont_left, img_top, img_left, ch, cw)``.

    >>> crop_box((10, 30), 16, np.random.default_rng(0))[4:]
    (10, 16)
    """
    h, w = size
    ch, cw = min(crop, h), min(crop, w)
    img_top, cont_top = (int(rng.integers(h - crop + 1)), 0) if h > crop else (0, int(rng.integers(crop - h + 1)))
    img_left, cont_left = (int(rng.integers(w - crop + 1)), 0) if w > crop else (0, int(rng.integers(crop - w + 1)))
    return cont_top, cont_left, img_top, img_left, ch, cw


def make_crop(image: np.ndarray, seed: np.ndarray, spec: CropSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One training sample: float32 (3, c, c) image and int64 (⌈c/4⌉, ⌈c/4⌉) stride-4 seed.

    >>> img, lab = make_crop(np.zeros((20, 50, 3), np.uint8), np.ones((20, 50), np.uint8), CropSpec(32, (1, 1)),
    ...                      np.random.default_rng(0))
    >>> img.shape, lab.shape, sorted(np.unique(lab).tolist())
    ((3, 32, 32), (8, 8), [1, 255])
    """
    lo, hi = spec.scale_range
    image, seed = rescale_pair(image, seed, float(rng.uniform(lo, hi)))
    image = imagenet_normalize(image)
    if rng.random() < 0.5:
        image, seed = image[:, ::-1], seed[:, ::-1]
    c = spec.crop_size
    top, left, itop, ileft, ch, cw = crop_box(seed.shape, c, rng)
    out_img = np.zeros((c, c, 3), np.float32)
    out_lab = np.full((c, c), 255, np.uint8)
    out_img[top:top + ch, left:left + cw] = image[itop:itop + ch, ileft:ileft + cw]
    out_lab[top:top + ch, left:left + cw] = seed[itop:itop + ch, ileft:ileft + cw]
    return (np.ascontiguousarray(out_img.transpose(2, 0, 1)),
            stride4_label(out_lab, spec.label_sampling).astype(np.int64))


class SeedCrops(Dataset):
    """Crops of the images with seeds in the store; indexed by ``(epoch, index)`` keys (see :class:`StepSampler`)."""

    def __init__(self, store_path: str | Path, images: str | Path, ids: Sequence[str], spec: CropSpec, seed: int = 0):
        self.store_path, self.images, self.ids, self.spec, self.seed = str(store_path), str(images), list(ids), spec, seed
        self._store: Store | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.ids)

    def _seeds(self) -> Store:
        if self._store is None or self._pid != os.getpid():  # one read-only handle per loader process
            self._store, self._pid = Store(self.store_path, "r"), os.getpid()
        return self._store

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        image_id = self.ids[index]
        rng = np.random.default_rng((self.seed, epoch, index))
        image = load_image(self.images, image_id)
        seed = self._seeds().read_mask("seeds", image_id)
        img, lab = make_crop(image, seed, self.spec, rng)
        return torch.from_numpy(img), torch.from_numpy(lab)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class StepSampler(Sampler):
    """Batches of ``(epoch, index)`` keys for optimizer steps ``start .. total``: epoch ``e`` visits a
    permutation seeded by ``(seed, e)`` in batches of ``batch_size`` (the last partial batch is dropped, as IRN).

    Under DDP, ``batch_size`` is the global batch and rank ``rank`` of ``world_size`` takes the ``rank``-th of
    its ``world_size`` equal consecutive parts, so the ranks together see exactly the batches of one process.

    >>> batches = list(StepSampler(5, 2, 4, seed=0, start=1))    # 2 steps per epoch; step 0 already done
    >>> [[epoch for epoch, _ in b] for b in batches]
    [[0, 0], [1, 1], [1, 1]]
    >>> batches[0] == list(StepSampler(5, 2, 4, seed=0))[1]
    True
    >>> whole = list(StepSampler(9, 4, 2, seed=0))
    >>> parts = [list(StepSampler(9, 4, 2, seed=0, rank=r, world_size=2)) for r in range(2)]
    >>> [a + b for a, b in zip(*parts)] == whole
    True
    """

    def __init__(self, n: int, batch_size: int, total_steps: int, seed: int = 0, start: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.n, self.batch_size, self.total, self.seed, self.start = n, batch_size, total_steps, seed, start
        self.per_epoch = n // batch_size
        self.per_rank = rank_batch(batch_size, world_size)
        self.offset = rank * self.per_rank

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, order_epoch = None, -1
        for step in range(self.start, self.total):
            epoch, pos = divmod(step, self.per_epoch)
            if epoch != order_epoch:
                order = np.random.default_rng((self.seed, epoch)).permutation(self.n)
                order_epoch = epoch
            first = pos * self.batch_size + self.offset
            yield [(epoch, int(i)) for i in order[first:first + self.per_rank]]

"""Independent re-implementations of the official ORANDNet behaviour, written in the tests from the published
description (docs/decisions.md and the README's recipe table, the facts gathered from engineerJPark/ORANDNet),
not from orand_addon's code.

* :class:`RefEncDec`: the official FCN-8s ``EncDec`` with its own module names (``downsample1.0``, ``fc6.0``,
  ``score_final``, ``upsample_make_16s`` ...), a channel divider for small test models, and either crop rule.
* :func:`ref_crop_offsets`: the three crop offsets of the official rule from the size arithmetic alone.
* :func:`ref_soft_ce`: the official loss, ``F.cross_entropy`` with the AND maps as soft targets.
* :func:`ref_poly_lr`: ``PolyOptimizer``'s learning rate, frozen once ``step >= max_step``.
* :func:`ref_iou_metric`: the official 20-class ``IOUMetric`` and its maps -> mask rule.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

ALIGNED = (5, 9, 31)  # Long et al.'s fixed offsets


def _block(cin: int, cout: int, convs: int, first_pad: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=first_pad if i == 0 else 1), nn.ReLU()]
    layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
    return nn.Sequential(*layers)


class RefEncDec(nn.Module):
    """The official EncDec: conv1_1 padded by 100, VGG16 blocks, fc6 7x7 unpadded, fc7 1x1, score layers, three
    bias-free transposed convolutions, crops; ``rule`` ``official`` (offset of the heights, both axes) or
    ``aligned`` (5, 9, 31)."""

    def __init__(self, div: int = 1, rule: str = "official"):
        super().__init__()
        c = lambda n: max(1, n // div)  # noqa: E731
        self.rule = rule
        self.downsample1 = _block(1, c(64), 2, first_pad=100)
        self.downsample2 = _block(c(64), c(128), 2)
        self.downsample3 = _block(c(128), c(256), 3)
        self.downsample4 = _block(c(256), c(512), 3)
        self.downsample5 = _block(c(512), c(512), 3)
        self.fc6 = nn.Sequential(nn.Conv2d(c(512), c(4096), 7), nn.ReLU(), nn.Dropout2d())
        self.fc7 = nn.Sequential(nn.Conv2d(c(4096), c(4096), 1), nn.ReLU(), nn.Dropout2d())
        self.score_pool3 = nn.Conv2d(c(256), 1, 1)
        self.score_pool4 = nn.Conv2d(c(512), 1, 1)
        self.score_final = nn.Conv2d(c(4096), 1, 1)
        self.upsample_make_16s = nn.ConvTranspose2d(1, 1, 4, stride=2, bias=False)
        self.upsample_make_8s = nn.ConvTranspose2d(1, 1, 4, stride=2, bias=False)
        self.upsample_to_score = nn.ConvTranspose2d(1, 1, 16, stride=8, bias=False)

    def crop(self, big: torch.Tensor, like: torch.Tensor, index: int) -> torch.Tensor:
        h, w = like.shape[2], like.shape[3]
        c = (big.shape[2] - h) // 2 if self.rule == "official" else ALIGNED[index]
        return big[:, :, c:c + h, c:c + w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.downsample3(self.downsample2(self.downsample1(x)))
        p4 = self.downsample4(p3)
        f = self.fc7(self.fc6(self.downsample5(p4)))
        s = self.upsample_make_16s(self.score_final(f))
        s = s + self.crop(self.score_pool4(p4), s, 0)
        s = self.upsample_make_8s(s)
        s = s + self.crop(self.score_pool3(p3), s, 1)
        return self.crop(self.upsample_to_score(s), x, 2)


def ref_crop_offsets(h: int) -> tuple[int, int, int]:
    """Official offsets (score_pool4, score_pool3, final) for input height ``h``, from the size arithmetic:
    h1 = h + 198, five ceil-halving pools, fc6 removes 6, the deconvolutions give 2f + 2, 2 s16 + 2, 8 (s8 - 1) + 16."""
    p = h + 198
    pools = []
    for _ in range(5):
        p = math.ceil(p / 2)
        pools.append(p)
    f = pools[4] - 6
    s16 = 2 * f + 2
    s8 = 2 * s16 + 2
    out = 8 * (s8 - 1) + 16
    return (pools[3] - s16) // 2, (pools[2] - s8) // 2, (out - h) // 2


def ref_soft_ce(scores: torch.Tensor, and_maps: torch.Tensor) -> torch.Tensor:
    """-(1 / HW) sum over pixels of sum_k AND_k log softmax_k(scores) (softmax over the K present classes)."""
    return -(and_maps * torch.log_softmax(scores, dim=0)).sum(dim=0).mean()


def ref_poly_lr(base: float, step: int, max_step: int, power: float = 0.9) -> float:
    """PolyOptimizer: the lr is updated before each step while ``step < max_step`` and then stays."""
    return base * (1 - min(step, max_step - 1) / max_step) ** power


def ref_maps_to_mask(maps: np.ndarray, keys: np.ndarray, thres: float) -> np.ndarray:
    """eval.py: prepend a constant channel ``thres`` (cast to the maps' dtype), argmax, map through keys + 1."""
    labels = np.pad(np.asarray(keys) + 1, (1, 0), mode="constant")
    cams = np.pad(maps, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=thres)
    return labels[np.argmax(cams, axis=0)].astype(np.uint8)


def ref_iou_metric(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int = 20) -> dict:
    """The official IOUMetric: hist over (gt, pred) with 0 <= gt < n and pred < n, nanmean of IoU/precision/recall."""
    hist = np.zeros((num_classes, num_classes))
    for gt, pred in pairs:
        gt, pred = gt.astype(np.int64).ravel(), pred.astype(np.int64).ravel()
        keep = (gt >= 0) & (gt < num_classes) & (pred < num_classes)
        hist += np.bincount(num_classes * gt[keep] + pred[keep], minlength=num_classes ** 2).reshape(num_classes,
                                                                                                     num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        diag = np.diag(hist)
        iou = diag / (hist.sum(1) + hist.sum(0) - diag)
        recall = diag / hist.sum(1)
        precision = diag / hist.sum(0)
    return {"iou": iou, "precision": precision, "recall": recall, "miou": np.nanmean(iou),
            "mean_precision": np.nanmean(precision), "mean_recall": np.nanmean(recall)}

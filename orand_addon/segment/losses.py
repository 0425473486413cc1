"""Segmentation losses (registry ``LOSSES``), all ignoring label 255.

* ``ce``: pixel-wise cross-entropy averaged over the labelled pixels (the DeepLab recipe).
* ``balanced-ls-ce``: label-smoothed, class-balanced cross-entropy. Each pixel's loss is
  ``(1 - eps) * -log p[y] + eps * mean_c(-log p[c])`` (label smoothing: the cross-entropy against the target
  ``(1 - eps) onehot(y) + eps / C``), weighted by its class weight ``w[y] = median_freq / freq[y]``
  (median-frequency balancing over the classes present in the training masks, capped at ``MAX_WEIGHT``),
  normalised by the sum of the weights.

  This is **our reading** of the paper's segmentation loss ``L_ls,bce`` (its Fig. 2: "label smoothing" and
  "balanced cross-entropy"); the paper's text defining it could not be checked and the release has no
  segmentation code, so the balancing (median frequency over the pseudo-masks), the smoothing (uniform, eps 0.1)
  and the normalisation are the common choices, not confirmed ones. ``--recipe paper`` uses it.

Both are a sum over pixels divided by a weight that carries no gradient (the number of labelled pixels, the sum of
their class weights); :meth:`parts` returns the two, so that under DDP the training step divides every rank's sum by
the weight of the *global* batch (summed over the ranks) and the mean of the ranks' gradients is exactly the
gradient of one process on the whole batch (:func:`orand_addon.segment.train.train_step`).

>>> logits = torch.zeros(1, 3, 1, 2); target = torch.tensor([[[0, 255]]])
>>> round(float(build_loss("ce", 3)(logits, target)), 4)  # log(3)
1.0986
>>> build_loss("dice", 3)
Traceback (most recent call last):
...
orand_addon.errors.OrandError: unknown loss 'dice'; valid: ce, balanced-ls-ce
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OrandError
from ..registries import SEG_LOSSES, check_choice, implementations

IGNORE = 255
MAX_WEIGHT = 10.0


def median_frequency_weights(counts: Sequence[int], max_weight: float = MAX_WEIGHT) -> np.ndarray:
    """``median(freq) / freq[c]`` over classes with pixels (others 1), capped at ``max_weight``.

    >>> median_frequency_weights([100, 10, 0, 40]).tolist()
    [0.4, 4.0, 1.0, 1.0]
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.ones_like(counts)
    if present.any():
        freq = counts / counts.sum()
        weights[present] = np.median(freq[present]) / freq[present]
    return np.minimum(weights, max_weight)


class CrossEntropy(nn.Module):
    """Mean CE over pixels whose label is not 255 (0 when a batch has none)."""

    min_weight = 1.0  # the weight is a pixel count: a batch without labels divides by 1

    def parts(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sum of the pixel losses, number of labelled pixels)``; the loss is their ratio."""
        valid = target != IGNORE
        return F.cross_entropy(logits.float(), target.long(), ignore_index=IGNORE, reduction="sum"), valid.sum()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total, weight = self.parts(logits, target)
        return total / weight.clamp(min=self.min_weight)


class BalancedSmoothedCE(nn.Module):
    """Label-smoothed CE with per-class weights (see the module docstring)."""

    def __init__(self, class_weights: Sequence[float], smoothing: float = 0.1):
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise OrandError(f"label smoothing {smoothing} must be in [0, 1)")
        self.smoothing = smoothing
        self.register_buffer("class_weights", torch.as_tensor(np.asarray(class_weights), dtype=torch.float32))

    min_weight = 1e-12

    def parts(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weighted sum of the pixel losses, sum of the weights)``; the loss is their ratio."""
        logp = F.log_softmax(logits.float(), dim=1)
        valid = target != IGNORE
        safe = torch.where(valid, target, torch.zeros_like(target)).long()
        nll = -logp.gather(1, safe[:, None])[:, 0]
        uniform = -logp.mean(dim=1)
        per_pixel = (1 - self.smoothing) * nll + self.smoothing * uniform
        w = self.class_weights[safe] * valid
        return (w * per_pixel).sum(), w.sum()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total, weight = self.parts(logits, target)
        return total / weight.clamp(min=self.min_weight)


def _ce(num_classes: int, counts: Sequence[int] | None, smoothing: float) -> nn.Module:
    return CrossEntropy()


def _balanced(num_classes: int, counts: Sequence[int] | None, smoothing: float) -> nn.Module:
    weights = median_frequency_weights(counts) if counts is not None else np.ones(num_classes)
    return BalancedSmoothedCE(weights, smoothing)


LOSSES: dict[str, Callable[[int, Sequence[int] | None, float], nn.Module]] = implementations(SEG_LOSSES, {
    "ce": _ce,
    "balanced-ls-ce": _balanced,
})


def build_loss(name: str, num_classes: int, class_counts: Sequence[int] | None = None,
               smoothing: float = 0.1) -> nn.Module:
    """The loss ``name``; ``class_counts`` (pixels per class in the training masks) feed the class balancing."""
    return LOSSES[check_choice(SEG_LOSSES, name, "loss")](num_classes, class_counts, smoothing)

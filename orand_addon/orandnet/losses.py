"""Training losses of ORANDNet: a plain-dict registry, one factory.

Every loss takes the scores (logits) of the K present classes of ONE image, ``(K, H, W)``, and that image's AND
maps ``(K, H, W)`` (the targets, in [0, 1]), and returns a scalar (mean over pixels). Computed in float32.

* ``official``: the paper's soft cross-entropy, a softmax over the image's present classes against the raw AND
  maps, exactly ``F.cross_entropy(logits[None], and_maps[None])``. An image with a single class gives a softmax of
  one element, so exactly zero loss and zero gradient: about half of VOC ``train_aug`` teaches nothing.
* ``bg-softmax``: the official loss with one more logit, a background fixed at 0, whose target is
  ``1 - max_k AND_k``. A single-class image becomes a 2-way softmax (class vs background) with target
  ``(AND, 1 - AND)``, so it learns; and a score above 0 now means "more likely this class than background", which
  is what inference's ReLU keeps (with the official loss the zero of the scores is arbitrary: softmax ignores a
  constant shift).
* ``bce``: per class-map binary cross-entropy of ``sigmoid(score)`` against AND, every map on its own.

Inference turns scores into maps the way the loss reads them (:data:`SCORE_TO_MAP`), then divides each map by
its own maximum: ``official`` keeps the positive part of the scores (ReLU, as the official code); ``bce`` and
``bg-softmax`` take ``sigmoid(score)``, the probability the loss fits to AND (for ``bg-softmax``: of the class
against the background logit 0). A ReLU there would keep only pixels whose AND estimate exceeds 1/2.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..registries import ORANDNET_LOSSES, check_choice, implementations

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def official_loss(logits: torch.Tensor, and_maps: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy across the present classes (the official ORANDNet loss).

    >>> logits = torch.tensor([[[2.0]], [[0.0]]]); target = torch.tensor([[[1.0]], [[0.5]]])
    >>> round(official_loss(logits, target).item(), 4)  # -(1*log p0 + 0.5*log p1), p = softmax(2, 0)
    1.1904
    >>> official_loss(torch.randn(1, 3, 3), torch.rand(1, 3, 3)).item() == 0  # one class: nothing to learn
    True
    """
    return F.cross_entropy(logits.float()[None], and_maps.float()[None])


def bg_softmax_loss(logits: torch.Tensor, and_maps: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy over [background logit 0, class logits] against [1 - max AND, AND maps].

    >>> logits = torch.tensor([[[0.0]]]); target = torch.tensor([[[0.25]]])
    >>> round(bg_softmax_loss(logits, target).item(), 4)  # -(0.75*log 0.5 + 0.25*log 0.5)
    0.6931
    """
    logits, and_maps = logits.float(), and_maps.float()
    bg_logit = torch.zeros_like(logits[:1])
    bg_target = 1 - and_maps.amax(dim=0, keepdim=True).clamp(0, 1)
    return F.cross_entropy(torch.cat([bg_logit, logits])[None], torch.cat([bg_target, and_maps])[None])


def bce_loss(logits: torch.Tensor, and_maps: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits of every class map against its AND map (mean over maps and pixels).

    >>> round(bce_loss(torch.zeros(1, 2, 2), torch.ones(1, 2, 2)).item(), 4)  # -log sigmoid(0)
    0.6931
    """
    return F.binary_cross_entropy_with_logits(logits.float(), and_maps.float().clamp(0, 1))


LOSSES: dict[str, LossFn] = implementations(ORANDNET_LOSSES, {
    "official": official_loss,
    "bg-softmax": bg_softmax_loss,
    "bce": bce_loss,
})
DEFAULT_LOSS = "official"

# how the scores of a model trained with each loss become maps (before the per-map max normalisation)
SCORE_TO_MAP: dict[str, str] = {"official": "relu", "bg-softmax": "sigmoid", "bce": "sigmoid"}


def score_to_map(loss: str) -> str:
    """``relu`` or ``sigmoid`` for a model trained with ``loss`` (unknown or missing: ``relu``, the official rule).

    >>> score_to_map("bce"), score_to_map("official"), score_to_map(None)
    ('sigmoid', 'relu', 'relu')
    """
    return SCORE_TO_MAP.get(loss or DEFAULT_LOSS, "relu")


def get_loss(name: str) -> LossFn:
    """The loss called ``name``; an unknown name lists the valid ones.

    >>> get_loss("official") is official_loss
    True
    >>> get_loss("dice")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: unknown loss 'dice'; valid: official, bg-softmax, bce
    """
    return LOSSES[check_choice(ORANDNET_LOSSES, name, "loss")]

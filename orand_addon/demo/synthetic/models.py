"""The two classifiers of the synthetic benchmark, both trained from image-level labels only.

- :class:`SmallResNet` (``cnn``): a small ResNet (output stride 4), global average pooling and a bias-free 1x1
  classifier. CAM as in IRN: the classifier weights applied to the last feature map, ReLU.
- :class:`SmallViT` (``vit``): MCTformer-v1 in miniature: a small vision transformer over 8x8 patch tokens with
  one class token per class; class token k's output gives logit k. CAM: class token k's attention to the patch
  tokens, averaged over heads and blocks (MCTformer's class-to-patch attention). The alternative, a class head
  applied to GAP-pooled patch tokens (patch-token CAM), was tried and rejected: trained from scratch on this
  data, global attention moves the class evidence onto context tokens and those maps come out inverted.

Both expose ``forward(x) -> logits (B, K)`` and ``cam(x) -> (B, K, h, w)`` (before upsampling/normalisation).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import OrandError


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs + BN, identity or 1x1 projection shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class SmallResNet(nn.Module):
    """A small ResNet of output stride 4 (last block dilated, as IRN's ResNet-50 keeps its last stage at stride
    16), GAP + bias-free 1x1 classifier: IRN's CAM network in miniature.

    >>> net = SmallResNet(num_classes=6)
    >>> net(torch.zeros(2, 3, 64, 80)).shape, net.cam(torch.zeros(1, 3, 64, 80)).shape
    (torch.Size([2, 6]), torch.Size([1, 6, 16, 20]))
    """

    def __init__(self, num_classes: int, widths: tuple[int, int, int, int] = (16, 32, 48, 64)):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(BasicBlock(w0, w1, 2), BasicBlock(w1, w2), BasicBlock(w2, w3, dilation=2))
        self.classifier = nn.Conv2d(w3, num_classes, 1, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).mean(dim=(2, 3), keepdim=True)
        return self.classifier(f).flatten(1)

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """IRN's CAM: ``relu(conv1x1(features, W))``, (B, K, H/8, W/8)."""
        return F.relu(self.classifier(self.features(x)))


class Attention(nn.Module):
    """Multi-head self-attention that also returns its attention weights (B, heads, N, N)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, dim)), attn


class Block(nn.Module):
    """Pre-norm transformer block (attention + GELU MLP, residuals)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, attn = self.attn(self.norm1(x))
        x = x + y
        return x + self.mlp(self.norm2(x)), attn


def conv_stem(dim: int, extra: int = 0) -> nn.Sequential:
    """8x8-patch embedding as three strided 3x3 convs (a ViT-Hybrid stem: same tokens, trains from scratch),
    plus ``extra`` 3x3 convs at the token grid."""
    layers: list[nn.Module] = []
    for cin, cout, stride in ((3, dim // 4, 2), (dim // 4, dim // 2, 2), (dim // 2, dim, 2)) + ((dim, dim, 1),) * extra:
        layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Conv2d(dim, dim, 1))


class SmallViT(nn.Module):
    """MCTformer in miniature: one class token per class plus 8x8 patch tokens (learned 2-D position embedding,
    interpolated for other sizes), pre-norm transformer blocks; class token k's output gives logit k.

    >>> net = SmallViT(num_classes=6, grid=(8, 10))
    >>> net(torch.zeros(2, 3, 64, 80)).shape, net.cam(torch.zeros(1, 3, 96, 80)).shape
    (torch.Size([2, 6]), torch.Size([1, 6, 12, 10]))
    """

    patch = 8

    def __init__(self, num_classes: int, grid: tuple[int, int], dim: int = 64, depth: int = 3, heads: int = 4,
                 mlp_ratio: int = 2, stem_extra: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.grid = tuple(grid)
        self.embed = conv_stem(dim, stem_extra)
        self.pos = nn.Parameter(torch.zeros(1, dim, *self.grid))
        self.cls = nn.Parameter(torch.zeros(1, num_classes, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head_weight = nn.Parameter(torch.zeros(num_classes, dim))
        self.head_bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.trunc_normal_(self.head_weight, std=0.02)

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        """Final tokens (B, K + h*w, dim), every block's attention, and the patch grid (h, w)."""
        f = self.embed(x)
        h, w = f.shape[-2:]
        pos = self.pos if (h, w) == self.grid else F.interpolate(self.pos, size=(h, w), mode="bicubic", align_corners=False)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), (f + pos).flatten(2).transpose(1, 2)], dim=1)
        attns = []
        for block in self.blocks:
            t, attn = block(t)
            attns.append(attn)
        return self.norm(t), attns, (h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, _, _ = self.run(x)
        return (t[:, : self.num_classes] * self.head_weight).sum(-1) + self.head_bias

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """MCTformer's class-to-patch attention, (B, K, H/8, W/8): class token k's attention to every patch token,
        averaged over heads and blocks. (MCTformer's optional refinement by patch-to-patch affinity is not used:
        in a small ViT trained from scratch that attention is dominated by a few sink tokens.)"""
        _, attns, (h, w) = self.run(x)
        attn = torch.stack(attns).mean(dim=(0, 2))  # (B, N, N)
        k = self.num_classes
        return attn[:, :k, k:].reshape(x.shape[0], k, h, w)

def _cnn(num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    return SmallResNet(num_classes)


def _vit(num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    p = SmallViT.patch
    return SmallViT(num_classes, (math.ceil(image_size[0] / p), math.ceil(image_size[1] / p)))


CLASSIFIERS: dict[str, Callable[[int, tuple[int, int]], nn.Module]] = {"cnn": _cnn, "vit": _vit}


def build_classifier(name: str, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    """A fresh classifier by registry name.

    >>> build_classifier("mlp", 6, (64, 64))
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: unknown classifier 'mlp'; valid: cnn, vit
    """
    if name not in CLASSIFIERS:
        raise OrandError(f"unknown classifier {name!r}; valid: {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[name](num_classes, image_size)

"""DeepLab-v1 LargeFOV on ResNet-38: the segmentation model of the paper (and of PSA / SEAM).

The backbone is the wide ResNet-38 "model A1" of Wu et al. as PSA and SEAM define it (``network/resnet38d.py``),
with their module names, so their converted ImageNet state dicts load by name (:mod:`orand_addon.pretrained.resnet38`
also reads the original mxnet ``.params`` file). Pre-activation blocks: ``conv1a`` (3x3, 64) at full resolution;
stages b2 (128), b3 (256), b4 (512) each start with a stride-2 block; b5 (1024) keeps stride 8 with dilation 2;
two bottleneck blocks b6 (2048, dropout 0.3) and b7 (4096, dropout 0.5) with dilation 4; ``bn7`` + ReLU. Output
stride 8, 4096 channels, 105,070,912 parameters.

The LargeFOV head is the one SEAM's DeepLab-v1 recipe trains on it (YudeWang/semantic-segmentation-codebase,
``deeplabv1``): a 3x3 convolution with dilation 12 (the large field of view) to 512 channels, BatchNorm, ReLU, a
1x1 convolution 512 -> 512, BatchNorm, ReLU, dropout 0.5, and a 1x1 classifier. As there, the backbone's
BatchNorm stays frozen and so does ``conv1a`` when it starts from ImageNet weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FOV_DILATION = 12
HEAD_CHANNELS = 512


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


class ResBlock(nn.Module):
    """Pre-activation block: BN-ReLU, then a 3x3 (stride, ``first_dilation``) and a 3x3 (``dilation``) conv; the
    shortcut is a 1x1 conv of the BN-ReLU output when the shape changes."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1, first_dilation: int | None = None,
                 dilation: int = 1):
        super().__init__()
        first = dilation if first_dilation is None else first_dilation
        self.same_shape = in_ch == out_ch and stride == 1
        self.bn_branch2a = _bn(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=first, dilation=first, bias=False)
        self.bn_branch2b1 = _bn(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(act)
        out = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(act))))
        return shortcut + out


class ResBlockBottleneck(nn.Module):
    """Pre-activation bottleneck: 1x1 to out/4, 3x3 (``dilation``) to out/2, 1x1 to out, dropout before the last
    two convolutions (as PSA); 1x1 shortcut of the BN-ReLU output."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn_branch2a = _bn(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, stride, bias=False)
        self.bn_branch2b1 = _bn(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = _bn(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn_branch2a(x))
        out = F.relu(self.bn_branch2b1(self.conv_branch2a(act)))
        out = F.relu(self.bn_branch2b2(self.conv_branch2b1(self.dropout_2b1(out))))
        return self.conv_branch1(act) + self.conv_branch2b2(self.dropout_2b2(out))


class ResNet38(nn.Module):
    """ResNet-38 (PSA/SEAM ``resnet38d``) at output stride 8: (B, 3, H, W) -> (B, 4096, ⌈H/8⌉, ⌈W/8⌉).

    >>> with torch.device("meta"):
    ...     net = ResNet38()
    >>> sum(p.numel() for p in net.parameters()), net(torch.empty(1, 3, 321, 321, device="meta")).shape
    (105070912, torch.Size([1, 4096, 41, 41]))
    """

    out_channels = 4096

    def __init__(self):
        super().__init__()
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.b2 = ResBlock(64, 128, 128, stride=2)
        self.b2_1 = ResBlock(128, 128, 128)
        self.b2_2 = ResBlock(128, 128, 128)
        self.b3 = ResBlock(128, 256, 256, stride=2)
        self.b3_1 = ResBlock(256, 256, 256)
        self.b3_2 = ResBlock(256, 256, 256)
        self.b4 = ResBlock(256, 512, 512, stride=2)
        for i in range(1, 6):
            setattr(self, f"b4_{i}", ResBlock(512, 512, 512))
        self.b5 = ResBlock(512, 512, 1024, first_dilation=1, dilation=2)
        self.b5_1 = ResBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = ResBlock(1024, 512, 1024, dilation=2)
        self.b6 = ResBlockBottleneck(1024, 2048, dilation=4, dropout=0.3)
        self.b7 = ResBlockBottleneck(2048, 4096, dilation=4, dropout=0.5)
        self.bn7 = _bn(4096)

    BLOCKS = ("b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2", "b4", "b4_1", "b4_2", "b4_3", "b4_4", "b4_5", "b5", "b5_1",
              "b5_2", "b6", "b7")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1a(x)
        for name in self.BLOCKS:
            x = getattr(self, name)(x)
        return F.relu(self.bn7(x))

    def freeze_stem(self) -> None:
        """Keep ``conv1a`` fixed (PSA/SEAM train everything else from the ImageNet weights)."""
        self.conv1a.weight.requires_grad_(False)


class LargeFOV(nn.Module):
    """DeepLab-v1 LargeFOV head (SEAM's ``deeplabv1``): 3x3 dilation-12 conv -> 512, BN, ReLU, 1x1 -> 512, BN,
    ReLU, dropout 0.5, 1x1 -> classes."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = HEAD_CHANNELS,
                 dilation: int = FOV_DILATION):
        super().__init__()
        self.conv_fov = nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_fov = nn.BatchNorm2d(channels, momentum=0.0003)
        self.conv_fov2 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn_fov2 = nn.BatchNorm2d(channels, momentum=0.0003)
        self.dropout = nn.Dropout(0.5)
        self.cls_conv = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_fov(self.conv_fov(x)))
        x = F.relu(self.bn_fov2(self.conv_fov2(x)))
        return self.cls_conv(self.dropout(x))


def build_deeplabv1_resnet38(num_classes: int) -> tuple[nn.Module, nn.Module]:
    """``(backbone, head)`` of DeepLab-v1 LargeFOV on ResNet-38 (randomly initialised).

    >>> with torch.device("meta"):
    ...     backbone, head = build_deeplabv1_resnet38(21)
    >>> head(backbone(torch.empty(1, 3, 33, 41, device="meta"))).shape
    torch.Size([1, 21, 5, 6])
    """
    backbone = ResNet38()
    return backbone, LargeFOV(backbone.out_channels, num_classes)

"""Segmentation networks behind one factory: DeepLab-v2 (ASPP on a dilated ResNet), torchvision DeepLabV3, and
DeepLab-v1 LargeFOV on ResNet-38 (the paper's, :mod:`.resnet38`).

Every model is a :class:`SegNet` with a ``backbone`` (ImageNet-initialisable, learning rate 1x) and a ``head``
(10x), returning logits at the input resolution. Backbones run at output stride 8 (the WSSS standard).

>>> "deeplabv1-resnet38" in MODELS and "deeplabv2-resnet101" in MODELS
True
>>> build_model("unet", 21)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
orand_addon.errors.OrandError: unknown model 'unet'; valid: deeplabv2-resnet101, deeplabv2-resnet50, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OrandError
from ..registries import SEG_MODELS, check_choice, implementations
from .resnet38 import build_deeplabv1_resnet38

ASPP_DILATIONS = (6, 12, 18, 24)
BN_MODES = ("auto", "frozen", "train")


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without pooling/fc; parameter names match torchvision's state dicts."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(resnet, name))
        self.out_channels = resnet.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ASPPv2(nn.Module):
    """DeepLab-v2 head: parallel 3x3 convolutions with dilations 6/12/18/24 straight to class scores, summed."""

    def __init__(self, in_channels: int, num_classes: int, dilations: tuple[int, ...] = ASPP_DILATIONS):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


class SegNet(nn.Module):
    """``backbone`` + ``head``; ``forward`` returns logits (B, C, H, W) at the input size.

    ``frozen_bn``: batch-norm layers of the backbone stay in eval mode with fixed affine parameters (the DeepLab
    recipe with small batches on ImageNet weights).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, name: str, num_classes: int, arch: str):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.name = name
        self.num_classes = num_classes
        self.arch = arch
        self.frozen_bn = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if isinstance(feats, dict):  # torchvision IntermediateLayerGetter
            feats = feats["out"]
        logits = self.head(feats)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def freeze_bn(self) -> None:
        self.frozen_bn = True
        for m in self.backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "SegNet":
        super().train(mode)
        if self.frozen_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def _dilate_basic_layer(layer: nn.Sequential, dilation: int) -> None:
    """Turn a stride-2 layer of BasicBlocks into a stride-1 layer with dilated 3x3 convolutions."""
    for m in layer.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)
            if m.kernel_size == (3, 3):
                m.dilation = (dilation, dilation)
                m.padding = (dilation, dilation)


def _resnet(arch: str, output_stride: int = 8) -> nn.Module:
    import torchvision

    factory = getattr(torchvision.models, arch)
    if arch in ("resnet18", "resnet34"):  # BasicBlock refuses replace_stride_with_dilation: dilate by hand
        net = factory(weights=None)
        if output_stride == 8:
            _dilate_basic_layer(net.layer3, 2)
        _dilate_basic_layer(net.layer4, 4 if output_stride == 8 else 2)
        return net
    return factory(weights=None, replace_stride_with_dilation=[False, output_stride == 8, True])


def _deeplabv2(arch: str, output_stride: int = 8) -> Callable[[int], tuple[nn.Module, nn.Module]]:
    def build(num_classes: int) -> tuple[nn.Module, nn.Module]:
        backbone = ResNetBackbone(_resnet(arch, output_stride))
        # at output stride 16 the dilations are halved: the same field of view in pixels
        dilations = tuple(d * 8 // output_stride for d in ASPP_DILATIONS)
        return backbone, ASPPv2(backbone.out_channels, num_classes, dilations)

    return build


def _deeplabv2_lite(arch: str) -> Callable[[int], tuple[nn.Module, nn.Module]]:
    """DeepLab-v2 on an EfficientNet-Lite backbone at output stride 16 (its 1280-channel head features; ASPP
    dilations halved as for ResNet at OS 16). The backbone takes ImageNet-normalised images like the others."""
    def build(num_classes: int) -> tuple[nn.Module, nn.Module]:
        from ..pretrained.efficientnet import LiteBackbone

        backbone = LiteBackbone(arch, output_stride=16)
        return backbone, ASPPv2(backbone.out_channels, num_classes, tuple(d // 2 for d in ASPP_DILATIONS))

    return build


def _deeplabv3(arch: str) -> Callable[[int], tuple[nn.Module, nn.Module]]:
    def build(num_classes: int) -> tuple[nn.Module, nn.Module]:
        from torchvision.models import segmentation

        factory = getattr(segmentation, f"deeplabv3_{arch}")
        net = factory(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        return net.backbone, net.classifier

    return build


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[int], tuple[nn.Module, nn.Module]]
    arch: str
    description: str


MODELS: dict[str, ModelSpec] = implementations(SEG_MODELS, {
    "deeplabv2-resnet101": ModelSpec(_deeplabv2("resnet101"), "resnet101",
                                     "DeepLab-v2, ASPP 6/12/18/24, OS 8 (WSSS standard)"),
    "deeplabv2-resnet50": ModelSpec(_deeplabv2("resnet50"), "resnet50", "DeepLab-v2 on ResNet-50, OS 8"),
    "deeplabv2-resnet34": ModelSpec(_deeplabv2("resnet34"), "resnet34", "light DeepLab-v2 on ResNet-34, OS 8"),
    "deeplabv2-resnet18": ModelSpec(_deeplabv2("resnet18"), "resnet18", "light DeepLab-v2 on ResNet-18, OS 8"),
    "deeplabv2-resnet18-os16": ModelSpec(_deeplabv2("resnet18", 16), "resnet18",
                                         "lightest: ResNet-18 at OS 16, ASPP 3/6/9/12 (CPU demo, ~2.5x cheaper)"),
    "deeplabv2-effnet-lite0": ModelSpec(_deeplabv2_lite("effnet-lite0"), "effnet-lite0",
                                        "DeepLab-v2 on ImageNet EfficientNet-Lite0, OS 16"),
    "deeplabv2-effnet-lite2": ModelSpec(_deeplabv2_lite("effnet-lite2"), "effnet-lite2",
                                        "DeepLab-v2 on ImageNet EfficientNet-Lite2, OS 16"),
    "deeplabv3-resnet101": ModelSpec(_deeplabv3("resnet101"), "resnet101", "torchvision DeepLabV3, OS 8"),
    "deeplabv3-resnet50": ModelSpec(_deeplabv3("resnet50"), "resnet50", "torchvision DeepLabV3, OS 8"),
    "deeplabv1-resnet38": ModelSpec(build_deeplabv1_resnet38, "resnet38",
                                    "DeepLab-v1 LargeFOV on ResNet-38 (PSA/SEAM), OS 8 (the paper's)"),
})


def _pretrained_state(arch: str, spec: str) -> dict | None:
    if arch == "resnet38":  # PSA/SEAM weights: mxnet .params or a PSA-key state dict
        from ..pretrained.resnet38 import load_resnet38_state

        return load_resnet38_state(spec)
    from ..pretrained import load_pretrained_state

    return load_pretrained_state(arch, spec)


def check_pretrained(name: str, spec: str) -> None:
    """Fail early, with the one line saying how to get them, when the ImageNet weights a ResNet-38 model asks for
    are not there (the torchvision backbones are checked when they load)."""
    if name in MODELS and MODELS[name].arch == "resnet38" and spec == "imagenet":
        from ..pretrained.resnet38 import find_resnet38_file

        find_resnet38_file()


def _load_backbone(backbone: nn.Module, arch: str, spec: str) -> None:
    state = _pretrained_state(arch, spec)
    if state is None:
        return
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if wrong or missing:
        example = (wrong or missing)[0]
        raise OrandError(
            f"--pretrained {spec}: the weights do not fit a {arch} backbone "
            f"({len(wrong)} shape mismatches, {len(missing)} missing, e.g. {example})"
        )
    backbone.load_state_dict(state, strict=False)


def build_model(name: str, num_classes: int, pretrained: str = "none", bn: str = "auto") -> SegNet:
    """The model ``name`` with ``num_classes`` outputs; backbone weights per ``pretrained`` (imagenet|PATH|none).

    ``bn``: ``frozen`` keeps backbone batch-norm fixed, ``train`` updates it, ``auto`` freezes it when the
    backbone starts from pretrained weights and trains it from scratch otherwise.

    >>> net = build_model("deeplabv2-resnet18", 3)
    >>> net(torch.zeros(1, 3, 40, 48)).shape, net.frozen_bn
    (torch.Size([1, 3, 40, 48]), False)
    """
    check_choice(SEG_MODELS, name, "model")
    if bn not in BN_MODES:
        raise OrandError(f"unknown batch-norm mode {bn!r}; valid: {', '.join(BN_MODES)}")
    spec = MODELS[name]
    backbone, head = spec.build(num_classes)
    if pretrained not in ("none", "", None):
        _load_backbone(backbone, spec.arch, pretrained)
        if hasattr(backbone, "freeze_stem"):  # ResNet-38: conv1a stays as trained on ImageNet (PSA/SEAM)
            backbone.freeze_stem()
    net = SegNet(backbone, head, name, num_classes, spec.arch)
    if bn == "frozen" or (bn == "auto" and pretrained not in ("none", "", None)):
        net.freeze_bn()
    return net


def param_groups(net: SegNet, weight_decay: float, head_lr_mult: float = 10.0) -> list[dict]:
    """SGD parameter groups: backbone at ``lr_mult`` 1, head at ``head_lr_mult`` (the trainer sets ``lr``).

    >>> [(g["name"], g["lr_mult"]) for g in param_groups(build_model("deeplabv2-resnet18", 3), 5e-4)]
    [('backbone', 1.0), ('head', 10.0)]
    """
    groups = []
    for name, module, mult in (("backbone", net.backbone, 1.0), ("head", net.head, head_lr_mult)):
        params = [p for p in module.parameters() if p.requires_grad]
        groups.append({"params": params, "name": name, "lr_mult": mult, "weight_decay": weight_decay})
    return groups

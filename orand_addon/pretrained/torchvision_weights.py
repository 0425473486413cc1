"""ImageNet weights of torchvision's weights API (``torchvision.models.VGG16_Weights.IMAGENET1K_V1`` ...): the
URLs come from torchvision itself, so the cached files are exactly the ones ``torchvision.models.vgg16(weights=...)``
downloads and finds.

``also``: names of the same weights in older torchvision releases (``resnet50-19c8e357.pth``, what IRN's
``torchvision.models.resnet50(pretrained=True)`` cached) and, for ResNet-50/101, the later ``IMAGENET1K_V2``
files; a cache holding any of them is used as it is.
"""

from __future__ import annotations

from . import WeightsFile


def _url(enum: str, member: str = "IMAGENET1K_V1") -> str:
    import torchvision.models

    return getattr(torchvision.models, enum)[member].url


def vgg16() -> WeightsFile:
    return WeightsFile("vgg16", _url("VGG16_Weights"))


def resnet18() -> WeightsFile:
    return WeightsFile("resnet18", _url("ResNet18_Weights"), also=("resnet18-5c106cde.pth",))


def resnet34() -> WeightsFile:
    return WeightsFile("resnet34", _url("ResNet34_Weights"), also=("resnet34-333f7ec4.pth",))


def resnet50() -> WeightsFile:
    return WeightsFile("resnet50", _url("ResNet50_Weights"), also=("resnet50-19c8e357.pth", "resnet50-11ad3fa6.pth"))


def resnet101() -> WeightsFile:
    return WeightsFile("resnet101", _url("ResNet101_Weights"),
                       also=("resnet101-5d3b4d8f.pth", "resnet101-cd907fc2.pth"))

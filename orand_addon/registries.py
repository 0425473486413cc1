"""Every named choice of the package, one registry per concept: a plain dict ``name -> description``, importable
without torch or numpy (the command line builds its choices and help from these, so ``--help`` stays fast).

The implementations live next to their code (the losses in :mod:`orand_addon.orandnet.losses`, the models in
:mod:`orand_addon.segment.models`, ...), each a dict built by :func:`implementations`, which refuses (at import,
as a bug) a table whose names differ from the registry's. :func:`check_choice` is the one error for an unknown
name: it lists the valid ones.

>>> check_choice(ORANDNET_LOSSES, "dice", "loss")
Traceback (most recent call last):
...
orand_addon.errors.OrandError: unknown loss 'dice'; valid: official, bg-softmax, bce
"""

from __future__ import annotations

from typing import Mapping, TypeVar

from .errors import OrandError

T = TypeVar("T")

CAM_FORMATS: dict[str, str] = {
    "irn": "IRN make_cam: keys, cam (stride 4, torch), high_res (numpy)",
    "amn": "AMN make_cam: as irn with a background channel 0",
    "orandnet": "official ORANDNet output (<id>_1.npy): keys, cam (numpy), high_res",
    "mctformer": "{class: (H, W)} with 0-based class keys (MCTformer, WeakTr, SEAM, PSA)",
    "crf-dict": "{k: (H, W)} with key 0 background and k = class + 1 (PSA/SEAM CRF dumps)",
    "toco": "ToCo: keys (numpy), high_res only",
    "clip-es": "CLIP-ES: keys, attn_highres (float16)",
    "npz": "np.savez with arrays keys and high_res (and/or cam); no pickle",
}

ORANDNET_LOSSES: dict[str, str] = {
    "official": "soft cross-entropy across the image's classes (single-class images give zero loss)",
    "bg-softmax": "the same with a background logit fixed at 0 (target 1 - max AND)",
    "bce": "per-map binary cross-entropy against AND",
}

ORANDNET_ARCHS: dict[str, str] = {
    "fcn8s": "classic FCN-8s (pad 100, as the paper)",
    "fcn8s-same": "pad to a multiple of 32, ~2x faster",
}

SEG_MODELS: dict[str, str] = {
    "deeplabv2-resnet101": "DeepLab-v2, ASPP 6/12/18/24, OS 8 (WSSS standard)",
    "deeplabv2-resnet50": "DeepLab-v2 on ResNet-50, OS 8",
    "deeplabv2-resnet34": "light DeepLab-v2 on ResNet-34, OS 8",
    "deeplabv2-resnet18": "light DeepLab-v2 on ResNet-18, OS 8",
    "deeplabv2-resnet18-os16": "lightest: ResNet-18 at OS 16, ASPP 3/6/9/12 (CPU demo, ~2.5x cheaper)",
    "deeplabv2-effnet-lite0": "DeepLab-v2 on ImageNet EfficientNet-Lite0 at OS 16, ASPP 3/6/9/12 (extra 'real')",
    "deeplabv2-effnet-lite2": "DeepLab-v2 on ImageNet EfficientNet-Lite2 at OS 16, ASPP 3/6/9/12 (extra 'real')",
    "deeplabv3-resnet101": "torchvision DeepLabV3, OS 8",
    "deeplabv3-resnet50": "torchvision DeepLabV3, OS 8",
}

IRN_BACKBONES: dict[str, str] = {
    "resnet50": "ImageNet ResNet-50, last stage at stride 16 without dilation (IRN)",
    "effnet-lite0": "ImageNet EfficientNet-Lite0 at output stride 16 (extra 'real'; input (RGB-127)/128)",
    "effnet-lite2": "ImageNet EfficientNet-Lite2 at output stride 16 (extra 'real'; input (RGB-127)/128)",
}

SEG_LOSSES: dict[str, str] = {
    "ce": "cross-entropy ignoring 255",
    "balanced-ls-ce": "class-balanced (median frequency) cross-entropy with label smoothing",
}

WALK_METHODS: dict[str, str] = {
    "auto": "stencil on a GPU, csr on a CPU",
    "stencil": "shifted-slice stencil (dense tensors)",
    "gather": "neighbour gather",
    "csr": "sparse CSR matrix",
}

PRECISIONS: dict[str, str] = {
    "auto": "bf16 autocast on a GPU that supports it (fp16 on older GPUs), fp32 on the CPU",
    "bf16": "bfloat16 autocast on a GPU",
    "fp16": "float16 autocast on a GPU, gradients scaled",
    "fp32": "full precision everywhere",
}


def check_choice(registry: Mapping[str, str], name: str, what: str) -> str:
    """``name`` when it is in ``registry``; else a one-line error listing the valid names."""
    if name not in registry:
        raise OrandError(f"unknown {what} {name!r}; valid: {', '.join(registry)}")
    return name


def implementations(registry: Mapping[str, str], table: Mapping[str, T]) -> dict[str, T]:
    """``table`` (name -> implementation) in the registry's order; a table whose names differ from the
    registry's is a bug and fails at import.

    >>> implementations({"a": "A", "b": "B"}, {"b": 2, "a": 1})
    {'a': 1, 'b': 2}
    """
    if set(table) != set(registry):
        raise RuntimeError(f"implementations {sorted(table)} do not match the registry {sorted(registry)}")
    return {name: table[name] for name in registry}


def help_text(registry: Mapping[str, str]) -> str:
    """``name: description; ...`` for a command-line help text.

    >>> help_text({"a": "first", "b": "second"})
    'a: first; b: second'
    """
    return "; ".join(f"{name}: {text}" for name, text in registry.items())

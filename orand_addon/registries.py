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

ORANDNET_CROPS: dict[str, str] = {
    "aligned": "the centre crops of Long et al. (offsets 5, 9, 31): geometrically aligned",
    "official": "the official EncDec rule: offset (big - small) // 2 of the height, used for both axes",
}

ORANDNET_LR_SCHEDULES: dict[str, str] = {
    "poly": "poly decay over --iterations steps",
    "official": "the official loop: poly over --iterations steps, then 2 more at the last lr (5,002 steps)",
}

MAP_NORMS: dict[str, str] = {
    "max": "each class map divided by its own max (an all-zero map stays 0)",
    "max-eps": "each class map divided by its max + 1e-5 (official encdec_pred.py)",
}

FUSED_KINDS: dict[str, str] = {
    "or": "probabilistic OR, 1 - prod(1 - c_i)",
    "and": "probabilistic AND, prod c_i",
    "mean": "naive ensemble: the plain mean of the sources",
    "mean-official": "the official simple_addition baseline: relu((a + b + 0.15) / 2) / (max + 1e-5), two sources",
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
    "deeplabv1-resnet38": "DeepLab-v1 LargeFOV on ResNet-38 (PSA/SEAM), OS 8 (the paper's segmentation model)",
}

IRN_BACKBONES: dict[str, str] = {
    "resnet50": "ImageNet ResNet-50, last stage at stride 16 without dilation (IRN)",
    "effnet-lite0": "ImageNet EfficientNet-Lite0 at output stride 16 (extra 'real'; input (RGB-127)/128)",
    "effnet-lite2": "ImageNet EfficientNet-Lite2 at output stride 16 (extra 'real'; input (RGB-127)/128)",
}

SEG_LOSSES: dict[str, str] = {
    "ce": "cross-entropy ignoring 255",
    "balanced-ls-ce": "class-balanced (median frequency) cross-entropy with label smoothing; our reading of the "
                      "paper's L_ls,bce",
}

SCALE_SCHEDULES: dict[str, str] = {
    "paper": "8@2,4@4,2@6: the paper's 2, 4, 6 read as end epochs ([0,2) 1/8, [2,4) 1/4, [4,6) 1/2)",
    "paper-durations": "8:2,4:4,2:6: the paper's 2, 4, 6 read as phase lengths ([0,2) 1/8, [2,6) 1/4, [6,12) 1/2)",
}

SCORED_CLASSES: dict[str, str] = {
    "all": "every class of the class set (VOC: 21, background included)",
    "drop-last": "all but the last class: pixels whose ground truth or prediction is it are left out (the "
                 "official ORANDNet evaluation scores 20 VOC classes, without tvmonitor)",
}

UNDEFINED_SCORES: dict[str, str] = {
    "zero": "precision of a class never predicted / recall of a class absent from the ground truth is 0 and "
            "counts in the means",
    "nan": "such a score is NaN and left out of its mean (the official ORANDNet evaluation, np.nanmean)",
}

PRECISION_AWARE_RULES: dict[str, str] = {
    "first-ge": "the first threshold of the sweep where mean precision >= mean recall (none if never)",
    "official": "the first threshold where mean precision > mean recall, else the sweep's last (official "
                "finding_best_thres over 0.10:0.80:0.01)",
}

IRN_LABEL_SAMPLING: dict[str, str] = {
    "nearest": "PIL NEAREST at 1/4, as IRN: pixel 4i+2 of a 512 crop",
    "top-left": "every fourth pixel from the corner (pixel 4i; orand-addon before recipes)",
}

RECIPES: dict[str, str] = {
    "official": "the released ORANDNet code's behaviour wherever it is deterministic",
    "paper": "the paper where it speaks, the released code where it is silent",
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

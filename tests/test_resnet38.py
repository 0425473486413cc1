"""DeepLab-v1 LargeFOV on ResNet-38: the PSA/SEAM structure (names, shapes, output stride 8), and its ImageNet
weights loading from a PSA-key state dict and from mxnet's ``.params`` layout (written here by an own writer of
the format, read back by the package's numpy reader)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from helpers import one_torch_thread  # noqa: F401 (autouse fixture)
from orand_addon.errors import OrandError
from orand_addon.pretrained.resnet38 import load_resnet38_state, mxnet_name, mxnet_to_psa, read_ndarray_list
from orand_addon.segment.models import build_model, param_groups
from orand_addon.segment.resnet38 import ResNet38

# the PSA/SEAM block names, and the blocks whose shape changes (they have the 1x1 shortcut conv_branch1)
BLOCKS = ["b2", "b2_1", "b2_2", "b3", "b3_1", "b3_2", "b4", "b4_1", "b4_2", "b4_3", "b4_4", "b4_5", "b5", "b5_1",
          "b5_2", "b6", "b7"]
SHORTCUT = {"b2", "b3", "b4", "b5", "b6", "b7"}
BN = ("weight", "bias", "running_mean", "running_var")


def psa_keys() -> list[str]:
    """The tensors of a converted ResNet-38 state dict, from the naming rules of PSA's resnet38d."""
    keys = ["conv1a.weight"]
    for b in BLOCKS:
        branches = ["2a", "2b1"] + (["2b2"] if b in ("b6", "b7") else [])
        for br in branches:
            keys += [f"{b}.bn_branch{br}.{x}" for x in BN] + [f"{b}.conv_branch{br}.weight"]
        if b in SHORTCUT:
            keys.append(f"{b}.conv_branch1.weight")
    return keys + [f"bn7.{x}" for x in BN]


def mxnet_of(key: str) -> str:
    """The ademxapp (mxnet) name of a PSA key, written from the naming rules: blocks bN -> Na, bN_K -> NbK;
    convs res<blk>_branch<X>_weight, BatchNorm bn<blk>_branch<X>_{gamma,beta,moving_mean,moving_var}."""
    prefix = "aux:" if key.endswith(("running_mean", "running_var")) else "arg:"
    if key == "conv1a.weight":
        return prefix + "conv1a_weight"
    suffix = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_var"}
    if key.startswith("bn7."):
        return prefix + "bn7_" + suffix[key[4:]]
    block, module, what = key.split(".")
    stage, _, number = block[1:].partition("_")
    blk = f"{stage}a" if not number else f"{stage}b{number}"
    if module.startswith("conv_branch"):
        return f"{prefix}res{blk}_branch{module[len('conv_branch'):]}_weight"
    return f"{prefix}bn{blk}_branch{module[len('bn_branch'):]}_{suffix[what]}"


def test_structure_and_output_stride():
    with torch.device("meta"):
        net = ResNet38()
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert list(state) == psa_keys()
    assert sum(p.numel() for p in net.parameters()) == 105_070_912
    assert tuple(state["b5.conv_branch2a.weight"].shape) == (512, 512, 3, 3)
    assert tuple(state["b7.conv_branch2b1.weight"].shape) == (2048, 1024, 3, 3)
    assert net.b5.conv_branch2b1.dilation == (2, 2) and net.b6.conv_branch2b1.dilation == (4, 4)
    for size, out in ((321, 41), (448, 56), (33, 5)):
        assert net(torch.empty(1, 3, size, size, device="meta")).shape == (1, 4096, out, out)


def test_every_mxnet_name_maps_to_its_psa_key():
    for key in psa_keys():
        assert mxnet_name(mxnet_of(key)) == key
    assert mxnet_name("arg:linear1000_weight") is None
    with pytest.raises(OrandError, match="unknown ResNet-38 parameter 'fc_weight'"):
        mxnet_name("arg:fc_weight")


# -- the .params format ------------------------------------------------------------------------------------------

FLAGS = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2, np.dtype(np.int32): 4}


def ndarray_bytes(array: np.ndarray, variant: str) -> bytes:
    """One NDArray as mxnet's NDArray::Save writes it (V2 / V1) or as older files hold it (legacy)."""
    shape = array.shape
    if variant == "v2":
        head = struct.pack("<Ii", 0xF993FAC9, 0) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}q", *shape)
    elif variant == "v1":
        head = struct.pack("<I", 0xF993FAC8) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}q", *shape)
    else:
        head = struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
    context = struct.pack("<ii", 1, 0)  # cpu, device 0
    return head + context + struct.pack("<i", FLAGS[array.dtype]) + np.ascontiguousarray(array).astype(
        array.dtype.newbyteorder("<")).tobytes()


def write_params(path, arrays: dict[str, np.ndarray], variant: str = "v2") -> None:
    """An NDArray list file: magic 0x112, reserved 0, count, arrays, count, (length, name) pairs."""
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    out += [ndarray_bytes(a, variant) for a in arrays.values()]
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        out.append(struct.pack("<Q", len(name)) + name.encode("ascii"))
    path.write_bytes(b"".join(out))


def small_weights() -> dict[str, np.ndarray]:
    """Real ResNet-38 names and shapes of the first block, distinct values, several dtypes."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in ResNet38().state_dict().items()}
    rng = np.random.default_rng(0)
    arrays = {}
    for key in psa_keys()[:12]:
        arrays[mxnet_of(key)] = rng.standard_normal(shapes[key]).astype(np.float32)
    arrays["arg:linear1000_bias"] = np.arange(10, dtype=np.float64)
    return arrays


@pytest.mark.parametrize("variant", ["v2", "v1", "legacy"])
def test_params_round_trip(tmp_path, variant):
    arrays = small_weights()
    arrays["aux:bn2a_branch2a_moving_var"] = arrays["aux:bn2a_branch2a_moving_var"].astype(np.float16)
    write_params(tmp_path / "w.params", arrays, variant)
    back = read_ndarray_list(tmp_path / "w.params")
    assert list(back) == list(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value), name
    psa = mxnet_to_psa(back)
    assert "linear1000_bias" not in str(list(psa)) and len(psa) == 12
    assert np.array_equal(psa["b2.bn_branch2a.running_mean"], arrays["aux:bn2a_branch2a_moving_mean"])
    state = load_resnet38_state(str(tmp_path / "w.params"))
    net = ResNet38()
    net.load_state_dict(state, strict=False)
    assert torch.equal(net.conv1a.weight, torch.from_numpy(arrays["arg:conv1a_weight"]))
    assert torch.equal(net.b2.conv_branch2a.weight, torch.from_numpy(arrays["arg:res2a_branch2a_weight"]))


def test_damaged_params_files_are_one_line(tmp_path):
    write_params(tmp_path / "w.params", small_weights())
    data = (tmp_path / "w.params").read_bytes()
    (tmp_path / "cut.params").write_bytes(data[: len(data) // 2])
    with pytest.raises(OrandError, match=r"cut.params: truncated or not an mxnet .params file"):
        read_ndarray_list(tmp_path / "cut.params")
    (tmp_path / "zip.params").write_bytes(b"PK\x03\x04" + data)
    with pytest.raises(OrandError, match=r"zip.params: not an mxnet .params file \(no NDArray list header\)$"):
        read_ndarray_list(tmp_path / "zip.params")


# -- a complete PSA-key state dict into the segmentation model ------------------------------------------------------

@pytest.fixture(scope="module")
def psa_file(tmp_path_factory):
    """A converted state dict with every PSA key (each tensor a constant: its index; expanded views keep the file
    small), wrapped as SEAM-derived repos save it, with a module. prefix and the trained classifier fc8."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in ResNet38().state_dict().items()}
    state = {f"module.{k}": torch.full((1,), float(i + 1)).expand(shapes[k]) for i, k in enumerate(psa_keys())}
    state["module.fc8.weight"] = torch.zeros(20, 4096, 1, 1)
    path = tmp_path_factory.mktemp("res38") / "res38d.pth"
    torch.save({"state_dict": state}, path)
    return path


def test_psa_state_dict_loads_into_deeplabv1_resnet38(psa_file):
    net = build_model("deeplabv1-resnet38", 21, pretrained=str(psa_file))
    own = net.backbone.state_dict()
    for i, key in enumerate(psa_keys()):
        assert torch.equal(own[key], torch.full(own[key].shape, float(i + 1))), key
    assert net.frozen_bn and not net.backbone.conv1a.weight.requires_grad
    trainable = {id(p) for g in param_groups(net, 5e-4) for p in g["params"]}
    assert id(net.backbone.conv1a.weight) not in trainable and id(net.head.cls_conv.weight) in trainable
    assert id(net.backbone.b2.bn_branch2a.weight) not in trainable
    net.eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 65, 81)).shape == (1, 21, 65, 81)


def test_weights_of_another_network_are_refused(tmp_path):
    torch.save({"conv1a.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(OrandError, match=r"^--pretrained .*partial.pth: the weights do not fit a resnet38 backbone "
                                         r"\(0 shape mismatches, 190 missing, e.g. b2.bn_branch2a.weight\)$"):
        build_model("deeplabv1-resnet38", 21, pretrained=str(tmp_path / "partial.pth"))

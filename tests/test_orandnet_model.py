"""The ORANDNet network: output size for any input, ImageNet VGG16 weights landing by name, bad weight files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import one_torch_thread  # noqa: F401 (fixtures)
from orand_addon.errors import OrandError
from orand_addon.orandnet.model import FCN8s, build_model, load_backbone, vgg16_to_fcn

# torchvision vgg16: conv layers of `features` and their (out, in) channels
VGG_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
             17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}


def fake_torchvision_vgg16() -> dict[str, torch.Tensor]:
    """A state dict with torchvision's vgg16 names and shapes; random convs, and classifier weights whose value
    is their input index (expanded views, so the file stays small), to check how fc6/fc7 are reshaped."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for i, (c_out, c_in) in VGG_CONVS.items():
        state[f"features.{i}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=g)
        state[f"features.{i}.bias"] = torch.randn(c_out, generator=g)
    for i, (c_out, c_in) in {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)}.items():
        state[f"classifier.{i}.weight"] = torch.arange(c_in, dtype=torch.float32).expand(c_out, c_in)
        state[f"classifier.{i}.bias"] = torch.randn(c_out, generator=g)
    return state


@pytest.mark.parametrize("arch", ["fcn8s", "fcn8s-same"])
def test_output_has_the_input_size(arch):
    model = FCN8s(arch, width_div=16).eval()
    for size in [(1, 1), (5, 7), (33, 65), (46, 62), (62, 41)]:
        assert model(torch.rand(2, 1, *size)).shape == (2, 1, *size)


def test_layout_matches_torchvision_and_the_official_head():
    model = FCN8s(width_div=16)
    names = dict(model.named_modules())
    for i in VGG_CONVS:
        assert isinstance(names[f"features.{i}"], torch.nn.Conv2d)
    assert model.features[0].in_channels == 1 and model.features[0].padding == (100, 100)
    assert model.fc6.kernel_size == (7, 7) and model.fc7.kernel_size == (1, 1)
    assert isinstance(model.drop6, torch.nn.Dropout2d) and isinstance(model.drop7, torch.nn.Dropout2d)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 0
    # bilinear deconvolutions: a constant map upsamples to the same constant away from the borders
    up = model.upscore2.weight.detach()
    flat = F.conv_transpose2d(torch.ones(1, 1, 6, 6), up, stride=2)
    assert torch.allclose(flat[..., 3:-3, 3:-3], torch.ones(1, 1, 8, 8))


def test_imagenet_weights_from_the_torch_hub_cache_land_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    vgg = fake_torchvision_vgg16()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(vgg, tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    torch.manual_seed(1)
    first_conv_before = FCN8s().features[0].weight.detach().clone()
    torch.manual_seed(1)
    model = build_model("fcn8s", pretrained="imagenet")
    sd = model.state_dict()
    for i in VGG_CONVS:
        if i == 0:
            continue
        assert torch.equal(sd[f"features.{i}.weight"], vgg[f"features.{i}.weight"])
        assert torch.equal(sd[f"features.{i}.bias"], vgg[f"features.{i}.bias"])
    # the first conv sees 1 channel: it keeps its random init
    assert sd["features.0.weight"].shape == (64, 1, 3, 3)
    assert torch.equal(sd["features.0.weight"], first_conv_before)
    # fc6 = classifier.0 viewed as (4096, 512, 7, 7) in torchvision's flatten order (channel, row, column)
    c, y, x = 300, 4, 6
    assert sd["fc6.weight"][17, c, y, x].item() == c * 49 + y * 7 + x
    assert torch.equal(sd["fc6.bias"], vgg["classifier.0.bias"])
    assert sd["fc7.weight"].shape == (4096, 4096, 1, 1) and sd["fc7.weight"][5, 1234, 0, 0].item() == 1234
    assert torch.equal(sd["fc7.bias"], vgg["classifier.3.bias"])


def test_missing_imagenet_file_and_wrong_weight_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(OrandError, match="no ImageNet vgg16 weights: vgg16-397923af.pth is not in "):
        build_model("fcn8s", pretrained="imagenet")
    with pytest.raises(OrandError, match="--pretrained imagenet needs the full VGG16 width"):
        build_model("fcn8s", width_div=8, pretrained="imagenet")
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, other)
    with pytest.raises(OrandError) as err:
        build_model("fcn8s", width_div=16, pretrained=str(other))
    n_tensors = 13 * 2 + 2 * 2 + 3 * 2 + 3  # VGG convs, fc6/fc7, score_* (weight, bias), 3 bias-free deconvs
    assert str(err.value) == (f"{other}: not VGG16 or ORANDNet weights ({n_tensors} tensors missing, "
                              f"e.g. features.0.weight)")
    bad_vgg = {k: v for k, v in fake_torchvision_vgg16().items() if k != "features.28.bias"}
    with pytest.raises(OrandError, match="not torchvision VGG16 weights \\(1 tensors missing, e.g. features.28.bias\\)"):
        load_backbone(FCN8s(), bad_vgg, "vgg.pth")


def test_pretrained_path_to_an_orandnet_model_loads_every_tensor(tmp_path):
    source = FCN8s("fcn8s", width_div=16)
    path = tmp_path / "m.pt"
    torch.save({"model": source.state_dict()}, path)
    model = build_model("fcn8s", width_div=16, pretrained=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    assert set(vgg16_to_fcn(fake_torchvision_vgg16())) == {
        k for k in FCN8s(width_div=16).state_dict() if k.startswith(("features.", "fc6", "fc7"))
        and not k.startswith("features.0.")}

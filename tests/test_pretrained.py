"""``--pretrained imagenet|PATH|none``: the torch hub cache, a download when online (simulated: tests never
download), and the one-line message when the file is missing offline."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from orand_addon import pretrained
from orand_addon.cli import cli
from orand_addon.errors import OrandError

VGG_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME with downloads allowed (the download function itself is replaced in each test)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(pretrained.OFFLINE_ENV, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def offline(url, destination, hash_prefix, progress=True):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_urls_and_file_names_come_from_torchvision_weights_api():
    from torchvision.models import ResNet50_Weights, ResNet101_Weights, VGG16_Weights

    assert pretrained.weights_file("vgg16").url == VGG16_Weights.IMAGENET1K_V1.url == VGG_URL
    assert pretrained.weights_file("resnet50").name == ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    assert pretrained.weights_file("resnet101").url == ResNet101_Weights.IMAGENET1K_V1.url
    with pytest.raises(OrandError, match=r"^no pretrained weights known for 'vgg19'; valid: vgg16, resnet18, "):
        pretrained.weights_file("vgg19")


def test_offline_and_missing_is_one_line_naming_file_folder_url_and_alternatives(hub, monkeypatch):
    monkeypatch.setattr(pretrained, "download", offline)
    with pytest.raises(OrandError) as err:
        pretrained.load_pretrained_state("vgg16", "imagenet")
    assert str(err.value) == (
        f"no ImageNet vgg16 weights: vgg16-397923af.pth is not in {hub} and downloading it failed (URLError: "
        f"<urlopen error [Errno -3] Temporary failure in name resolution>); download {VGG_URL} into {hub} (or point "
        f"TORCH_HOME to a folder whose hub/checkpoints has it), pass --pretrained PATH to a copy of the file, or "
        f"--pretrained none to start from random weights")
    assert "\n" not in str(err.value)
    assert not any(hub.glob("*"))  # nothing half-written left in the cache


def test_download_goes_into_the_hub_cache_with_its_hash_and_is_used_from_there_next_time(hub, monkeypatch):
    calls = []
    state = {"features.0.weight": torch.arange(6.0).reshape(1, 2, 3), "features.0.bias": torch.ones(1)}

    def fake_download(url, destination, hash_prefix, progress=True):
        calls.append((url, Path(destination), hash_prefix))
        torch.save(state, destination)

    monkeypatch.setattr(pretrained, "download", fake_download)
    loaded = pretrained.load_pretrained_state("vgg16", "imagenet")
    assert calls == [(VGG_URL, hub / "vgg16-397923af.pth", "397923af")]
    assert set(loaded) == set(state) and torch.equal(loaded["features.0.weight"], state["features.0.weight"])
    monkeypatch.setattr(pretrained, "download", offline)  # now offline: the cached file is enough
    assert torch.equal(pretrained.load_pretrained_state("vgg16", "imagenet")["features.0.bias"], torch.ones(1))
    assert len(calls) == 1


def test_present_cache_file_is_used_offline_and_older_release_names_are_accepted(hub, monkeypatch):
    monkeypatch.setattr(pretrained, "download", offline)
    hub.mkdir(parents=True)
    torch.save({"state_dict": {"module.conv1.weight": torch.full((2, 3), 7.0)}}, hub / "resnet50-19c8e357.pth")
    loaded = pretrained.load_pretrained_state("resnet50", "imagenet")
    assert list(loaded) == ["conv1.weight"] and float(loaded["conv1.weight"][1, 2]) == 7.0


def test_offline_switch_never_calls_the_download(hub, monkeypatch):
    monkeypatch.setenv(pretrained.OFFLINE_ENV, "1")
    monkeypatch.setattr(pretrained, "download", lambda *a, **k: pytest.fail("downloaded although offline"))
    with pytest.raises(OrandError, match=r"resnet101-63fe2227.pth is not in .* and downloads are off "
                                         r"\(ORAND_ADDON_OFFLINE=1\); download https://download.pytorch.org/models/"
                                         r"resnet101-63fe2227.pth into "):
        pretrained.load_pretrained_state("resnet101", "imagenet")


def test_path_and_none(tmp_path):
    assert pretrained.load_pretrained_state("vgg16", "none") is None
    with pytest.raises(OrandError, match=r"^--pretrained nope.pth: not 'imagenet', 'none', or an existing weights"):
        pretrained.load_pretrained_state("vgg16", "nope.pth")
    (tmp_path / "w.pth").write_bytes(b"")
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "w.pth")
    assert list(pretrained.load_pretrained_state("resnet18", str(tmp_path / "w.pth"))) == ["a"]
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(OrandError, match=r"list.pth: not a state dict of tensors$"):
        pretrained.load_pretrained_state("resnet18", str(tmp_path / "list.pth"))


def test_train_command_downloads_before_it_starts_and_says_so(hub, monkeypatch, tmp_path):
    """The CLI path: ``train`` with a missing file tries the download during its checks, before any work."""
    monkeypatch.setattr(pretrained, "download", offline)
    res = CliRunner().invoke(cli, ["train", "--store", str(tmp_path / "none.h5"), "--out",
                                                   str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2
    assert res.stderr.startswith(f"downloading ImageNet vgg16 weights {VGG_URL} to {hub / 'vgg16-397923af.pth'}\n")
    error = res.stderr.splitlines()[-1]
    assert error.startswith("orand-addon: error: 2 problems (nothing was started): 1) ")
    assert f"{tmp_path / 'none.h5'}: store not found" in error
    assert "no ImageNet vgg16 weights: vgg16-397923af.pth is not in" in error
    assert not (tmp_path / "run").exists()

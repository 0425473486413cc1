"""ORANDNet losses against hand-written float64 references, and who learns from single-class images."""

from __future__ import annotations

from helpers import reference_bg_softmax, reference_official  # noqa: E402

import numpy as np
import pytest
import torch

from orand_addon.errors import OrandError
from orand_addon.orandnet.losses import LOSSES, get_loss


def reference_bce(logits: np.ndarray, target: np.ndarray) -> float:
    p = 1 / (1 + np.exp(-logits))
    return float(-(target * np.log(p) + (1 - target) * np.log(1 - p)).mean())


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (3, 9, 11))
    target = rng.uniform(0, 1, (3, 9, 11)) ** 2
    return logits, target


@pytest.mark.parametrize("name,reference", [("official", reference_official), ("bg-softmax", reference_bg_softmax),
                                            ("bce", reference_bce)])
def test_losses_equal_independent_float64(sample, name, reference):
    logits, target = sample
    got = get_loss(name)(torch.tensor(logits, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(reference(logits, target), rel=1e-5)


def test_official_is_torch_soft_cross_entropy_and_accepts_bf16(sample):
    logits, target = (torch.tensor(a, dtype=torch.float32) for a in sample)
    ref = torch.nn.functional.cross_entropy(logits[None], target[None])
    assert torch.equal(get_loss("official")(logits, target), ref)
    assert get_loss("official")(logits.bfloat16(), target).dtype == torch.float32


def single_class_grad(name: str) -> tuple[float, float]:
    logits = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    target = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(4))
    loss = get_loss(name)(logits, target)
    loss.backward()
    return loss.item(), logits.grad.abs().sum().item()


def test_single_class_images_teach_nothing_under_official_only():
    assert single_class_grad("official") == (0.0, 0.0)
    for name in ("bg-softmax", "bce"):
        loss, grad = single_class_grad(name)
        assert loss > 0 and grad > 0, name


def test_bg_softmax_single_class_is_a_two_way_softmax_against_background():
    logits = torch.tensor([[[1.5, -0.5]]])
    target = torch.tensor([[[0.8, 0.1]]])
    p = torch.sigmoid(logits)  # softmax of (logit, 0) for the class
    ref = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    assert get_loss("bg-softmax")(logits, target).item() == pytest.approx(ref.item(), rel=1e-6)


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(OrandError) as err:
        get_loss("focal")
    assert str(err.value) == "unknown loss 'focal'; valid: official, bg-softmax, bce"
    assert list(LOSSES) == ["official", "bg-softmax", "bce"]

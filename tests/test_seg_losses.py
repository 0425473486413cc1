"""Segmentation losses against a direct numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orand_addon.errors import OrandError
from orand_addon.segment.losses import build_loss


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 4, 5, 6)) * 3
    target = rng.integers(0, 4, (2, 5, 6))
    target[0, :2] = 255
    return logits, target


def test_ce_ignores_255(batch):
    logits, target = batch
    logp = log_softmax(logits)
    values = [-logp[b, target[b, i, j], i, j] for b in range(2) for i in range(5) for j in range(6)
              if target[b, i, j] != 255]
    got = build_loss("ce", 4)(torch.tensor(logits, dtype=torch.float32), torch.tensor(target))
    assert got.item() == pytest.approx(np.mean(values), rel=1e-5)


def test_balanced_label_smoothed_ce(batch):
    logits, target = batch
    counts = [400, 100, 50, 0]
    freq = np.array([400, 100, 50]) / 550
    median = sorted(freq)[1]
    weights = [median / freq[0], median / freq[1], median / freq[2], 1.0]  # median-frequency, absent class 1
    eps = 0.2
    logp = log_softmax(logits)
    num = den = 0.0
    for b in range(2):
        for i in range(5):
            for j in range(6):
                y = target[b, i, j]
                if y == 255:
                    continue
                per_pixel = (1 - eps) * -logp[b, y, i, j] + eps * np.mean(-logp[b, :, i, j])
                num += weights[y] * per_pixel
                den += weights[y]
    loss = build_loss("balanced-ls-ce", 4, counts, smoothing=eps)
    got = loss(torch.tensor(logits, dtype=torch.float32), torch.tensor(target))
    assert got.item() == pytest.approx(num / den, rel=1e-5)


@pytest.mark.parametrize("name", ["ce", "balanced-ls-ce"])
def test_all_ignored_batch_gives_zero_not_nan(name):
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = build_loss(name, 3, [1, 1, 1])(logits, torch.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_bad_loss_options():
    with pytest.raises(OrandError, match="unknown loss 'focal'; valid: ce, balanced-ls-ce"):
        build_loss("focal", 3)
    with pytest.raises(OrandError, match=r"label smoothing 1.0 must be in \[0, 1\)"):
        build_loss("balanced-ls-ce", 3, [1, 2, 3], smoothing=1.0)


@pytest.mark.parametrize("name", ["ce", "balanced-ls-ce"])
def test_rank_shares_normalised_by_the_global_weight_give_the_whole_batch_gradient(batch, name):
    """What DDP computes in ``train_step``: each rank's loss sum over the weight of the global batch (times the
    number of ranks), gradients averaged over the ranks = the gradient of the loss of the whole batch. Here the two
    images have different numbers of labelled pixels, so the mean of the per-rank losses would differ."""
    logits, target = batch
    loss = build_loss(name, 4, class_counts=[5, 1, 3, 2])
    whole = torch.tensor(logits, requires_grad=True)
    loss(whole, torch.from_numpy(target)).backward()
    shares = [torch.tensor(logits[r:r + 1], requires_grad=True) for r in range(2)]
    parts = [loss.parts(x, torch.from_numpy(target[r:r + 1])) for r, x in enumerate(shares)]
    weight = sum(float(w) for _, w in parts)
    for total, _ in parts:
        (total / (weight / 2) / 2).backward()  # the rank's loss; DDP divides the summed gradients by 2
    torch.testing.assert_close(torch.cat([x.grad for x in shares]), whole.grad, rtol=1e-6, atol=1e-9)
    per_rank_means = [float(total.detach() / w) for total, w in parts]
    assert abs(np.mean(per_rank_means) - float(loss(whole.detach(), torch.from_numpy(target)))) > 1e-3

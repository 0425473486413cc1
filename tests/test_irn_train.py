"""IRN training: pair targets and affinities against the path definition, a falling loss, resume, bad settings."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dense_rw_reference import line_points, pair_offsets  # noqa: E402

from orand_addon.errors import Interrupted, OrandError  # noqa: E402
from orand_addon.refine import train as train_module  # noqa: E402
from orand_addon.refine.network import load_trained  # noqa: E402
from orand_addon.refine.data import CropSpec, SeedCrops  # noqa: E402
from orand_addon.refine.losses import (edge_affinity, irn_losses, pair_counts, pair_displacement, pair_labels)  # noqa: E402
from orand_addon.refine.paths import path_table  # noqa: E402
from orand_addon.refine.seed_stage import make_seeds  # noqa: E402
from orand_addon.refine.seeds import CrfParams, SeedOptions  # noqa: E402
from orand_addon.refine.train import TrainOptions, build_model, build_optimizer, train_irn, train_step  # noqa: E402
from orand_addon.runtime.files import load_checkpoint  # noqa: E402
from helpers.testers import ResumeTester
from helpers import small_voc, write_store  # noqa: E402,F401

TINY = TrainOptions(crop_size=64, batch_size=1, epochs=1, lr=0.02, dp_lr=0.2, pretrained="none",
                    backbone="trainable", max_steps=2, radius=5)  # radius 5: pairs in a 64-pixel crop, 4x cheaper


def sources(h: int, w: int, radius: int) -> list[tuple[int, int]]:
    """IRN's training sources: rows [0, h - radius + 1), columns [radius - 1, w - radius + 1), row-major."""
    return [(y, x) for y in range(h - radius + 1) for x in range(radius - 1, w - radius + 1)]


def test_pair_labels_match_the_definition():
    rng = np.random.default_rng(0)
    label = rng.choice([0, 0, 3, 3, 7, 255], size=(2, 11, 17))
    radius = 4
    bg, fg, neg = (t.numpy() for t in pair_labels(torch.from_numpy(label), path_table(radius)))
    dirs = path_table(radius).directions.tolist()
    assert sorted(map(tuple, dirs)) == sorted(pair_offsets(radius))
    for b in range(2):
        for m, (y, x) in enumerate(sources(11, 17, radius)):
            for d, (dy, dx) in enumerate(dirs):
                a, c = label[b, y, x], label[b, y + dy, x + dx]
                valid = a != 255 and c != 255
                assert bg[b, d, m] == (valid and a == c == 0)
                assert fg[b, d, m] == (valid and a == c and a > 0)
                assert neg[b, d, m] == (valid and a != c)


def test_affinity_is_one_minus_max_on_the_path_and_its_gradient_goes_to_the_max():
    rng = np.random.default_rng(1)
    edge = torch.tensor(rng.uniform(0, 1, (1, 1, 10, 13)), requires_grad=True)
    radius = 4
    aff = edge_affinity(edge, path_table(radius))
    values_of = aff.detach()
    grid = edge.detach().numpy()[0, 0]
    dirs = path_table(radius).directions.tolist()
    expected_grad = np.zeros_like(grid)
    for m, (y, x) in enumerate(sources(10, 13, radius)):
        for d, (dy, dx) in enumerate(dirs):
            values = {(y + py, x + px): grid[y + py, x + px] for py, px in line_points(dy, dx)}
            where = max(values, key=values.get)
            assert abs(float(values_of[0, d, m]) - (1 - values[where])) < 1e-12
            expected_grad[where] -= 1
    aff.sum().backward()
    np.testing.assert_allclose(edge.grad.numpy()[0, 0], expected_grad)


def test_displacement_pairs_are_source_minus_destination():
    dp = torch.randn(1, 2, 9, 12, dtype=torch.float64)
    radius = 3
    out = pair_displacement(dp, path_table(radius))
    for m, (y, x) in enumerate(sources(9, 12, radius)):
        for d, (dy, dx) in enumerate(path_table(radius).directions.tolist()):
            torch.testing.assert_close(out[0, :, d, m], dp[0, :, y, x] - dp[0, :, y + dy, x + dx])


def test_shares_of_a_split_batch_add_up_to_the_loss_and_gradient_of_the_whole_batch():
    """What DDP needs: with the pair counts of the whole batch, the parts' losses sum to the whole batch's."""
    rng = np.random.default_rng(2)
    table = path_table(3)
    labels = torch.from_numpy(np.concatenate([rng.choice([0, 0, 2, 5, 255], size=(2, 9, 11)),
                                              rng.choice([0, 3, 255, 255, 255], size=(2, 9, 11))]))  # fewer pairs
    edge = torch.tensor(rng.uniform(0.01, 0.99, (4, 1, 9, 11)), requires_grad=True)
    dp = torch.tensor(rng.normal(size=(4, 2, 9, 11)), requires_grad=True)

    def losses(part: slice, counts=None):
        bg, fg, neg = pair_labels(labels[part], table)
        return irn_losses(edge_affinity(edge[part], table), pair_displacement(dp[part], table), bg, fg, neg, table,
                          counts=counts)

    whole = losses(slice(None))
    grads = torch.autograd.grad(whole["total"], [edge, dp])
    counts = sum(pair_counts(*pair_labels(labels[p], table)) for p in (slice(0, 2), slice(2, 4)))
    torch.testing.assert_close(counts, pair_counts(*pair_labels(labels, table)))
    parts = [losses(p, counts) for p in (slice(0, 2), slice(2, 4))]
    for key in whole:
        torch.testing.assert_close(parts[0][key] + parts[1][key], whole[key])
    for got, expected in zip(torch.autograd.grad(parts[0]["total"] + parts[1]["total"], [edge, dp]), grads):
        torch.testing.assert_close(got, expected)
    naive = (losses(slice(0, 2))["total"] + losses(slice(2, 4))["total"]) / 2  # a mean of per-part means
    assert abs(float((naive - whole["total"]).detach())) > 1e-3  # 1e4 times the rounding above


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("irn")
    data = small_voc(tmp / "img", factor=2)
    store = write_store(tmp / "s.h5", "or", data)
    make_seeds(store, "or", tmp / "img", options=SeedOptions(crf=CrfParams(iterations=0)), workers=1, progress=False)
    return tmp, store, list(data)


def batch_loss(model, batch, table) -> float:
    with torch.no_grad():
        edge, dp = model(batch[0])
        bg, fg, neg = pair_labels(batch[1], table)
        return float(irn_losses(edge_affinity(torch.sigmoid(edge), table), pair_displacement(dp, table),
                                bg, fg, neg, table)["total"])


def test_one_training_step_lowers_the_loss(seeded):
    tmp, store, ids = seeded
    crops = SeedCrops(store, tmp / "img", ids, CropSpec(64, (0.9, 1.1)))
    batch = [torch.stack(x) for x in zip(*[crops[(0, i)] for i in range(2)])]
    assert batch[0].shape == (2, 3, 64, 64) and batch[1].shape == (2, 16, 16)
    torch.manual_seed(0)
    model = build_model(TINY, torch.device("cpu"))
    optimizer = build_optimizer(model, TINY)
    model.train()
    table = path_table(TINY.radius)
    before = batch_loss(model, batch, table)
    losses = train_step(model, optimizer, batch, table, torch.device("cpu"))
    assert abs(losses["total"] - before) < 1e-4  # the step's own loss is the one measured before it
    assert batch_loss(model, batch, table) < before
    assert set(losses) == {"pos", "neg", "dp_fg", "dp_bg", "total"}


def test_interrupted_training_resumes_to_the_same_weights(seeded, monkeypatch):
    tmp, store, ids = seeded
    straight = train_irn(store, tmp / "img", tmp / "a", options=TINY, device="cpu", progress=False)
    assert straight.steps == 2 and (tmp / "a" / "irn.pt").is_file() and not (tmp / "a" / "irn_last.pt").exists()

    calls = {"n": 0}
    real_step = train_module.train_step

    def interrupting_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", interrupting_step)
    with pytest.raises(Interrupted, match=r"interrupted at step 1/2; saved .*irn_last.pt; the same command resumes"):
        train_irn(store, tmp / "img", tmp / "b", options=TINY, device="cpu", progress=False)
    assert load_checkpoint(tmp / "b" / "irn_last.pt")["step"] == 1
    monkeypatch.setattr(train_module, "train_step", real_step)
    resumed = train_irn(store, tmp / "img", tmp / "b", options=TINY, device="cpu", progress=False)
    assert resumed.steps == 2 and [h["total"] for h in resumed.history] == pytest.approx(
        [h["total"] for h in straight.history], rel=1e-4)
    a, b = (load_checkpoint(tmp / d / "irn.pt")["model"] for d in "ab")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    again = train_irn(store, tmp / "img", tmp / "b", options=TINY, device="cpu", progress=False)
    assert again.skipped and "already trained" in again.lines()[0]
    with pytest.raises(OrandError, match=r"irn.pt was trained with other settings \(lr differ\); use another --run-dir"):
        train_irn(store, tmp / "img", tmp / "b", options=TrainOptions(**{**TINY.__dict__, "lr": 0.05}), device="cpu")


def test_bad_training_settings(seeded, monkeypatch, tmp_path):
    tmp, store, ids = seeded
    frozen_none = TrainOptions(**{**TINY.__dict__, "backbone": "frozen"})
    with pytest.raises(OrandError, match="--pretrained none with a frozen backbone would train on random features"):
        train_irn(store, tmp / "img", tmp_path / "r", options=frozen_none, device="cpu")
    with pytest.raises(OrandError, match=r"--crop-size 64 is too small for pairs within radius 10 \(at least 73"):
        train_irn(store, tmp / "img", tmp_path / "r", options=TrainOptions(**{**TINY.__dict__, "radius": 10}))
    with pytest.raises(OrandError, match=rf"^{len(ids)} images have seeds; --batch-size 32 needs at least that many"):
        train_irn(store, tmp / "img", tmp_path / "r", options=TrainOptions(**{**TINY.__dict__, "batch_size": 32}))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(OrandError, match="no ImageNet resnet50 weights: resnet50-0676ba61.pth is not in"):
        train_irn(store, tmp / "img", tmp_path / "r", options=TrainOptions(crop_size=96, batch_size=2), device="cpu")


def test_pretrained_file_fills_a_frozen_backbone(tmp_path):
    from orand_addon.refine.network import resnet50_stride16

    torch.manual_seed(3)
    state = resnet50_stride16().state_dict()
    torch.save(state, tmp_path / "r50.pth")
    model = build_model(TrainOptions(pretrained=str(tmp_path / "r50.pth")), torch.device("cpu"))
    torch.testing.assert_close(model.backbone.conv1.weight, state["conv1.weight"])
    assert not any(p.requires_grad for p in model.backbone.parameters())
    torch.save({"conv1.weight": state["conv1.weight"]}, tmp_path / "bad.pth")
    with pytest.raises(OrandError, match=r"bad.pth: not ResNet-50 weights \(\d+ backbone tensors missing"):
        build_model(TrainOptions(pretrained=str(tmp_path / "bad.pth")), torch.device("cpu"))


def test_ctrl_c_during_a_step_is_held_until_the_step_ends():
    import os
    import signal

    from orand_addon.runtime.interrupts import deferred_interrupt

    with deferred_interrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        finished = True  # the block runs on
    assert finished and interrupt.requested
    with pytest.raises(KeyboardInterrupt):  # outside the block Ctrl-C acts at once again
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):
            time.sleep(0.01)


@pytest.fixture(scope="module")
def trained(seeded, tmp_path_factory):
    """A finished run on a copy of the seeded store (so tests may rewrite its seeds)."""
    import shutil

    tmp, store, ids = seeded
    own = tmp_path_factory.mktemp("trained")
    shutil.copy(store, own / "s.h5")
    result = train_irn(own / "s.h5", tmp / "img", own / "run", options=TINY, device="cpu", progress=False)
    assert result.steps == 2
    return tmp, own / "s.h5", own / "run", ids


def test_a_finished_run_is_not_reused_for_other_ids_another_store_or_new_seeds(trained, tmp_path):
    import shutil

    tmp, store, run, ids = trained
    hint = "use another --run-dir, or --no-resume to train again"
    again = train_irn(store, tmp / "img", run, options=TINY, device="cpu", progress=False)
    assert again.skipped and again.steps == 2
    with pytest.raises(OrandError) as info:
        train_irn(store, tmp / "img", run, ids=ids[:-1], options=TINY, device="cpu", progress=False)
    assert str(info.value) == f"{run / 'irn.pt'} was trained on other inputs (other image ids); {hint}"
    copy = tmp_path / "copy.h5"
    shutil.copy(store, copy)
    with pytest.raises(OrandError) as info:
        train_irn(copy, tmp / "img", run, options=TINY, device="cpu", progress=False)
    assert str(info.value) == (f"{run / 'irn.pt'} was trained on other inputs (store {store.resolve()} -> "
                               f"{copy.resolve()}); {hint}")
    make_seeds(store, "or", tmp / "img", options=SeedOptions(fg_thres=0.5, crf=CrfParams(iterations=0)), workers=1,
               overwrite=True, progress=False)  # the same store, other seeds
    with pytest.raises(OrandError) as info:
        train_irn(store, tmp / "img", run, options=TINY, device="cpu", progress=False)
    assert str(info.value) == (f"{run / 'irn.pt'} was trained on other inputs (seeds written with other "
                               f"parameters); {hint}")
    assert len(str(info.value).splitlines()) == 1
    retrained = train_irn(store, tmp / "img", run, options=TINY, device="cpu", resume=False, progress=False)
    assert not retrained.skipped  # --no-resume trains again on the new seeds
    assert load_checkpoint(run / "irn.pt")["inputs"]["seeds"]["fg_thres"] == 0.5


def test_an_interrupted_run_does_not_resume_on_other_inputs(seeded, tmp_path, monkeypatch):
    tmp, store, ids = seeded

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_step", ctrl_c)
    with pytest.raises(Interrupted, match="interrupted at step 0/2"):
        train_irn(store, tmp / "img", tmp_path / "r", options=TINY, device="cpu", progress=False)
    monkeypatch.undo()
    with pytest.raises(OrandError, match=r"^.*irn_last.pt was trained on other inputs \(other image ids\); use another "
                                         r"--run-dir, or --no-resume to train again$"):
        train_irn(store, tmp / "img", tmp_path / "r", ids=ids[1:], options=TINY, device="cpu", progress=False)


def test_damaged_checkpoints_are_one_line_errors_naming_the_file(seeded, tmp_path):
    tmp, store, ids = seeded
    run = tmp_path / "run"
    run.mkdir()
    torch.save([1, 2, 3], run / "irn.pt")  # loads with weights_only, but is no IRN checkpoint
    with pytest.raises(OrandError) as info:
        train_irn(store, tmp / "img", run, options=TINY, device="cpu", progress=False)
    assert str(info.value) == (f"{run / 'irn.pt'}: not an IRN training checkpoint (no options record); use another "
                               f"--run-dir, or --no-resume to train again")
    (run / "irn.pt").unlink()
    from orand_addon.refine.train import run_inputs, save_state

    model = build_model(TINY, torch.device("cpu"))
    save_state(run / "irn_last.pt", model, build_optimizer(model, TINY), 1, 2, TINY, [], inputs=run_inputs(store, ids))
    state = torch.load(run / "irn_last.pt", weights_only=True)
    del state["model"]
    torch.save(state, run / "irn_last.pt")
    with pytest.raises(OrandError) as info:
        train_irn(store, tmp / "img", run, options=TINY, device="cpu", progress=False)
    assert str(info.value) == (f"{run / 'irn_last.pt'}: damaged IRN training state (KeyError: 'model'); use another "
                               f"--run-dir, or --no-resume to train again")
    state["model"] = {"edge.0.0.weight": torch.zeros(1)}
    torch.save(state, run / "irn_last.pt")
    with pytest.raises(OrandError, match=r"irn_last.pt: not weights of this IRN \(Error\(s\) in loading state_dict"):
        train_irn(store, tmp / "img", run, options=TINY, device="cpu", progress=False)
    torch.save({"model": [1]}, run / "walk.pt")
    with pytest.raises(OrandError, match=r"walk.pt: not an IRN checkpoint \(no 'model' entry\)$"):
        load_trained(run / "walk.pt", torch.device("cpu"))


class TestIrnResume(ResumeTester):
    module = train_module
    stop_at = 2
    interrupted_message = r"IRN training interrupted at step 1/2; saved .*irn_last.pt; the same command resumes"

    def train(self, train_inputs, out, resume):
        tmp, store, _ = train_inputs
        return train_irn(store, tmp / "img", out, options=TINY, device="cpu", progress=False, resume=resume)

    def weights(self, out):
        return load_checkpoint(out / "irn.pt")["model"]

    def losses(self, out):
        return [h["total"] for h in load_checkpoint(out / "irn.pt")["history"]]

    def check_interrupted(self, train_inputs, out):
        assert load_checkpoint(out / "irn_last.pt")["step"] == 1


@pytest.fixture(scope="module")
def train_inputs(seeded):
    return seeded

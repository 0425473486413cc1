"""`orand-addon predict`: ReLU + per-map max normalised ``orandnet`` maps, resumable, exported in IRN's layout;
bad checkpoints and stores are one line."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import add_empty_image, make_tiny_store, run, voc_mini_ids
from helpers import one_torch_thread  # noqa: F401 (fixtures)
from orand_addon.orandnet import predict as predict_module
from orand_addon.orandnet.model import FCN8s, load_orandnet
from orand_addon.store.store import Store

TINY_ARGS = ["--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    store = make_tiny_store(root)
    empty = add_empty_image(store)
    res = run("train", "--store", store, "--out", root / "run", "--iterations", 2, "--loss", "bg-softmax",
              "--pretrained", "none", "--width-div", 8, *TINY_ARGS)
    assert res.exit_code == 0, res.output
    return store, root / "run" / "model.pt", empty


@pytest.fixture
def store_copy(trained, tmp_path):
    store, ckpt, empty = trained
    shutil.copy(store, tmp_path / "s.h5")
    return tmp_path / "s.h5", ckpt, empty


def reference_maps(model: torch.nn.Module, or_maps: np.ndarray, activation: str = "relu") -> np.ndarray:
    """One class map at a time, fp32, then ReLU (or the logistic function) and division by the map's own max
    (0 stays 0), in numpy."""
    out = []
    with torch.no_grad():
        for m in or_maps:
            score = model.eval()(torch.from_numpy(m)[None, None])[0, 0].double().numpy()
            score = 1 / (1 + np.exp(-score)) if activation == "sigmoid" else np.maximum(score, 0)
            out.append(score / score.max() if score.max() > 0 else score)
    return np.stack(out) if out else np.zeros((0, *or_maps.shape[1:]))


def test_predict_writes_relu_max_normalised_maps_with_the_keys_of_or(store_copy):
    store, ckpt, empty = store_copy
    res = run("predict", "--store", store, "--checkpoint", ckpt, "--dtype", "float32", "--batch-size", 3, *TINY_ARGS)
    assert res.exit_code == 0, res.output
    assert f"wrote {len(voc_mini_ids()) + 1} images to {store}:orandnet" in res.output
    assert f"1 images with no classes got an empty /orandnet entry: {empty}" in res.output
    model, _ = load_orandnet(ckpt)
    with Store(store) as s:
        assert s.ids("orandnet") == s.ids("or")
        assert s.group_provenance("orandnet")["parameters"]["checkpoint"] == str(ckpt.resolve())
        assert s.group_provenance("orandnet")["parameters"]["postprocess"] == "sigmoid, per-map max normalisation"
        nonzero = 0
        for image_id in s.ids("or"):
            or_maps, keys = s.read_maps("or", image_id)
            out, out_keys = s.read_maps("orandnet", image_id)
            assert out_keys.tolist() == keys.tolist() and out.shape == or_maps.shape
            # trained with bg-softmax: the map is the probability against the background logit, sigmoid(score)
            np.testing.assert_allclose(out, reference_maps(model, or_maps, "sigmoid"), atol=2e-5)
            assert (out >= 0).all()
            for m in out:
                assert m.max() == pytest.approx(1.0, abs=1e-6) or m.max() == 0
                nonzero += m.max() > 0
        assert s.map_shape("orandnet", empty)[0] == 0
    assert nonzero > 0


def test_rerun_skips_written_ids_and_ctrl_c_resumes(store_copy, monkeypatch):
    store, ckpt, _ = store_copy
    calls = {"n": 0}
    original = predict_module.predict_maps

    def interrupted_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(predict_module, "predict_maps", interrupted_second_batch)
        res = run("predict", "--store", store, "--checkpoint", ckpt, "--batch-size", 2, *TINY_ARGS)
    assert res.exit_code == 130
    with Store(store) as s:
        n_done = len(s.ids("orandnet"))
    assert 0 < n_done < len(voc_mini_ids()) + 1
    assert (f"orand-addon: error: interrupted after {n_done} of {len(voc_mini_ids()) + 1} images; {store} keeps "
            f"them and the same command resumes") in res.output
    res = run("predict", "--store", store, "--checkpoint", ckpt, "--batch-size", 2, *TINY_ARGS)
    assert res.exit_code == 0, res.output
    assert f"{n_done} images already have /orandnet (skipped)" in res.output
    assert f"wrote {len(voc_mini_ids()) + 1 - n_done} images" in res.output
    with Store(store) as s:
        assert s.ids("orandnet") == s.ids("or")


def test_export_gives_the_irn_layout(store_copy, tmp_path):
    store, ckpt, _ = store_copy
    assert run("predict", "--store", store, "--checkpoint", ckpt, *TINY_ARGS).exit_code == 0
    res = run("export", "--store", store, "--kind", "orandnet", "--to", "irn", "--out", tmp_path / "irn", "--no-progress")
    assert res.exit_code == 0, res.output
    image_id = "2011_000006"
    record = np.load(tmp_path / "irn" / f"{image_id}.npy", allow_pickle=True).item()
    with Store(store) as s:
        maps, keys = s.read_maps("orandnet", image_id)
    assert set(record) == {"keys", "cam", "high_res"}
    assert isinstance(record["keys"], torch.Tensor) and record["keys"].dtype == torch.int64
    assert record["keys"].tolist() == keys.tolist() == [8, 14, 17]
    assert isinstance(record["high_res"], np.ndarray) and record["high_res"].shape == maps.shape
    np.testing.assert_array_equal(record["high_res"], maps)
    h, w = maps.shape[1:]
    assert isinstance(record["cam"], torch.Tensor) and record["cam"].shape == (3, -(-h // 4), -(-w // 4))
    ref = F.interpolate(torch.from_numpy(maps)[None], size=(-(-h // 4), -(-w // 4)), mode="bilinear",
                        align_corners=False)[0]
    assert torch.allclose(record["cam"], ref, atol=1e-6)


def test_bad_checkpoints_and_stores_give_one_line(store_copy, tmp_path):
    store, ckpt, _ = store_copy
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(ckpt.read_bytes()[:5000])
    other = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, other)
    evil = tmp_path / "evil.pt"
    torch.save({"model": shutil.Error("not a tensor")}, evil)
    wrong = tmp_path / "wrong.pt"
    saved = torch.load(ckpt, weights_only=True)
    bare = tmp_path / "bare.pt"
    torch.save(saved["model"], bare)
    torch.save({**saved, "model": FCN8s(width_div=16).state_dict()}, wrong)
    expected = {
        corrupt: f"{corrupt}: corrupt or unreadable checkpoint (not a torch.save archive; truncated?)",
        other: f"{other}: not an ORANDNet checkpoint (a state dict of another network: conv1.weight, fc.weight, ...)",
        evil: f"{evil}: refused to load checkpoint (weights_only: ",
        wrong: f"{wrong}: not an ORANDNet fcn8s checkpoint (features.0.weight has shape (4, 1, 3, 3), expected "
               f"(8, 1, 3, 3))",
        tmp_path / "absent.pt": f"{tmp_path / 'absent.pt'}: checkpoint not found",
        bare: f"{bare}: holds ORANDNet weights only, without the architecture and loss they were trained with; use "
              f"the model.pt (or last.pt) that 'orand-addon train' wrote",
    }
    for path, message in expected.items():
        res = run("predict", "--store", store, "--checkpoint", path, *TINY_ARGS)
        assert res.exit_code == 2, res.output
        assert res.output.startswith(f"orand-addon: error: {message}"), res.output
        assert len(res.output.splitlines()) == 1
    no_or = make_tiny_store(tmp_path / "no_or", ids=voc_mini_ids()[:1], kinds="and")
    res = run("predict", "--store", no_or, "--checkpoint", ckpt, *TINY_ARGS)
    assert res.output == (f"orand-addon: error: {no_or}: no /or maps (has: and); run 'orand-addon fuse' first\n")
    with h5py.File(store, "r") as f:
        assert "orandnet" not in f


def test_another_checkpoint_needs_overwrite(store_copy, tmp_path):
    store, ckpt, _ = store_copy
    assert run("predict", "--store", store, "--checkpoint", ckpt, *TINY_ARGS).exit_code == 0
    second = tmp_path / "second.pt"
    shutil.copy(ckpt, second)
    res = run("predict", "--store", store, "--checkpoint", second, *TINY_ARGS)
    assert res.exit_code == 2
    assert res.output.startswith(f"orand-addon: error: {store}: /orandnet was written by 'orand-addon ")
    assert res.output.endswith("with other parameters (--checkpoint differ); use a new output file or --overwrite\n")
    res = run("predict", "--store", store, "--checkpoint", second, "--overwrite", *TINY_ARGS)
    assert res.exit_code == 0, res.output
    with Store(store) as s:
        assert s.group_provenance("orandnet")["parameters"]["checkpoint"] == str(second.resolve())
        assert s.ids("orandnet") == s.ids("or")


def test_help_has_examples():
    res = run("predict", "--help")
    assert res.exit_code == 0
    assert "orand-addon predict --store fused.h5 --checkpoint runs/orandnet/model.pt" in res.output
    assert "--batch-size" in res.output


def test_official_loss_checkpoint_predicts_relu_of_the_scores(tmp_path):
    store = make_tiny_store(tmp_path)
    res = run("train", "--store", store, "--out", tmp_path / "run", "--iterations", 1, "--loss", "official",
              "--pretrained", "none", "--width-div", 8, *TINY_ARGS)
    assert res.exit_code == 0, res.output
    ckpt = tmp_path / "run" / "model.pt"
    assert run("predict", "--store", store, "--checkpoint", ckpt, "--dtype", "float32", *TINY_ARGS).exit_code == 0
    model, _ = load_orandnet(ckpt)
    with Store(store) as s:
        assert s.group_provenance("orandnet")["parameters"]["postprocess"] == "relu, per-map max normalisation"
        image_id = s.ids("or")[0]
        np.testing.assert_allclose(s.read_maps("orandnet", image_id)[0],
                                   reference_maps(model, s.read_maps("or", image_id)[0], "relu"), atol=2e-5)

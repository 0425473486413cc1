"""IRN details against IRN itself: the stride-4 labels of the training crops are Pillow's NEAREST resize at 1/4
(pixel 4i+2 of a 512 crop), the boundary map is predicted on a 512x512 zero-padded canvas and cropped back, and
``refine --recipe official`` runs IRN as ORANDNet's release did (batch 16, momentum 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from helpers import JPEG, gt_mask, one_torch_thread  # noqa: F401 (autouse fixture)
from orand_addon.cli import cli
from orand_addon.io.images import load_image
from orand_addon.refine.data import CropSpec, crop_box, make_crop, rescale_pair, stride4_label
from orand_addon.refine.network import IRNet, inference_canvas, normalize_image, predict_edge, trained_crop_size

IMAGE = "2007_000129"  # 500 x 334, bicycle + person


def pil_quarter(label: np.ndarray, size: int | None = None) -> np.ndarray:
    """IRN's ``pil_rescale(label, 0.25, order=0)``: Pillow NEAREST; ``size`` overrides the output side."""
    h, w = label.shape
    out = size or int(np.round(h * 0.25)), size or int(np.round(w * 0.25))
    return np.asarray(Image.fromarray(label).resize(out[::-1], Image.NEAREST))


def irn_crop(label: np.ndarray, crop: int, seed: int) -> np.ndarray:
    """IRN's random_crop of a label: a crop x crop container filled with 255, the label placed/cropped at random."""
    top, left, itop, ileft, ch, cw = crop_box(label.shape, crop, np.random.default_rng(seed))
    out = np.full((crop, crop), 255, np.uint8)
    out[top:top + ch, left:left + cw] = label[itop:itop + ch, ileft:ileft + cw]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_of_a_real_512_crop_are_pils_nearest(seed):
    crop = irn_crop(gt_mask(IMAGE), 512, seed)
    ours = stride4_label(crop)
    assert np.array_equal(ours, pil_quarter(crop))
    assert np.array_equal(ours, crop[2::4, 2::4])  # pixel 4i + 2
    corner = stride4_label(crop, "top-left")
    assert np.array_equal(corner, crop[::4, ::4]) and (corner != ours).any()


@pytest.mark.parametrize("size", [510, 302, 300, 64, 17])
def test_labels_of_other_crop_sizes_are_pils_nearest_on_the_network_grid(size):
    label = np.asarray(Image.fromarray(gt_mask(IMAGE)).resize((size, size), Image.NEAREST))
    cells = (size - 1) // 4 + 1  # the network's stride-4 output size
    assert np.array_equal(stride4_label(label), pil_quarter(label, cells))


def test_make_crop_samples_the_label_it_is_asked_to():
    image, mask = load_image(JPEG, IMAGE), gt_mask(IMAGE)
    for sampling, pick in (("nearest", lambda c: c[2::4, 2::4]), ("top-left", lambda c: c[::4, ::4])):
        rng = np.random.default_rng(11)
        _, label = make_crop(image, mask, CropSpec(512, (0.9, 0.9), sampling), rng)
        replay = np.random.default_rng(11)  # the draws of make_crop: scale, flip, crop box
        _, seed = rescale_pair(image, mask, float(replay.uniform(0.9, 0.9)))
        if replay.random() < 0.5:
            seed = seed[:, ::-1]
        top, left, itop, ileft, ch, cw = crop_box(seed.shape, 512, replay)
        crop = np.full((512, 512), 255, np.uint8)
        crop[top:top + ch, left:left + cw] = seed[itop:itop + ch, ileft:ileft + cw]
        assert np.array_equal(label, pick(crop).astype(np.int64)), sampling


def test_unknown_label_sampling_lists_the_choices():
    from orand_addon.errors import OrandError

    with pytest.raises(OrandError, match=r"^unknown label sampling 'bilinear'; valid: nearest, top-left$"):
        stride4_label(np.zeros((8, 8), np.uint8), "bilinear")


# -- inference padding ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def irnet():
    torch.manual_seed(0)
    return IRNet("trainable").eval()


def reference_edge(model, image: torch.Tensor, canvas: int) -> torch.Tensor:
    """IRN's EdgeDisplacement: [image, flip(image)] zero-padded right/bottom to canvas x canvas, forward, crop to
    ((H-1)//4+1, (W-1)//4+1), sigmoid(edge[0] / 2 + flip(edge[1]) / 2)."""
    h, w = image.shape[-2:]
    x = torch.stack([image, image.flip(-1)])
    x = F.pad(x, [0, canvas - w, 0, canvas - h])
    with torch.no_grad():
        edge, _ = model(x)
    edge = edge[:, 0, : (h - 1) // 4 + 1, : (w - 1) // 4 + 1]
    return torch.sigmoid(edge[0] / 2 + edge[1].flip(-1) / 2)


def small_image(h: int = 45, w: int = 30) -> torch.Tensor:
    return normalize_image(np.asarray(Image.fromarray(load_image(JPEG, IMAGE)).resize((w, h), Image.BICUBIC)))


def test_edge_is_predicted_on_the_padded_canvas(irnet):
    image = small_image()
    ours = predict_edge(irnet, image, pad_to=64)
    torch.testing.assert_close(ours, reference_edge(irnet, image, 64), rtol=1e-5, atol=1e-6)
    assert ours.shape == (12, 8)
    unpadded = predict_edge(irnet, image, pad_to=0)
    assert (ours - unpadded).abs().max() > 1e-4  # the padding changes the map: it must be IRN's


def test_edge_of_a_real_voc_image_on_irns_512_canvas(irnet):
    image = normalize_image(load_image(JPEG, IMAGE))  # 500 x 334
    torch.testing.assert_close(predict_edge(irnet, image, pad_to=512), reference_edge(irnet, image, 512),
                               rtol=1e-5, atol=1e-6)


def test_canvas_never_crops_and_auto_takes_the_training_crop(tmp_path):
    assert inference_canvas((600, 300), 512) == (600, 512)
    torch.save({"options": {"crop_size": 64}, "model": {}}, tmp_path / "irn.pt")
    torch.save({"model": {}}, tmp_path / "old.pt")
    assert trained_crop_size(tmp_path / "irn.pt") == 64 and trained_crop_size(tmp_path / "old.pt") == 512


# -- the refine recipe -------------------------------------------------------------------------------------------------

@pytest.fixture
def captured(monkeypatch):
    seen = {}

    def fake_refine(store, kind, images, config, command, dist):
        seen["config"] = config

        class Report:
            def lines(self):
                return ["ok"]

        return Report()

    monkeypatch.setattr("orand_addon.refine.pipeline.refine", fake_refine)
    monkeypatch.setattr("orand_addon.cli.refine.check_refine", lambda *a, **k: None)  # no store, no weights
    return seen


def refine_args(tmp_path, *extra):
    return ["refine", "--store", str(tmp_path / "s.h5"), "--images", str(JPEG), "--no-progress", *extra]


def test_refine_recipe_official_is_the_released_irn_run(tmp_path, captured):
    result = CliRunner().invoke(cli, refine_args(tmp_path, "--recipe", "official"), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    c = captured["config"]
    t, w = c.train_options, c.walk_options
    assert (t.batch_size, t.momentum, t.weight_decay, t.label_sampling, t.crop_size) == (16, 1e-4, 1e-4, "nearest", 512)
    assert (w.edge_pad, w.bg_thres, w.beta, w.exp_times, w.radius) == (512, 0.25, 10.0, 8, 5)
    assert c.precision == "fp32"
    result = CliRunner().invoke(cli, refine_args(tmp_path, "--recipe", "official", "--batch-size", "8", "--edge-pad",
                                                 "none"), catch_exceptions=False)
    assert (captured["config"].train_options.batch_size, captured["config"].walk_options.edge_pad) == (8, 0)


def test_refine_defaults_are_irns(tmp_path, captured):
    assert CliRunner().invoke(cli, refine_args(tmp_path), catch_exceptions=False).exit_code == 0
    c = captured["config"]
    assert (c.train_options.batch_size, c.train_options.momentum, c.train_options.label_sampling) == (32, 0.0,
                                                                                                       "nearest")
    assert c.walk_options.edge_pad is None  # auto: the IRN checkpoint's crop size (512 for IRN)
    bad = CliRunner().invoke(cli, refine_args(tmp_path, "--edge-pad", "big"))
    assert bad.exit_code == 2 and "'big': expected auto, none or a size in pixels" in bad.output

"""IRN seeds on the real VOC-mini images: the seed rule, the CRF, the worker pool, PNG seeds, resume, bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import gt_classes, gt_mask, JPEG, pseudo_cams, small_voc, voc_mini_ids, write_store  # noqa: E402,F401
from orand_addon.cli import cli
from orand_addon.errors import OrandError
from orand_addon.io.images import load_image, save_label_png
from orand_addon.refine.seed_stage import import_seed_pngs, make_seeds
from orand_addon.refine.seeds import CrfParams, SeedOptions
from orand_addon.store.store import Store


def irn_rule(maps: np.ndarray, keys: np.ndarray, fg_labels=None, bg_labels=None) -> np.ndarray:
    """cam_to_ir_label written out: pad a constant channel, argmax, keys; combine (CRF results may be given)."""
    padded_keys = np.pad(keys + 1, (1, 0), mode="constant")
    if fg_labels is None:
        fg_labels = np.argmax(np.pad(maps, ((1, 0), (0, 0), (0, 0)), constant_values=0.30), axis=0)
        bg_labels = np.argmax(np.pad(maps, ((1, 0), (0, 0), (0, 0)), constant_values=0.05), axis=0)
    fg, bg = padded_keys[fg_labels], padded_keys[bg_labels]
    conf = fg.copy()
    conf[fg == 0] = 255
    conf[bg + fg == 0] = 0
    return conf.astype(np.uint8)


def direct_crf(image: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """IRN's crf_inference_label, called on pydensecrf directly with the reference parameters."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    h, w = labels.shape
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=0.7, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(image)), compat=10)
    return np.argmax(np.array(d.inference(10)).reshape(n_labels, h, w), axis=0)


@pytest.fixture
def full_size(tmp_path):
    """Pseudo-CAMs at the full size of the real VOC images."""
    data = {}
    for n, image_id in enumerate(voc_mini_ids()):
        mask = gt_mask(image_id)
        keys = gt_classes(mask)
        data[image_id] = (keys, pseudo_cams(mask, keys, seed=n))
    return write_store(tmp_path / "s.h5", "orandnet", data), data


def test_seed_rule_on_all_real_images_without_crf(full_size):
    store, data = full_size
    report = make_seeds(store, "orandnet", JPEG, options=SeedOptions(crf=CrfParams(iterations=0)), workers=2,
                        progress=False)
    assert report.written == len(data) == 11
    with Store(store) as s:
        for image_id, (keys, maps) in data.items():
            seed = s.read_mask("seeds", image_id)
            assert seed.dtype == np.uint8 and seed.shape == maps.shape[1:]
            assert (seed == irn_rule(maps, keys)).all(), image_id
            assert set(np.unique(seed)) <= {0, 255, *(keys + 1).tolist()}


def test_crf_seeds_equal_direct_pydensecrf_on_real_images(full_size):
    store, data = full_size
    ids = voc_mini_ids()[:2]
    make_seeds(store, "orandnet", JPEG, ids=ids, workers=2, progress=False)
    with Store(store) as s:
        for image_id in ids:
            keys, maps = data[image_id]
            image = load_image(JPEG, image_id)
            n = len(keys) + 1
            fg = direct_crf(image, np.argmax(np.pad(maps, ((1, 0), (0, 0), (0, 0)), constant_values=0.30), 0), n)
            bg = direct_crf(image, np.argmax(np.pad(maps, ((1, 0), (0, 0), (0, 0)), constant_values=0.05), 0), n)
            assert (s.read_mask("seeds", image_id) == irn_rule(maps, keys, fg, bg)).all(), image_id
            assert s.group_provenance("seeds")["parameters"]["crf"]["bilateral_srgb"] == 5.0


def test_resume_skips_written_ids_and_cli_reports(tmp_path):
    data = small_voc(tmp_path / "img")
    store = write_store(tmp_path / "s.h5", "or", data)
    ids = list(data)
    first = make_seeds(store, "or", tmp_path / "img", ids=ids[:2], workers=1, progress=False)
    assert first.written == 2
    with Store(store) as s:
        before = s.read_mask("seeds", ids[0])
    res = CliRunner().invoke(cli, ["refine", "--store", str(store), "--kind", "or", "--images", str(tmp_path / "img"),
                                   "--steps", "seeds", "--workers", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"seeds: wrote {len(ids) - 2} images, 2 already present" in res.output
    with Store(store) as s:
        assert s.ids("seeds") == sorted(ids)
        assert (s.read_mask("seeds", ids[0]) == before).all()
    res = CliRunner().invoke(cli, ["refine", "--store", str(store), "--kind", "or", "--images", str(tmp_path / "img"),
                                   "--steps", "seeds", "--fg-thres", "0.4", "--no-progress"])
    assert res.exit_code == 2
    assert "/seeds was written by" in res.output and "(--seed-fg-thres differ)" in res.output  # old spelling works


def test_image_without_classes_gets_an_all_background_seed(tmp_path):
    data = small_voc(tmp_path / "img", voc_mini_ids()[:1])
    image_id = next(iter(data))
    h, w = data[image_id][1].shape[1:]
    store = write_store(tmp_path / "s.h5", "or", {image_id: (np.zeros(0, np.int64), np.zeros((0, h, w), np.float32))})
    report = make_seeds(store, "or", tmp_path / "img", workers=1, progress=False)
    with Store(store) as s:
        assert (s.read_mask("seeds", image_id) == 0).all()
    assert report.extra["no_foreground_seed"] == [image_id]
    assert "1 images have no foreground seed" in " ".join(report.lines())


def test_seeds_from_png_folder(tmp_path):
    data = small_voc(tmp_path / "img", voc_mini_ids()[:3])
    pngs = tmp_path / "png"
    pngs.mkdir()
    expected = {}
    for image_id, (keys, maps) in data.items():
        expected[image_id] = irn_rule(maps, keys)
        save_label_png(pngs / f"{image_id}.png", expected[image_id])
    store = tmp_path / "s.h5"
    report = import_seed_pngs(store, pngs, tmp_path / "img", progress=False)
    assert report.written == 3
    with Store(store) as s:
        for image_id, seed in expected.items():
            assert (s.read_mask("seeds", image_id) == seed).all()


def test_bad_png_seeds_name_the_id(tmp_path):
    data = small_voc(tmp_path / "img", voc_mini_ids()[:2])
    ids = list(data)
    pngs = tmp_path / "png"
    pngs.mkdir()
    h, w = data[ids[0]][1].shape[1:]
    save_label_png(pngs / f"{ids[0]}.png", np.full((h, w), 42, np.uint8))
    with pytest.raises(OrandError, match=rf"^{ids[0]}: seed PNG has values \[42\] outside 0..20 and 255"):
        import_seed_pngs(tmp_path / "a.h5", pngs, tmp_path / "img", ids=ids[:1], progress=False)
    with pytest.raises(OrandError, match=rf"^{ids[1]}: no seed PNG"):
        import_seed_pngs(tmp_path / "b.h5", pngs, tmp_path / "img", ids=ids, progress=False)
    save_label_png(pngs / f"{ids[1]}.png", np.zeros((h + 1, w), np.uint8))
    with pytest.raises(OrandError, match=rf"^{ids[1]}: seed PNGs are {h + 1}x{w} but the image is"):
        import_seed_pngs(tmp_path / "c.h5", pngs, tmp_path / "img", ids=ids[1:], progress=False)


def test_bad_inputs_are_one_line_errors_and_nothing_is_written(tmp_path):
    data = small_voc(tmp_path / "img", voc_mini_ids()[:3])
    ids = list(data)
    keys, maps = data[ids[1]]
    data[ids[1]] = (keys, maps[:, :-2])  # maps 2 rows short of the image
    store = write_store(tmp_path / "s.h5", "or", data)

    def run(*extra):
        return CliRunner().invoke(cli, ["refine", "--store", str(store), "--kind", "or", "--images",
                                        str(tmp_path / "img"), "--steps", "seeds", "--no-progress", *extra])

    res = run()
    h, w = maps.shape[1:]
    assert res.exit_code == 2
    assert res.output.strip() == (f"orand-addon: error: {ids[1]}: /or maps are {h - 2}x{w} but the image is "
                                  f"{h}x{w} ({tmp_path / 'img'}); maps must be at image size")
    with Store(store) as s:
        assert s.ids("seeds") == []
    (tmp_path / "img" / f"{ids[0]}.jpg").unlink()
    res = run()
    assert res.exit_code == 2 and f"error: {ids[0]}: no image {ids[0]}.jpg/.png in" in res.output
    res = run("--kind", "and")
    assert res.exit_code == 2 and res.output == (f"orand-addon: error: {store}: no /and maps (has: or); --kind names "
                                                 f"maps the store holds (fuse, predict)\n")
    nan = dict(data)
    nan[ids[2]] = (data[ids[2]][0], np.full_like(data[ids[2]][1], np.nan))
    store2 = write_store(tmp_path / "n.h5", "or", {ids[2]: nan[ids[2]]})
    with pytest.raises(OrandError, match=rf"^{re.escape(str(store2))}: /or/{ids[2]} holds NaN/Inf \(10375 of 10375 "
                                         rf"values\): the store was damaged or edited; rewrite /or"):
        make_seeds(store2, "or", tmp_path / "img", workers=1, progress=False)


def test_seeds_of_a_kind_written_again_are_refused_not_mixed(tmp_path, monkeypatch):
    data = small_voc(tmp_path / "img", voc_mini_ids()[:3])
    ids = sorted(data)
    store = write_store(tmp_path / "s.h5", "or", data)
    with Store(store, "a") as s:
        s.begin(["or"], "orand-addon fuse", {"normalize": True})
    no_crf = SeedOptions(crf=CrfParams(iterations=0))
    make_seeds(store, "or", tmp_path / "img", ids=ids[:2], options=no_crf, workers=1, progress=False)
    with Store(store) as s:
        assert s.group_provenance("seeds")["parameters"]["kind_parameters"] == {"normalize": True}
    with Store(store, "a") as s:  # the kind written again (fuse --overwrite with other settings)
        s.begin(["or"], "orand-addon fuse --no-normalize", {"normalize": False}, force=True)
        for image_id, (keys, maps) in data.items():
            s.write_maps("or", image_id, maps * 0.5, keys, dtype="float32")
    with pytest.raises(OrandError) as info:
        make_seeds(store, "or", tmp_path / "img", options=no_crf, workers=1, progress=False)
    assert str(info.value) == (f"{store}: /seeds was written by 'orand-addon refine --steps seeds' with other "
                               f"parameters (kind_parameters differ); use a new output file or --overwrite")
    with Store(store) as s:
        assert s.ids("seeds") == ids[:2]  # nothing of the new maps mixed in
    report = make_seeds(store, "or", tmp_path / "img", options=no_crf, workers=1, overwrite=True, progress=False)
    assert report.written == 3
    with Store(store) as s:
        for image_id, (keys, maps) in data.items():
            assert (s.read_mask("seeds", image_id) == irn_rule(maps * 0.5, keys)).all()


def test_seed_workers_run_in_a_worker_pool_that_leaves_ctrl_c_to_this_process(tmp_path, monkeypatch):
    from orand_addon.engine import stage as engine
    from orand_addon.runtime.workers import WorkerProcesses

    data = small_voc(tmp_path / "img", voc_mini_ids()[:3])
    store = write_store(tmp_path / "s.h5", "or", data)
    made = []

    def recording_pool(*args, **kwargs):
        made.append(args)
        return WorkerProcesses(*args, **kwargs)

    monkeypatch.setattr(engine, "worker_processes", recording_pool)
    report = make_seeds(store, "or", tmp_path / "img", options=SeedOptions(crf=CrfParams(iterations=0)), workers=2,
                        progress=False)
    assert [m[0] for m in made] == [2] and report.written == 3
    with Store(store) as s:
        for image_id, (keys, maps) in data.items():
            assert (s.read_mask("seeds", image_id) == irn_rule(maps, keys)).all()

"""The README's "Use it on your CAMs" block, exactly as written (docs/use_on_your_cams.sh, which the README includes
verbatim), on the bundled real VOC images in a VOC2012/ layout with AMN and MCTformer dumps of them; only the sizes
come from a --config file (tiny networks, one step, no ImageNet weights)."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import GT, JPEG, VOC_MINI, gt_mask, one_torch_thread, ref_pairs, ref_scores, voc_mini_ids  # noqa: F401
from helpers import write_voc_mini_cams
from orand_addon.cli import cli
from orand_addon.io.images import load_label_png
from orand_addon.store.store import Store

BLOCK = Path(__file__).resolve().parents[1] / "docs" / "use_on_your_cams.sh"

SMALL = """
[fuse]
progress = false
[evaluate]
progress = false
[train]
iterations = 2
pretrained = "none"
arch = "fcn8s-same"
width-div = 16
device = "cpu"
progress = false
[predict]
device = "cpu"
progress = false
[refine]
pretrained = "none"
backbone = "trainable"
crop-size = 96
batch-size = 2
max-steps = 1
crf-iterations = 2
workers = 1
device = "cpu"
progress = false
[train-seg]
model = "deeplabv2-resnet18-os16"
pretrained = "none"
epochs = 1
batch-size = 2
crop-size = 64
scale-schedule = "none"
workers = 0
device = "cpu"
progress = false
[segment]
scales = "1.0"
flip = false
device = "cpu"
progress = false
"""


def block_commands(path: Path = BLOCK) -> list[list[str]]:
    """The commands of the block: backslash-continued lines joined, comments dropped, ``orand-addon`` removed."""
    text = path.read_text().replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in text.splitlines()]
    commands = [c for c in commands if c]
    assert all(c[0] == "orand-addon" for c in commands), commands
    return [c[1:] for c in commands]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """amn_cams/ and mct_cams/ (native dumps of the 11 images), VOC2012/ with images, ground truth and val.txt."""
    root = tmp_path_factory.mktemp("your_cams")
    write_voc_mini_cams(root / "amn_cams", "amn", seed=1)
    write_voc_mini_cams(root / "mct_cams", "mctformer", seed=2)
    voc = root / "VOC2012"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "JPEGImages").symlink_to(JPEG)
    (voc / "SegmentationClassAug").symlink_to(GT)
    val = (VOC_MINI / "ImageSets" / "Segmentation" / "val_mini.txt").read_text()
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text(val)
    (root / "small.toml").write_text(SMALL)
    return root


def test_the_block_parses_into_the_documented_commands():
    names = [c[0] for c in block_commands()]
    assert names == ["inspect", "fuse", "evaluate", "train", "predict", "refine", "evaluate", "train-seg", "segment",
                     "export"]
    assert all("--config" not in c for c in block_commands())


def test_use_it_on_your_cams_runs_as_written(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    outputs = []
    for command in block_commands():
        res = CliRunner().invoke(cli, ["--config", "small.toml", *command])
        assert res.exit_code == 0, (command, res.output)
        outputs.append(res.output)
    ids = voc_mini_ids()
    assert "format amn" in outputs[0] and "problems: 0" in outputs[0]
    assert "best mIoU" in outputs[2]
    with Store("fused.h5") as s:
        for group in ("or", "and", "mean", "orandnet", "seeds", "rw", "masks"):
            assert s.ids(group) == ids, group
        masks = {i: s.read_mask("masks", i) for i in ids}
    assert sorted(p.name for p in Path("runs/orandnet").iterdir()) == ["model.pt", "train_log.json"]
    pairs = Counter()
    for image_id, mask in masks.items():
        pairs.update(ref_pairs(gt_mask(image_id), mask))
    reference = ref_scores(pairs, 21)
    scored = json.loads(Path("masks.json").read_text())
    assert scored["num_images"] == len(ids)
    assert scored["metrics"]["mean_iou"] == pytest.approx(reference["mean_iou"], abs=1e-12)
    assert "note: no validation: every id with an image and ground truth" in outputs[7]  # all 11 images train
    val = (workdir / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert sorted(p.stem for p in Path("runs/deeplab/val").glob("*.png")) == sorted(val)
    pairs = Counter()
    for image_id in val:
        pairs.update(ref_pairs(gt_mask(image_id), load_label_png(Path("runs/deeplab/val") / f"{image_id}.png")))
    assert f"mIoU {100 * ref_scores(pairs, 21)['mean_iou']:.2f}, precision" in outputs[8]
    assert sorted(p.stem for p in Path("orandnet_cams").glob("*.npy")) == ids
    assert np.isfinite([scored["metrics"]["mean_precision"], scored["metrics"]["mean_recall"]]).all()


def test_the_from_python_block_runs_as_written_and_counts_as_written_out(workdir):
    """docs/from_python.py (the README's "From Python" block, verbatim) in the same folder layout: its mIoU is that
    of Eq. 1 in float64, thresholded at 0.15 and counted pixel by pair."""
    import os
    import subprocess
    import sys

    from helpers import reference_or_and, ref_mask

    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(root / "docs" / "from_python.py")], cwd=workdir, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    from orand_addon import read_cams

    amn, mct = read_cams(workdir / "amn_cams"), read_cams(workdir / "mct_cams")
    pairs = Counter()
    for image_id in voc_mini_ids():
        keys = amn[image_id].keys
        assert mct[image_id].keys.tolist() == keys.tolist()
        or_maps, _ = reference_or_and(amn[image_id].maps, mct[image_id].maps)
        pairs.update(ref_pairs(gt_mask(image_id), ref_mask(or_maps, keys, 0.15)))
    assert float(res.stdout) == pytest.approx(ref_scores(pairs, 21)["mean_iou"], abs=2e-4)

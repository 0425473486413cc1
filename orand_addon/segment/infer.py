"""Inference of the segmentation stage: multi-scale + flip, optional dense CRF, and the counting against ground
truth; :mod:`.stage` runs it over a list of images.

Scores come from :mod:`orand_addon.evaluation.functional`, as in ``orand-addon evaluate`` (DESIGN §8: one
dataset-level confusion matrix, GT 255 ignored, classes absent from both sides left out of the means).

Under torchrun ``segment`` splits its ids over the ranks (rank ``r`` of ``w`` takes ``ids[r::w]``): PNGs go into the
shared folder, store masks into the rank's shard (``orand-addon merge`` joins them), and with
``--gt`` every rank counts its images and the confusion matrices are summed over a gloo group that waits for the
slowest rank, so rank 0 reports the scores of all ids once (the one-process numbers). Ranks need no process group
otherwise: without ``--gt`` any launcher that sets ``RANK``/``WORLD_SIZE`` works.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..runtime.distributed import DistInfo
from ..errors import first_line, OrandError
from ..io.images import load_image
from ..evaluation.functional import pixel_counts
from ..runtime.devices import autocast
from ..runtime.files import load_checkpoint
from ..runtime.progress import progress
from .data import load_gt, normalize
from .models import SegNet, build_model

DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
SCORE_WAIT = timedelta(days=7)  # how long a rank that is done waits for the others before the scores are summed
CRF_PARAMS = {"iterations": 10, "pos_xy_std": 1.0, "pos_w": 3.0, "bi_xy_std": 67.0, "bi_rgb_std": 3.0, "bi_w": 4.0}


def image_confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int, image_id: str) -> np.ndarray:
    """(C, C) confusion of one image through the evaluate command's metrics (errors name the image).

    >>> image_confusion(np.array([[0, 1], [1, 255]]), np.array([[0, 1], [0, 1]]), 2, "x").tolist()
    [[1, 0], [1, 1]]
    """
    conf, _ = pixel_counts(gt, pred, num_classes, name=image_id)  # predictions never hold 255: nothing unsure
    return conf


def load_segmenter(checkpoint: str | Path, device: torch.device) -> tuple[SegNet, dict]:
    """Model and metadata from a ``train-seg`` checkpoint (``last.pt`` or ``model.pt``); one-line errors naming the
    file when it is not one or is damaged."""
    state = load_checkpoint(checkpoint)
    if not isinstance(state, dict) or "model" not in state or not isinstance(state.get("meta"), dict):
        raise OrandError(f"{checkpoint}: not a train-seg checkpoint (no model/meta entries)")
    meta = state["meta"]
    try:
        name, num_classes = str(meta["model"]), int(meta["num_classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise OrandError(f"{checkpoint}: damaged train-seg checkpoint (its meta has no valid model and num_classes: "
                         f"{type(exc).__name__} {first_line(exc)})") from None
    try:
        net = build_model(name, num_classes, pretrained="none", bn="train")
    except OrandError as exc:
        raise OrandError(f"{checkpoint}: {exc}") from None
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise OrandError(f"{checkpoint}: the weights do not fit a {name} with {num_classes} classes "
                         f"({first_line(exc)})") from None
    return net.to(device).eval(), meta


@torch.no_grad()
def predict_probs(net: SegNet, image: np.ndarray, device: torch.device, scales: Sequence[float] = (1.0,),
                  flip: bool = False, precision: str = "auto") -> torch.Tensor:
    """Class probabilities (C, H, W) on the CPU: softmax averaged over ``scales`` (and horizontal flips)."""
    x = torch.from_numpy(normalize(image).transpose(2, 0, 1).copy())[None].to(device)
    h, w = image.shape[:2]
    total = torch.zeros(net.num_classes, h, w, device=device)
    for scale in scales:
        xs = x if scale == 1.0 else F.interpolate(
            x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear", align_corners=False)
        batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
        with autocast(device, precision):
            logits = net(batch).float()
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        probs = logits.softmax(1)
        total += probs[0] + (probs[1].flip(-1) if flip else 0)
    return (total / (len(scales) * (2 if flip else 1))).cpu()


def dense_crf(image: np.ndarray, probs: np.ndarray, params: dict | None = None) -> np.ndarray:
    """Fully connected CRF (Krähenbühl & Koltun) on probabilities (C, H, W); returns refined probabilities."""
    import pydensecrf.densecrf as dcrf

    p = {**CRF_PARAMS, **(params or {})}
    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs, 1e-8, 1.0)).reshape(c, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=p["pos_xy_std"], compat=p["pos_w"])
    rgb = np.array(image, dtype=np.uint8, order="C")  # pydensecrf needs a writable buffer
    crf.addPairwiseBilateral(sxy=p["bi_xy_std"], srgb=p["bi_rgb_std"], rgbim=rgb, compat=p["bi_w"])
    return np.asarray(crf.inference(int(p["iterations"])), dtype=np.float32).reshape(c, h, w)


def segment_one(net: SegNet, image: np.ndarray, device: torch.device, scales: Sequence[float], flip: bool,
                crf: bool, precision: str = "auto") -> np.ndarray:
    """uint8 label mask (H, W) of one RGB image."""
    probs = predict_probs(net, image, device, scales, flip, precision).numpy()
    if crf:
        probs = dense_crf(image, probs)
    return probs.argmax(0).astype(np.uint8)


def validation_confusion(net: SegNet, ids: Sequence[str], images: str | Path, gt: str | Path, device: torch.device,
                         precision: str = "auto", show_progress: bool = False) -> np.ndarray:
    """(C, C) confusion of ``net``'s single-scale masks of ``ids`` against ``gt`` (per-epoch validation; under DDP
    each rank counts its share and the matrices are summed)."""
    was_training = net.training
    net.eval()
    conf = np.zeros((net.num_classes, net.num_classes), np.int64)
    for image_id in progress(ids, desc="validating", enabled=show_progress, unit="img"):
        image = load_image(images, image_id)
        pred = segment_one(net, image, device, (1.0,), False, False, precision)
        conf += image_confusion(load_gt(gt, image_id, pred.shape), pred, net.num_classes, image_id)
    net.train(was_training)
    return conf


def check_gt_files(gt: str | Path, ids: Sequence[str]) -> None:
    """Every id has a ground-truth PNG (checked before anything is segmented)."""
    for image_id in ids:
        if not (Path(gt) / f"{image_id}.png").is_file():
            raise OrandError(f"{image_id}: no ground truth {image_id}.png in {gt}")


def check_can_sum_scores(dist: DistInfo) -> None:
    """Scores over all ranks are summed through torch.distributed: under a launcher other than torchrun (only
    ``RANK``/``WORLD_SIZE`` set) there is no rendezvous to sum them over."""
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if dist.enabled and missing:
        raise OrandError(f"segment --gt with WORLD_SIZE={dist.world_size} sums the ranks' scores over "
                         f"torch.distributed, but {' and '.join(missing)} not set; launch with torchrun, or leave "
                         f"out --gt and score the result afterwards (orand-addon evaluate --pred ... --gt ...)")


@contextlib.contextmanager
def score_group(dist: DistInfo, scoring: bool) -> Iterator["torch.distributed.ProcessGroup | None"]:
    """Under torchrun with ``--gt``: a gloo group (CPU tensors, whatever the model's device) that waits for the
    slowest rank (a rank that reruns a killed rank's share may take hours); None otherwise (no process group)."""
    if not (scoring and dist.enabled):
        yield None
        return
    import torch.distributed as tdist

    from ..runtime.distributed import process_group

    with process_group("cpu", dist):
        yield tdist.new_group(backend="gloo", timeout=SCORE_WAIT)


def sum_confusions(conf: np.ndarray, group: "torch.distributed.ProcessGroup | None") -> np.ndarray:
    """The sum of every rank's confusion matrix over ``group`` (``conf`` itself without one)."""
    if group is None:
        return conf
    import torch.distributed as tdist

    total = torch.from_numpy(np.ascontiguousarray(conf, dtype=np.int64))
    tdist.all_reduce(total, group=group)
    return total.numpy()

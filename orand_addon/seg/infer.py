"""Inference of the segmentation stage: multi-scale + flip, optional dense CRF, masks to PNGs and/or the store,
and mIoU against ground truth.

Scores come from :mod:`orand_addon.metrics.functional`, as in ``orand-addon evaluate`` (DESIGN §8: one
dataset-level confusion matrix, GT 255 ignored, classes absent from both sides left out of the means).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OrandError
from ..io.images import load_image, save_label_png
from ..metrics.functional import pixel_counts, segmentation_scores
from ..runtime import autocast, load_checkpoint, progress, resolve_device
from .data import load_gt, normalize
from .models import SegNet, build_model

DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
CRF_PARAMS = {"iterations": 10, "pos_xy_std": 1.0, "pos_w": 3.0, "bi_xy_std": 67.0, "bi_rgb_std": 3.0, "bi_w": 4.0}


def image_confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int, image_id: str) -> np.ndarray:
    """(C, C) confusion of one image through the evaluate command's metrics (errors name the image).

    >>> image_confusion(np.array([[0, 1], [1, 255]]), np.array([[0, 1], [0, 1]]), 2, "x").tolist()
    [[1, 0], [1, 1]]
    """
    conf, _ = pixel_counts(gt, pred, num_classes, name=image_id)  # predictions never hold 255: nothing unsure
    return conf


def load_segmenter(checkpoint: str | Path, device: torch.device) -> tuple[SegNet, dict]:
    """Model and metadata from a ``train-seg`` checkpoint (``last.pt`` or ``model.pt``)."""
    state = load_checkpoint(checkpoint)
    if not isinstance(state, dict) or "model" not in state or "meta" not in state:
        raise OrandError(f"{checkpoint}: not a train-seg checkpoint (no model/meta entries)")
    meta = state["meta"]
    net = build_model(meta["model"], int(meta["num_classes"]), pretrained="none", bn="train")
    net.load_state_dict(state["model"])
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


def evaluate_model(net: SegNet, ids: Sequence[str], images: str | Path, gt: str | Path, device: torch.device,
                   precision: str = "auto", show_progress: bool = False) -> float:
    """Single-scale mIoU of ``net`` on ``ids`` (per-epoch validation during training)."""
    was_training = net.training
    net.eval()
    conf = np.zeros((net.num_classes, net.num_classes), np.int64)
    for image_id in progress(ids, desc="validating", enabled=show_progress, unit="img"):
        image = load_image(images, image_id)
        pred = segment_one(net, image, device, (1.0,), False, False, precision)
        conf += image_confusion(load_gt(gt, image_id, pred.shape), pred, net.num_classes, image_id)
    net.train(was_training)
    return float(segmentation_scores(conf)["mean_iou"])


def _check_png_provenance(out: Path, parameters: dict, overwrite: bool) -> None:
    record = out / "segment.json"
    if record.is_file() and not overwrite:
        old = json.loads(record.read_text()).get("parameters")
        if old != parameters:
            diff = sorted(k for k in set(old or {}) | set(parameters) if (old or {}).get(k) != parameters.get(k))
            raise OrandError(f"{out}: masks there were written with other parameters ({', '.join(diff)} differ); "
                             f"use a new --out or --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"parameters": parameters}, indent=1))


def segment_images(checkpoint: str | Path, images: str | Path, ids: Sequence[str], out: str | Path | None = None,
                   store: str | Path | None = None, group: str = "seg", scales: Sequence[float] = DEFAULT_SCALES,
                   flip: bool = True, crf: bool = False, gt: str | Path | None = None, device: str = "auto",
                   precision: str = "auto", overwrite: bool = False, show_progress: bool = True,
                   command: str = "segment") -> dict:
    """Segment ``ids``: PNG masks into ``out`` and/or ``/<group>/<id>`` of ``store``; score against ``gt``.

    Ids already written are skipped (an interrupted run resumes) but still scored. Returns a dict with
    ``written``, ``skipped``, and with ``gt`` also ``miou`` and ``iou`` (class name -> IoU).
    """
    from ..store import Store

    if out is None and store is None:
        raise OrandError("segment: give --out DIR (PNG masks) and/or --store STORE.h5")
    if not ids:
        raise OrandError("segment: the id list is empty")
    dev = resolve_device(device)
    net, meta = load_segmenter(checkpoint, dev)
    names = list(meta.get("class_names") or [str(i) for i in range(net.num_classes)])
    parameters = {"checkpoint": str(Path(checkpoint).resolve()), "scales": list(scales), "flip": flip, "crf": crf}
    out = Path(out) if out is not None else None
    if out is not None:
        _check_png_provenance(out, parameters, overwrite)
    db = Store(store, "a", class_names=names) if store is not None else None
    conf = np.zeros((net.num_classes, net.num_classes), np.int64)
    written = skipped = 0
    try:
        if db is not None:
            db.begin([group], command, parameters, force=overwrite)
        for image_id in progress(ids, desc="segmenting", enabled=show_progress, unit="img"):
            done_png = out is None or (out / f"{image_id}.png").is_file()
            done_store = db is None or db.has(group, image_id)
            if done_png and done_store and not overwrite:
                pred = db.read_mask(group, image_id) if db is not None else _read_png(out, image_id)
                skipped += 1
            else:
                pred = segment_one(net, load_image(images, image_id), dev, scales, flip, crf, precision)
                if out is not None:
                    save_label_png(out / f"{image_id}.png", pred)
                if db is not None:
                    db.write_mask(group, image_id, pred)
                written += 1
            if gt is not None:
                conf += image_confusion(load_gt(gt, image_id, pred.shape), pred, net.num_classes, image_id)
    finally:
        if db is not None:
            db.close()
    result: dict = {"written": written, "skipped": skipped, "out": str(out) if out else None,
                    "store": f"{store}:{group}" if store else None}
    if gt is not None:
        scores = segmentation_scores(conf)
        result.update(miou=float(scores["mean_iou"]), mean_precision=float(scores["mean_precision"]),
                      mean_recall=float(scores["mean_recall"]))
        result["iou"] = {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, scores["iou"])}
    return result


def _read_png(out: Path, image_id: str) -> np.ndarray:
    from ..io.images import load_label_png

    return load_label_png(out / f"{image_id}.png")

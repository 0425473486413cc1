"""``segment``: a trained DeepLab over a list of images, masks into a PNG folder and/or a store group, scored
against ground truth.

:class:`SegmentStage` is a stage of :mod:`orand_addon.engine.stage` (resume, crash-safe parts, torchrun shards). The
PNG folder records the parameters in ``segment.json`` (written atomically; every rank of a sharded run writes the
same record): masks of another checkpoint, or of the same file trained again (its content digest is recorded),
are refused unless ``--overwrite``, which then writes every mask again. PNG files are written atomically, so the
ranks of a sharded run share the folder and a rerun skips the files that exist.

With ``gt`` every id is scored after the masks are written (those of earlier runs too, read back): one
dataset-level confusion matrix; under torchrun each rank counts its ids and the matrices are summed over a gloo
group (:func:`~.infer.score_group`), so rank 0 reports the scores of all ids, as one process computes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from ..engine.stage import ImageResult, RunOptions, Stage, StageReport, run_stage
from ..errors import OrandError
from ..io.images import load_image, load_label_png, save_label_png
from ..runtime.devices import resolve_precision
from ..runtime.distributed import DistInfo, pick_device, shard
from ..runtime.files import atomic_write_text
from ..runtime.provenance import file_digest, normalize, parameter_diff
from ..store.shards import shard_path
from ..store.store import Store
from ..evaluation.functional import segmentation_scores
from .data import load_gt
from .infer import (DEFAULT_SCALES, check_can_sum_scores, check_gt_files, image_confusion, load_segmenter,
                    score_group, segment_one, sum_confusions)

RECORD = "segment.json"


def recorded_parameters(record: Path) -> dict:
    """The parameters in a folder's ``segment.json``; a one-line error naming it when it is not such a record."""
    try:
        doc = json.loads(record.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or (exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc))
        raise OrandError(f"{record}: unreadable record of an earlier segment run ({reason}); delete it or use a new "
                         f"--out") from None
    parameters = doc.get("parameters") if isinstance(doc, dict) else None
    if not isinstance(parameters, dict):
        raise OrandError(f"{record}: not a record of an earlier segment run (no parameters); delete it or use a new "
                         f"--out")
    return parameters


def check_png_folder(out: Path, parameters: dict, overwrite: bool) -> bool:
    """Refuse a folder of masks written with other parameters (unless ``overwrite``); record ours in
    ``segment.json``. Returns whether the masks there must be written again (other parameters, ``overwrite``)."""
    record = out / RECORD
    redo = False
    if record.is_file():
        try:
            diff = parameter_diff(recorded_parameters(record), normalize(parameters))
        except OrandError:
            if not overwrite:
                raise
            diff = ["<unreadable record>"]
        if diff and not overwrite:
            raise OrandError(f"{out}: masks there were written with other parameters ({', '.join(diff)} differ); "
                             f"use a new --out or --overwrite")
        redo = bool(diff)
    atomic_write_text(record, json.dumps({"parameters": parameters}, indent=1, default=str), what="segment record")
    return redo


class SegmentStage(Stage):
    """Masks of a trained DeepLab (multi-scale + flip, optional CRF) into ``out`` PNGs and/or ``/<group>``."""

    name: ClassVar[str] = "segment"

    def __init__(self, checkpoint: str | Path, images: str | Path, ids: Sequence[str], out: Path | None,
                 group: str | None, scales: Sequence[float], flip: bool, crf: bool, gt: str | Path | None,
                 device, precision: str, overwrite: bool, command: str):
        self.images, self.ids, self.out, self.group = str(images), list(ids), out, group
        self.scales, self.flip, self.crf = tuple(scales), flip, crf
        self.gt, self.overwrite, self.command = gt, overwrite, command
        self.device, self.precision = device, resolve_precision(device, precision)
        self.net, meta = load_segmenter(checkpoint, device)
        self.names = list(meta.get("class_names") or [str(i) for i in range(self.net.num_classes)])
        self.required_classes = self.names
        self._parameters = {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": file_digest(checkpoint),
                            "scales": list(self.scales), "flip": flip, "crf": crf}
        self._redo_pngs = False

    def groups(self) -> tuple[str, ...]:
        return (self.group,) if self.group else ()

    def parameters(self, source: Store | None) -> dict:
        return self._parameters

    def plan(self, source: Store | None) -> list[tuple[str, ...]]:
        return [(i,) for i in self.ids]

    def check(self, source: Store | None, ids: Sequence[str]) -> None:
        if self.gt is not None:
            check_gt_files(self.gt, ids)
        if self.out is not None:
            self._redo_pngs = check_png_folder(self.out, self._parameters, self.overwrite)

    def done_elsewhere(self, image_id: str) -> bool:
        return self.out is None or (not self._redo_pngs and (self.out / f"{image_id}.png").is_file())

    def compute(self, unit: tuple[str, ...]) -> list[ImageResult]:
        out = []
        for image_id in unit:
            mask = segment_one(self.net, load_image(self.images, image_id), self.device, self.scales, self.flip,
                               self.crf, self.precision)
            if self.out is not None:
                save_label_png(self.out / f"{image_id}.png", mask)
            out.append(ImageResult(image_id, masks={self.group: mask} if self.group else {}))
        return out

    def summary(self, report: StageReport) -> list[str]:
        return [f"segmented {report.written} images ({report.skipped_existing} already done)", *report.recovered]

    def finish(self, report: StageReport, store_path: Path | None, dist: DistInfo) -> None:
        if self.gt is None:
            return
        mine = shard(self.ids, dist.rank, dist.world_size)
        sources = [s for s in ([shard_path(store_path, dist.rank, dist.world_size)] if store_path and dist.enabled
                               else []) + ([store_path] if store_path else []) if Path(s).is_file()]
        stores = [Store(s) for s in sources]
        try:
            conf = np.zeros((self.net.num_classes,) * 2, np.int64)
            for image_id in mine:
                pred = self._read(image_id, stores)
                conf += image_confusion(load_gt(self.gt, image_id, pred.shape), pred, self.net.num_classes, image_id)
        finally:
            for store in stores:
                store.close()
        with score_group(dist, True) as ranks:
            conf = sum_confusions(conf, ranks)
        scores = segmentation_scores(conf)
        per_class = {m: {n: (None if np.isnan(v) else float(v)) for n, v in zip(self.names, scores[m])}
                     for m in ("iou", "precision", "recall")}
        report.extra.update(miou=float(scores["mean_iou"]), mean_precision=float(scores["mean_precision"]),
                            mean_recall=float(scores["mean_recall"]), **per_class, confusion=conf.tolist())

    def _read(self, image_id: str, stores: Sequence[Store]) -> np.ndarray:
        for store in stores:
            if store.has(self.group, image_id):
                return store.read_mask(self.group, image_id)
        return load_label_png(self.out / f"{image_id}.png")


@dataclass(frozen=True)
class SegmentConfig:
    """Everything ``segment`` takes besides the checkpoint, the images and the ids (the CLI's options).

    ``out``: a folder of PNG masks; ``store``: ``/<group>/<id>`` of an HDF5 store (at least one of them);
    ``scales``/``flip``/``crf``: the inference; ``gt``: ground-truth PNGs to score every id against.
    """

    out: str | Path | None = None
    store: str | Path | None = None
    group: str = "seg"
    scales: tuple[float, ...] = DEFAULT_SCALES
    flip: bool = True
    crf: bool = False
    gt: str | Path | None = None
    device: str = "auto"
    precision: str = "auto"
    overwrite: bool = False
    show_progress: bool = True


def segment_images(checkpoint: str | Path, images: str | Path, ids: Sequence[str],
                   config: SegmentConfig = SegmentConfig(), command: str = "orand-addon segment",
                   dist: DistInfo = DistInfo()) -> dict:
    """Segment ``ids``: PNG masks into ``config.out`` and/or ``/<group>/<id>`` of ``config.store``; score against
    ``config.gt``.

    Ids already written are skipped (an interrupted run resumes) but still scored. Returns a dict with
    ``written``, ``skipped``, and with ``gt`` also ``miou``, ``mean_precision``, ``mean_recall``, ``iou``,
    ``precision`` and ``recall`` (class name -> value) and ``confusion`` (C x C, rows ground truth), as ``evaluate``
    counts them. ``dist`` (rank ``r`` of ``w`` under torchrun): this rank segments ``ids[r::w]`` into ``out`` and
    its shard of ``store`` (``written``/``skipped`` count its images, ``store`` names its shard,
    ``rank``/``world_size`` are added); with ``gt`` the scores are those of all ``ids``.
    """
    c = config
    if c.out is None and c.store is None:
        raise OrandError("segment: give --out DIR (PNG masks) and/or --store STORE.h5")
    if not ids:
        raise OrandError("segment: the id list is empty")
    if c.gt is not None:
        check_can_sum_scores(dist)
    out = Path(c.out) if c.out is not None else None
    store = Path(c.store) if c.store is not None else None
    stage = SegmentStage(checkpoint, images, ids, out, c.group if store is not None else None, c.scales, c.flip,
                         c.crf, c.gt, pick_device(c.device, dist), c.precision, c.overwrite, command)
    report = run_stage(stage, store, RunOptions(overwrite=c.overwrite, progress=c.show_progress, dist=dist))
    written_to = shard_path(store, dist.rank, dist.world_size) if store is not None and dist.enabled else store
    result: dict = {"written": report.written, "skipped": report.skipped_existing, "out": str(out) if out else None,
                    "store": f"{written_to}:{c.group}" if store else None}
    if dist.enabled:
        result.update(rank=dist.rank, world_size=dist.world_size)
    scores = ("miou", "mean_precision", "mean_recall", "iou", "precision", "recall", "confusion")
    result.update({k: report.extra[k] for k in scores if k in report.extra})
    if "miou" in result:
        result["scored"] = len(ids)
    return result

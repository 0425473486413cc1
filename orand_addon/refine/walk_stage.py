"""The walk step (``step/make_sem_seg_labels.py``): boundary map of each image, random walk of its maps, masks.

Per image: the trained IRN gives the stride-4 boundary map (flip-averaged); the stored ``kind`` maps are
downsized to ⌈H/4⌉ × ⌈W/4⌉ (IRN's ``cam``), optionally raised to ``cam_power`` (AMN: 1.3); :func:`random_walk`
propagates them; the result is upsampled ×4, cropped to the image, divided by its global max and written as kind
``rw`` (keys as the source), and ``/masks`` gets the arg-max with a constant background of ``bg_thres`` (0.25).
Resumable at image granularity: ids with both ``rw`` and ``masks`` are skipped. The provenance of ``rw`` and
``/masks`` records the content digest of the IRN weights and the parameters that wrote the ``kind`` maps: a rerun
after retraining IRN (same path, new weights) or rewriting the maps is refused, or with ``--overwrite`` starts
over, instead of mixing masks of the old and the new weights. Under torchrun each rank walks
its share of the ids on its own device (``cuda:LOCAL_RANK`` for ``auto``/``cuda``) into its own shard of the store
(:mod:`.outputs`); ``orand-addon merge`` joins the shards. Ranks never talk to each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch

from ..engine.stage import ImageResult, RunOptions, Stage, StageReport, run_stage
from ..runtime.distributed import DistInfo, pick_device
from ..store.store import Store
from ..errors import OrandError, StoreError
from ..io.images import load_image
from ..masks import maps_to_mask
from ..runtime.devices import autocast, resolve_precision
from ..runtime.provenance import file_digest
from .checks import ReadsStoreMaps, check_finite, kind_parameters
from .network import load_trained, normalize_image, predict_edge, trained_crop_size
from .random_walk import prepare_cam, random_walk, walk_to_maps


@dataclass(frozen=True)
class WalkOptions:
    """IRN's values: beta 10, exp_times 8, radius 5, background 0.25; ``cam_power`` 1 (AMN uses 1.3)."""

    beta: float = 10.0
    exp_times: int = 8
    radius: int = 5
    bg_thres: float = 0.25
    cam_power: float = 1.0
    dtype: str = "float16"
    edge_pad: int | None = None  # pad images to this canvas for the boundary network (IRN: 512); None: the
    #                              crop size the IRN checkpoint was trained with; 0: no padding


def walk_one(model, image: np.ndarray, maps: np.ndarray, keys: np.ndarray, options: WalkOptions,
             device: torch.device, precision: str = "auto", image_id: str = "?") -> tuple[np.ndarray, np.ndarray]:
    """``(rw maps (K, H, W) float32, mask (H, W) uint8)`` of one image."""
    edge = predict_edge(model, normalize_image(image, device), autocast(device, precision), options.edge_pad or 0)
    if not bool(torch.isfinite(edge).all()):
        raise OrandError(f"{image_id}: the boundary map has NaN or Inf (diverged IRN weights?)")
    cam = prepare_cam(torch.from_numpy(maps).to(device), options.cam_power)
    rw = random_walk(cam, edge, beta=options.beta, exp_times=options.exp_times, radius=options.radius)
    out = walk_to_maps(rw, maps.shape[-2:]).cpu().numpy()
    return out, maps_to_mask(out, keys, options.bg_thres)


class WalkStage(ReadsStoreMaps, Stage):
    """The random walk of the ``kind`` maps with a trained IRN into kind ``rw`` and ``/masks`` (on the device, in
    this process)."""

    planned = "the maps to refine"

    name: ClassVar[str] = "walk"

    def __init__(self, store_path: str | Path, kind: str, images: str | Path, checkpoint: str | Path,
                 ids: Sequence[str] | None, options: WalkOptions, device: torch.device, precision: str,
                 class_names: Sequence[str] | None, command: str):
        self.store_path, self.kind, self.images = Path(store_path), kind, str(images)
        if options.edge_pad is None:  # as IRN: the canvas of its training crops (512)
            options = replace(options, edge_pad=trained_crop_size(checkpoint))
        self.checkpoint, self.wanted, self.options = Path(checkpoint), ids, options
        self.device, self.precision = device, resolve_precision(device, precision)
        self.required_classes = list(class_names) if class_names is not None else None
        self.command, self.dtype = command, options.dtype
        self.model = load_trained(checkpoint, device)
        self._digest = file_digest(checkpoint)
        self._source: Store | None = None

    def groups(self) -> tuple[str, ...]:
        return ("rw", "masks")

    def parameters(self, source: Store | None) -> dict:
        return {"kind": self.kind, "checkpoint": str(self.checkpoint.resolve()), "checkpoint_sha256": self._digest,
                "kind_parameters": kind_parameters(source, self.kind) if source is not None else None,
                **asdict(self.options)}

    def compute(self, unit: tuple[str, ...]) -> list[ImageResult]:
        out = []
        for image_id in unit:
            maps, keys = self._source.read_maps(self.kind, image_id)
            check_finite(image_id, maps, f"/{self.kind} maps")
            rw, mask = walk_one(self.model, load_image(self.images, image_id), maps, keys, self.options, self.device,
                                self.precision, image_id)
            out.append(ImageResult(image_id, maps={"rw": (rw, keys)}, masks={"masks": mask}))
        return out

    def summary(self, report: StageReport) -> list[str]:
        return [f"walk: wrote {report.written} images (rw maps + masks), {report.skipped_existing} already present",
                *report.recovered, *report.note_lines()]


def run_walk(store_path: str | Path, kind: str, images: str | Path, checkpoint: str | Path,
             ids: Sequence[str] | None = None, options: WalkOptions = WalkOptions(), device: str = "auto",
             precision: str = "auto", overwrite: bool = False, progress: bool = True,
             command: str = "orand-addon refine --steps walk", dist: DistInfo = DistInfo(),
             class_names: Sequence[str] | None = None) -> StageReport:
    """Random-walk the ``kind`` maps with the IRN ``checkpoint`` into kind ``rw`` and ``/masks``; resumable.

    ``dist``: this rank under torchrun; it writes its share into its shard. ``class_names``: the classes the store
    must have (None: whatever it has).
    """
    if not Path(store_path).is_file():
        raise StoreError(f"{store_path}: store not found")
    stage = WalkStage(store_path, kind, images, checkpoint, ids, options, pick_device(device, dist), precision,
                      class_names, command)
    return run_stage(stage, store_path, RunOptions(overwrite=overwrite, progress=progress, dist=dist))

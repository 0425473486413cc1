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

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..distributed import DistInfo, pick_device
from ..errors import OrandError
from ..io.images import load_image
from ..masks import maps_to_mask
from ..runtime import Interrupted, autocast, file_digest, progress as progress_bar, resolve_precision
from .inputs import check_finite, check_images, kind_parameters, select_ids
from .network import normalize_image, predict_edge
from .outputs import StepOutput
from .random_walk import prepare_cam, random_walk, walk_to_maps
from .train import load_trained


@dataclass(frozen=True)
class WalkOptions:
    """IRN's values: beta 10, exp_times 8, radius 5, background 0.25; ``cam_power`` 1 (AMN uses 1.3)."""

    beta: float = 10.0
    exp_times: int = 8
    radius: int = 5
    bg_thres: float = 0.25
    cam_power: float = 1.0
    dtype: str = "float16"


@dataclass
class WalkReport:
    written: int = 0
    skipped_existing: int = 0

    def lines(self) -> list[str]:
        return [f"walk: wrote {self.written} images (rw maps + masks), {self.skipped_existing} already present"]


def walk_one(model, image: np.ndarray, maps: np.ndarray, keys: np.ndarray, options: WalkOptions,
             device: torch.device, precision: str = "auto", image_id: str = "?") -> tuple[np.ndarray, np.ndarray]:
    """``(rw maps (K, H, W) float32, mask (H, W) uint8)`` of one image."""
    edge = predict_edge(model, normalize_image(image, device), autocast(device, precision))
    if not bool(torch.isfinite(edge).all()):
        raise OrandError(f"{image_id}: the boundary map has NaN or Inf (diverged IRN weights?)")
    cam = prepare_cam(torch.from_numpy(maps).to(device), options.cam_power)
    rw = random_walk(cam, edge, beta=options.beta, exp_times=options.exp_times, radius=options.radius)
    out = walk_to_maps(rw, maps.shape[-2:]).cpu().numpy()
    return out, maps_to_mask(out, keys, options.bg_thres)


def run_walk(store_path: str | Path, kind: str, images: str | Path, checkpoint: str | Path,
             ids: Sequence[str] | None = None, options: WalkOptions = WalkOptions(), device: str = "auto",
             precision: str = "auto", overwrite: bool = False, progress: bool = True,
             command: str = "orand-addon refine --steps walk", dist: DistInfo = DistInfo(),
             class_names: Sequence[str] | None = None) -> WalkReport:
    """Random-walk the ``kind`` maps with the IRN ``checkpoint`` into kind ``rw`` and ``/masks``; resumable.

    ``dist``: this rank under torchrun; it writes its share into its shard (see :mod:`.outputs`).
    ``class_names``: the classes the store must have (None: whatever it has).
    """
    dev = pick_device(device, dist)
    precision = resolve_precision(dev, precision)
    model = load_trained(checkpoint, dev)
    report = WalkReport()
    with StepOutput(store_path, dist, class_names) as out:
        parameters = {"kind": kind, "checkpoint": str(Path(checkpoint).resolve()),
                      "checkpoint_sha256": file_digest(checkpoint),
                      "kind_parameters": kind_parameters(out.source, kind), **asdict(options)}
        mine = out.share(select_ids(out.source, kind, ids, "the maps to refine"))
        check_images(images, mine, lambda i: out.source.map_shape(kind, i)[1:], f"/{kind} maps")  # before any write
        todo = out.begin(["rw", "masks"], command, parameters, overwrite, mine)
        report.skipped_existing = len(mine) - len(todo)
        bar = progress_bar(total=len(todo), desc="random walk", unit="img", enabled=progress and dist.is_main)
        try:
            for image_id in todo:
                maps, keys = out.source.read_maps(kind, image_id)
                check_finite(image_id, maps, f"/{kind} maps")
                rw, mask = walk_one(model, load_image(images, image_id), maps, keys, options, dev, precision, image_id)
                out.sink.write_maps("rw", image_id, rw, keys, dtype=options.dtype)
                out.sink.write_mask("masks", image_id, mask)
                out.wrote()
                report.written += 1
                bar.update(1)
            out.finish()
        except KeyboardInterrupt:
            raise Interrupted(f"random walk interrupted after {report.written} of {len(todo)} images; "
                              f"{out.target} keeps them and the same command resumes") from None
        finally:
            bar.close()
    return report

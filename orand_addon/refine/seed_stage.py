"""The seeds step: IRN seeds of every image into ``/seeds`` of the store, on all CPU cores; or seeds from PNGs.

Both are stages of :mod:`orand_addon.engine.stage` (resume, crash-safe parts, worker processes, torchrun shards).
:class:`SeedStage` computes in worker processes: each opens the store read-only, reads the maps of its image,
loads the image and runs both CRF passes (:func:`.seeds.seed_from_labels`). The seeds' provenance records the
parameters that wrote the source kind, so seeds of a kind written again with other parameters are refused (or,
with ``--overwrite``, replaced) instead of being mixed with new ones. Under torchrun each rank seeds its share of the
ids into its own shard of the store, with ``cores / processes on this machine`` CRF workers by default.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from ..engine.stage import ImageResult, RunOptions, Stage, StageReport, run_stage
from ..errors import OrandError, StoreError
from ..io.images import image_size, load_image, load_label_png
from ..masks import maps_to_channels
from ..runtime.distributed import DistInfo
from ..runtime.workers import cpu_share
from ..store.store import Store
from .checks import ReadsStoreMaps, check_finite, check_images, kind_parameters
from .seeds import SeedOptions, seed_from_labels

NO_FG = "no_foreground_seed"


class _SeedsBase(Stage):
    """What both ways of making seeds share: the group, the classes, the report."""

    def __init__(self, store_path: str | Path, images: str | Path, ids: Sequence[str] | None,
                 class_names: Sequence[str] | None, command: str):
        self.store_path, self.images = Path(store_path), str(images)
        self.wanted = list(ids) if ids is not None else None
        self.required_classes = list(class_names) if class_names is not None else None
        self.command = command
        self._source: Store | None = None

    def groups(self) -> tuple[str, ...]:
        return ("seeds",)

    def collect(self, result: ImageResult, report: StageReport) -> None:
        super().collect(result, report)
        seed = result.extra.get("fg")
        if seed is False:
            report.extra.setdefault(NO_FG, []).append(result.image_id)

    def summary(self, report: StageReport) -> list[str]:
        out = [f"seeds: wrote {report.written} images, {report.skipped_existing} already present", *report.recovered]
        no_fg = report.extra.get(NO_FG, [])
        if no_fg:
            out.append(f"seeds: {len(no_fg)} images have no foreground seed (e.g. {', '.join(no_fg[:3])}); they "
                       f"still give background pairs")
        return out + report.note_lines()


def _result(image_id: str, seed: np.ndarray) -> ImageResult:
    fg = bool(((seed > 0) & (seed < 255)).any())
    return ImageResult(image_id, masks={"seeds": seed}, extra={"fg": fg})


class SeedStage(ReadsStoreMaps, _SeedsBase):
    """Seeds from the ``kind`` maps of the store (IRN's rule + dense CRF), computed in worker processes."""

    planned = "the maps to seed from"

    name: ClassVar[str] = "seeds"
    parallel: ClassVar[bool] = True

    def __init__(self, store_path: str | Path, kind: str, images: str | Path, ids: Sequence[str] | None = None,
                 options: SeedOptions = SeedOptions(), class_names: Sequence[str] | None = None,
                 command: str = "orand-addon refine --steps seeds"):
        super().__init__(store_path, images, ids, class_names, command)
        self.kind, self.options = kind, options

    def parameters(self, source: Store | None) -> dict:
        return {"source": "maps", "kind": self.kind, "fg_thres": self.options.fg_thres,
                "bg_thres": self.options.bg_thres, "crf": asdict(self.options.crf),
                "kind_parameters": kind_parameters(source, self.kind) if source is not None else None}

    def compute(self, unit: tuple[str, ...]) -> list[ImageResult]:
        out = []
        for image_id in unit:
            maps, keys = self._source.read_maps(self.kind, image_id)
            check_finite(image_id, maps, f"/{self.kind} maps")
            fg = maps_to_channels(maps, self.options.fg_thres)
            bg = maps_to_channels(maps, self.options.bg_thres)
            out.append(_result(image_id, seed_from_labels(load_image(self.images, image_id), fg, bg, keys,
                                                          self.options.crf)))
        return out


class SeedPngStage(_SeedsBase):
    """Seeds from label PNGs (``<id>.png``: 0 background, 1..C, 255 unsure); creates the store when missing."""

    name: ClassVar[str] = "seeds"

    def __init__(self, store_path: str | Path, png_dir: str | Path, images: str | Path,
                 ids: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
                 command: str = "orand-addon refine --seeds-png"):
        super().__init__(store_path, images, ids, class_names, command)
        self.folder = Path(png_dir)
        if not self.folder.is_dir():
            raise OrandError(f"{self.folder}: seed PNG folder not found")

    def parameters(self, source: Store | None) -> dict:
        return {"source": "png", "dir": str(self.folder.resolve())}

    def class_names(self, source: Store | None) -> list[str]:
        from ..classes import VOC_CLASSES

        return super().class_names(source) or list(VOC_CLASSES)

    def plan(self, source: Store | None) -> list[tuple[str, ...]]:
        wanted = self.wanted if self.wanted is not None else sorted(p.stem for p in self.folder.glob("*.png"))
        if not wanted:
            raise OrandError(f"{self.folder}: no seed PNGs (<id>.png)")
        return [(i,) for i in dict.fromkeys(wanted)]

    def check(self, source: Store | None, ids: Sequence[str]) -> None:
        for image_id in ids:
            if not (self.folder / f"{image_id}.png").is_file():
                raise OrandError(f"{image_id}: no seed PNG {self.folder / (image_id + '.png')}")
        check_images(self.images, ids, lambda i: image_size(self.folder, i), "seed PNGs")
        self._n_classes = len(self.class_names(source))

    def compute(self, unit: tuple[str, ...]) -> list[ImageResult]:
        out = []
        for image_id in unit:
            seed = load_label_png(self.folder / f"{image_id}.png")
            bad = np.unique(seed[(seed >= self._n_classes) & (seed != 255)])
            if bad.size:
                raise OrandError(f"{image_id}: seed PNG has values {bad[:5].tolist()} outside "
                                 f"0..{self._n_classes - 1} and 255 ({self.folder})")
            out.append(_result(image_id, seed))
        return out


def make_seeds(store_path: str | Path, kind: str, images: str | Path, ids: Sequence[str] | None = None,
               options: SeedOptions = SeedOptions(), workers: int | None = None, overwrite: bool = False,
               progress: bool = True, command: str = "orand-addon refine --steps seeds",
               dist: DistInfo = DistInfo(), class_names: Sequence[str] | None = None) -> StageReport:
    """IRN seeds from the ``kind`` maps of the store into ``/seeds`` (uint8: 0, 1..C, 255); resumable.

    ``workers``: CRF processes (default: every CPU core, shared by the ranks of a machine; 0 or 1 runs in this
    process). ``dist``: this rank under torchrun; it writes its share into its shard. ``class_names``: the classes
    the store must have (None: whatever it has).
    """
    if not Path(store_path).is_file():
        raise StoreError(f"{store_path}: store not found")
    stage = SeedStage(store_path, kind, images, ids, options, class_names, command)
    workers = cpu_share() if workers is None else workers
    return run_stage(stage, store_path, RunOptions(workers=workers, overwrite=overwrite, progress=progress, dist=dist))


def import_seed_pngs(store_path: str | Path, png_dir: str | Path, images: str | Path,
                     ids: Sequence[str] | None = None, overwrite: bool = False, progress: bool = True,
                     command: str = "orand-addon refine --seeds-png", dist: DistInfo = DistInfo(),
                     class_names: Sequence[str] | None = None) -> StageReport:
    """Seeds from label PNGs (``<id>.png``: 0 background, 1..C, 255 unsure) into ``/seeds``; resumable.

    ``class_names``: the classes of a store created here (VOC when None), or that an existing store must have.
    """
    stage = SeedPngStage(store_path, png_dir, images, ids, class_names, command)
    return run_stage(stage, store_path, RunOptions(overwrite=overwrite, progress=progress, dist=dist))

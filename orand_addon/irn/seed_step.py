"""The seeds step: IRN seeds of every image into ``/seeds`` of the store, on all CPU cores; or seeds from PNGs.

Resumable at image granularity: ids already in ``/seeds`` are skipped. The maps are read in the main process
(which alone holds the store open for writing); the worker processes (:func:`~orand_addon.runtime.worker_pool`:
never forked, Ctrl-C left to the main process) load the image and run both CRF passes. The seeds' provenance
records the parameters that wrote the source kind, so seeds of a kind written again with other parameters are
refused (or, with ``--overwrite``, replaced) instead of being mixed with new ones.
Under torchrun each rank seeds its share of the ids into its own shard of the store (:mod:`.outputs`), with
``cores / processes on this machine`` CRF workers by default; ``orand-addon merge`` joins the shards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..distributed import DistInfo
from ..errors import OrandError
from ..io.images import image_size, load_image, load_label_png
from ..masks import maps_to_channels
from ..runtime import Interrupted, progress as progress_bar, worker_pool
from ..store import Store
from .inputs import bounded_map, check_finite, check_images, cpu_share, kind_parameters, select_ids
from .outputs import StepOutput
from .seeds import SeedOptions, seed_from_labels


@dataclass
class SeedReport:
    written: int = 0
    skipped_existing: int = 0
    no_foreground_seed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"seeds: wrote {self.written} images, {self.skipped_existing} already present"]
        if self.no_foreground_seed:
            out.append(f"seeds: {len(self.no_foreground_seed)} images have no foreground seed (e.g. "
                       f"{', '.join(self.no_foreground_seed[:3])}); they still give background pairs")
        return out


def _seed_task(task: tuple) -> tuple[str, np.ndarray | OrandError]:
    image_id, images, fg, bg, keys, crf = task
    try:
        image = load_image(images, image_id)
        return image_id, seed_from_labels(image, fg, bg, keys, crf)
    except OrandError as exc:
        return image_id, exc


def _tasks(store: Store, kind: str, ids: Sequence[str], images: str, options: SeedOptions) -> Iterator[tuple]:
    for image_id in ids:
        maps, keys = store.read_maps(kind, image_id)
        check_finite(image_id, maps, f"/{kind} maps")
        fg = maps_to_channels(maps, options.fg_thres)
        bg = maps_to_channels(maps, options.bg_thres)
        yield image_id, images, fg, bg, keys, options.crf


def make_seeds(store_path: str | Path, kind: str, images: str | Path, ids: Sequence[str] | None = None,
               options: SeedOptions = SeedOptions(), workers: int | None = None, overwrite: bool = False,
               progress: bool = True, command: str = "orand-addon refine --steps seeds",
               dist: DistInfo = DistInfo(), class_names: Sequence[str] | None = None) -> SeedReport:
    """IRN seeds from the ``kind`` maps of the store into ``/seeds`` (uint8: 0, 1..C, 255); resumable.

    ``workers``: CRF processes (default: every CPU core, shared by the ranks of a machine; 0 or 1 runs in this
    process). ``dist``: this rank under torchrun; it writes its share into its shard (see :mod:`.outputs`).
    ``class_names``: the classes the store must have (None: whatever it has).
    """
    report = SeedReport()
    workers = cpu_share() if workers is None else workers
    with StepOutput(store_path, dist, class_names) as out:
        parameters = {"source": "maps", "kind": kind, "fg_thres": options.fg_thres, "bg_thres": options.bg_thres,
                      "crf": asdict(options.crf), "kind_parameters": kind_parameters(out.source, kind)}
        mine = out.share(select_ids(out.source, kind, ids, "the maps to seed from"))
        check_images(images, mine, lambda i: out.source.map_shape(kind, i)[1:], f"/{kind} maps")  # before any write
        todo = out.begin(["seeds"], command, parameters, overwrite, mine)
        report.skipped_existing = len(mine) - len(todo)
        pool = worker_pool(workers) if workers > 1 and len(todo) > 1 else None
        bar = progress_bar(total=len(todo), desc="seeds", unit="img", enabled=progress and dist.is_main)
        try:
            tasks = _tasks(out.source, kind, todo, str(images), options)
            for image_id, seed in bounded_map(pool, _seed_task, tasks, window=2 * max(workers, 1)):
                if isinstance(seed, OrandError):
                    raise seed
                _record(out.sink, image_id, seed, report)
                out.wrote()
                bar.update(1)
            out.finish()
        except KeyboardInterrupt:
            raise Interrupted(f"seeds interrupted after {report.written} of {len(todo)} images; {out.target} keeps "
                              f"them and the same command resumes") from None
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
    return report


def _record(store: Store, image_id: str, seed: np.ndarray, report: SeedReport) -> None:
    store.write_mask("seeds", image_id, seed)
    report.written += 1
    fg = (seed > 0) & (seed < 255)
    if not fg.any():
        report.no_foreground_seed.append(image_id)


def import_seed_pngs(store_path: str | Path, png_dir: str | Path, images: str | Path,
                     ids: Sequence[str] | None = None, overwrite: bool = False, progress: bool = True,
                     command: str = "orand-addon refine --seeds-png", dist: DistInfo = DistInfo(),
                     class_names: Sequence[str] | None = None) -> SeedReport:
    """Seeds from label PNGs (``<id>.png``: 0 background, 1..C, 255 unsure) into ``/seeds``; resumable.

    ``dist``: this rank under torchrun; it imports its share into its shard (see :mod:`.outputs`).
    ``class_names``: the classes of a store created here (VOC when None), or that an existing store must have.
    """
    folder = Path(png_dir)
    if not folder.is_dir():
        raise OrandError(f"{folder}: seed PNG folder not found")
    report = SeedReport()
    wanted = list(ids) if ids is not None else sorted(p.stem for p in folder.glob("*.png"))
    if not wanted:
        raise OrandError(f"{folder}: no seed PNGs (<id>.png)")
    with StepOutput(store_path, dist, class_names) as out:
        mine = out.share(wanted)
        for image_id in mine:  # every check before any write
            if not (folder / f"{image_id}.png").is_file():
                raise OrandError(f"{image_id}: no seed PNG {folder / (image_id + '.png')}")
        check_images(images, mine, lambda i: image_size(folder, i), "seed PNGs")
        todo = out.begin(["seeds"], command, {"source": "png", "dir": str(folder.resolve())}, overwrite, mine)
        report.skipped_existing = len(mine) - len(todo)
        n_classes = len(out.sink.class_names)
        bar = progress_bar(total=len(todo), desc="seeds", unit="img", enabled=progress and dist.is_main)
        try:
            for image_id in todo:
                seed = load_label_png(folder / f"{image_id}.png")
                bad = np.unique(seed[(seed >= n_classes) & (seed != 255)])
                if bad.size:
                    raise OrandError(f"{image_id}: seed PNG has values {bad[:5].tolist()} outside 0..{n_classes - 1} "
                                     f"and 255 ({folder})")
                _record(out.sink, image_id, seed, report)
                out.wrote()
                bar.update(1)
            out.finish()
        except KeyboardInterrupt:
            raise Interrupted(f"seed import interrupted after {report.written} images; the same command resumes") from None
        finally:
            bar.close()
    return report

"""The fuse stage: read two (or more) CAM sources, align them per image, fuse, and write the store.

:class:`FuseStage` is a per-image stage of :mod:`orand_addon.engine.stage` (resume, crash-safe parts, worker
processes, torchrun shards); the pure per-image steps are in :mod:`.align`. What was done to odd inputs is
collected in the report's notes.

The sources are part of what a rerun must match: their folders (absolute paths), formats and an identity of their
file lists (a digest of the names), so a rerun with another folder, or a folder whose files changed, is refused
unless ``--overwrite``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

import numpy as np

from ..classes import ClassSet, ImageLabels, check_keys
from ..engine.stage import ImageResult, RunOptions, Stage, StageReport, run_stage
from ..errors import OrandError
from ..io.formats import CamRecord, check_maps_size
from ..io.images import image_size
from ..io.sources import read_cams
from ..runtime.distributed import DistInfo
from ..runtime.provenance import ids_digest
from .align import MAP_KINDS, clean_values, fuse_image, image_classes, select_classes, to_storage_dtype

SOURCE_NAMES = "abcdefgh"
CHECK_SAMPLE = 16  # files per source whose class keys are checked before fusing starts
__all__ = ["FuseOptions", "FuseStage", "run_fuse", "MAP_KINDS", "SOURCE_NAMES"]


@dataclass(frozen=True)
class FuseOptions:
    """Parameters of the fuse stage (stored as provenance; a rerun must use the same)."""

    formats: tuple[str, ...] = ("auto", "auto")
    normalize: bool = True
    shifts: tuple[float, ...] = (0.0, 0.0)
    kinds: tuple[str, ...] = MAP_KINDS
    keep_sources: bool = False
    dtype: str = "float16"
    value_policy: str = "fix"
    on_missing: str = "error"


def absolute(path: str | None) -> str | None:
    """An existing file or folder as its absolute path (a rerun from another folder, or with the absolute path,
    records the same parameters); anything else (None, ``<dict>``, the bundled labels) unchanged.

    >>> absolute(".") == str(Path.cwd()), absolute("<dict>"), absolute(None)
    (True, '<dict>', None)
    """
    return str(Path(path).resolve()) if path and Path(path).exists() else path


def source_identity(source: Mapping) -> dict:
    """Where a source is and what it holds: its absolute path (``STORE.h5:KIND`` for a store kind), format and a
    digest of its ids (the file list of a folder)."""
    path = getattr(source, "path", "?")
    where = str(Path(path).resolve())
    if getattr(source, "kind", None):
        where = f"{where}:{source.kind}"
    return {"path": where, "format": getattr(source, "format", "?"), "n_ids": len(source),
            "ids": ids_digest(sorted(source))}


def resolve_ids(sources: Sequence[Mapping], ids: Sequence[str] | None, on_missing: str) -> tuple[list[str], list[str]]:
    """``(ids to fuse, ids skipped as missing from a source)``: ``ids`` (or every id of any source), checked against
    every source."""
    names = [getattr(s, "describe", lambda: "?")() for s in sources]
    wanted = sorted(set().union(*[set(s) for s in sources])) if ids is None else list(dict.fromkeys(ids))
    missing = {i: [n for s, n in zip(sources, names) if i not in s] for i in wanted}
    missing = {i: where for i, where in missing.items() if where}
    if missing and on_missing == "error":
        example = ", ".join(f"{i} (not in {', '.join(w)})" for i, w in list(missing.items())[:5])
        raise OrandError(f"{len(missing)} ids are missing from a source: {example}; use --on-missing skip to fuse the rest")
    return [i for i in wanted if i not in missing], list(missing)


class FuseStage(Stage):
    """Fuse the sources' maps of each image into the kinds ``options.kinds`` (and the aligned sources)."""

    name: ClassVar[str] = "fuse"
    parallel: ClassVar[bool] = True
    report_in_store: ClassVar[bool] = True
    # fuse's per-image work is small next to its allocations: trimming every 8 images re-faulted 1.5 million pages
    # for 1,000 VOC-sized pairs (13 s); every 32, 0.66 million (11 s), the peak still flat in N (docs/decisions.md)
    trim_every: ClassVar[int] = 32

    def __init__(self, sources: Sequence[str | Path], class_set: ClassSet, labels: ImageLabels | None,
                 options: FuseOptions, ids: Sequence[str] | None = None, images: str | Path | None = None,
                 command: str = "orand-addon fuse"):
        if len(sources) < 2:
            raise OrandError("fusion needs at least two CAM sources (--cams-a and --cams-b)")
        if len(sources) > len(SOURCE_NAMES):
            raise OrandError(f"at most {len(SOURCE_NAMES)} CAM sources")
        n = len(sources)
        options = replace(options, formats=tuple((list(options.formats) + ["auto"] * n)[:n]),
                          shifts=tuple((list(options.shifts) + [0.0] * n)[:n]))
        bad = [k for k in options.kinds if k not in MAP_KINDS]
        if bad or not options.kinds:
            raise OrandError(f"unknown fused kind {','.join(bad) or 'nothing'}; valid: {', '.join(MAP_KINDS)}")
        if "mean-official" in options.kinds and n != 2:
            raise OrandError(f"kind mean-official is the official two-source baseline; got {n} sources "
                             f"(drop it from --kinds)")
        self.sources = [str(s) for s in sources]
        self.class_set, self.labels, self.options = class_set, labels, options
        self.wanted = list(ids) if ids is not None else None
        self.images = str(images) if images else None
        self.command = command
        self.dtype = options.dtype
        self._opened: list[Mapping[str, CamRecord]] | None = None
        self.skipped_missing: list[str] = []
        self._identities: list[dict] = []
        self._open_sources()  # detects the formats once; workers and reruns use exactly the same reading

    def _open_sources(self) -> None:
        opened = [read_cams(p, format=f, labels=self.labels) for p, f in zip(self.sources, self.options.formats)]
        formats = tuple(getattr(s, "format", f) if f == "auto" and getattr(s, "format", "h5") != "h5" else f
                        for s, f in zip(opened, self.options.formats))
        self.options = replace(self.options, formats=formats)
        self._identities = [source_identity(s) for s in opened]
        self._opened = opened

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_opened"] = None  # reopened in each worker (setup)
        return state

    # -- what it writes ------------------------------------------------------------------------------------------
    def groups(self) -> tuple[str, ...]:
        groups = list(self.options.kinds)
        if self.options.keep_sources:
            groups += list(SOURCE_NAMES[: len(self.sources)])
        return tuple(groups)

    def parameters(self, source=None) -> dict:
        return {**asdict(self.options), "class_set": self.class_set.name,
                "labels": absolute(getattr(self.labels, "source", None)), "images": absolute(self.images),
                "sources": self._identities}

    def class_names(self, source=None) -> list[str]:
        return list(self.class_set.names)

    def root_provenance(self) -> dict:
        return {"command": self.command, "parameters": self.parameters(),
                "sources": [{"name": SOURCE_NAMES[i], **ident} for i, ident in enumerate(self._identities)]}

    # -- what it computes ----------------------------------------------------------------------------------------
    def writes_store_directly(self, store_path: Path) -> bool:
        """Fuse reads only its sources: it writes the store itself, unless a source is a kind of that very store."""
        target = Path(store_path).resolve()
        return all(Path(getattr(s, "path", "")).resolve() != target for s in self._opened or ())

    def check(self, source, ids) -> None:
        """The class keys of a spread sample of each source's files against the class set, before anything is
        written (a dump made for another class set is refused at once; every file is checked when it is fused)."""
        sample = list(ids)[:: max(1, len(ids) // CHECK_SAMPLE)][:CHECK_SAMPLE]
        for src in self._opened:
            for image_id in (i for i in sample if i in src):
                path = getattr(src, "files", {}).get(image_id, f"{getattr(src, 'path', '?')}:{image_id}")
                try:
                    keys = src[image_id].keys
                except OrandError:
                    continue  # an unreadable file stops the run when its turn comes, after the images before it
                check_keys(keys, self.class_set, str(path))

    def plan(self, source=None) -> list[tuple[str, ...]]:
        todo, self.skipped_missing = resolve_ids(self._opened, self.wanted, self.options.on_missing)
        return [(i,) for i in todo]

    def setup(self) -> None:
        if self._opened is None:
            import torch

            torch.set_num_threads(1)  # a worker is one core's worth; torch only casts to float16 here
            self._opened = [read_cams(p, format=f, labels=self.labels)
                            for p, f in zip(self.sources, self.options.formats)]

    def compute(self, unit: tuple[str, ...]) -> list[ImageResult]:
        return [self.fuse_one(image_id) for image_id in unit]

    def fuse_one(self, image_id: str) -> ImageResult:
        """Align, repair and fuse one image's maps (every note on the way in the result)."""
        opts, result = self.options, ImageResult(image_id)
        records, where = [], []
        for src in self._opened:
            records.append(src[image_id])
            where.append(str(getattr(src, "files", {}).get(image_id, f"{getattr(src, 'path', '?')}:{image_id}")))
            check_keys(records[-1].keys, self.class_set, where[-1])
        classes, disagreement = image_classes(image_id, records, self.labels)
        if disagreement:
            result.notes.append(("classes differ between labels and sources (labels used)", disagreement))
        size = image_size(self.images, image_id) if self.images else max((r.size for r in records),
                                                                            key=lambda s: s[0] * s[1])
        check_maps_size(image_id, (len(classes), *size), "its fused maps")
        if len({r.size for r in records}) > 1 or any(r.size != size for r in records):
            result.notes.append(("maps resized to the image size",
                                 f"{image_id} ({' / '.join(str(r.size) for r in records)} -> {size})"))
        aligned, unshifted = [], []
        for rec, path, shift in zip(records, where, opts.shifts):
            maps, missing, extra = select_classes(rec, classes, size)
            if missing:
                result.notes.append(("labelled class missing from a source (zero map used)", f"{path}: classes {missing}"))
            if extra:
                result.notes.append(("source class not in the labels (dropped)", f"{path}: classes {extra}"))
            maps, fixes = clean_values(maps, opts.value_policy, path)
            result.notes.extend(fixes)
            unshifted.append(maps)
            aligned.append(maps + np.float32(shift) if shift else maps)
        outputs = fuse_image(aligned, opts.kinds, opts.normalize, unshifted)
        if opts.keep_sources:
            outputs.update(zip(SOURCE_NAMES, aligned))
        result.maps = {k: (to_storage_dtype(v, opts.dtype), classes) for k, v in outputs.items()}
        return result

    # -- what it reports -----------------------------------------------------------------------------------------
    def summary(self, report: StageReport) -> list[str]:
        out = [f"fused {report.written} images ({report.skipped_existing} already in the store)", *report.recovered]
        if self.skipped_missing:
            out.append(f"skipped {len(self.skipped_missing)} ids missing from a source: "
                       f"{', '.join(self.skipped_missing[:3])}")
        return out + report.note_lines()


def run_fuse(
    sources: Sequence[str | Path],
    out: str | Path,
    class_set: ClassSet,
    labels: ImageLabels | None,
    options: FuseOptions = FuseOptions(),
    ids: Sequence[str] | None = None,
    images: str | Path | None = None,
    workers: int = 1,
    compression: str = "none",
    command: str = "orand-addon fuse",
    overwrite: bool = False,
    progress: bool = True,
    dist: DistInfo = DistInfo(),
) -> StageReport:
    """Fuse CAM sources into the store at ``out``; resumable (ids already written are skipped).

    With ``dist.world_size`` > 1 this rank fuses its share of the ids into ``shard_path(out, rank, world)``;
    ``orand-addon merge --from-shards OUT`` joins the shards.
    """
    stage = FuseStage(sources, class_set, labels, options, ids, images, command)
    report = run_stage(stage, out, RunOptions(workers=workers, overwrite=overwrite, progress=progress, dist=dist,
                                              compression=compression))
    report.extra["skipped_missing"] = len(stage.skipped_missing)
    return report

"""The fuse stage: read two (or more) CAM sources, align them per image, fuse, and write the store.

:func:`align_image` and :func:`fuse_image` are pure; :func:`run_fuse` is the streaming shell (one image at a time,
optional worker processes, resumable). What was done to odd inputs is collected in a :class:`FuseReport`.

Under torchrun (``dist`` with ``world_size`` > 1) rank ``r`` fuses ``shard(ids, r, w)`` into its own shard store
``STEM.rank{r}-of-{w}.h5`` (no process group needed); ``orand-addon merge --from-shards OUT`` joins them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from .classes import ClassSet, ImageLabels
from .distributed import DistInfo, shard, shard_path
from .errors import FormatError, OrandError
from .fusion import fuse_and, fuse_mean, fuse_or
from .io.formats import CamRecord
from .io.images import image_size
from .io.resize import resize_maps
from .io.sources import read_cams
from .merge import done_in_main, finish_shard, open_shard, start_shard
from .runtime import Interrupted, progress as progress_bar, release_memory, worker_pool
from .store import Store

SOURCE_NAMES = "abcdefgh"
MAP_KINDS = ("or", "and", "mean")


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


@dataclass
class FuseReport:
    """Counts and examples of everything the fuse stage had to decide for the user."""

    written: int = 0
    skipped_existing: int = 0
    skipped_missing: list[str] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def note(self, kind: str, text: str) -> None:
        self.notes[kind].append(text)

    def lines(self, examples: int = 3) -> list[str]:
        out = [f"fused {self.written} images ({self.skipped_existing} already in the store)"]
        if self.skipped_missing:
            out.append(f"skipped {len(self.skipped_missing)} ids missing from a source: "
                       f"{', '.join(self.skipped_missing[:examples])}")
        for kind, items in sorted(self.notes.items()):
            out.append(f"{kind}: {len(items)} ({'; '.join(items[:examples])})")
        return out

    def as_dict(self) -> dict:
        return {"written": self.written, "skipped_existing": self.skipped_existing,
                "skipped_missing": len(self.skipped_missing),
                "notes": {k: {"count": len(v), "examples": v[:10]} for k, v in self.notes.items()}}


# -- pure per-image steps -------------------------------------------------------------------------------------

def clean_values(maps: np.ndarray, policy: str, where: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Make maps finite and within [0, 1]; returns the maps and ``(note kind, text)`` for what was changed.

    ``policy='fix'``: non-finite values become 0, negatives 0, and a map whose maximum exceeds 1 is divided by
    it. ``policy='error'``: any of these raises :class:`FormatError` naming ``where``.

    >>> m, notes = clean_values(np.array([[[np.nan, -1.0], [2.0, 1.0]]], np.float32), "fix", "x.npy")
    >>> m.tolist(), [k for k, _ in notes]
    ([[[0.0, 0.0], [1.0, 0.5]]], ['non-finite values set to 0', 'negative values clipped to 0', 'maps above 1 divided by their max'])
    """
    peaks = maps.max(axis=(-2, -1)) if maps.size else np.zeros(0, np.float32)
    if maps.size == 0 or (np.isfinite(peaks).all() and peaks.max() <= 1 + 1e-3 and maps.min() >= 0):
        return maps, []  # the common case: two passes, no copy
    bad = ~np.isfinite(maps)
    neg = maps < 0
    finite = np.where(bad | neg, 0, maps)
    peaks = finite.max(axis=(-2, -1))
    over = peaks > 1 + 1e-3
    problems = []  # (note kind, detail, reason for --value-policy error)
    if bad.any():
        problems.append(("non-finite values set to 0", f"{where} ({int(bad.sum())} values)", "NaN/Inf values"))
    if neg.any():
        problems.append(("negative values clipped to 0", f"{where} (min {np.nanmin(maps):.3g})", "negative values"))
    if over.any():
        problems.append(("maps above 1 divided by their max", f"{where} (max {peaks.max():.3g})", "values above 1"))
    if problems and policy == "error":
        _, detail, reason = problems[0]
        raise FormatError(f"{detail}: {reason} (use --value-policy fix to repair)")
    if not problems:
        return maps, []
    maps = finite.astype(np.float32)
    if over.any():
        maps[over] /= peaks[over][:, None, None]
    return maps, [(kind, detail) for kind, detail, _ in problems]


def select_classes(record: CamRecord, classes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, list[int], list[int]]:
    """Maps of ``record`` for ``classes`` in that order, resized to ``size``; absent classes are zero maps.

    Returns ``(maps (len(classes), H, W), missing classes, extra classes)``.
    """
    index = {int(k): i for i, k in enumerate(record.keys)}
    maps = resize_maps(record.maps, size) if record.maps.shape[0] else record.maps
    out = np.zeros((len(classes), *size), np.float32)
    missing = []
    for j, c in enumerate(classes):
        if int(c) in index:
            out[j] = maps[index[int(c)]]
        else:
            missing.append(int(c))
    extra = sorted(set(index) - {int(c) for c in classes})
    return out, missing, extra


def image_classes(image_id: str, records: Sequence[CamRecord], labels: ImageLabels | None) -> tuple[np.ndarray, str | None]:
    """Classes of an image: the image-level label when there is one, else the sources' keys if they agree."""
    keysets = [tuple(sorted(int(k) for k in r.keys)) for r in records]
    label = labels.get(image_id) if labels is not None else None
    if label is not None:
        disagree = any(set(k) != set(label.tolist()) for k in keysets)
        text = None
        if disagree:
            text = f"{image_id}: labels {label.tolist()}, sources {' / '.join(str(list(k)) for k in keysets)}"
        return label.astype(np.int64), text
    if len(set(keysets)) == 1:
        return np.array(keysets[0], dtype=np.int64), None
    raise OrandError(
        f"{image_id}: no image-level label and the sources disagree on its classes "
        f"({' / '.join(str(list(k)) for k in keysets)}); pass --labels FILE"
    )


def fuse_image(maps: Sequence[np.ndarray], kinds: Sequence[str], normalize: bool) -> dict[str, np.ndarray]:
    """The requested fused kinds of one image's aligned source maps."""
    out = {}
    for kind in kinds:
        if kind == "or":
            out[kind] = fuse_or(maps, normalize=normalize)
        elif kind == "and":
            out[kind] = fuse_and(maps, normalize=normalize)
        elif kind == "mean":
            out[kind] = fuse_mean(maps)
        else:
            raise OrandError(f"unknown fused kind {kind!r}; valid: {', '.join(MAP_KINDS)}")
    return out


# -- the streaming shell --------------------------------------------------------------------------------------

@dataclass
class _Job:
    sources: list[str]
    formats: list[str]
    labels: ImageLabels | None
    images: str | None
    options: FuseOptions


_WORKER_JOB: _Job | None = None
_WORKER_SOURCES: list[Mapping[str, CamRecord]] | None = None
_WORKER_DONE = 0


def _open_sources(job: _Job) -> list[Mapping[str, CamRecord]]:
    return [read_cams(p, format=f, labels=job.labels) for p, f in zip(job.sources, job.formats)]


TRIM_EVERY = 8  # images between two release_memory() calls: keeps the peak flat for ~5 % of the time


def _init_worker(job: _Job) -> None:
    global _WORKER_JOB, _WORKER_SOURCES, _WORKER_DONE
    import torch

    torch.set_num_threads(1)  # each worker is one core's worth; torch only casts to float16 here
    _WORKER_JOB, _WORKER_SOURCES, _WORKER_DONE = job, _open_sources(job), 0


def _process(image_id: str, job: _Job, sources: list[Mapping[str, CamRecord]]) -> tuple:
    opts = job.options
    records, where = [], []
    for src in sources:
        records.append(src[image_id])
        where.append(str(getattr(src, "files", {}).get(image_id, f"{getattr(src, 'path', '?')}:{image_id}")))
    notes: list[tuple[str, str]] = []
    classes, disagreement = image_classes(image_id, records, job.labels)
    if disagreement:
        notes.append(("classes differ between labels and sources (labels used)", disagreement))
    if job.images:
        size = image_size(job.images, image_id)
    else:
        size = max((r.size for r in records), key=lambda s: s[0] * s[1])
    if len({r.size for r in records}) > 1 or any(r.size != size for r in records):
        notes.append(("maps resized to the image size", f"{image_id} ({' / '.join(str(r.size) for r in records)} -> {size})"))
    aligned = []
    for rec, path, shift in zip(records, where, opts.shifts):
        maps, missing, extra = select_classes(rec, classes, size)
        if missing:
            notes.append(("labelled class missing from a source (zero map used)", f"{path}: classes {missing}"))
        if extra:
            notes.append(("source class not in the labels (dropped)", f"{path}: classes {extra}"))
        maps, fixes = clean_values(maps, opts.value_policy, path)
        notes.extend(fixes)
        aligned.append(maps + np.float32(shift) if shift else maps)
    outputs = fuse_image(aligned, opts.kinds, opts.normalize)
    if opts.keep_sources:
        for name, maps in zip(SOURCE_NAMES, aligned):
            outputs[name] = maps
    return image_id, classes, {k: to_storage_dtype(v, opts.dtype) for k, v in outputs.items()}, notes


def to_storage_dtype(maps: np.ndarray, dtype: str) -> np.ndarray:
    """Cast to the store's dtype; float16 goes through torch, which is ~20x faster than numpy's astype.

    >>> to_storage_dtype(np.array([[[0.5, 1.0]]], np.float32), "float16").dtype
    dtype('float16')
    """
    if dtype == "float16" and maps.dtype != np.float16:
        import torch

        return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).to(torch.float16).numpy()
    return maps.astype(dtype, copy=False)


def _process_in_worker(image_id: str) -> tuple:
    global _WORKER_DONE
    _WORKER_DONE += 1
    if _WORKER_DONE % TRIM_EVERY == 0:
        release_memory()
    try:
        return _process(image_id, _WORKER_JOB, _WORKER_SOURCES)
    except OrandError as exc:
        return image_id, None, exc, []


def absolute(path: str | None) -> str | None:
    """An existing file or folder as its absolute path (a rerun from another folder, or with the absolute path,
    records the same parameters); anything else (None, ``<dict>``, the bundled labels) unchanged.

    >>> absolute(".") == str(Path.cwd()), absolute("<dict>"), absolute(None)
    (True, '<dict>', None)
    """
    return str(Path(path).resolve()) if path and Path(path).exists() else path


def target_groups(options: FuseOptions, n_sources: int) -> list[str]:
    groups = list(options.kinds)
    if options.keep_sources:
        groups += list(SOURCE_NAMES[:n_sources])
    return groups


def resolve_ids(sources: Sequence[Mapping], ids: Sequence[str] | None, on_missing: str,
                report: FuseReport) -> list[str]:
    """The ids to fuse: ``ids`` (or those common to all sources), checked against every source."""
    names = [getattr(s, "describe", lambda: "?")() for s in sources]
    if ids is None:
        union = sorted(set().union(*[set(s) for s in sources]))
        wanted = union
    else:
        wanted = list(dict.fromkeys(ids))
    missing = {i: [n for s, n in zip(sources, names) if i not in s] for i in wanted}
    missing = {i: where for i, where in missing.items() if where}
    if missing and on_missing == "error":
        example = ", ".join(f"{i} (not in {', '.join(w)})" for i, w in list(missing.items())[:5])
        raise OrandError(f"{len(missing)} ids are missing from a source: {example}; use --on-missing skip to fuse the rest")
    report.skipped_missing = list(missing)
    return [i for i in wanted if i not in missing]


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
) -> FuseReport:
    """Fuse CAM sources into the store at ``out``; resumable (ids already written are skipped).

    With ``dist.world_size`` > 1 this rank fuses its share of the ids into ``shard_path(out, rank, world)``
    (flushed after every image), skipping those already in its shard or in ``out``; its report counts its share.
    """
    if len(sources) < 2:
        raise OrandError("fusion needs at least two CAM sources (--cams-a and --cams-b)")
    if len(sources) > len(SOURCE_NAMES):
        raise OrandError(f"at most {len(SOURCE_NAMES)} CAM sources")
    formats = list(options.formats) + ["auto"] * (len(sources) - len(options.formats))
    shifts = tuple(list(options.shifts) + [0.0] * (len(sources) - len(options.shifts)))
    options = FuseOptions(**{**asdict(options), "formats": tuple(formats[: len(sources)]), "shifts": shifts[: len(sources)]})
    job = _Job([str(s) for s in sources], list(options.formats), labels, str(images) if images else None, options)
    opened = _open_sources(job)
    # Pin the detected formats so worker processes and reruns use exactly the same reading.
    job.formats = [getattr(s, "format", f) if f == "auto" and getattr(s, "format", "h5") != "h5" else f
                   for s, f in zip(opened, job.formats)]
    report = FuseReport()
    todo_all = resolve_ids(opened, ids, options.on_missing, report)
    groups = target_groups(options, len(sources))
    parameters = {**asdict(options), "formats": job.formats, "class_set": class_set.name,
                  "labels": absolute(getattr(labels, "source", None)), "images": absolute(job.images)}
    provenance = {"command": command, "parameters": parameters,
                  "sources": [{"name": SOURCE_NAMES[i], "path": str(Path(p).resolve()) if ":" not in str(p) else str(p),
                               "format": f} for i, (p, f) in enumerate(zip(job.sources, job.formats))]}
    done_main: set[str] = set()
    if dist.enabled:
        report.skipped_missing = shard(report.skipped_missing, dist.rank, dist.world_size)
        todo_all = shard(todo_all, dist.rank, dist.world_size)
        done_main = done_in_main(out, groups, parameters, overwrite)
    target = shard_path(out, dist.rank, dist.world_size) if dist.enabled else Path(out)
    flush_every = 1 if dist.enabled else 64  # a killed rank keeps every id it wrote
    with (open_shard(out, dist, class_set.names, compression) if dist.enabled
          else Store(out, mode="a", class_names=class_set.names, compression=compression)) as store:
        store.begin(groups, command, parameters, force=overwrite)
        if not store.provenance:
            store.set_provenance(provenance)
        if dist.enabled:
            start_shard(store, dist, len(todo_all))
        done = {i for i in todo_all if i in done_main or all(store.has(g, i) for g in groups)}
        report.skipped_existing = len(done)
        todo = [i for i in todo_all if i not in done]
        bar = progress_bar(total=len(todo), desc="fuse", unit="img", enabled=progress and dist.is_main)
        pool = None
        try:
            if workers > 1 and len(todo) > 1:
                pool = worker_pool(workers, _init_worker, (job,))  # never forked; Ctrl-C is this process's
                results: Iterator[tuple] = pool.imap(_process_in_worker, todo, chunksize=4)
            else:
                sources_here = opened
                results = (_process(i, job, sources_here) for i in todo)
            for n, (image_id, classes, outputs, notes) in enumerate(results, 1):
                if isinstance(outputs, OrandError):
                    raise outputs
                for kind, maps in outputs.items():
                    store.write_maps(kind, image_id, maps, classes, dtype=options.dtype)
                for kind, text in notes:
                    report.note(kind, text)
                report.written += 1
                bar.update(1)
                if n % flush_every == 0:
                    store.flush()
                if n % TRIM_EVERY == 0:
                    release_memory()
            if dist.enabled:
                finish_shard(store, dist, len(todo_all))
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted after {report.written} of {len(todo)} images; {target} is readable and the same "
                f"command resumes where it stopped"
            ) from None
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
            if store.h5.id.valid:
                record = store.provenance
                record.setdefault("reports", {})["fuse"] = report.as_dict()
                store.set_provenance(record)
    return report

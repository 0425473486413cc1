"""The per-image stage engine: the one loop of every stage that writes a result per image id into the store.

A stage (fuse, predict, seeds, walk, segment) is a short subclass of :class:`Stage` that declares

* :meth:`~Stage.groups` it writes and the :meth:`~Stage.parameters` that define them (the provenance a rerun must
  match, or ``--overwrite``),
* its :meth:`~Stage.plan`: the units of work in one-process order (an image, or a batch of images computed
  together), and :meth:`~Stage.check`: every check of the inputs, made before anything is computed,
* a worker-safe :meth:`~Stage.compute` of one unit (it opens what it reads in :meth:`~Stage.setup`, once per
  process), returning an :class:`ImageResult` per image.

:func:`run_stage` owns everything else, written once:

* **resume**: ids already in every group of the store (written with the same parameters) are skipped;
* **durability**: every write of the store goes through its journal (:mod:`orand_addon.store.wal`), so an
  interrupted one leaves the store at its last commit, and the next run finishes or rolls it back first. A stage
  that does not read the store it writes (fuse, :meth:`~Stage.writes_store_directly`) has the main process write
  every result (its own, or those its workers send) straight into the store, a commit every ``seal_every`` images
  or 30 s (:class:`~orand_addon.store.journal.StoreWriter`); the others write each process's results into sealed
  part files, merged into the store at the end (:class:`~orand_addon.store.journal.PartWriter`). Either way a
  crash, SIGKILL or a full disk loses at most the images since the last commit or seal; the next run repairs
  a damaged store, drops unfinished parts and merges the finished ones before it starts;
* **workers**: ``workers`` > 1 computes units in worker processes (forkserver, never fork) that write their own
  parts (or send their results, see above); a worker that dies ends the run with one line (exit 2), Ctrl-C stops
  all of them (exit 130), and the rerun resumes;
* **torchrun**: rank ``r`` of ``w`` takes ``shard(units, r, w)`` and writes its shard ``STEM.rank{r}-of-{w}.h5``
  (flushed after every unit), which ``orand-addon merge`` joins;
* progress bar, memory release every few images, and the report (root provenance ``reports[stage]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing.util
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import numpy as np

from ..errors import Interrupted, OrandError, StoreError
from ..runtime.distributed import DistInfo, shard
from ..runtime.interrupts import InterruptFlag, deferred_interrupt
from ..runtime.memory import release_memory
from ..runtime.workers import WorkerDied, WorkerProcesses as worker_processes
from ..runtime.progress import progress
from ..runtime.shared_files import SharedArrays, opened, share, sweep, sweep_stale
from ..runtime.threads import FairThreads
from ..runtime.provenance import normalize, parameter_diff
from ..store.journal import (SEAL_EVERY, GroupRecord, PartWriter, StoreWriter, discard_open_parts, merge_parts,
                             os_reason, sealed_parts, writing)
from ..store.shards import finish_shard, open_shard, start_shard
from ..store.store import Store

TRIM_EVERY = 8  # units between two release_memory() calls (Stage.trim_every)


@dataclass
class ImageResult:
    """What a stage computed for one image: ``maps`` kind -> (maps (K, H, W), keys), ``masks`` group -> uint8 mask,
    ``notes`` (note kind, text) for the report, ``extra`` anything the stage's :meth:`Stage.collect` wants."""

    image_id: str
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: a worker's maps on their way to the main process: (the file in shared memory, kind -> keys), maps emptied
    shared: tuple[SharedArrays, dict[str, np.ndarray]] | None = None


@dataclass
class StageReport:
    """What a run did: images written, found done, notes (kind -> examples), lines a stage adds."""

    stage: str
    planned: int = 0
    written: int = 0
    skipped_existing: int = 0
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    recovered: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    summarize: Callable[["StageReport"], list[str]] | None = field(default=None, repr=False, compare=False)

    def lines(self) -> list[str]:
        """What the run did, for the terminal (the stage's :meth:`Stage.summary`)."""
        if self.summarize is not None:
            return self.summarize(self)
        return [f"{self.stage}: wrote {self.written} images, {self.skipped_existing} already present",
                *self.recovered, *self.note_lines()]

    def note(self, kind: str, text: str) -> None:
        self.notes[kind].append(text)

    def note_lines(self, examples: int = 3) -> list[str]:
        """One line per kind of note with its first examples (sorted: workers finish in any order)."""
        return [f"{kind}: {len(items)} ({'; '.join(sorted(items)[:examples])})"
                for kind, items in sorted(self.notes.items())]

    def as_dict(self) -> dict:
        """The report as the store keeps it (root provenance ``reports``); lists sorted, so reruns compare."""
        extra = {k: sorted(v) if isinstance(v, list) else v for k, v in self.extra.items()
                 if isinstance(v, (int, float, str, bool, list, dict))}
        return {"written": self.written, "skipped_existing": self.skipped_existing, "planned": self.planned,
                "notes": {k: {"count": len(v), "examples": sorted(v)[:10]} for k, v in self.notes.items()}, **extra}


class Stage:
    """A per-image stage; subclasses set :attr:`name` and implement the methods that raise NotImplementedError.

    Instances are sent to worker processes (pickled), so they hold settings only; :meth:`setup` opens what
    :meth:`compute` reads (the store read-only, CAM folders, a model) in the process that computes.
    """

    name: ClassVar[str] = "stage"
    #: whether units may be computed in worker processes (False: always in the main process, e.g. on a GPU)
    parallel: ClassVar[bool] = False
    #: whether the run's report goes into the store's root provenance (``reports[name]``)
    report_in_store: ClassVar[bool] = False
    #: units between two :func:`~orand_addon.runtime.memory.release_memory` calls: each one keeps the peak flat,
    #: and costs the next units their page faults again
    trim_every: ClassVar[int] = TRIM_EVERY
    #: storage type of the maps this stage writes
    dtype: str = "float16"
    #: the command line recorded as provenance
    command: str = "orand-addon"
    #: the classes an existing store must have (None: whatever it has)
    required_classes: list[str] | None = None

    # -- what the stage writes ---------------------------------------------------------------------------------
    def groups(self) -> tuple[str, ...]:
        raise NotImplementedError

    def parameters(self, source: Store | None) -> dict:
        """The parameters that define this stage's results (``source``: the store, read-only, when it exists)."""
        raise NotImplementedError

    def class_names(self, source: Store | None) -> list[str] | None:
        """The classes of the results: the store's (which must be :attr:`required_classes` when those are set);
        for a store this stage creates, :attr:`required_classes` (None: the stage needs an existing store)."""
        wanted = self.required_classes
        if source is None:
            return list(wanted) if wanted is not None else None
        if wanted is not None and source.class_names != list(wanted):
            have = source.class_names
            raise StoreError(f"{source.path}: store has classes {have[:4]}... ({len(have)}), this run uses "
                             f"{list(wanted)[:4]}... ({len(wanted)})")
        return source.class_names

    def root_provenance(self) -> dict | None:
        """The root provenance of a store this stage creates (None: keep what is there)."""
        return None

    # -- what it computes --------------------------------------------------------------------------------------
    def plan(self, source: Store | None) -> list[tuple[str, ...]]:
        """The units of work in one-process order; must depend on the inputs only, not on what is written."""
        raise NotImplementedError

    def plan_settings(self) -> dict | None:
        """Settings besides the rank that decide which units are a rank's (recorded in its shard)."""
        return None

    def check(self, source: Store | None, ids: Sequence[str]) -> None:
        """Every check of the inputs of ``ids``, before anything is computed (one-line errors)."""

    def writes_store_directly(self, store_path: Path) -> bool:
        """Whether one process writes its results straight into the store (through its journal) instead of part
        files merged at the end: only for a stage that does not read the store it writes while it computes (the
        journaled writer holds the store's lock; a reader of the same file would be refused)."""
        return False

    def done_elsewhere(self, image_id: str) -> bool:
        """Whether outputs outside the store (e.g. PNG files) are there too; False recomputes the image."""
        return True

    def setup(self) -> None:
        """Open what :meth:`compute` reads, in the process that computes (the main one or a worker)."""

    def teardown(self) -> None:
        """Close what :meth:`setup` opened."""

    def compute(self, unit: tuple[str, ...]) -> list[ImageResult]:
        raise NotImplementedError

    # -- what it reports ---------------------------------------------------------------------------------------
    def collect(self, result: ImageResult, report: StageReport) -> None:
        """Fold one image's notes and extras into the report (main process)."""
        for kind, text in result.notes:
            report.note(kind, text)

    def summary(self, report: StageReport) -> list[str]:
        """The report's lines (the first says what was written)."""
        return [f"{self.name}: wrote {report.written} images, {report.skipped_existing} already present",
                *report.recovered, *report.note_lines()]

    def finish(self, report: StageReport, store_path: Path, dist: DistInfo) -> None:
        """After the results are in the store (or this rank's shard): e.g. scores over every id."""


@dataclass(frozen=True)
class RunOptions:
    """How :func:`run_stage` runs a stage."""

    workers: int = 1
    overwrite: bool = False
    progress: bool = True
    dist: DistInfo = DistInfo()
    compression: str = "none"
    seal_every: int = SEAL_EVERY
    echo: Callable[[str], None] | None = None


# -- the run ---------------------------------------------------------------------------------------------------

def run_stage(stage: Stage, store_path: str | Path | None, options: RunOptions = RunOptions()) -> StageReport:
    """Run ``stage`` over its plan into ``store_path`` (see the module docstring); returns the report.

    ``store_path`` None: a stage whose results all go elsewhere (``segment`` into PNG files only); nothing is
    merged, and an image counts as done when :meth:`Stage.done_elsewhere` says so."""
    if store_path is None:
        report = _run_without_store(stage, options)
    elif options.dist.enabled:
        report = _run_rank(stage, Path(store_path), options)
    else:
        report = _run_one(stage, Path(store_path), options)
    report.summarize = stage.summary
    stage.finish(report, None if store_path is None else Path(store_path), options.dist)
    return report


def _run_without_store(stage: Stage, options: RunOptions) -> StageReport:
    report = StageReport(stage.name)
    units = [tuple(u) for u in stage.plan(None)]
    if options.dist.enabled:
        units = shard(units, options.dist.rank, options.dist.world_size)
    ids = list(dict.fromkeys(i for u in units for i in u))
    stage.check(None, ids)
    plan = _Plan((), {}, [], units, ids, {i for i in ids if stage.done_elsewhere(i)})
    report.planned, report.skipped_existing = len(ids), len(plan.done)
    bar = progress(total=len(plan.todo_ids), desc=stage.name, unit="img", enabled=options.progress and options.dist.is_main)
    stage.setup()
    try:
        for n, unit in enumerate(plan.todo, 1):
            for result in stage.compute(unit):
                if result.image_id not in plan.done:
                    stage.collect(result, report)
                    report.written += 1
                    bar.update(1)
            if n % stage.trim_every == 0:
                release_memory()
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {report.written} of {len(plan.todo_ids)} images; the same command "
                          f"resumes where it stopped") from None
    finally:
        bar.close()
        stage.teardown()
    return report


@dataclass
class _Plan:
    """What this process computes: its units, their ids, and those done already (skipped)."""

    groups: tuple[str, ...]
    parameters: dict
    class_names: list[str]
    units: list[tuple[str, ...]]
    ids: list[str]
    done: set[str]

    @property
    def todo(self) -> list[tuple[str, ...]]:
        return [u for u in self.units if any(i not in self.done for i in u)]

    @property
    def todo_ids(self) -> list[str]:
        return [i for i in self.ids if i not in self.done]


def _prepare(stage: Stage, store_path: Path, options: RunOptions) -> _Plan:
    """Everything before computing: the parameters against the store's, the plan, the checks, what is done.

    Groups of the store written with other parameters are an error, or with ``overwrite`` are deleted (one
    process) or ignored (a torchrun rank, which only reads the store)."""
    source = Store(store_path) if store_path.is_file() else None
    try:
        groups = tuple(stage.groups())
        parameters = normalize(stage.parameters(source))
        names = stage.class_names(source)
        if names is None:
            raise StoreError(f"{store_path}: store not found")
        units = [tuple(u) for u in stage.plan(source)]
        if options.dist.enabled:
            units = shard(units, options.dist.rank, options.dist.world_size)
        ids = list(dict.fromkeys(i for u in units for i in u))
        stage.check(source, ids)
        stale = _stale_groups(source, groups, parameters) if source is not None else []
        if stale and not options.overwrite:
            group, prov, diff = stale[0]
            raise StoreError(f"{store_path}: /{group} was written by '{prov.get('command')}' with other parameters "
                             f"({', '.join(diff)} differ); use a new output file or --overwrite")
        done = set()
        if source is not None and not stale:
            done = {i for i in ids if all(source.has(g, i) for g in groups)}
    finally:
        if source is not None:
            source.close()
    if stale and not options.dist.enabled:
        try:
            with Store(store_path, mode="a", journal=True) as store:
                for group, _, _ in stale:
                    store.delete_group(group)
        except (OSError, RuntimeError) as exc:
            raise StoreError(f"{store_path}: deleting the groups written with other parameters failed "
                             f"({os_reason(exc)}); the store is left as it was") from None
    return _Plan(groups, parameters, list(names), units, ids, done)


def _stale_groups(source: Store, groups: Sequence[str], parameters: dict) -> list[tuple[str, dict, list[str]]]:
    """Groups of ``source`` written with other parameters: (group, its provenance, the parameters that differ)."""
    out = []
    for group in groups:
        prov = source.group_provenance(group)
        if prov is None:
            continue
        diff = parameter_diff(normalize(prov.get("parameters")), parameters)
        if diff:
            out.append((group, prov, diff))
    return out


def _run_one(stage: Stage, store_path: Path, options: RunOptions) -> StageReport:
    report = StageReport(stage.name)
    with writing(store_path) as folder:
        recover(store_path, folder, report)
        plan = _prepare(stage, store_path, options)
        plan.done = {i for i in plan.done if stage.done_elsewhere(i)}
        report.planned, report.skipped_existing = len(plan.ids), len(plan.done)
        records = {g: GroupRecord(stage.command, plan.parameters) for g in plan.groups}
        spec = _WriterSpec(store_path, folder, plan.class_names, records, options.compression, options.seal_every,
                           stage.dtype, direct=stage.writes_store_directly(store_path))
        interrupted, error = False, None
        try:
            _compute(stage, plan, spec, options, report)
        except KeyboardInterrupt:
            interrupted = True
        except OrandError as exc:
            error = exc
        with deferred_interrupt() as held:  # the merge runs to its end: the store is closed consistently
            merged = merge_parts(store_path, sealed_parts(folder), plan.class_names, options.compression)
            try:
                _record(store_path, stage, report)
            except StoreError:
                if error is None:
                    raise  # else the first failure (e.g. a full disk while writing) is the one to report
    if interrupted or held.requested:  # Ctrl-C during the merge too: it stops the command (exit 130) once merged
        kept = max(report.written, merged.images)
        raise Interrupted(f"interrupted after {kept} of {len(plan.todo_ids)} images; {store_path} keeps them and "
                          f"the same command resumes where it stopped")
    if error is not None:
        raise error
    return report


def recover(store_path: Path, folder: Path, report: StageReport) -> None:
    """Before a run: finish or roll back an interrupted write of the store (its journal), repair a store damaged
    by a failed write of an older version, drop parts no writer sealed, merge the finished ones."""
    from ..store.repair import repair_if_damaged
    from ..store.wal import recover as recover_journal

    line = recover_journal(store_path)
    if line:
        report.recovered.append(line)
    line = repair_if_damaged(store_path)
    if line:
        report.recovered.append(line)
    dropped = discard_open_parts(folder)
    if dropped:
        files = "1 unfinished part file" if dropped == 1 else f"{dropped} unfinished part files"
        report.recovered.append(f"discarded {files} of an interrupted run ({'its' if dropped == 1 else 'their'} "
                                f"images are computed again)")
    leftover = sealed_parts(folder)
    if leftover:
        counts = merge_parts(store_path, leftover)
        report.recovered.append(f"merged {counts.images} finished images left by an interrupted run into {store_path}")


def _record(store_path: Path, stage: Stage, report: StageReport) -> None:
    """The stage's report (and a new store's root provenance) in the store's root provenance."""
    if not store_path.is_file():
        return
    try:
        with Store(store_path, mode="a", journal=True) as store:
            record = store.provenance
            if not record and stage.root_provenance():
                record = dict(stage.root_provenance())
            if stage.report_in_store:
                record.setdefault("reports", {})[stage.name] = report.as_dict()
            store.set_provenance(record)
    except (OSError, RuntimeError) as exc:
        raise StoreError(f"{store_path}: recording the run in the store failed ({os_reason(exc)}); its images are "
                         f"saved, and the same command records it once there is room") from None


# -- computing -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _WriterSpec:
    store_path: Path
    folder: Path
    class_names: list[str]
    records: dict[str, GroupRecord]
    compression: str
    seal_every: int
    dtype: str
    direct: bool = False  # the main process writes every result into the store (Stage.writes_store_directly)
    owner: int = 0  # the main process, whose workers hand it their maps through shared memory (with direct)

    def writer(self, name: str) -> PartWriter:
        """A writer of sealed part files, merged into the store when the run ends."""
        return PartWriter(self.folder, name, self.class_names, self.records, self.compression, self.seal_every)

    def store_writer(self) -> StoreWriter:
        """The main process's writer when :attr:`direct`: into the store through its journal, a commit every few
        images."""
        return StoreWriter(self.store_path, self.class_names, self.records, self.compression, self.seal_every)


def _compute(stage: Stage, plan: _Plan, spec: _WriterSpec, options: RunOptions, report: StageReport) -> None:
    todo = [(unit, tuple(i for i in unit if i in plan.done)) for unit in plan.todo]
    bar = progress(total=len(plan.todo_ids), desc=stage.name, unit="img", enabled=options.progress)
    if stage.parallel and options.workers > 1 and len(todo) > 1:
        results = _in_workers(stage, todo, spec, options.workers)
    else:
        results = _inline(stage, todo, spec)
    try:
        for image_id, notes, extra in results:
            report.written += 1  # it is written (Ctrl-C in collect() still counts it)
            bar.update(1)
            stage.collect(ImageResult(image_id, notes=notes, extra=extra), report)
    finally:
        results.close()  # now, whatever stopped the loop: the writer commits and closes before the merge
        bar.close()


def _write_whole(writer: PartWriter | StoreWriter, result: ImageResult, dtype: str, hold: bool = True) -> bool:
    """Write one image; with ``hold`` a Ctrl-C waits until it is written whole. True when Ctrl-C was pressed (the
    caller stops once it has counted the image)."""
    with deferred_interrupt() if hold else contextlib.nullcontext(InterruptFlag()) as flag:
        writer.add(result.image_id, result.maps, result.masks, dtype=dtype)
    return flag.requested


def _compute_unit(stage: Stage, unit: tuple[str, ...], skip: tuple[str, ...],
                  writer: PartWriter | StoreWriter | None, dtype: str, hold: bool = True
                  ) -> list[tuple] | list[ImageResult]:
    """Compute one unit and write the images not in ``skip``; with ``hold`` (the main process) Ctrl-C waits until
    an image is written whole (workers ignore Ctrl-C: the main process stops them between units). Without a
    ``writer`` (a worker whose main process writes) the results themselves are returned."""
    out = []
    for result in stage.compute(unit):
        if result.image_id in skip:
            continue
        if writer is None:
            out.append(result)
            continue
        pressed = _write_whole(writer, result, dtype, hold)
        out.append((result.image_id, result.notes, result.extra))
        if pressed:
            raise KeyboardInterrupt
    return out


def _inline(stage: Stage, todo: Sequence[tuple[tuple[str, ...], tuple[str, ...]]], spec: _WriterSpec
            ) -> Iterator[tuple]:
    """Compute in this process; what is written is committed (or sealed) whatever stops the loop."""
    writer = spec.store_writer() if spec.direct else spec.writer(f"{stage.name}-{os.getpid()}")
    stage.setup()
    threads = FairThreads()
    try:
        for n, (unit, skip) in enumerate(todo, 1):
            yield from _compute_unit(stage, unit, skip, writer, spec.dtype)
            threads.update()
            if n % stage.trim_every == 0:
                release_memory()
    finally:
        writer.close()
        stage.teardown()


# -- worker processes ------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(stage: Stage, spec: _WriterSpec) -> None:
    writer = None if spec.direct else spec.writer(f"{stage.name}-{os.getpid()}")
    stage.setup()
    _WORKER.update(stage=stage, writer=writer, dtype=spec.dtype, done=0, owner=spec.owner)
    if writer is not None:  # sealed when the worker exits normally (the pool shuts down): the last images are kept
        multiprocessing.util.Finalize(writer, writer.close, exitpriority=10)


def _work(task: tuple[tuple[str, ...], tuple[str, ...]]) -> list[tuple] | list[ImageResult] | OrandError:
    unit, skip = task
    try:
        out = _compute_unit(_WORKER["stage"], unit, skip, _WORKER["writer"], _WORKER["dtype"], hold=False)
    except OrandError as exc:
        return exc
    if _WORKER["writer"] is None:
        for result in out:
            _to_shared_memory(result, _WORKER["owner"])
    _WORKER["done"] += 1
    if _WORKER["done"] % _WORKER["stage"].trim_every == 0:
        release_memory()
    return out


def _to_shared_memory(result: ImageResult, owner: int) -> None:
    """Move ``result``'s maps into a file in shared memory (:mod:`orand_addon.runtime.shared_files`), so that only
    its name goes through the pipe; left as they are where there is no room there."""
    if not result.maps:
        return
    shared = share({kind: maps for kind, (maps, _) in result.maps.items()}, owner)
    if shared is not None:
        result.shared = (shared, {kind: keys for kind, (_, keys) in result.maps.items()})
        result.maps = {}


@contextlib.contextmanager
def _maps_received(result: ImageResult) -> Iterator[ImageResult]:
    """``result`` with the maps a worker put in shared memory mapped in (the file is removed afterwards)."""
    if result.shared is None:
        yield result
        return
    shared, keys = result.shared
    with opened(shared) as arrays:
        result.maps = {kind: (arrays[kind], keys[kind]) for kind in keys}
        try:
            yield result
        finally:
            result.maps, result.shared = {}, None


def _in_workers(stage: Stage, units: Sequence[tuple[tuple[str, ...], tuple[str, ...]]], spec: _WriterSpec,
                workers: int) -> Iterator[tuple]:
    """Compute in ``workers`` processes (:class:`~orand_addon.runtime.workers.WorkerProcesses`, at most two units
    each in flight); results in completion order. The workers write sealed parts, or with ``spec.direct`` send
    their results to this process, which writes them into the store. On success or Ctrl-C the workers finish their
    unit and seal their part; a worker that dies ends the run with one line (the others are stopped, what they
    sealed and what this process wrote are kept)."""
    writer = spec.store_writer() if spec.direct else None
    spec = dataclasses.replace(spec, owner=os.getpid())
    sweep_stale()  # what the workers of a killed run left in shared memory
    pool = worker_processes(workers, _work, _init_worker, (stage, spec))
    try:
        try:
            for (unit, _), out in pool.imap_unordered(units):
                if isinstance(out, OrandError):
                    raise out
                if writer is None:
                    yield from out
                    continue
                for result in out:
                    with _maps_received(result):
                        pressed = _write_whole(writer, result, spec.dtype)
                    yield result.image_id, result.notes, result.extra
                    if pressed:
                        raise KeyboardInterrupt
        except WorkerDied as died:
            pool.kill()
            unit = died.task[0] if died.task else ()
            raise OrandError(f"a worker process died while computing {', '.join(unit[:3]) or 'its images'} (killed, "
                             f"or out of memory?); the finished images are kept and the same command resumes") from None
        except BaseException:
            pool.close(timeout=30)
            raise
        finally:
            if writer is not None:
                writer.close()
        pool.close()
    finally:
        sweep(spec.owner)  # the workers have stopped: the maps of results that were never written


# -- torchrun ranks --------------------------------------------------------------------------------------------

def _run_rank(stage: Stage, store_path: Path, options: RunOptions) -> StageReport:
    """This rank's share into its shard (flushed after every unit); the main store is only read."""
    report = StageReport(stage.name)
    dist = options.dist
    plan = _prepare(stage, store_path, options)
    with open_shard(store_path, dist, plan.class_names, options.compression) as sink:
        sink.begin(plan.groups, stage.command, plan.parameters, force=options.overwrite)
        start_shard(sink, dist, len(plan.ids), plan=stage.plan_settings())
        plan.done |= {i for i in plan.ids if all(sink.has(g, i) for g in plan.groups)}
        plan.done = {i for i in plan.done if stage.done_elsewhere(i)}
        report.planned, report.skipped_existing = len(plan.ids), len(plan.done)
        bar = progress(total=len(plan.todo_ids), desc=stage.name, unit="img", enabled=options.progress and dist.is_main)
        stage.setup()
        try:
            for n, unit in enumerate(plan.todo, 1):
                for result in stage.compute(unit):
                    if result.image_id in plan.done:
                        continue
                    for kind, (maps, keys) in result.maps.items():
                        sink.write_maps(kind, result.image_id, maps, keys, dtype=stage.dtype)
                    for group, mask in result.masks.items():
                        sink.write_mask(group, result.image_id, mask)
                    stage.collect(result, report)
                    report.written += 1
                    bar.update(1)
                sink.flush()  # a killed rank keeps every unit it wrote
                if n % stage.trim_every == 0:
                    release_memory()
            finish_shard(sink, dist, len(plan.ids), plan=stage.plan_settings())
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted after {report.written} of {len(plan.todo_ids)} images; {sink.path} keeps "
                              f"them and the same command resumes") from None
        finally:
            bar.close()
            stage.teardown()
            if sink.h5.id.valid:
                record = sink.provenance
                if not record and stage.root_provenance():
                    record = dict(stage.root_provenance())
                if stage.report_in_store:
                    record.setdefault("reports", {})[stage.name] = report.as_dict()
                sink.set_provenance(record)
    return report

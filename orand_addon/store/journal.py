"""Crash-safe writing of a run's results: straight into the store through its journal (:class:`StoreWriter`, one
process), or into sealed *part files* next to the store (:class:`PartWriter`, worker processes), merged into it when
the run ends, or by the next run after a crash, a full disk or Ctrl-C.

::

    fused.h5              the store: written only through its journal (a commit is kept whatever happens)
    fused.h5.parts/       part files of a run in progress (or of one that was stopped):
        predict-w0-00003.h5         sealed: closed after its last image; intact whatever happens later
        predict-w0-00004.h5.open    being written; discarded by the next run if its writer died

:class:`StoreWriter` commits every ``seal_every`` images or ``seal_seconds`` seconds, so a crash, a SIGKILL or a full
disk loses at most the images since the last commit, and nothing committed before.

A part is an ordinary store file (same class names, the group provenance of its stage). A writer seals its part
every ``seal_every`` images or ``seal_seconds`` seconds, so a crash, a SIGKILL or a full disk loses at most the
images since the last seal. :func:`merge_parts` copies the datasets as they are (HDF5 object copy, no decoding)
under a temporary name and renames them (atomic per id), commits after each part and closes the store, and only
then deletes the parts: a merge that is itself cut short is redone from the parts by the next run. The store is
written through its journal (:mod:`.wal`), so such a merge leaves it at its last commit, with every earlier
command's data intact. Before merging it checks that the free disk space and the file-size limit leave room for the
parts; if not, the parts stay where they are and the run ends with one line saying how much room is needed.

The folder also holds ``.lock``: one command at a time writes a store (a second one is refused, naming the
first one's process).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import h5py
import numpy as np

from ..errors import StoreError
from ..runtime.provenance import normalize, parameter_diff
from .store import TMP_PREFIX, Store

PARTS_SUFFIX = ".parts"
OPEN_SUFFIX = ".open"
LOCK_NAME = ".lock"
SEAL_EVERY = int(os.environ.get("ORAND_ADDON_SEAL_EVERY", "64"))   # images per part (what a crash can lose)
SEAL_SECONDS = float(os.environ.get("ORAND_ADDON_SEAL_SECONDS", "30"))  # at most this long between two seals
MARGIN_BYTES = 1 << 20   # HDF5 bookkeeping on top of the parts' bytes


def parts_dir(store: str | Path) -> Path:
    """The folder of ``store``'s part files.

    >>> parts_dir("runs/fused.h5").as_posix()
    'runs/fused.h5.parts'
    """
    store = Path(store)
    return store.with_name(store.name + PARTS_SUFFIX)


def sealed_parts(folder: Path) -> list[Path]:
    """Sealed part files of ``folder`` in the order they were written (names sort by writer and sequence)."""
    return sorted(p for p in folder.glob("*.h5") if p.is_file()) if folder.is_dir() else []


def open_parts(folder: Path) -> list[Path]:
    """Parts whose writer never sealed them (it died, or the disk filled up)."""
    return sorted(p for p in folder.glob(f"*.h5{OPEN_SUFFIX}") if p.is_file()) if folder.is_dir() else []


def os_reason(exc: BaseException) -> str:
    """The short reason of an OS-level failure (``No space left on device``), whatever layer raised it.

    >>> os_reason(OSError(28, "No space left on device"))
    'No space left on device'
    >>> os_reason(RuntimeError("Can't decrement id ref count (errno = 27, error message = 'File too large')"))
    'File too large'
    """
    text = str(exc)
    if "error message = '" in text:
        return text.split("error message = '", 1)[1].split("'", 1)[0]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


# -- writing ---------------------------------------------------------------------------------------------------

@dataclass
class GroupRecord:
    """What writes a group: the command and the parameters (the group provenance of the store)."""

    command: str
    parameters: dict


class _ResultWriter:
    """What both writers share: one image's results written into the open store (opened at the first image), and
    a seal (or commit) every ``seal_every`` images or ``seal_seconds`` seconds."""

    records: dict[str, GroupRecord]
    seal_every: int
    seal_seconds: float
    _store: Store | None
    _count: int
    _opened_at: float

    def _begin(self, store: Store) -> None:
        """The group provenance of every group this writer may write."""
        for group, record in self.records.items():
            store.begin([group], record.command, record.parameters)

    def _open(self) -> Store:
        raise NotImplementedError

    def _fail(self, exc: BaseException) -> None:
        raise NotImplementedError

    def seal(self) -> None:
        raise NotImplementedError

    def add(self, image_id: str, maps: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
            masks: Mapping[str, np.ndarray] | None = None, dtype: str = "float16") -> None:
        """Write one image's maps (kind -> (maps, keys)) and masks (group -> mask); seal when it is time."""
        try:
            store = self._store or self._open()
            for kind, (values, keys) in (maps or {}).items():
                store.write_maps(kind, image_id, values, keys, dtype=dtype)
            for group, mask in (masks or {}).items():
                store.write_mask(group, image_id, mask)
        except (OSError, RuntimeError) as exc:
            self._fail(exc)
        self._count += 1
        if self._count >= self.seal_every or time.monotonic() - self._opened_at >= self.seal_seconds:
            self.seal()


class PartWriter(_ResultWriter):
    """Writes one process's results into sealed part files of ``folder`` named ``{name}-{seq}.h5``.

    ``records``: group -> :class:`GroupRecord` of the groups this writer may write (every part carries them).
    """

    def __init__(self, folder: Path, name: str, class_names: Sequence[str], records: Mapping[str, GroupRecord],
                 compression: str = "none", seal_every: int = SEAL_EVERY, seal_seconds: float = SEAL_SECONDS):
        self.folder, self.name = Path(folder), name
        self.class_names = list(class_names)
        self.records = dict(records)
        self.compression = compression
        self.seal_every, self.seal_seconds = max(1, seal_every), seal_seconds
        self.sealed: list[Path] = []
        self._store: Store | None = None
        self._count = 0
        self._opened_at = 0.0
        self._seq = 0

    @property
    def _open_path(self) -> Path:
        return self.folder / f"{self.name}-{self._seq:05d}.h5{OPEN_SUFFIX}"

    def _open(self) -> Store:
        self.folder.mkdir(parents=True, exist_ok=True)
        while (self.folder / f"{self.name}-{self._seq:05d}.h5").exists() or self._open_path.exists():
            self._seq += 1
        store = Store(self._open_path, mode="a", class_names=self.class_names, compression=self.compression)
        self._begin(store)
        self._store, self._count, self._opened_at = store, 0, time.monotonic()
        return store

    def seal(self) -> None:
        """Close the current part and give it its final name (nothing to do when none is open)."""
        store, self._store = self._store, None
        if store is None:
            return
        path = Path(store.path)
        try:
            store.close()
            final = path.with_name(path.name[: -len(OPEN_SUFFIX)])
            os.replace(path, final)
        except (OSError, RuntimeError) as exc:
            self._store = None
            self._fail(exc, path)
        self.sealed.append(final)
        self._seq += 1

    def _fail(self, exc: BaseException, path: Path | None = None) -> None:
        store, self._store = self._store, None
        path = path or (Path(store.path) if store is not None else self._open_path)
        with contextlib.suppress(Exception):
            if store is not None:
                store.close()
        with contextlib.suppress(OSError):
            path.unlink()
        raise StoreError(f"{path}: writing failed ({os_reason(exc)}); the images of the sealed parts are kept "
                         f"and the same command resumes once there is room") from None

    def close(self) -> None:
        """Seal the part in progress (an empty writer leaves no file)."""
        self.seal()

    def abandon(self) -> None:
        """Drop the part in progress without sealing it (its images are computed again by the next run)."""
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()
            with contextlib.suppress(OSError):
                Path(store.path).unlink()


class StoreWriter(_ResultWriter):
    """Writes one process's results straight into the store through its journal (:mod:`.wal`), committing every
    ``seal_every`` images or ``seal_seconds`` seconds: the same guarantee as sealed parts (a crash, a SIGKILL or a
    full disk loses at most the images since the last commit, and never anything committed before), without
    writing every image twice (part, then merge). The store is opened at the first image and closed by
    :meth:`close` (a commit) or :meth:`abandon` (rolled back to the last commit)."""

    def __init__(self, store_path: Path, class_names: Sequence[str], records: Mapping[str, GroupRecord],
                 compression: str = "none", seal_every: int = SEAL_EVERY, seal_seconds: float = SEAL_SECONDS):
        self.path = Path(store_path)
        self.class_names = list(class_names)
        self.records = dict(records)
        self.compression = compression
        self.seal_every, self.seal_seconds = max(1, seal_every), seal_seconds
        self._store: Store | None = None
        self._count = 0
        self._opened_at = 0.0

    def _open(self) -> Store:
        store = Store(self.path, mode="a", class_names=self.class_names, compression=self.compression, journal=True)
        try:
            self._begin(store)
        except BaseException:
            store._abandon()
            raise
        self._store, self._count, self._opened_at = store, 0, time.monotonic()
        return store

    def seal(self) -> None:
        """Commit what was written since the last commit (nothing to do when nothing was)."""
        if self._store is None or not self._count:
            return
        try:
            self._store.flush()
        except (OSError, RuntimeError) as exc:
            self._fail(exc)
        self._count, self._opened_at = 0, time.monotonic()

    def _failed(self, exc: BaseException) -> StoreError:
        return StoreError(f"{self.path}: writing failed ({os_reason(exc)}); the images written before the last "
                          f"commit are kept and the same command resumes once there is room")

    def _fail(self, exc: BaseException) -> None:
        self.abandon()
        raise self._failed(exc) from None

    def close(self) -> None:
        """Commit and close the store."""
        store, self._store = self._store, None
        if store is None:
            return
        try:
            store.close()
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from None
        self._count = 0

    def abandon(self) -> None:
        """Close without committing (the store is rolled back to its last commit)."""
        store, self._store = self._store, None
        self._count = 0
        if store is not None:
            with contextlib.suppress(Exception):
                store._abandon()


# -- merging ---------------------------------------------------------------------------------------------------

@dataclass
class MergeCounts:
    """Images merged from parts, per group, and what was found there already."""

    copied: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    parts: int = 0

    @property
    def images(self) -> int:
        return max(self.copied.values(), default=0)


def room_needed(store: Path, parts: Sequence[Path]) -> str | None:
    """Why the parts cannot be merged into ``store`` now (free disk space or the file-size limit), None if they
    can. The check is conservative: the parts' whole size must fit."""
    need = sum(p.stat().st_size for p in parts) + MARGIN_BYTES
    folder = store.parent if store.parent.exists() else Path(".")
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    if free < need:
        return f"{_mb(need)} free disk space needed in {folder.resolve()}, {_mb(free)} left"
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    current = store.stat().st_size if store.exists() else 0
    if soft != resource.RLIM_INFINITY and current + need > soft:
        return f"the file-size limit (ulimit -f) of {_mb(soft)} is below the {_mb(current + need)} the store needs"
    return None


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def check_part(part: Store, store: Store | None) -> None:
    """A part belongs with ``store``: same class names, and every group it holds written with the store's
    parameters (or not in the store yet)."""
    if store is None:
        return
    if part.class_names != store.class_names:
        raise StoreError(f"{part.path}: its class names differ from {store.path}'s; delete it (its images are "
                         f"computed again) or merge it into another store")
    for group in part.groups():
        mine, theirs = part.group_provenance(group), store.group_provenance(group)
        if theirs is None or mine is None:
            continue
        diff = parameter_diff(normalize(theirs.get("parameters")), normalize(mine.get("parameters")))
        if diff:
            raise StoreError(f"{part.path}: /{group} there was written with other parameters than in {store.path} "
                             f"({', '.join(diff)} differ); rerun the command that wrote it, or delete the part")


def copy_entry(source: Store, target: Store, group: str, image_id: str) -> None:
    """Copy ``/group/image_id`` as it is (data, dtype, chunks, filters, attrs) under a temporary name, then rename."""
    target.copy_entry(source, group, image_id)


def merge_parts(store_path: str | Path, parts: Sequence[Path], class_names: Sequence[str] | None = None,
                compression: str = "none") -> MergeCounts:
    """Merge sealed ``parts`` into the store (created with ``class_names``, else the first part's, when missing);
    ids already in the store are kept as they are. Parts are deleted once the store is closed."""
    store_path = Path(store_path)
    counts = MergeCounts()
    if not parts:
        return counts
    reason = room_needed(store_path, parts)
    if reason:
        images = _count_images(parts)
        raise StoreError(f"{store_path}: cannot merge {images} finished images from {parts_dir(store_path)} ({reason}); "
                         f"they are kept there, and the same command merges them once there is room")
    names = class_names
    if names is None:
        with Store(parts[0]) as first:
            names = first.class_names
    try:
        with Store(store_path, mode="a", class_names=None if store_path.exists() else names,
                   compression=compression, journal=True) as store:
            for path in parts:
                with Store(path) as part:
                    check_part(part, store)
                    for group in part.groups():
                        prov = part.group_provenance(group)
                        if store.group_provenance(group) is None and prov is not None:
                            store.begin([group], prov.get("command", "orand-addon"), prov.get("parameters", {}))
                        for image_id in part.ids(group):
                            if store.has(group, image_id):
                                counts.present[group] = counts.present.get(group, 0) + 1
                            else:
                                copy_entry(part, store, group, image_id)
                                counts.copied[group] = counts.copied.get(group, 0) + 1
                store.flush()  # a commit: this part's images are in the store whatever happens next
                counts.parts += 1
    except (OSError, RuntimeError) as exc:
        raise StoreError(f"{store_path}: merging the finished images failed ({os_reason(exc)}); they are kept in "
                         f"{parts_dir(store_path)} and the same command merges them once there is room") from None
    for path in parts:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return counts


def _count_images(parts: Sequence[Path]) -> int:
    ids: set[str] = set()
    for path in parts:
        with contextlib.suppress(Exception), h5py.File(path, "r") as h5:
            for group in h5.values():
                if isinstance(group, h5py.Group):
                    ids.update(n for n in group if not n.startswith(TMP_PREFIX))
    return len(ids)


# -- the folder ------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def writing(store_path: str | Path) -> Iterator[Path]:
    """Hold the store's write lock for a block (one writing command at a time); yields the parts folder, which is
    removed afterwards when nothing is left in it."""
    folder = parts_dir(store_path)
    parent = Path(store_path).parent
    if parent.exists() and not parent.is_dir():
        raise StoreError(f"{store_path}: cannot create output folder ({parent} is a file)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / LOCK_NAME, "a+")
    except OSError as exc:
        raise StoreError(f"{folder}: cannot create the folder of part files ({os_reason(exc)})") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise StoreError(f"{store_path}: another orand-addon command is writing this store ({holder}); wait for "
                             f"it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        fh.flush()
        try:
            yield folder
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        if not sealed_parts(folder) and not open_parts(folder):
            (folder / LOCK_NAME).unlink()
            folder.rmdir()


def discard_open_parts(folder: Path) -> int:
    """Delete the parts no writer sealed (their images are computed again); returns how many there were."""
    found = open_parts(folder)
    for path in found:
        with contextlib.suppress(OSError):
            path.unlink()
    return len(found)

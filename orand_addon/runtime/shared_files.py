"""Large arrays from worker processes to the main process through files in shared memory (``/dev/shm``).

A worker whose results the main process writes (``fuse --workers N``) used to send them through its pipe: every
map was pickled, copied through the kernel in socket-sized pieces and unpickled again, and for 1,000 VOC-sized
images the main process spent more time reading its pipes than writing the store. Here a worker writes one
result's arrays into one file of ``/dev/shm`` (memory, not disk) and sends its name; the main process maps the file,
writes the store from those pages and removes the file.

The files are named ``orand-addon-<owner>-<worker>-<n>``, ``owner`` being the main process: :func:`sweep` removes
every file of a run once its workers have stopped (the results a stopped or killed worker left behind), and
:func:`sweep_stale` those of main processes that no longer exist (one killed with SIGKILL). Where ``/dev/shm`` is
missing or full, :func:`share` returns None and the result goes through the pipe as before.

>>> import numpy as np
>>> shared = share({"or": np.arange(6, dtype=np.float16).reshape(1, 2, 3)}, owner=os.getpid())
>>> with opened(shared) as arrays:
...     arrays["or"].tolist(), arrays["or"].flags.writeable
([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]], False)
>>> os.path.exists(shared.path)
False
"""

from __future__ import annotations

import contextlib
import itertools
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from .files import pwrite_all

SHM_DIR = Path("/dev/shm")
PREFIX = "orand-addon-"
ALIGN = 64
_SEQUENCE = itertools.count()


@dataclass(frozen=True)
class SharedArrays:
    """Where one result's arrays are: the file, and per array its name, byte offset, shape and dtype."""

    path: str
    layout: tuple[tuple[str, int, tuple[int, ...], str], ...]


def share(arrays: Mapping[str, np.ndarray], owner: int, folder: Path = SHM_DIR) -> SharedArrays | None:
    """Write ``arrays`` into one new file of ``folder`` for the main process ``owner``; None (and nothing left
    behind) when the folder is missing or full: the caller then sends the arrays themselves."""
    if not folder.is_dir():
        return None
    path = folder / f"{PREFIX}{owner}-{os.getpid()}-{next(_SEQUENCE)}"
    layout, offset, parts = [], 0, []
    for name, value in arrays.items():
        value = np.ascontiguousarray(value)
        layout.append((name, offset, tuple(int(n) for n in value.shape), value.dtype.str))
        parts.append((offset, value))
        offset += -(-value.nbytes // ALIGN) * ALIGN
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for at, value in parts:
                pwrite_all(fd, value.reshape(-1), at)
        finally:
            os.close(fd)
    except OSError:  # no room (a small /dev/shm), or no permission: the pipe takes it
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return SharedArrays(str(path), tuple(layout))


@contextlib.contextmanager
def opened(shared: SharedArrays) -> Iterator[dict[str, np.ndarray]]:
    """Read-only views of the arrays of ``shared``, valid inside the block; the file is removed when it ends."""
    views: dict[str, np.ndarray] = {}
    mapped = None
    try:
        with open(shared.path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size:
                mapped = mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ)
        for name, offset, shape, dtype in shared.layout:
            count = math.prod(shape)
            views[name] = (np.frombuffer(mapped, np.dtype(dtype), count=count, offset=offset).reshape(shape)
                           if count else np.zeros(shape, np.dtype(dtype)))
        yield views
    finally:
        views.clear()
        if mapped is not None:
            with contextlib.suppress(BufferError):  # a view still held elsewhere: unmapped when it is freed
                mapped.close()
        with contextlib.suppress(OSError):
            os.unlink(shared.path)


def sweep(owner: int, folder: Path = SHM_DIR) -> int:
    """Remove every file of the main process ``owner`` (after its workers have stopped); returns how many."""
    removed = 0
    for path in folder.glob(f"{PREFIX}{owner}-*") if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


def sweep_stale(folder: Path = SHM_DIR) -> int:
    """Remove the files of main processes that no longer run (a run killed with SIGKILL); returns how many."""
    owners = set()
    for path in folder.glob(f"{PREFIX}*") if folder.is_dir() else ():
        owner = path.name[len(PREFIX):].split("-", 1)[0]
        if owner.isdigit():
            owners.add(int(owner))
    removed = 0
    for owner in owners:
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            removed += sweep(owner, folder)
        except PermissionError:  # alive, another user's
            pass
    return removed

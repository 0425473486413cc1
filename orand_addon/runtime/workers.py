"""Worker processes that leave Ctrl-C to the main process (never forked: forkserver, else spawn), bounded task
windows, and this process's share of the CPU cores."""

from __future__ import annotations

import os
import signal
from collections import deque
from multiprocessing.pool import AsyncResult, Pool
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar

if TYPE_CHECKING:
    import concurrent.futures
    import multiprocessing.pool


T = TypeVar("T")
R = TypeVar("R")


def ignore_sigint(*_: object) -> None:
    """Let Ctrl-C reach the main process only (it stops the work and says how to resume): the ``worker_init_fn``
    of DataLoaders and the initializer of worker pools. A worker that took it would die with a traceback of its
    own, and the main process would report "DataLoader worker exited unexpectedly" instead of saving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _init_pool_worker(initializer: Callable[..., None] | None, initargs: Sequence[Any]) -> None:
    ignore_sigint()
    if initializer is not None:
        initializer(*initargs)


def worker_pool(processes: int, initializer: Callable[..., None] | None = None,
                initargs: Sequence[Any] = ()) -> "multiprocessing.pool.Pool":
    """A ``multiprocessing`` pool of ``processes`` workers that ignore Ctrl-C (:func:`ignore_sigint`), started by
    forkserver (spawn where there is none), never by fork: torch's threads and an open HDF5 file in this process
    would be copied into the children half-locked. ``initializer`` must be a module-level function.

    >>> with worker_pool(1) as pool:
    ...     pool.apply(signal.getsignal, (signal.SIGINT,)) == signal.SIG_IGN
    True
    """
    import multiprocessing as mp

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(processes, initializer=_init_pool_worker,
                                       initargs=(initializer, tuple(initargs)))


def cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_share() -> int:
    """CPU cores of this process when torchrun starts several on this machine (``LOCAL_WORLD_SIZE``): an equal
    share of :func:`cpu_count`, at least 1."""
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, cpu_count() // local)


def bounded_map(pool: Pool | None, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """``map`` in order over a worker pool (:func:`~orand_addon.runtime.workers.worker_pool`; None: in this process) with at
    most ``window`` tasks in flight, so the inputs are read as the workers need them, not all at once.

    >>> list(bounded_map(None, lambda x: x * 2, range(4), 2))
    [0, 2, 4, 6]
    """
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque[AsyncResult] = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def process_executor(processes: int, initializer: Callable[..., None] | None = None,
                     initargs: Sequence[Any] = ()) -> "concurrent.futures.ProcessPoolExecutor":
    """A ``ProcessPoolExecutor`` of ``processes`` workers started as :func:`worker_pool`'s (forkserver, never fork;
    Ctrl-C ignored: the main process stops them). Unlike a ``multiprocessing`` pool it notices a worker that dies
    (``BrokenProcessPool``) instead of waiting for it forever.

    >>> with process_executor(1) as pool:
    ...     pool.submit(signal.getsignal, signal.SIGINT).result() == signal.SIG_IGN
    True
    """
    import concurrent.futures
    import multiprocessing as mp

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return concurrent.futures.ProcessPoolExecutor(processes, mp_context=mp.get_context(method),
                                                  initializer=_init_pool_worker,
                                                  initargs=(initializer, tuple(initargs)))

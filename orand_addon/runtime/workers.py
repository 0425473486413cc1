"""Worker processes that leave Ctrl-C to the main process (never forked: forkserver, else spawn), bounded task
windows, and this process's share of the CPU cores."""

from __future__ import annotations

import os
import signal
import traceback
from collections import deque
from multiprocessing.pool import AsyncResult, Pool
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar

if TYPE_CHECKING:
    import multiprocessing.connection
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
    return _context().Pool(processes, initializer=_init_pool_worker, initargs=(initializer, tuple(initargs)))


#: what the forkserver imports once, before it forks any worker: each worker then starts with them loaded instead
#: of importing torch itself (~2 s of CPU per worker; measured on fuse --workers 2: 2-3 s less CPU per run)
PRELOAD = ["torch", "h5py", "orand_addon.engine.stage"]


def _context() -> Any:
    """The multiprocessing context of every worker: forkserver (preloading :data:`PRELOAD`; a module that fails to
    import is left to the workers), else spawn. The forkserver is a clean process with one thread, so forking it
    copies no lock or thread of this process."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


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


class WorkerDied(Exception):
    """A worker process ended without answering (killed, out of memory): ``task`` was its task, if any."""

    def __init__(self, pid: int, exitcode: int | None, task: Any):
        super().__init__(f"worker {pid} ended (exit code {exitcode})")
        self.pid, self.exitcode, self.task = pid, exitcode, task


def _worker_main(conn: "multiprocessing.connection.Connection", function: Callable[[Any], Any],
                 initializer: Callable[..., None] | None, initargs: Sequence[Any]) -> None:
    ignore_sigint()
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the main process is gone
            return
        if task is None:
            return
        try:
            result = function(task)
        except Exception:  # a bug: its traceback goes to the main process, which raises it
            result = _Failure(traceback.format_exc())
        conn.send(result)


class _Failure:
    """An unexpected exception in a worker, carried to the main process as its traceback text."""

    def __init__(self, text: str):
        self.text = text


class WorkerProcesses:
    """``processes`` worker processes, each with a pipe of its own (no shared queue or lock: a worker that dies
    cannot leave the others or the main process waiting on it). Started like :func:`worker_pool`'s (forkserver,
    never fork; Ctrl-C ignored: the main process stops them).

    :meth:`imap_unordered` hands out tasks (at most ``window`` per worker in flight) and yields ``(task, result)`` as
    they finish; a worker that dies raises :class:`WorkerDied` at once. :meth:`close` lets the workers finish their
    task and exit normally (their ``multiprocessing.util.Finalize`` callbacks run); :meth:`kill` ends them now.

    >>> with WorkerProcesses(2, abs) as workers:
    ...     sorted(r for _, r in workers.imap_unordered([-1, -2, 3]))
    [1, 2, 3]
    """

    def __init__(self, processes: int, function: Callable[[Any], Any], initializer: Callable[..., None] | None = None,
                 initargs: Sequence[Any] = ()):
        ctx = _context()
        self.workers: list[tuple[Any, Any]] = []
        for _ in range(max(1, processes)):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_worker_main, args=(child, function, initializer, tuple(initargs)),
                                  daemon=True)
            process.start()
            child.close()
            self.workers.append((process, parent))

    def __enter__(self) -> "WorkerProcesses":
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self.kill()

    def imap_unordered(self, tasks: Iterable[Any], window: int = 2) -> Iterator[tuple[Any, Any]]:
        from multiprocessing.connection import wait

        todo = iter(tasks)
        in_flight: dict[int, list[Any]] = {i: [] for i in range(len(self.workers))}
        exhausted = False

        def feed(i: int) -> None:
            nonlocal exhausted
            while not exhausted and len(in_flight[i]) < window:
                task = next(todo, _END)
                if task is _END:
                    exhausted = True
                    return
                try:
                    self.workers[i][1].send(task)
                except OSError:  # the worker died after its last result (a broken pipe): as a failed receive
                    process = self.workers[i][0]
                    process.join(timeout=5)
                    lost = in_flight[i][0] if in_flight[i] else task
                    raise WorkerDied(process.pid, process.exitcode, lost) from None
                in_flight[i].append(task)

        for i in range(len(self.workers)):
            feed(i)
        while any(in_flight.values()):
            conns = {self.workers[i][1]: i for i, queued in in_flight.items() if queued}
            for conn in wait(list(conns)):
                i = conns[conn]
                try:
                    result = conn.recv()
                except (EOFError, OSError):
                    process = self.workers[i][0]
                    process.join(timeout=5)
                    raise WorkerDied(process.pid, process.exitcode, in_flight[i][0]) from None
                if isinstance(result, _Failure):
                    raise RuntimeError(f"a worker process failed:\n{result.text}")
                yield in_flight[i].pop(0), result
                feed(i)

    def close(self, timeout: float = 60.0) -> None:
        """Ask every worker to stop after its current task and wait for them (killing any that does not stop).
        Results still on their way are read and dropped: a worker blocked sending a large one would never exit."""
        import time
        from multiprocessing.connection import wait

        for process, conn in self.workers:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout
        open_conns = {conn: process for process, conn in self.workers}
        while open_conns and time.monotonic() < deadline:
            for conn in wait(list(open_conns), timeout=0.2):
                try:
                    conn.recv()
                except (EOFError, OSError):
                    open_conns.pop(conn, None)
            for conn, process in list(open_conns.items()):
                if not process.is_alive():
                    open_conns.pop(conn)
        for process, conn in self.workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()

    def kill(self) -> None:
        """End every worker now."""
        for process, conn in self.workers:
            if process.is_alive():
                process.kill()
        for process, conn in self.workers:
            process.join()
            conn.close()


_END = object()

"""Fair CPU use: how many threads torch computes with, chosen from the CPU the other processes are using.

On a shared machine (CI, a lab server) torch's intra-op threads wait for each other at the end of every operation;
when another job holds one of the cores, each operation waits for the thread that is not running, and a training
step becomes 5-10x slower instead of the fair 2x. :class:`FairThreads` looks at the machine every few seconds
(``/proc/stat``: the CPU time all processes used, minus this process's own) and gives torch the cores nobody else
is using (at least one): alone on 2 cores it computes with 2 threads, next to one busy job with 1.

The OpenMP threads also sleep when idle instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, set by the command line
before torch is imported), so they leave the CPU to the other jobs between operations.

What a user can change (documented in the README): ``ORAND_ADDON_THREADS=N`` fixes the thread count (no
adaptation); a set ``OMP_NUM_THREADS`` is respected the same way; ``OMP_WAIT_POLICY=ACTIVE`` brings back spinning
threads (slightly faster on an idle machine).
"""

from __future__ import annotations

import os
import time

from .workers import cpu_share

THREADS_ENV = "ORAND_ADDON_THREADS"


def passive_openmp() -> None:
    """Make OpenMP threads sleep when idle, unless the user chose otherwise (call before torch is imported)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def fixed_threads() -> int | None:
    """The thread count the user fixed (``ORAND_ADDON_THREADS``, else ``OMP_NUM_THREADS``), None when not set."""
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _busy_jiffies() -> int | None:
    """Busy CPU time of the whole machine (all cores) in clock ticks, from the first line of ``/proc/stat``."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(x) for x in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return sum(values) - idle - guest


def _own_jiffies() -> int | None:
    """CPU time of this process (all its threads) in clock ticks."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime


def fair_count(cores: int, others: float) -> int:
    """Threads for this process when the other processes keep ``others`` cores busy (at least 1, at most ``cores``).

    >>> fair_count(2, 0.0), fair_count(2, 0.9), fair_count(2, 1.6), fair_count(16, 3.2)
    (2, 1, 1, 13)
    """
    return max(1, min(cores, int(round(cores - others))))


class FairThreads:
    """Keeps ``torch.set_num_threads`` at the cores the other processes leave free (see the module docstring), never
    above the count torch had when it was made. Call :meth:`update` often (every step or image); it looks at the
    machine at most every ``interval`` seconds.

    Results computed with other thread counts agree to float rounding (the order of a sum changes); a run that must
    be bit-identical to another fixes the count with ``ORAND_ADDON_THREADS``.
    """

    def __init__(self, cores: int | None = None, interval: float = 5.0):
        import torch

        # never more threads than torch was given (a caller or a test that fixed 1 thread keeps it)
        self.cores = min(cores or cpu_share(), torch.get_num_threads())
        self.interval = interval
        self.fixed = fixed_threads()
        self.threads: int | None = None
        self._last: tuple[float, int, int] | None = None
        self.update()

    def update(self) -> int:
        """Adjust the thread count if it is time; returns the current count."""
        import torch

        if self.fixed is not None:
            if self.threads != self.fixed:
                torch.set_num_threads(self.fixed)
                self.threads = self.fixed
            return self.fixed
        now = time.monotonic()
        busy, own = _busy_jiffies(), _own_jiffies()
        if busy is None or own is None:
            self.threads = torch.get_num_threads()
            return self.threads
        if self._last is None:
            self._last = (now, busy, own)
            self.threads = torch.get_num_threads()
            return self.threads
        seconds = now - self._last[0]
        if seconds < self.interval:
            return self.threads
        ticks = os.sysconf("SC_CLK_TCK") * seconds
        others = max(0.0, ((busy - self._last[1]) - (own - self._last[2])) / ticks)
        self._last = (now, busy, own)
        wanted = fair_count(self.cores, others)
        if wanted != self.threads:
            torch.set_num_threads(wanted)
            self.threads = wanted
        return wanted

"""The C heap: keeping freed memory for reuse in training loops, returning it in streaming loops.

Training and inference on the CPU free and re-allocate the same large buffers (activations, gradients) at every
step. glibc serves blocks above its mmap threshold (128 kB, adapting up to 32 MB) with fresh ``mmap`` pages and
gives them back on ``free``, so every step page-faults its working set in again: measured on the 2-core CI machine,
the MSRC ``ci`` demo spent 188 s of system time in 41 million page faults, for 436 s of user time.
:func:`keep_freed_memory` makes the heap keep what it frees (``mallopt``: mmap threshold, trim threshold and top pad
of 1 GiB / 1 GiB / 64 MiB): the same demo then took 65 s of system time and 349 s of wall time instead of 473 s,
with the same table (``docs/decisions.md``). Streaming loops still call :func:`release_memory` every few images,
which returns the free pages explicitly, so their peak memory stays flat in the number of images.

The command line calls :func:`keep_freed_memory` at start and passes the same settings to the processes it starts
(``MALLOC_*_`` environment variables). A user who sets any of those variables keeps their own settings;
``ORAND_ADDON_HEAP=system`` leaves glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any, Callable

HEAP_ENV = "ORAND_ADDON_HEAP"
# glibc mallopt parameters and the values set: (mallopt number, environment variable read at process start, value)
HEAP_SETTINGS = (
    (-3, "MALLOC_MMAP_THRESHOLD_", 1 << 30),   # M_MMAP_THRESHOLD: blocks below 1 GiB come from the heap
    (-1, "MALLOC_TRIM_THRESHOLD_", 1 << 30),   # M_TRIM_THRESHOLD: free() does not hand the heap top back
    (-2, "MALLOC_TOP_PAD_", 64 << 20),          # M_TOP_PAD: grow the heap 64 MiB at a time
)


@functools.lru_cache(maxsize=1)
def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to set or trim
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    return libc.malloc_trim if libc is not None else None


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Make glibc keep freed memory for reuse (this process now, processes it starts through the environment);
    False when it does nothing: not glibc, ``ORAND_ADDON_HEAP=system``, or the user set a ``MALLOC_*_`` variable.

    >>> env = {"MALLOC_TOP_PAD_": "0"}
    >>> keep_freed_memory(env), env
    (False, {'MALLOC_TOP_PAD_': '0'})
    >>> env = {}
    >>> keep_freed_memory(env), [int(env[name]) >> 20 for _, name, _ in HEAP_SETTINGS]  # on glibc; MiB
    (True, [1024, 1024, 64])
    """
    environ = os.environ if environ is None else environ
    libc = _libc()
    if libc is None or environ.get(HEAP_ENV, "").strip().lower() == "system":
        return False
    if any(name in environ for _, name, _ in HEAP_SETTINGS):
        return False
    for number, name, value in HEAP_SETTINGS:
        libc.mallopt(number, value)
        environ[name] = str(value)
    return True


def release_memory() -> bool:
    """Hand the heap's free pages back to the operating system (glibc ``malloc_trim``); False where there is none.

    Streaming loops that allocate many differently sized arrays (one image's maps after another) otherwise see
    their resident memory creep up with the number of images although nothing is kept: glibc keeps the freed,
    fragmented pages. Calling this every few images keeps the peak flat at a cost of a few per cent.

    >>> isinstance(release_memory(), bool)
    True
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True

"""How much memory one input may take, checked before anything of that size is allocated.

A CAM dump, a label file, or one map or mask of a store is refused (one line naming it, exit 2) when reading it
would take more than the *input limit*, counted as the float32 maps it becomes: ``K x H x W x 4`` bytes for a
(K, H, W) map of any dtype (8-byte dtypes count 8), the declared shape of a ``.npy`` header or ``.npz`` member
(before it is decompressed), every view of a pickled tensor or array (a stride-0 tensor counts its full shape),
and every reference of a pickle (an object shared through the pickle memo counts once per place it appears, since
that is what stacking it makes). The default, 256 MB, is ~50x a VOC dump and ~2x a COCO dump with all 80 classes
at 640 x 640; raise it for genuinely large maps with ``orand-addon --max-input-mb N COMMAND ...`` or the
environment variable ``ORAND_ADDON_MAX_INPUT_MB`` (worker processes inherit it).

>>> human(1600000000), human(256 << 20)
('1.5 GB', '256 MB')
>>> array_cost((2, 20000, 20000), np.dtype("float16"))
3200000000
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..errors import FormatError, OrandError

LIMIT_ENV = "ORAND_ADDON_MAX_INPUT_MB"
DEFAULT_LIMIT_MB = 256
MIN_LIMIT = 1 << 20  # the smallest limit that can be set (1 MB)
#: containers nested deeper than this are refused (CAM dumps and label files are 2-3 levels deep)
MAX_DEPTH = 32
RAISE_HINT = f"for genuinely large maps raise the limit with orand-addon --max-input-mb MB or {LIMIT_ENV}"


class OverLimit(Exception):
    """Reading would take more than the input limit; :func:`refusal` words it, naming the input."""

    def __init__(self, what: str, nbytes: int | None = None):
        super().__init__(what)
        self.what, self.nbytes = what, nbytes


def limit_bytes() -> int:
    """The input limit in bytes (``ORAND_ADDON_MAX_INPUT_MB`` megabytes, default 256).

    >>> limit_bytes() == 256 << 20 or LIMIT_ENV in os.environ
    True
    """
    text = os.environ.get(LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_LIMIT_MB << 20
    try:
        mb = float(text)
    except ValueError:
        mb = float("nan")
    if not (math.isfinite(mb) and mb >= 1):
        raise OrandError(f"{LIMIT_ENV}={text!r}: expected a number of megabytes of at least 1, e.g. 1024")
    return int(mb * (1 << 20))


def human(nbytes: int | float) -> str:
    """``1536 -> '1.5 KB'`` (powers of 1024; GB for anything beyond; no decimals from 100 on).

    >>> human(20), human(1536), human(324_000_000)
    ('20 bytes', '1.5 KB', '309 MB')
    """
    value = float(nbytes)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            if unit == "bytes" or value >= 100 or value == int(value):
                return f"{value:.0f} {unit}"
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def refusal(source: str, exc: OverLimit) -> FormatError:
    """The one-line error for an input over the limit."""
    if exc.nbytes is None:
        return FormatError(f"{source}: {exc.what}; refused before reading it")
    return FormatError(f"{source}: {exc.what} would take {human(exc.nbytes)} in memory, above the input limit of "
                       f"{human(limit_bytes())} (refused before reading it; {RAISE_HINT})")


def shape_elements(shape: Any) -> int:
    """Elements of a shape given as a tuple of non-negative ints (Python ints: no overflow).

    >>> shape_elements((3, 4)), shape_elements(())
    (12, 1)
    """
    count = 1
    for n in shape if isinstance(shape, (tuple, list)) else (shape,):
        if type(n) is not int:
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
                raise OverLimit(f"an array shape {shape!r} that is not a tuple of sizes")
            n = int(n)
        if n < 0:
            raise OverLimit(f"an array shape {shape!r} that is not a tuple of sizes")
        count *= n
    return count


def array_cost(shape: Any, dtype: np.dtype) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` once it is float32 maps (at least 4 bytes per value)."""
    return shape_elements(shape) * max(int(dtype.itemsize), 4)


def check_cost(what: str, nbytes: int) -> None:
    """Raise :class:`OverLimit` when ``nbytes`` is above the limit (at least 1 MB, so smaller inputs pass at once)."""
    if nbytes > MIN_LIMIT and nbytes > limit_bytes():
        raise OverLimit(what, nbytes)


def check_array(shape: Any, dtype: Any, what: str = "an array") -> None:
    """Refuse an array of ``shape``/``dtype`` over the limit before it exists."""
    dtype = np.dtype(dtype)
    nbytes = array_cost(shape, dtype)
    if nbytes > MIN_LIMIT and nbytes > limit_bytes():
        raise OverLimit(f"{what} of shape {describe_shape(shape)} {dtype}", nbytes)


def describe_shape(shape: Any) -> str:
    """``(2, 3) -> '2 x 3'``.

    >>> describe_shape((1, 60000, 60000))
    '1 x 60000 x 60000'
    """
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    return " x ".join(str(int(n)) for n in shape) if shape else "scalar"


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "numel") and hasattr(value, "element_size")


def materialized_cost(obj: Any) -> int:
    """Bytes ``obj`` takes once every array and tensor in it is float32 and every reference is its own copy (what
    stacking the maps of a dict makes of it); containers count 8 bytes an entry. Objects shared through the pickle
    memo are counted once per reference but walked once, so this takes time in the number of distinct objects.
    A container that holds itself, or nesting deeper than :data:`MAX_DEPTH`, raises :class:`OverLimit`.

    >>> a = np.zeros((10, 10), np.float16)
    >>> materialized_cost({1: a, 2: a})  # two references: 2 x 100 x 4 bytes; 2 entries x (8 + 8 for the key)
    832
    """
    known: dict[int, int] = {}
    active: set[int] = set()

    def cost(x: Any, depth: int) -> int:
        key = id(x)
        if key in known:
            return known[key]
        if depth > MAX_DEPTH:
            raise OverLimit(f"containers nested deeper than {MAX_DEPTH} levels (not a CAM dump)")
        if key in active:
            raise OverLimit("a container that holds itself (not a CAM dump)")
        if isinstance(x, np.ndarray):
            total = array_cost(x.shape, x.dtype)
            if x.dtype.hasobject:
                active.add(key)
                total += sum(cost(v, depth + 1) for v in x.reshape(-1))
                active.discard(key)
        elif _is_tensor(x):
            total = int(x.numel()) * max(int(x.element_size()), 4)
        elif isinstance(x, dict):
            active.add(key)
            total = sum(8 + cost(k, depth + 1) + cost(v, depth + 1) for k, v in x.items())
            active.discard(key)
        elif isinstance(x, (list, tuple, set, frozenset)):
            active.add(key)
            total = sum(8 + cost(v, depth + 1) for v in x)
            active.discard(key)
        elif isinstance(x, (str, bytes, bytearray)):
            total = len(x)
        else:
            total = 8
        known[key] = total
        return total

    return cost(obj, 0)

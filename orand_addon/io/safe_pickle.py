"""Loading pickled ``.npy`` CAM dumps without running code from them.

CAM dumps are ``np.save`` of a Python dict, and IRN/AMN put torch tensors inside. ``np.load(allow_pickle=True)``
would unpickle whatever the file asks for, which can run arbitrary code. :func:`safe_load_npy` reads the ``.npy``
header itself and unpickles object payloads with :class:`RestrictedUnpickler`, which resolves only an explicit
allow-list of globals: numpy array/dtype/scalar reconstruction, ``OrderedDict``/``set``/``frozenset``, and torch
tensors. Torch storages are rebuilt from their embedded bytes with ``torch.load(..., weights_only=True)``, torch's
own safe loader. Anything else raises :class:`~orand_addon.errors.UnsafePickleError` naming the file and the
global, before any of it is called.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.lib import format as npy_format

from ..errors import FormatError, OrandError, UnsafePickleError


def _load_torch_storage(data: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *extra):
    import torch

    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise pickle.UnpicklingError("tensor payload is not a torch storage")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, collections.OrderedDict())


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes as latin-1 text; allow only that conversion.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, encoding)


def _numpy_globals() -> dict[tuple[str, str], Callable]:
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / numpy 1
    table: dict[tuple[str, str], Callable] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        table[(module, "scalar")] = multiarray.scalar
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    return table


def _allowed_globals() -> dict[tuple[str, str], Callable]:
    table = _numpy_globals()
    table.update({
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("__builtin__", "set"): set,
        ("_codecs", "encode"): _codecs_encode,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): _load_torch_storage,
    })
    return table


_ALLOWED: dict[tuple[str, str], Callable] | None = None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals (see module docstring)."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed_globals()
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refused to unpickle {module}.{name} (only numpy arrays, plain containers, scalars "
                f"and torch tensors are loaded; nothing from the file was run)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refused a pickle with persistent ids (not a CAM dump)")


def safe_unpickle(data: bytes | io.BufferedIOBase, source: str) -> Any:
    """Unpickle ``data`` with the allow-list; errors name ``source``."""
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return RestrictedUnpickler(stream, source).load()
    except OrandError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError, IndexError) as exc:
        raise FormatError(f"{source}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from None


def safe_load_npy(path: str | Path) -> Any:
    """Load a ``.npy`` file like ``np.load(path, allow_pickle=True)``, but with the restricted unpickler.

    Returns the array; a pickled dict comes back as the dict itself (``.item()`` applied).
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise OrandError(f"{path}: file not found") from None
    except OSError as exc:
        raise OrandError(f"{path}: cannot open ({exc.strerror})") from None
    with fh:
        try:
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
            else:
                shape, fortran, dtype = npy_format._read_array_header(fh, version)
        except (ValueError, EOFError, OSError) as exc:
            raise FormatError(f"{path}: not a valid .npy file ({exc})") from None
        if dtype.hasobject:
            arr = safe_unpickle(fh, str(path))
            if not isinstance(arr, np.ndarray):
                raise FormatError(f"{path}: pickled payload is {type(arr).__name__}, not a numpy array")
            return arr.item() if arr.shape == () else arr
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise FormatError(f"{path}: corrupt or truncated .npy ({exc})") from None
    return arr

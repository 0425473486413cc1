"""Loading ``.npy``/``.npz`` CAM dumps without running code from them and within the input limit.

CAM dumps are ``np.save`` of a Python dict, and IRN/AMN put torch tensors inside. ``np.load(allow_pickle=True)``
would unpickle whatever the file asks for, which can run arbitrary code. :func:`safe_load_npy` reads the ``.npy``
header itself and unpickles object payloads with :class:`RestrictedUnpickler`, which resolves only an explicit
allow-list of globals: numpy array/dtype/scalar reconstruction, ``OrderedDict``/``set``/``frozenset``, and torch
tensors. Torch storages are rebuilt from their embedded bytes with ``torch.load(..., weights_only=True)``, torch's
own safe loader. Anything else raises :class:`~orand_addon.errors.UnsafePickleError` naming the file and the
global, before any of it is called.

Nothing is allocated on a file's word (:mod:`.limits`): a ``.npy`` header, an ``.npz`` member header, a pickled
array's shape, a torch storage's declared size and a tensor view are checked against the bytes the file really
holds and against the input limit first (the unpickler itself reads the whole file from memory, so a length field
larger than the data ends as "truncated"); arrays and tensors of a pickle are rebuilt
only through checked constructors (a state that would make numpy read out of bounds, a tensor view outside its
storage, or re-initialising a rebuilt tensor is refused); the loaded object's cost with every shared reference
counted (:func:`~.limits.materialized_cost`) must fit the limit.
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.lib import format as npy_format

from ..errors import FormatError, OrandError, UnsafePickleError
from .limits import (OverLimit, check_array, check_cost, describe_shape, human, materialized_cost, refusal,
                     shape_elements)

#: the simple dtypes a pickled array or scalar may have (numpy's pickle spelling: kind + item size)
SIMPLE_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "f16", "c8", "c16",
                           "c32", "O8", "O4"})
MAX_NPZ_MEMBERS = 64
# torch's legacy storage format (what a tensor's storage pickles as): the magic number pickled with protocol 2
_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
_STORAGE_ELEMENT = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
                    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
                    "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1}


class Refused(pickle.UnpicklingError):
    """A pickle asked for something no numpy or torch pickle holds (the message says what); nothing was built."""


def _refuse(text: str) -> None:
    raise Refused(text)


def _no_build(self: Any, state: Any) -> None:
    _refuse(f"a state applied to a rebuilt {type(self).__name__.strip('_')}")


# -- numpy: dtypes, arrays, scalars -------------------------------------------------------------------------------

class _DtypeSpec:
    """What a pickle's ``numpy.dtype(spec, align, copy)`` + state asks for; a real dtype only via :meth:`resolve`
    (only simple, non-structured dtypes, in either byte order)."""

    __slots__ = ("spec", "order")

    def __init__(self, spec: Any = None, align: Any = False, copy: Any = False):
        self.spec, self.order = spec, "|"

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) >= 5 and state[0] in (3, 4)
                and all(part is None for part in state[2:5]) and state[1] in ("<", ">", "|", "=")):
            _refuse("a structured or unknown numpy dtype (CAM dumps hold plain arrays)")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        spec, order = getattr(self, "spec", None), getattr(self, "order", "|")
        try:
            return _DTYPES[(spec, order)]
        except (KeyError, TypeError):
            pass
        dtype = self._resolve(spec, order)
        if len(_DTYPES) < 256:
            _DTYPES[(spec, order)] = dtype
        return dtype

    @staticmethod
    def _resolve(spec: Any, order: Any) -> np.dtype:
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or not (spec in SIMPLE_DTYPES or (spec[:1] in "US" and spec[1:].isdigit())):
            _refuse(f"numpy dtype {spec!r} (not a plain number, string or object type)")
        dtype = np.dtype(spec)
        return dtype.newbyteorder(order) if order in "<>" and dtype.itemsize > 1 and dtype.kind not in "OSU" \
            else dtype


_DTYPES: dict[tuple, np.dtype] = {}


def _as_dtype(value: Any) -> np.dtype:
    if isinstance(value, _DtypeSpec):
        return value.resolve()
    if value in (b"b", "b"):  # the placeholder type of ``_reconstruct(ndarray, (0,), b'b')``
        return np.dtype(np.int8)
    _refuse(f"an array dtype given as a {type(value).__name__}")


def _state_parts(state: Any) -> tuple:
    if isinstance(state, tuple) and len(state) == 5:
        return state
    if isinstance(state, tuple) and len(state) == 4:
        return (1, *state)
    _refuse("an array state that numpy does not write")


class _PickledArray(np.ndarray):
    """``numpy.ndarray`` as a pickle sees it: sizes are checked before numpy allocates anything, and a state is
    applied only when its data matches its shape exactly (numpy reads out of bounds on a short object list)."""

    def __new__(cls, shape: Any = (0,), dtype: Any = b"b", *args: Any, **kwargs: Any) -> "_PickledArray":
        if args or kwargs:
            _refuse("numpy.ndarray called with a buffer, offset or strides")
        dtype = _as_dtype(dtype)
        check_array(shape, dtype, "a pickled array")
        return np.ndarray.__new__(cls, tuple(int(n) for n in (shape if isinstance(shape, tuple) else (shape,))), dtype)

    def __setstate__(self, state: Any) -> None:
        version, shape, dtype, fortran, data = _state_parts(state)
        dtype = _as_dtype(dtype)
        if not isinstance(shape, tuple) or not isinstance(fortran, bool):
            _refuse("an array state that numpy does not write")
        check_array(shape, dtype, "a pickled array")
        count = shape_elements(shape)
        if dtype.hasobject:
            if not isinstance(data, list) or len(data) != count:
                _refuse(f"an object array of shape {describe_shape(shape)} with "
                        f"{len(data) if isinstance(data, list) else type(data).__name__} items")
        elif not isinstance(data, (bytes, bytearray, str)) or len(data) != count * dtype.itemsize:
            size = len(data) if isinstance(data, (bytes, bytearray, str)) else type(data).__name__
            _refuse(f"a {describe_shape(shape)} {dtype} array with {size} bytes of data")
        np.ndarray.__setstate__(self, (version, shape, dtype, fortran, data))


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _PickledArray:
    if subtype not in (_PickledArray, np.ndarray):
        _refuse(f"numpy _reconstruct of a {getattr(subtype, '__name__', type(subtype).__name__)}")
    return _PickledArray(shape, dtype)


def _scalar(dtype: Any, data: Any = None) -> Any:
    dtype = _as_dtype(dtype)
    if dtype.hasobject or not isinstance(data, (bytes, str)):
        _refuse("a numpy scalar that numpy does not write")
    return _NUMPY_SCALAR(dtype, data)


_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / numpy 1
_NUMPY_SCALAR = _multiarray.scalar


# -- torch: storages and tensors ----------------------------------------------------------------------------------

class _StorageRef:
    """A torch storage rebuilt from a pickle, usable only as the storage of :func:`_rebuild_tensor`."""

    __slots__ = ("storage",)
    __setstate__ = _no_build

    def __init__(self, storage: Any):
        self.storage = storage


class _StorageType:
    __slots__ = ("element",)
    __setstate__ = _no_build

    def __init__(self, element: int):
        self.element = element


class _PlainUnpickler(pickle.Unpickler):
    """The small pickles of torch's storage format: plain values only."""

    def find_class(self, module: str, name: str) -> Any:
        _refuse(f"{module}.{name} in a torch storage header")

    def persistent_load(self, pid: Any) -> Any:
        _refuse("a persistent id in a torch storage header")


class _StorageIds(_PlainUnpickler):
    """The main pickle of torch's storage format: records the storages it declares, builds nothing."""

    def __init__(self, file: Any):
        super().__init__(file, encoding="latin1")
        self.ids: list[tuple] = []

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_ELEMENT:
            return _StorageType(_STORAGE_ELEMENT[name])
        _refuse(f"{module}.{name} in a torch storage")

    def persistent_load(self, pid: Any) -> Any:
        self.ids.append(pid)
        return None


def check_torch_storage(data: bytes) -> None:
    """Refuse torch storage bytes whose declared sizes exceed what they hold (torch allocates a storage at its
    declared size before reading it) or the input limit."""
    if not data.startswith(_TORCH_MAGIC):
        _refuse("a tensor storage that is not in torch's storage format")
    stream = io.BytesIO(data)
    stream.seek(len(_TORCH_MAGIC))
    _PlainUnpickler(stream, encoding="latin1").load()  # protocol version
    _PlainUnpickler(stream, encoding="latin1").load()  # system info
    declared = _StorageIds(stream)
    declared.load()
    keys = _PlainUnpickler(stream, encoding="latin1").load()
    if not isinstance(keys, list):
        _refuse("a tensor storage without its list of storage keys")
    sizes: dict[Any, int] = {}
    for pid in declared.ids:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] in ("storage", b"storage")
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int) and pid[4] >= 0):
            _refuse("a tensor storage with an unknown storage record")
        try:
            sizes[pid[2]] = pid[4] * pid[1].element
        except TypeError:
            _refuse("a tensor storage with an unhashable key")
    total, held = sum(sizes.values()), len(data) - stream.tell() - 8 * len(keys)  # each storage: its size, its bytes
    if total > held:
        _refuse(f"a tensor storage that declares {human(total)} but holds {human(held)}")
    check_cost("a tensor storage", total)


def _load_torch_storage(data: Any) -> _StorageRef:
    import torch

    if not isinstance(data, bytes):
        _refuse("torch storage bytes of the wrong type")
    check_torch_storage(data)
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, TypeError, AttributeError) as exc:
        _refuse(f"a damaged tensor storage ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})")
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        _refuse("a tensor payload that is not a torch storage")
    return _StorageRef(storage)


def _int_tuple(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, (tuple, list)) and len(value) <= 32 and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value):
        return tuple(value)
    return None


_TENSOR_CLASS: list[type] = []


def _pickled_tensor_class() -> type:
    """A tensor class whose ``__setstate__`` refuses (a pickle's BUILD on a tensor would ``set_`` it to any size,
    growing its storage); rebuilt tensors carry it until :func:`plain` turns them back into ``torch.Tensor``."""
    if not _TENSOR_CLASS:
        import torch

        _TENSOR_CLASS.append(type("_PickledTensor", (torch.Tensor,), {"__setstate__": _no_build}))
    return _TENSOR_CLASS[0]


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *extra: Any) -> Any:
    import torch

    if not isinstance(storage, _StorageRef):
        _refuse("a tensor payload that is not a torch storage")
    shape, strides = _int_tuple(size), _int_tuple(stride)
    if shape is None or strides is None or len(shape) != len(strides) or not isinstance(offset, int) or offset < 0:
        _refuse("a tensor with an invalid shape, strides or offset")
    store = storage.storage
    typed = isinstance(store, torch.TypedStorage)  # (its public size methods warn that TypedStorage is deprecated)
    element = torch._utils._element_size(store.dtype) if typed else 1
    available = (store._untyped_storage if typed else store).nbytes() // element
    count = shape_elements(shape)
    if count:
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
        if last >= available:
            _refuse(f"a {describe_shape(shape)} tensor view that reaches element {last} of a storage of {available}")
    check_cost(f"a tensor view of shape {describe_shape(shape)}", count * max(element, 4))
    tensor = torch._utils._rebuild_tensor_v2(store, offset, shape, strides, False, collections.OrderedDict())
    return tensor.as_subclass(_pickled_tensor_class())


# -- the unpickler ------------------------------------------------------------------------------------------------

def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes as latin-1 text; allow only that conversion.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        _refuse(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, encoding)


def _allowed_globals() -> dict[tuple[str, str], Callable]:
    table: dict[tuple[str, str], Callable] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = _reconstruct
        table[(module, "scalar")] = _scalar
    table.update({
        ("numpy", "ndarray"): _PickledArray,
        ("numpy", "dtype"): _DtypeSpec,
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


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals (see module docstring)."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refused to unpickle {module}.{name} (only numpy arrays, plain containers, scalars "
                f"and torch tensors are loaded; nothing from the file was run)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refused a pickle with persistent ids (not a CAM dump)")


def plain(obj: Any) -> Any:
    """``obj`` with the checked array/tensor classes of the unpickler turned back into ``numpy.ndarray`` and
    ``torch.Tensor`` (views, no copies); shared objects stay shared. Raises :class:`~.limits.OverLimit` on a
    container that holds itself."""
    done: dict[int, Any] = {}
    active: set[int] = set()

    def convert(x: Any, depth: int) -> Any:
        key = id(x)
        if key in done:
            return done[key]
        if key in active or depth > 64:
            raise OverLimit("a container that holds itself (not a CAM dump)")
        out = x
        if isinstance(x, _PickledArray):
            out = x.view(np.ndarray)
            if out.dtype.hasobject:
                active.add(key)
                flat = out.reshape(-1)
                for i, item in enumerate(flat):
                    flat[i] = convert(item, depth + 1)
                active.discard(key)
        elif _TENSOR_CLASS and isinstance(x, _TENSOR_CLASS[0]):
            import torch

            out = x.as_subclass(torch.Tensor)
        elif isinstance(x, (dict, list, tuple, set, frozenset)):
            active.add(key)
            if isinstance(x, dict):
                out = type(x)((convert(k, depth + 1), convert(v, depth + 1)) for k, v in x.items())
            else:
                out = type(x)(convert(v, depth + 1) for v in x)
            active.discard(key)
        done[key] = out
        return out

    return convert(obj, 0)


def safe_unpickle(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with the allow-list and the input limit; errors name ``source``."""
    data = bytes(data) if not isinstance(data, bytes) else data
    try:
        obj = plain(RestrictedUnpickler(io.BytesIO(data), source).load())
        check_cost("its pickled objects, every shared reference counted,", materialized_cost(obj))
        return obj
    except OrandError:
        raise
    except OverLimit as exc:
        raise refusal(source, exc) from None
    except Refused as exc:
        raise UnsafePickleError(f"{source}: refused a pickle holding {exc} (refused before building it)") from None
    except MemoryError:
        raise FormatError(f"{source}: unpickling it needs more memory than this machine has; refused") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError, IndexError,
            KeyError, OverflowError, RecursionError) as exc:
        raise FormatError(f"{source}: corrupt or truncated pickle ({type(exc).__name__}: {_short(exc)})") from None


def _short(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise OrandError(f"{path}: file not found") from None
    except OSError as exc:
        raise OrandError(f"{path}: cannot open ({exc.strerror})") from None


def _read_header(fh: Any, path: Any, what: str = ".npy file") -> tuple[tuple, bool, np.dtype]:
    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(fh)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(fh)
        return npy_format._read_array_header(fh, version)
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        raise FormatError(f"{path}: not a valid {what} ({' '.join(str(exc).split())[:200]})") from None


def _check_declared(path: Any, shape: tuple, dtype: np.dtype, held: int, what: str) -> int:
    """Bytes a header declares, refused when the file holds less or when it is over the input limit."""
    try:
        declared = shape_elements(shape) * dtype.itemsize
        if declared > held:
            raise FormatError(f"{path}: {what} declares a {describe_shape(shape)} {dtype} array "
                              f"({human(declared)}) but holds {human(held)} (truncated, or not written by numpy)")
        check_array(shape, dtype, "the array")
    except OverLimit as exc:
        raise refusal(str(path), exc) from None
    return declared


def safe_load_npy(path: str | Path) -> Any:
    """Load a ``.npy`` file like ``np.load(path, allow_pickle=True)``, but with the restricted unpickler and the
    input limit.

    Returns the array; a pickled dict comes back as the dict itself (``.item()`` applied).
    """
    path = Path(path)
    with _open(path) as fh:
        shape, fortran, dtype = _read_header(fh, path)
        held = os.fstat(fh.fileno()).st_size - fh.tell()
        if dtype.hasobject:
            if dtype != np.dtype(object):
                raise FormatError(f"{path}: a structured array with objects (not a CAM dump)")
            try:
                check_cost("its pickled payload", held)
            except OverLimit as exc:
                raise refusal(str(path), exc) from None
            arr = safe_unpickle(fh.read(), str(path))
            if not isinstance(arr, np.ndarray):
                raise FormatError(f"{path}: pickled payload is {type(arr).__name__}, not a numpy array")
            return arr.item() if arr.shape == () else arr
        _check_declared(path, shape, dtype, held, "its header")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise FormatError(f"{path}: corrupt or truncated .npy ({exc})") from None
    return arr


def safe_load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (``np.savez``) by name, without pickles, each member's header checked against its
    declared uncompressed size and the input limit (all members together) before it is decompressed."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise OrandError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise FormatError(f"{path}: not a valid .npz file ({exc})") from None
    out: dict[str, np.ndarray] = {}
    total = 0
    with archive:
        members = [m for m in archive.infolist() if m.filename.endswith(".npy")]
        if len(members) > MAX_NPZ_MEMBERS:
            raise FormatError(f"{path}: {len(members)} arrays in one .npz; a CAM file has a few")
        for member in members:
            where = f"{path}[{member.filename}]"
            try:
                with archive.open(member) as fh:
                    shape, fortran, dtype = _read_header(fh, where, "array in an .npz")
                    if dtype.hasobject:
                        raise FormatError(f"{where}: holds pickled objects; an .npz CAM file has plain arrays only")
                    nbytes = _check_declared(where, shape, dtype, member.file_size, "its header")
                    total += shape_elements(shape) * max(dtype.itemsize, 4)
                    try:
                        check_cost("the arrays of the .npz together", total)
                    except OverLimit as exc:
                        raise refusal(str(path), exc) from None
                    data = fh.read(nbytes)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError,
                    RuntimeError) as exc:
                raise FormatError(f"{where}: corrupt .npz member ({' '.join(str(exc).split())[:200]})") from None
            if len(data) != nbytes:
                raise FormatError(f"{where}: truncated ({human(len(data))} of {human(nbytes)})")
            arr = np.frombuffer(bytearray(data), dtype=dtype)
            out[member.filename[:-4]] = arr.reshape(shape, order="F" if fortran else "C")
    return out

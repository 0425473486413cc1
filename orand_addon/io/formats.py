"""CAM dump formats of the public WSSS code bases, behind one registry.

Each format turns the loaded object of one file into a :class:`CamRecord`: 0-based foreground class indices and
one float32 map per class, background channels removed. The facts per format (DESIGN §3):

========== ===================================================== =========================================
format     layout                                                background
========== ===================================================== =========================================
irn        ``keys`` torch (K,), ``cam`` torch stride 4, ``high_res`` numpy (K,H,W)   none
amn        as irn with K+1 channels                              channel 0
orandnet   ``keys`` torch, ``cam`` numpy stride 4, ``high_res`` numpy                 none
mctformer  ``{cls: (H,W)}`` with int 0-based class keys (also WeakTr, SEAM, PSA)     none
crf-dict   ``{k: (H,W)}`` with ``k = cls + 1``, key 0 background                    key 0
toco       ``keys`` numpy, ``high_res`` only                     none
clip-es    ``keys`` numpy, ``attn_highres`` float16 (K,H,W)      none
npz        ``np.savez`` with arrays ``keys`` and ``high_res`` (and/or ``cam``)       none
========== ===================================================== =========================================

``mctformer`` and ``crf-dict`` have the same structure; :func:`structural_candidates` returns both for such a file
and the caller decides with the image-level labels or asks the user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import FormatError
from .limits import OverLimit, check_array, refusal
from ..registries import CAM_FORMATS as HELP
from ..registries import implementations


@dataclass
class CamRecord:
    """The class activation maps of one image, background removed.

    ``maps`` is (K, H, W) float32 at the resolution the file stores its full-size maps at (``high_res`` or the
    dict values); ``low_res`` is the stride-4 ``cam`` when the file has one. ``keys`` are 0-based foreground
    class indices in channel order.
    """

    keys: np.ndarray
    maps: np.ndarray
    low_res: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.maps.shape[-2]), int(self.maps.shape[-1])


def to_numpy(value: Any) -> np.ndarray:
    """numpy view of a numpy array or torch tensor (torch imported only when needed).

    >>> to_numpy([1, 2]).tolist()
    [1, 2]
    """
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu()
        if not value.is_complex() and value.is_floating_point() and value.element_size() == 2 \
                and str(value.dtype) == "torch.bfloat16":
            value = value.float()  # numpy has no bfloat16
        return value.numpy()
    return np.asarray(value)


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _array(value: Any, source: str, name: str) -> np.ndarray:
    """``value`` as a numpy array; a value that is none (a string, None, a dict...) is a one-line error."""
    try:
        arr = to_numpy(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{source}: {name} is not an array of numbers ({type(value).__name__}: {exc})") from None
    if arr.dtype.kind == "c":
        raise FormatError(f"{source}: {name} holds complex values ({arr.dtype}); maps must be real numbers")
    if arr.dtype.kind not in "fiub":
        raise FormatError(f"{source}: {name} holds {arr.dtype} values, not numbers")
    return arr


def check_maps_size(source: str, shape: tuple, what: str = "the maps") -> None:
    """Refuse float32 maps of ``shape`` over the input limit (:mod:`.limits`) before they are made."""
    try:
        check_array(shape, np.float32, what)
    except OverLimit as exc:
        raise refusal(source, exc) from None


def _keys_of(obj: dict, source: str) -> np.ndarray:
    keys = _array(obj["keys"], source, "'keys'").reshape(-1)
    if keys.dtype.kind == "b":
        raise FormatError(f"{source}: 'keys' must be integer class indices, got dtype {keys.dtype}")
    if keys.dtype.kind == "f":
        if not (np.isfinite(keys).all() and np.all(np.equal(np.mod(keys, 1), 0))):
            raise FormatError(f"{source}: 'keys' must be integer class indices, got dtype {keys.dtype}")
    keys = keys.astype(np.int64)
    if keys.size and keys.min() < 0:
        raise FormatError(f"{source}: 'keys' holds the negative class index {int(keys.min())}")
    if np.unique(keys).size != keys.size:
        raise FormatError(f"{source}: 'keys' lists a class twice ({keys.tolist()})")
    return keys


def _stack(maps: Any, source: str, name: str) -> np.ndarray:
    arr = _array(maps, source, f"'{name}'")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise FormatError(f"{source}: '{name}' must be (K, H, W), got shape {tuple(arr.shape)}")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise FormatError(f"{source}: '{name}' has empty {arr.shape[1]} x {arr.shape[2]} maps")
    check_maps_size(source, arr.shape, f"'{name}'")
    return np.asarray(arr, dtype=np.float32)


def _keyed_record(obj: dict, source: str, map_key: str, background: bool) -> CamRecord:
    keys = _keys_of(obj, source)
    offset = 1 if background else 0
    maps = _stack(obj[map_key], source, map_key) if map_key in obj else None
    low = _stack(obj["cam"], source, "cam") if "cam" in obj else None
    if maps is None and low is None:
        raise FormatError(f"{source}: no '{map_key}' or 'cam' maps in the file")
    for name, arr in ((map_key, maps), ("cam", low)):
        if arr is not None and arr.shape[0] != keys.size + offset:
            what = f"{keys.size} keys + background" if background else f"{keys.size} keys"
            raise FormatError(f"{source}: '{name}' has {arr.shape[0]} channels, expected {keys.size + offset} ({what})")
    if background:
        maps = maps[1:] if maps is not None else None
        low = low[1:] if low is not None else None
    if maps is None:
        maps = low
    return CamRecord(keys=keys, maps=maps, low_res=low)


def _int_keyed_record(obj: dict, source: str, background_key: bool) -> CamRecord:
    items = sorted((int(k), v) for k, v in obj.items())
    if background_key:
        if not items or items[0][0] != 0:
            raise FormatError(f"{source}: crf-dict files have background at key 0, which is missing")
        items = [(k - 1, v) for k, v in items[1:]]
    if items and items[0][0] < 0:
        raise FormatError(f"{source}: negative class key {items[0][0] + (1 if background_key else 0)}")
    keys = np.array([k for k, _ in items], dtype=np.int64)
    if not items:
        return CamRecord(keys=keys, maps=np.zeros((0, 1, 1), np.float32))
    arrays = [_array(v, source, f"the map of class key {k}") for k, v in items]
    for (k, _), a in zip(items, arrays):
        if a.ndim != 2:
            raise FormatError(f"{source}: the map of class key {k} must be 2-D (H, W), got shape {a.shape}")
        if a.size == 0:
            raise FormatError(f"{source}: the map of class key {k} is empty ({a.shape[0]} x {a.shape[1]})")
    shapes = {a.shape for a in arrays}
    target = max(shapes, key=lambda s: s[0] * s[1])
    check_maps_size(source, (len(arrays), *target), "its maps")
    arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
    if len(shapes) > 1:
        from .resize import resize_maps

        arrays = [a if a.shape == target else resize_maps(a[None], target)[0] for a in arrays]
    return CamRecord(keys=keys, maps=np.stack(arrays))


def _is_int_keyed(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in obj)
        and all(hasattr(v, "shape") for v in obj.values())
    )


def _has(obj: Any, *names: str) -> bool:
    return isinstance(obj, dict) and all(n in obj for n in names)


def _shape(value: Any) -> tuple[int, ...] | None:
    """The shape of an array, tensor or nested list; None for what has none (a ragged list, a string...)."""
    try:
        return tuple(int(n) for n in to_numpy(value).shape)
    except (TypeError, ValueError, RuntimeError):
        return None


def _channels(obj: dict, name: str) -> int:
    shape = _shape(obj[name])
    return -1 if shape is None else shape[0] if len(shape) == 3 else 1


def _nkeys(obj: dict) -> int:
    shape = _shape(obj["keys"])
    return -2 if shape is None else math.prod(shape)


@dataclass(frozen=True)
class CamFormat:
    name: str
    description: str
    matches: Callable[[Any], bool]
    parse: Callable[[Any, str], CamRecord]


def _match_irn(o: Any) -> bool:
    return _has(o, "keys", "cam", "high_res") and _is_torch(o["cam"]) and _channels(o, "high_res") == _nkeys(o)


def _match_amn(o: Any) -> bool:
    return _has(o, "keys", "high_res") and _channels(o, "high_res") == _nkeys(o) + 1


def _match_orandnet(o: Any) -> bool:
    return (
        _has(o, "keys", "cam", "high_res")
        and isinstance(o["cam"], np.ndarray)
        and _channels(o, "high_res") == _nkeys(o)
    )


def _match_toco(o: Any) -> bool:
    return _has(o, "keys", "high_res") and "cam" not in o and _channels(o, "high_res") == _nkeys(o)


CAM_FORMATS: dict[str, CamFormat] = implementations(HELP, {
    "irn": CamFormat("irn", HELP["irn"], _match_irn,
                     lambda o, s: _keyed_record(o, s, "high_res", background=False)),
    "amn": CamFormat("amn", HELP["amn"], _match_amn,
                     lambda o, s: _keyed_record(o, s, "high_res", background=True)),
    "orandnet": CamFormat("orandnet", HELP["orandnet"], _match_orandnet,
                          lambda o, s: _keyed_record(o, s, "high_res", background=False)),
    "mctformer": CamFormat("mctformer", HELP["mctformer"],
                           _is_int_keyed, lambda o, s: _int_keyed_record(o, s, background_key=False)),
    "crf-dict": CamFormat("crf-dict", HELP["crf-dict"],
                          lambda o: _is_int_keyed(o) and 0 in {int(k) for k in o},
                          lambda o, s: _int_keyed_record(o, s, background_key=True)),
    "toco": CamFormat("toco", HELP["toco"], _match_toco,
                      lambda o, s: _keyed_record(o, s, "high_res", background=False)),
    "clip-es": CamFormat("clip-es", HELP["clip-es"], lambda o: _has(o, "keys", "attn_highres"),
                         lambda o, s: _keyed_record(o, s, "attn_highres", background=False)),
    "npz": CamFormat("npz", HELP["npz"],
                     lambda o: False,  # chosen by the .npz extension, never by structure
                     lambda o, s: _keyed_record(o, s, "high_res", background=False)),
})


def get_format(name: str) -> CamFormat:
    """Format by name; the error lists the valid ones.

    >>> get_format("irn").name
    'irn'
    >>> get_format("xyz")
    Traceback (most recent call last):
    ...
    orand_addon.errors.FormatError: unknown CAM format 'xyz'; valid: auto, irn, amn, orandnet, mctformer, crf-dict, toco, clip-es, npz, h5
    """
    if name not in CAM_FORMATS:
        raise FormatError(f"unknown CAM format {name!r}; valid: auto, {', '.join(CAM_FORMATS)}, h5")
    return CAM_FORMATS[name]


def structural_candidates(obj: Any) -> list[str]:
    """Names of the formats whose structure ``obj`` fits (more than one means ambiguous).

    >>> structural_candidates({3: np.zeros((2, 2)), 7: np.zeros((2, 2))})
    ['mctformer']
    >>> structural_candidates({0: np.zeros((2, 2)), 7: np.zeros((2, 2))})
    ['mctformer', 'crf-dict']
    """
    return [name for name, fmt in CAM_FORMATS.items() if fmt.matches(obj)]

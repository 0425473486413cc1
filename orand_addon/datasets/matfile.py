"""The numeric variables of MATLAB ``.mat`` files with numpy only (no scipy): MAT v5/v6/v7, and v7.3 via h5py.

Enough for pixel ground truth such as MSRC-v2's ``*_GT.mat`` (MATLAB 5.0 files whose variables are zlib-compressed
``miCOMPRESSED`` elements, doubles stored as uint8). Dense real numeric arrays only (double, single, (u)int8..64,
logical); a cell, struct, object, char, sparse or complex variable is refused with one line naming it.

The v5 layout (MathWorks, "MAT-File Format"): a 128-byte header (116 bytes of text, 8 of subsystem offset, 2 of
version, 2 of endian indicator ``IM`` = little endian), then data elements. An element is an 8-byte tag (uint32
type, uint32 byte count) and its data padded to 8 bytes, or a "small" element: one uint32 holding the byte count
(<= 4, high half) and the type (low half), with the data in the next 4 bytes. A variable is an ``miMATRIX``
element of four sub-elements: array flags (class in the low byte, complex bit 0x800, logical bit 0x200),
dimensions (int32), name (int8) and the real part (any numeric type). Values keep the stored type, as
``scipy.io.loadmat`` does by default (MATLAB stores a double array of small integers as uint8, a logical as uint8).

v7.3 files are HDF5 with a 512-byte MATLAB header; MATLAB writes column-major, so h5py sees every array
transposed and :func:`read_mat` transposes it back.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Collection, Iterator

import numpy as np

from ..errors import OrandError

# miXXX element types -> numpy dtype (byte order added per file)
MI_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
MI_MATRIX, MI_COMPRESSED = 14, 15
# mxXXX array classes that are numeric, and the names of the others
MX_NUMERIC = {6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
MX_NAMES = {1: "cell", 2: "struct", 3: "object", 4: "char", 5: "sparse"}
FLAG_COMPLEX = 0x0800


class MatFileError(OrandError):
    """A file that is not a ``.mat`` file this reader understands (the message names it)."""


def mat_version(head: bytes) -> str:
    """``"v5"`` (levels 5, 6 and 7), ``"v7.3"`` (HDF5) or ``"unknown"`` from the first 128 bytes of a file.

    >>> mat_version(b"MATLAB 5.0 MAT-file".ljust(126) + b"IM")
    'v5'
    >>> mat_version(b"MATLAB 7.3 MAT-file".ljust(128)), mat_version(b"GIF89a")
    ('v7.3', 'unknown')
    """
    if len(head) < 128:
        return "unknown"
    if head.startswith(b"MATLAB 7.3"):
        return "v7.3"
    if head.startswith(b"MATLAB") and head[126:128] in (b"IM", b"MI"):
        return "v5"
    return "unknown"


def elements(buf: bytes, bo: str) -> Iterator[tuple[int, bytes]]:
    """``(type, data)`` of the data elements in ``buf`` (byte order ``bo``: ``<`` or ``>``).

    >>> list(elements(struct.pack("<IIi4x", 5, 4, 7) + struct.pack("<HHi", 1, 2, 3), "<"))
    [(5, b'\\x07\\x00\\x00\\x00'), (1, b'\\x03\\x00')]
    """
    pos, end = 0, len(buf)
    while pos + 4 <= end:
        (word,) = struct.unpack_from(bo + "I", buf, pos)
        if word >> 16:  # small element: byte count in the high half, type in the low half, data in 4 bytes
            yield word & 0xFFFF, buf[pos + 4:pos + 4 + (word >> 16)]
            pos += 8
            continue
        if pos + 8 > end:
            raise ValueError("truncated element tag")
        mtype, nbytes = struct.unpack_from(bo + "II", buf, pos)
        start = pos + 8
        if start + nbytes > end:
            raise ValueError("truncated element data")
        yield mtype, buf[start:start + nbytes]
        # compressed elements are not padded; every other element is padded to 8 bytes
        pos = start + (nbytes if mtype == MI_COMPRESSED else (nbytes + 7) // 8 * 8)


def _numeric(mtype: int, data: bytes, bo: str) -> np.ndarray:
    if mtype not in MI_TYPES:
        raise ValueError(f"unsupported element type {mtype}")
    return np.frombuffer(data, dtype=np.dtype(bo + MI_TYPES[mtype]))


def parse_matrix(data: bytes, bo: str, wanted: Collection[str] | None = None) -> tuple[str, np.ndarray | None]:
    """``(name, array)`` of one ``miMATRIX`` element's data; ``array`` is None for a variable not in ``wanted``
    (it is then not decoded). MATLAB shape, native byte order, the stored type (logical arrays stay uint8, as
    ``scipy.io.loadmat`` gives them)."""
    parts: list[tuple[int, bytes]] = []
    for part in elements(data, bo):
        parts.append(part)
        if len(parts) == 3 and wanted is not None:
            if bytes(parts[2][1]).decode("ascii", "replace") not in wanted:
                return bytes(parts[2][1]).decode("ascii", "replace"), None
        if len(parts) == 4:
            break
    if len(parts) < 3:
        raise ValueError("matrix element with too few parts")
    flags = int(_numeric(*parts[0], bo)[0])
    mx_class, name = flags & 0xFF, bytes(parts[2][1]).decode("ascii", "replace")
    if mx_class not in MX_NUMERIC:
        kind = MX_NAMES.get(mx_class, f"class-{mx_class}")
        raise MatFileError(f"variable {name!r}: {kind} arrays are not supported (numeric arrays only)")
    if flags & FLAG_COMPLEX:
        raise MatFileError(f"variable {name!r}: complex arrays are not supported")
    if len(parts) < 4:
        raise ValueError(f"variable {name!r} has no data")
    dims = [int(d) for d in _numeric(*parts[1], bo)]
    real = _numeric(*parts[3], bo)
    if real.size != int(np.prod(dims)):
        raise ValueError(f"variable {name!r}: {real.size} values for dimensions {dims}")
    return name, real.astype(real.dtype.newbyteorder("=")).reshape(dims, order="F")


def read_v5(buf: bytes, wanted: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """The numeric variables of a MAT v5 file's bytes (only ``wanted`` ones when given)."""
    bo = {b"IM": "<", b"MI": ">"}.get(buf[126:128])
    if bo is None:
        raise ValueError(f"bad endian indicator {buf[126:128]!r}")
    out: dict[str, np.ndarray] = {}

    def visit(mtype: int, data: bytes) -> None:
        if mtype == MI_COMPRESSED:
            for inner in elements(zlib.decompress(data), bo):
                visit(*inner)
        elif mtype == MI_MATRIX:
            name, array = parse_matrix(data, bo, wanted)
            if array is not None:
                out[name] = array

    for element in elements(buf[128:], bo):
        visit(*element)
        if wanted is not None and all(n in out for n in wanted):
            break
    return out


def _read_v73(path: Path, wanted: Collection[str] | None) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for name in (wanted if wanted is not None else list(f.keys())):
            if name not in f:
                continue
            node = f[name]
            if not isinstance(node, h5py.Dataset) or node.dtype.kind not in "biuf":
                raise MatFileError(f"{path}: variable {name!r} is not a numeric array")
            out[name] = np.asarray(node[()]).T  # MATLAB is column-major
    return out


def read_mat(path: str | Path, names: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """``{name: array}`` of the numeric variables of a ``.mat`` file, in MATLAB's shape and stored type
    (``names``: only these; a missing one is simply absent). One-line :class:`MatFileError` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(128)
    except OSError as exc:
        raise MatFileError(f"{path}: cannot read ({exc.strerror})") from None
    version = mat_version(head)
    wanted = None if names is None else set(names)
    try:
        if version == "v5":
            return read_v5(path.read_bytes(), wanted)
        if version == "v7.3":
            return _read_v73(path, wanted)
    except MatFileError as exc:
        raise MatFileError(f"{path}: {exc}" if not str(exc).startswith(str(path)) else str(exc)) from None
    except (zlib.error, struct.error, ValueError, OSError) as exc:
        raise MatFileError(f"{path}: corrupt MAT {version} file ({exc})") from None
    raise MatFileError(f"{path}: not a MAT v5 or v7.3 file")

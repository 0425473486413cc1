"""Repairing a store (or shard) that a failed write left damaged: a full disk, a file-size limit or a killed writer.

HDF5 records the end of the file it allocated in its superblock; when the bytes past the last successful write never
reach the disk, the file no longer opens ("truncated file: eof = X, ..., stored_eof = Y"). Everything that was
written before is still there. :func:`repair_if_damaged` extends the file to its recorded end (the missing bytes
read as zeros, nothing is overwritten), keeps every dataset that reads back whole and lies entirely within the
bytes that were really written, and copies them (with the group and root attributes) into a fresh file that
replaces the damaged one. An attribute that does not read back (its strings live in HDF5's global heap, which may
be in the lost tail) is left out instead of stopping the repair; when the store's own (root) attributes do not
read back, what is left is no store: the file is removed and the rerun starts a new one. What was lost is computed
again by the rerun; the parts of the run that was merging when it failed are still in ``STORE.h5.parts`` and are
merged again.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from ..errors import StoreError
from .store import TMP_PREFIX

TRUNCATED = re.compile(r"truncated file: eof = (\d+), sblock->base_addr = \d+, stored_eof = (\d+)")


def open_error(path: str | Path) -> str | None:
    """Why ``path`` does not open with h5py (None when it does)."""
    try:
        h5py.File(path, "r").close()
    except OSError as exc:
        return " ".join(str(exc).split())
    return None


@dataclass
class Salvage:
    kept: int = 0
    lost: list[str] = field(default_factory=list)

    @property
    def is_store(self) -> bool:
        """Whether the root attributes (class names, layout version: what makes the file a store) read back."""
        return not any(entry.startswith(("@", "/*")) for entry in self.lost)


def _extent_ok(ds: h5py.Dataset, written: int) -> bool:
    """Whether the bytes of ``ds`` lie within the first ``written`` bytes of the file."""
    offset = ds.id.get_offset()
    if offset is not None:  # contiguous
        return offset + ds.id.get_storage_size() <= written
    if ds.chunks is None:
        return True  # compact or empty: in the object header
    for index in range(ds.id.get_num_chunks()):
        info = ds.id.get_chunk_info(index)
        if info.byte_offset + info.size > written:
            return False
    return True


READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def _copy_attrs(source: h5py.HLObject, target: h5py.HLObject, where: str, lost: list[str]) -> None:
    """Copy the attributes that read back; a damaged one (e.g. a string whose global heap was in the lost tail) is
    listed in ``lost`` as ``WHERE@NAME`` instead of stopping the repair."""
    try:
        names = list(source.attrs)
    except READ_ERRORS:
        lost.append(f"{where}@*")
        return
    for key in names:
        try:
            target.attrs[key] = source.attrs[key]
        except READ_ERRORS:
            lost.append(f"{where}@{key}")


def salvage(source: Path, target: Path, written: int | None = None) -> Salvage:
    """Copy the root attributes, every group with its attributes and every dataset of ``source`` that reads back
    whole (and lies within the first ``written`` bytes) into a new file ``target``; what does not read back is listed
    in :attr:`Salvage.lost` (the rerun computes it again)."""
    result = Salvage()
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        _copy_attrs(src, dst, "", result.lost)
        try:
            names = list(src)
        except READ_ERRORS:
            names = []
            result.lost.append("/*")
        for name in names:
            try:
                group = src[name]
                image_ids = list(group) if isinstance(group, h5py.Group) else None
            except READ_ERRORS:
                result.lost.append(f"/{name}")
                continue
            if image_ids is None:
                continue
            out = dst.require_group(name)
            _copy_attrs(group, out, f"/{name}", result.lost)
            for image_id in image_ids:
                if image_id.startswith(TMP_PREFIX):
                    continue
                try:
                    ds = group[image_id]
                    if not isinstance(ds, h5py.Dataset) or (written is not None and not _extent_ok(ds, written)):
                        raise OSError("beyond the written bytes")
                    ds[()]
                    src.copy(ds, out, name=image_id)
                    result.kept += 1
                except READ_ERRORS:
                    result.lost.append(f"/{name}/{image_id}")
    return result


def repair_if_damaged(path: str | Path) -> str | None:
    """Repair ``path`` when a failed write left it unreadable; returns a line saying what was done (None when the
    file is fine or missing). A file damaged in another way is an error naming it."""
    path = Path(path)
    if not path.is_file():
        return None
    problem = open_error(path)
    if problem is None:
        return None
    match = TRUNCATED.search(problem)
    if match is None:
        raise StoreError(f"{path}: damaged and cannot be repaired here ({problem}); restore it from a copy or start "
                         f"a new store")
    written, recorded = int(match.group(1)), int(match.group(2))
    tmp = path.with_name(f".{path.name}.repair.tmp")
    try:
        os.truncate(path, recorded)  # the missing tail reads as zeros; nothing written is touched
        result = salvage(path, tmp, written)
        if not result.is_store:  # the salvaged datasets would belong to no store: start afresh
            tmp.unlink()
            path.unlink()
            result = Salvage(lost=[*result.lost, *(["(every dataset)"] if result.kept else [])])
        else:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise StoreError(f"{path}: damaged by a failed write, and repairing it failed ({reason}); free disk space "
                         f"and rerun, or restore it from a copy") from None
    lost = f"; lost {len(result.lost)} entries written last ({', '.join(result.lost[:3])}), computed again" \
        if result.lost else ""
    return f"repaired {path} after a failed write: kept {result.kept} entries{lost}"

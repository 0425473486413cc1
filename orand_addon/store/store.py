"""The HDF5 store: one self-describing file that every stage reads and writes (DESIGN §9).

Layout (readable with plain h5py)::

    /                      attrs: layout_version=1, orand_addon_version, class_names (background first),
                                  created, provenance (JSON)
    /<kind>/<image_id>     float16/float32 (K, H, W), attr keys = 0-based foreground classes in channel order
                           kinds: a, b, c... (source copies), or, and, mean, orandnet, rw
    /masks/<image_id>      uint8 (H, W), 0 background, 1..C classes, 255 void
    /seeds/<image_id>      uint8 (H, W), IRN seeds: 0 confident background, 1..C classes, 255 unsure
    /seg/<image_id>        uint8 (H, W), masks written by ``segment`` (0 background, 1..C classes)

Maps are stored uncompressed by default (writing must not slow the pipeline down; see benchmarks/bench_fuse.py),
``compression="lzf"`` or ``"gzip"`` trade speed for size; masks are always gzip level 1.
Each group carries an attr ``provenance`` (JSON: the command and parameters that wrote it). Writes are
incremental and atomic per id: a dataset is written under a temporary name and then renamed, so a rerun that
finds ``/<kind>/<id>`` knows it is complete, and leftovers of an interrupted write are removed on open.

The main store is opened with ``journal=True`` wherever it is written (merges, a run's record): every write session
then goes through the redo journal of :mod:`.wal`, so a SIGKILL, a power loss, a full disk or a file-size limit
leaves the store at its last :meth:`Store.flush` (a commit), with every earlier id intact. Part files and rank shards
are written plainly (a damaged one is redone, see :mod:`.journal` and :mod:`.repair`).

>>> import tempfile, numpy as np
>>> path = tempfile.mkdtemp() + "/s.h5"
>>> with Store(path, mode="a", class_names=["background", "cat", "dog"]) as s:
...     s.write_maps("or", "img1", np.ones((1, 2, 3), np.float32), keys=[1])
>>> with Store(path) as s:
...     maps, keys = s.read_maps("or", "img1")
...     s.ids("or"), maps.shape, keys.tolist(), s.class_names
(['img1'], (1, 2, 3), [1], ['background', 'cat', 'dog'])
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np

from ..classes import VOC_CLASSES
from ..errors import OrandError, StoreError
from .wal import WalError, WalFile, check_no_pending_journal, fsync_enabled, journal_path, write_error

LAYOUT_VERSION = 1
MASK_GROUPS = ("masks", "seeds", "seg")
TMP_PREFIX = ".tmp_"
COMPRESSIONS = ("none", "lzf", "gzip")
# Masks compress 10-50x and are small: always gzip (readable by every HDF5 tool), cheap at level 1.
MASK_COMPRESSION = {"compression": "gzip", "compression_opts": 1}


def _version() -> str:
    from ..version import __version__

    return __version__


def _check_id(image_id: str) -> str:
    if not image_id or "/" in image_id or image_id.startswith(TMP_PREFIX) or image_id in (".", ".."):
        raise StoreError(f"image id {image_id!r} cannot be stored (empty, contains '/', or reserved)")
    return image_id


def _compression_kwargs(compression: str) -> dict[str, Any]:
    if compression == "none":
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    if compression == "lzf":
        return {"compression": "lzf"}
    raise StoreError(f"unknown compression {compression!r}; valid: {', '.join(COMPRESSIONS)}")


class Store:
    """An open HDF5 store. ``mode``: ``r`` read, ``a`` read/write (created if missing).

    ``journal`` (mode ``a``): write through the redo journal of :mod:`.wal` (crash-safe; used for the main store).
    :meth:`flush` is then a commit, :meth:`close` commits (unless a write failed: then the store is rolled back to
    its last commit, and close raises that write's OSError), and :attr:`recovered` says in one line how an
    interrupted earlier session was finished or rolled back (None when there was none). A write that fails raises
    an OSError naming the store with the errno of the failure (``[Errno 27] File too large: 'fused.h5'``).
    Opening refuses (one line) while a journal of an interrupted write waits to be replayed.
    """

    def __init__(
        self,
        path: str | Path,
        mode: str = "r",
        class_names: Sequence[str] | None = None,
        compression: str = "none",
        journal: bool = False,
    ):
        self.path = Path(path)
        self.mode = mode
        self.compression = compression
        self.wal: WalFile | None = None
        self.recovered: str | None = None
        _compression_kwargs(compression)
        if mode == "r":
            if not self.path.is_file():
                raise StoreError(f"{self.path}: store not found")
            check_no_pending_journal(self.path)
            try:
                self.h5 = h5py.File(self.path, "r")
            except OSError as exc:
                raise StoreError(f"{self.path}: not a readable HDF5 store ({exc})") from None
        elif mode == "a":
            new = not self.path.exists()
            if self.path.parent.exists() and not self.path.parent.is_dir():
                raise StoreError(f"{self.path}: cannot create output folder ({self.path.parent} is a file)")
            if new and not self.path.parent.exists():
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"{self.path}: cannot create output folder ({exc.strerror})") from None
            if journal:
                self._open_journaled(class_names)
                new = False  # a new store was created whole (with its attributes) before it was opened
            else:
                if not new:
                    check_no_pending_journal(self.path)
                try:
                    self.h5 = h5py.File(self.path, "a")
                except OSError as exc:
                    reason = os.strerror(exc.errno) if exc.errno else str(exc).split(";")[0]
                    if self.path.exists() and not new:
                        reason += "; is it open in another process, or not an HDF5 file?"
                    raise StoreError(f"{self.path}: cannot open store for writing ({reason})") from None
        else:
            raise StoreError(f"unknown store mode {mode!r}; valid: r, a")
        try:
            if mode == "a":
                with self._guard():
                    if new or ("layout_version" not in self.h5.attrs and not len(self.h5) and not len(self.h5.attrs)):
                        self._init_attrs(self.h5, class_names)
                    self._remove_partial_writes()
            self._check_layout(class_names)
        except BaseException:
            self._abandon()  # never leave the file open (and locked) behind an error; a journal rolls back
            raise

    def _open_journaled(self, class_names: Sequence[str] | None) -> None:
        """Open through a :class:`~.wal.WalFile` (creating the store whole first when it is missing or empty)."""
        try:
            if not self.path.exists() or self.path.stat().st_size == 0:
                self._create(class_names)
            self.wal = WalFile(self.path)
        except WalError:
            raise
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open store for writing ({exc.strerror or exc})") from None
        self.recovered = self.wal.recovered
        try:
            self.h5 = h5py.File(self.wal, "r+")
        except Exception as exc:  # noqa: BLE001 - whatever HDF5 says, the file is left as it was
            self.wal.close(commit=False)
            self.wal = None
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreError(f"{self.path}: cannot open store for writing ({reason}; is it an HDF5 file?)") from None

    def _create(self, class_names: Sequence[str] | None) -> None:
        """Write a new, empty store under a temporary name and move it into place whole: the committed state of a
        journaled store is always a complete HDF5 file (an interrupted creation leaves no half-made store)."""
        tmp = self.path.with_name(f".{self.path.name}.new-{os.getpid()}")
        try:
            with h5py.File(tmp, "w") as h5:
                self._init_attrs(h5, class_names)
            if fsync_enabled():
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            created = True
            if self.path.exists():  # an empty file
                os.replace(tmp, self.path)
            else:
                try:
                    os.link(tmp, self.path)  # never replaces a store another process created meanwhile
                except FileExistsError:
                    created = False
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                        raise
                    os.replace(tmp, self.path)  # a file system without hard links
            if created:  # a journal next to a store that did not exist belongs to nothing
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(journal_path(self.path))
            if fsync_enabled():
                fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    @contextlib.contextmanager
    def _guard(self):
        """Turn whatever h5py raises after the journal's write failed into that failure's OSError (h5py's own
        message is then noise from the file-object driver)."""
        try:
            yield
        except Exception as exc:
            failed = self.wal.failed if self.wal is not None else None
            if failed is None or isinstance(exc, OrandError) or not isinstance(failed, Exception):
                raise
            raise write_error(self.path, failed) from None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> "Store":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        with contextlib.suppress(Exception):  # the exception in flight is the one to report
            self.close()

    def close(self) -> None:
        """Close the file; with a journal, commit (see the class docstring) and release the lock."""
        h5, wal, self.wal = getattr(self, "h5", None), self.wal, None
        error: Exception | None = None
        if h5 is not None and h5.id.valid:
            try:
                h5.close()
            except Exception as exc:
                if wal is None:
                    raise
                error = exc
        if wal is None:
            return
        try:
            wal.close(commit=error is None)
        except OSError as exc:  # the commit's write failed (recorded in wal.failed)
            error = error or exc
        if wal.failed is not None:
            if isinstance(wal.failed, Exception):
                raise write_error(self.path, wal.failed) from None
            return  # Ctrl-C during a write: rolled back; the interrupt is on its way
        if error is not None:
            raise write_error(self.path, error) from None

    def _abandon(self) -> None:
        """Close without committing anything (a journaled store is left as it was opened)."""
        h5, wal, self.wal = getattr(self, "h5", None), self.wal, None
        if h5 is not None and h5.id.valid:
            with contextlib.suppress(Exception):
                h5.close()
        if wal is not None:
            wal.close(commit=False)

    def flush(self) -> None:
        """Write what is cached to the file; with a journal, a commit (durable, and kept whatever happens next)."""
        with self._guard():
            self.h5.flush()
            if self.wal is not None:
                self.wal.commit()

    @staticmethod
    def _init_attrs(h5: h5py.File, class_names: Sequence[str] | None) -> None:
        names = list(class_names) if class_names is not None else list(VOC_CLASSES)
        h5.attrs["layout_version"] = LAYOUT_VERSION
        h5.attrs["orand_addon_version"] = _version()
        h5.attrs["class_names"] = np.array(names, dtype=h5py.string_dtype())
        h5.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        h5.attrs["provenance"] = json.dumps({})

    def _check_layout(self, class_names: Sequence[str] | None) -> None:
        version = self.h5.attrs.get("layout_version")
        if version is None:
            raise StoreError(f"{self.path}: not an orand-addon store (no layout_version attribute)")
        try:
            version = int(np.asarray(version).reshape(-1)[0])
            names = self.class_names
        except (TypeError, ValueError, IndexError, KeyError, UnicodeDecodeError):
            raise StoreError(f"{self.path}: not an orand-addon store (unreadable layout_version or class_names)"
                             ) from None
        if len(names) < 2 or len(set(names)) != len(names):
            raise StoreError(f"{self.path}: class_names must list background and at least one class, once each")
        if version > LAYOUT_VERSION:
            raise StoreError(f"{self.path}: layout_version {int(version)} is newer than this orand-addon understands")
        if class_names is not None and list(class_names) != self.class_names:
            raise StoreError(
                f"{self.path}: store has classes {self.class_names[:4]}... ({len(self.class_names)}), "
                f"this run uses {list(class_names)[:4]}... ({len(class_names)})"
            )

    def _remove_partial_writes(self) -> None:
        for group in list(self.h5.values()):
            if isinstance(group, h5py.Group):
                for name in [n for n in group if n.startswith(TMP_PREFIX)]:
                    del group[name]

    # -- metadata --------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        names = np.asarray(self.h5.attrs["class_names"]).reshape(-1)
        if names.dtype.kind not in "OSU":
            raise TypeError("class_names are not strings")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    @property
    def provenance(self) -> dict:
        return self._json_attr(self.h5, "the root's provenance") or {}

    def _json_attr(self, obj: h5py.HLObject, what: str) -> dict | None:
        text = obj.attrs.get("provenance")
        if text is None:
            return None
        try:
            value = json.loads(text.decode() if isinstance(text, bytes) else text)
        except (ValueError, TypeError, AttributeError):
            raise StoreError(f"{self.path}: {what} is not a JSON record (the store was edited)") from None
        if not isinstance(value, dict):
            raise StoreError(f"{self.path}: {what} is not a JSON object (the store was edited)")
        return value

    def set_provenance(self, record: dict) -> None:
        with self._guard():
            self.h5.attrs["provenance"] = json.dumps(record, default=str)

    def group_provenance(self, group: str) -> dict | None:
        if group not in self.h5:
            return None
        return self._json_attr(self.h5[group], f"/{group}'s provenance")

    def begin(self, groups: Iterable[str], command: str, parameters: dict, force: bool = False) -> None:
        """Declare that ``command`` with ``parameters`` writes ``groups``.

        A group already written with different parameters is an error (mixing the two would corrupt the
        results) unless ``force`` is set, which deletes the group first.
        """
        for group in groups:
            old = self.group_provenance(group)
            record = {"command": command, "parameters": parameters}
            norm = json.loads(json.dumps(parameters, default=str))
            if old is not None and old.get("parameters") != norm:
                if not force:
                    diff = sorted(k for k in set(norm) | set(old.get("parameters", {}))
                                  if norm.get(k) != old.get("parameters", {}).get(k))
                    raise StoreError(
                        f"{self.path}: /{group} was written by '{old.get('command')}' with other parameters "
                        f"({', '.join(diff)} differ); use a new output file or --overwrite"
                    )
                self.delete_group(group)
            with self._guard():
                grp = self.h5.require_group(group)
                grp.attrs["provenance"] = json.dumps(record, default=str)

    def delete_group(self, group: str) -> None:
        """Delete ``/group`` and everything in it (nothing to do when it is missing)."""
        with self._guard():
            if group in self.h5:
                del self.h5[group]

    # -- listing ---------------------------------------------------------------------------------------------
    def groups(self) -> list[str]:
        return sorted(k for k, v in self.h5.items() if isinstance(v, h5py.Group))

    def kinds(self) -> list[str]:
        """Map kinds present (groups other than masks/seeds)."""
        return [g for g in self.groups() if g not in MASK_GROUPS]

    def _group(self, group: str) -> h5py.Group | None:
        obj = self.h5.get(group) if group in self.h5 else None
        return obj if isinstance(obj, h5py.Group) else None

    def ids(self, group: str) -> list[str]:
        grp = self._group(group)
        if grp is None:
            return []
        return sorted(n for n in grp if not n.startswith(TMP_PREFIX))

    def has(self, group: str, image_id: str) -> bool:
        grp = self._group(group)
        return grp is not None and image_id in grp

    def foreign_entries(self, group: str) -> list[str]:
        """Names under ``/group`` that are not datasets (a nested group, a named type): a layout orand-addon never
        writes. Reads each entry's header only (~10 us an id)."""
        grp = self._group(group)
        if grp is None:
            return []
        found: list[str] = []

        def visit(name: bytes) -> None:
            try:
                kind = h5py.h5o.get_info(grp.id, name).type
            except (KeyError, OSError, RuntimeError):  # a dangling link
                kind = None
            if kind != h5py.h5o.TYPE_DATASET:
                found.append(name.decode("utf-8", "replace"))

        grp.id.links.iterate(visit)
        return sorted(found)

    def check_entries(self, group: str) -> None:
        """One line naming the first entry of ``/group`` that is not a dataset (see :meth:`foreign_entries`)."""
        foreign = self.foreign_entries(group)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise StoreError(f"{self.path}: /{group}/{foreign[0]} is not a dataset{more}: a layout orand-addon does "
                             f"not write")

    # -- reading, checked (a store edited by hand or by another tool never crashes a reader) --------------------
    def _entry(self, group: str, image_id: str, what: str) -> h5py.Dataset:
        """``/group/image_id`` as a dataset; anything else is a one-line error naming the store and the entry."""
        if not self.has(group, image_id):
            raise StoreError(f"{self.path}: no /{group}/{image_id}")
        try:
            obj = self._group(group).get(image_id)
        except (KeyError, OSError, RuntimeError) as exc:  # a dangling link
            reason = " ".join(str(exc).split())
            raise StoreError(f"{self.path}: /{group}/{image_id} cannot be read ({reason})") from None
        if not isinstance(obj, h5py.Dataset):
            found = "a group" if isinstance(obj, h5py.Group) else type(obj).__name__
            raise StoreError(f"{self.path}: /{group}/{image_id} is {found}, not {what} (a layout orand-addon does not "
                             f"write)")
        return obj

    def _checked_size(self, ds: h5py.Dataset, where: str, per_value: int) -> None:
        """Refuse an entry (or its chunks) over the input limit before reading it."""
        from ..io.limits import OverLimit, check_cost, describe_shape, shape_elements

        try:
            check_cost(f"{where}, {describe_shape(ds.shape)} {ds.dtype},",
                       shape_elements(ds.shape) * max(per_value, ds.dtype.itemsize))
            if ds.chunks is not None:
                check_cost(f"{where}'s chunks of {describe_shape(ds.chunks)}",
                           shape_elements(ds.chunks) * ds.dtype.itemsize)
        except OverLimit as exc:
            from ..io.limits import refusal

            raise refusal(str(self.path), exc) from None

    def _map_dataset(self, kind: str, image_id: str) -> h5py.Dataset:
        where = f"/{kind}/{image_id}"
        ds = self._entry(kind, image_id, "a map dataset")
        if ds.ndim != 3:
            raise StoreError(f"{self.path}: {where} must be maps (K, H, W), got shape {ds.shape}")
        if ds.dtype.kind not in "fiu":
            what = "complex values" if ds.dtype.kind == "c" else f"{ds.dtype} values"
            raise StoreError(f"{self.path}: {where} holds {what}, not real-valued maps")
        if ds.shape[1] == 0 or ds.shape[2] == 0:
            raise StoreError(f"{self.path}: {where} has empty {ds.shape[1]} x {ds.shape[2]} maps")
        self._checked_size(ds, where, 4)
        return ds

    def _keys_of(self, ds: h5py.Dataset, kind: str, image_id: str) -> np.ndarray:
        where = f"/{kind}/{image_id}"
        if "keys" not in ds.attrs:
            raise StoreError(f"{self.path}: {where} has no 'keys' attribute (its classes)")
        try:
            keys = np.asarray(ds.attrs["keys"]).reshape(-1)
        except (OSError, TypeError, ValueError) as exc:
            raise StoreError(f"{self.path}: {where} has an unreadable 'keys' attribute ({exc})") from None
        if keys.dtype.kind not in "iu":
            raise StoreError(f"{self.path}: {where} has 'keys' of type {keys.dtype}, not class indices")
        keys = keys.astype(np.int64)
        if keys.size != ds.shape[0]:
            raise StoreError(f"{self.path}: {where} has {ds.shape[0]} maps but {keys.size} keys")
        if getattr(self, "_foreground", None) is None:
            self._foreground = len(self.class_names) - 1
        limit = self._foreground
        if keys.size and (keys.min() < 0 or keys.max() >= limit):
            bad = int(keys.min()) if keys.min() < 0 else int(keys.max())
            raise StoreError(f"{self.path}: {where} has class key {bad}, outside the store's {limit} classes")
        return keys

    # -- maps ------------------------------------------------------------------------------------------------
    def read_maps(self, kind: str, image_id: str, finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(maps float32 (K, H, W), keys int64 (K,))``; maps holding NaN/Inf are an error unless ``finite`` is
        False (a reader with its own policy for them, as fuse's --value-policy)."""
        ds = self._map_dataset(kind, image_id)
        keys = self._keys_of(ds, kind, image_id)
        maps = ds[()].astype(np.float32)
        if finite:
            bad = maps.size - int(np.isfinite(maps).sum())
            if bad:
                raise StoreError(f"{self.path}: /{kind}/{image_id} holds NaN/Inf ({bad} of {maps.size} values): the "
                                 f"store was damaged or edited; rewrite /{kind} (its command with --overwrite)")
        return maps, keys

    def read_keys(self, kind: str, image_id: str) -> np.ndarray:
        return self._keys_of(self._map_dataset(kind, image_id), kind, image_id)

    def map_shape(self, kind: str, image_id: str) -> tuple[int, ...]:
        return tuple(self._map_dataset(kind, image_id).shape)

    def write_maps(self, kind: str, image_id: str, maps: np.ndarray, keys: Sequence[int],
                   dtype: str = "float16", attrs: dict | None = None) -> None:
        """Write (K, H, W) maps atomically (temporary name, then rename); replaces an existing entry."""
        _check_id(image_id)
        maps = np.asarray(maps)
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if maps.ndim != 3 or maps.shape[0] != keys.size:
            raise StoreError(f"/{kind}/{image_id}: maps of shape {maps.shape} do not match {keys.size} keys")
        if dtype not in ("float16", "float32"):
            raise StoreError(f"unknown map dtype {dtype!r}; valid: float16, float32")
        chunks = (1, *maps.shape[1:]) if maps.size else None
        self._write(kind, image_id, maps.astype(dtype, copy=False), chunks, {"keys": keys, **(attrs or {})},
                    _compression_kwargs(self.compression))

    # -- masks -----------------------------------------------------------------------------------------------
    def _mask_dataset(self, group: str, image_id: str) -> h5py.Dataset:
        where = f"/{group}/{image_id}"
        ds = self._entry(group, image_id, "a mask dataset")
        if ds.ndim != 2 or ds.dtype.kind not in "ui":
            raise StoreError(f"{self.path}: {where} must be a mask (H, W) of integers, got shape {ds.shape} {ds.dtype}")
        return ds

    def mask_shape(self, group: str, image_id: str) -> tuple[int, int]:
        """(H, W) of a mask (seeds, masks, seg), from its header only."""
        return tuple(self._mask_dataset(group, image_id).shape)

    def read_mask(self, group: str, image_id: str) -> np.ndarray:
        """A uint8 (H, W) mask; an entry of another shape or type is a one-line error."""
        where = f"/{group}/{image_id}"
        ds = self._mask_dataset(group, image_id)
        self._checked_size(ds, where, 1)
        mask = ds[()]
        if mask.dtype != np.uint8:
            if mask.size and (mask.min() < 0 or mask.max() > 255):
                raise StoreError(f"{self.path}: {where} holds values outside 0..255")
            mask = mask.astype(np.uint8)
        return mask

    def write_mask(self, group: str, image_id: str, mask: np.ndarray, attrs: dict | None = None) -> None:
        _check_id(image_id)
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise StoreError(f"/{group}/{image_id}: a mask must be 2-D, got shape {mask.shape}")
        self._write(group, image_id, mask.astype(np.uint8, copy=False), True, attrs or {}, MASK_COMPRESSION)

    def _write(self, group: str, image_id: str, data: np.ndarray, chunks, attrs: dict, compression: dict) -> None:
        if self.mode == "r":
            raise StoreError(f"{self.path}: opened read-only")
        with self._guard():
            grp = self.h5.require_group(group)
            tmp = TMP_PREFIX + image_id
            if tmp in grp:
                del grp[tmp]
            kwargs = compression if data.size else {}
            ds = grp.create_dataset(tmp, data=data, chunks=chunks if kwargs else None, **kwargs)
            for key, value in attrs.items():
                ds.attrs[key] = value
            if ds.chunks is not None:
                # chunks are written when the dataset is closed, after the rename, where a failure (a full disk)
                # is swallowed by h5py: write them now, so that it raises before the id gets its final name
                ds.flush()
            if image_id in grp:
                del grp[image_id]
            grp.move(tmp, image_id)

    def copy_entry(self, source: Store, group: str, image_id: str) -> None:
        """Copy ``/group/image_id`` of ``source`` as it is (data, dtype, chunks, filters, attrs) under a temporary
        name, then rename it (atomic per id)."""
        if self.mode == "r":
            raise StoreError(f"{self.path}: opened read-only")
        with self._guard():
            grp = self.h5.require_group(group)
            tmp = TMP_PREFIX + image_id
            if tmp in grp:
                del grp[tmp]
            source.h5.copy(source.h5[group][image_id], grp, name=tmp)
            grp.move(tmp, image_id)

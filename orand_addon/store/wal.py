"""A redo journal under HDF5: the file object through which the main store is written (h5py's ``fileobj`` driver).

A write session (a merge, a run's record) must never damage what the store held before it: HDF5 rewrites its
group indexes and B-trees in place, and a SIGKILL, a power loss, a full disk or a file-size limit in the middle of
such a write can leave every earlier id unreachable. :class:`WalFile` keeps one invariant:

    between two commits, the bytes of ``STORE.h5`` below its committed size never change on disk.

Writes below the committed size (HDF5's metadata: superblock, group heaps, B-tree nodes) go to copies of their 4 kB
pages in ``STORE.h5-journal``; writes at or beyond it (new datasets, the usual case) go straight to the store, where
the committed superblock does not reach them. :meth:`WalFile.commit` (right after ``h5.flush()``) makes the new state
durable and visible: fsync the store (the appended data first), write the page index with CRCs and the header to the
journal and fsync it (the commit point), copy the pages into the store, fsync, empty the journal. So:

* a crash before the commit point leaves the store at its previous commit; the next writer drops the unfinished
  journal and cuts off the uncommitted tail (the committed superblock records where the committed file ends);
* a crash after it (in the short *apply window*) leaves a complete journal, which the next writer replays.
  Readers must not open the store then: :func:`check_no_pending_journal` refuses them with one line;
* a write error (ENOSPC, EFBIG, EIO) *poisons* the object: later writes are accepted and dropped, nothing more is
  committed, and :meth:`WalFile.close` rolls the file back to its last commit at once;
* new space is allocated (``posix_fallocate``) when HDF5 extends the file, so a commit never needs new space.

A journal is replayed only onto the file it was written for: the store's inode must match and each page must hold
either its old or its new bytes (CRC32). One that does not (the store was copied or restored since) is moved to
``STORE.h5-journal.foreign`` and the open fails with one line; the device number is deliberately not compared,
because it can change across the very reboot a journal is kept for. The writer holds ``flock(LOCK_EX)`` on the
store from before recovery to close, so a live writer's journal is never taken for a dead one's.

The file opened must be a complete HDF5 file (:class:`~.store.Store` creates a new store whole, under a temporary
name, before opening it here): rolling back reads the committed end of the file from the committed superblock.
After every completed command the store is one plain HDF5 file (readable with plain h5py) and no journal exists.
The ``fileobj`` driver does not aggregate small metadata writes, so sessions writing many tiny datasets cost more
than with HDF5's own driver (about +40 % for a merge of 5,000 masks; large maps: noise level without fsync).

Environment: ``ORAND_ADDON_FSYNC=0`` turns every fsync off (scratch runs on a slow disk). The store then still
survives a SIGKILL, a full disk and a file-size limit, but no longer a power loss or an OS crash.

>>> import tempfile, h5py
>>> path = tempfile.mkdtemp() + "/w.h5"
>>> h5py.File(path, "w").close()
>>> wal = WalFile(path)
>>> with h5py.File(wal, "r+") as h5:
...     h5["x"] = [1, 2, 3]
>>> wal.close()
>>> with h5py.File(path, "r") as h5:
...     h5["x"][()].tolist(), os.path.exists(path + JOURNAL_SUFFIX)
([1, 2, 3], False)
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import zlib
from pathlib import Path

from ..errors import StoreError
from ..runtime.files import pwrite_all

PAGE = 4096
JOURNAL_SUFFIX = "-journal"
FOREIGN_SUFFIX = ".foreign"
FSYNC_ENV = "ORAND_ADDON_FSYNC"
MAGIC = b"ORWAL002"
# magic, committed (old) size, new size, pages, index offset, index crc32, store inode, crc32 of the fields before
HEADER = struct.Struct("<8sQQQQIQI")
# page number, journal slot, bytes of the page that are applied, crc32 of those new bytes, crc32 of the old ones
INDEX = struct.Struct("<QQIII")
DATA0 = PAGE  # page slots start after one header page
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class WalError(StoreError):
    """The journal of a store cannot be used (locked by another process, or belonging to another file)."""


def fsync_enabled() -> bool:
    """Whether commits fsync (``ORAND_ADDON_FSYNC=0``, ``false``, ``no`` or ``off`` turn it off).

    >>> os.environ[FSYNC_ENV] = "0"; fsync_enabled()
    False
    >>> del os.environ[FSYNC_ENV]; fsync_enabled()
    True
    """
    return os.environ.get(FSYNC_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def journal_path(path: str | os.PathLike) -> str:
    """The journal of the store ``path``.

    >>> journal_path("runs/fused.h5")
    'runs/fused.h5-journal'
    """
    return os.fspath(path) + JOURNAL_SUFFIX


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


# -- the journal on disk ---------------------------------------------------------------------------------------

class _Record:
    """A complete journal: the pages of one commit, checked against their CRCs."""

    def __init__(self, old: int, new: int, inode: int, pages: list[tuple[int, bytes, int, int]]):
        self.old, self.new, self.inode, self.pages = old, new, inode, pages


def _read_record(jpath: str) -> _Record | None:
    """The commit recorded in ``jpath`` when it is complete and intact, else None (empty, torn or damaged)."""
    try:
        with open(jpath, "rb") as j:
            head = j.read(HEADER.size)
            if len(head) < HEADER.size:
                return None
            magic, old, new, n, index_at, index_crc, inode, head_crc = HEADER.unpack(head)
            if magic != MAGIC or zlib.crc32(head[:-4]) != head_crc:
                return None
            j.seek(index_at)
            index = j.read(n * INDEX.size)
            if len(index) != n * INDEX.size or zlib.crc32(index) != index_crc:
                return None
            pages = []
            for k in range(n):
                page, slot, length, crc_new, crc_old = INDEX.unpack_from(index, k * INDEX.size)
                j.seek(DATA0 + slot * PAGE)
                data = j.read(length)
                if len(data) != length or zlib.crc32(data) != crc_new:
                    return None
                pages.append((page, data, crc_new, crc_old))
    except FileNotFoundError:
        return None
    return _Record(old, new, inode, pages)


def _belongs(fd: int, record: _Record) -> bool:
    """Whether ``record`` was written for the open file ``fd``: same inode, every page holds its old or new bytes."""
    st = os.fstat(fd)
    if st.st_ino != record.inode or st.st_size < min(record.old, record.new):
        return False
    for page, data, crc_new, crc_old in record.pages:
        if zlib.crc32(os.pread(fd, len(data), page * PAGE)) not in (crc_new, crc_old):
            return False
    return True


def stored_eoa(fd: int) -> int | None:
    """The end of the file recorded in the HDF5 superblock at offset 0 (versions 0-3), None when the file is not
    HDF5, has a user block, or uses other than 8-byte addresses."""
    head = os.pread(fd, 64, 0)
    if len(head) < 48 or head[:8] != HDF5_SIGNATURE:
        return None
    version = head[8]
    if version in (0, 1):
        size_off = head[13]
        at = 24 + (4 if version == 1 else 0)  # then base, free-space info, end-of-file, driver info addresses
        base_at, eoa_at = at, at + 2 * size_off
    elif version in (2, 3):
        size_off = head[9]
        base_at, eoa_at = 12, 12 + 2 * size_off  # base, superblock-extension, end-of-file addresses
    else:
        return None
    if size_off != 8 or struct.unpack_from("<Q", head, base_at)[0] != 0:
        return None
    return struct.unpack_from("<Q", head, eoa_at)[0]


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover_locked(fd: int, path: str, fsync: bool) -> str | None:
    """Finish or roll back the interrupted write session of ``path`` (open as ``fd``, locked); one line saying what
    was done, or None when the last session ended cleanly."""
    jpath = journal_path(path)
    if not os.path.exists(jpath):
        return None
    record = _read_record(jpath)
    if record is not None:
        if not _belongs(fd, record):
            os.replace(jpath, jpath + FOREIGN_SUFFIX)
            raise WalError(f"{path}: the journal {jpath} was written for another copy or version of this store (was "
                           f"it copied or restored?); moved it to {jpath}{FOREIGN_SUFFIX} and left the store as it "
                           f"is; rerun the command")
        for page, data, _, _ in record.pages:
            pwrite_all(fd, data, page * PAGE)
        os.ftruncate(fd, record.new)
        if fsync:
            os.fsync(fd)
        os.unlink(jpath)
        if fsync:
            _fsync_dir(path)
        return (f"{path}: finished an interrupted write from its journal ({len(record.pages)} pages); the store is at "
                f"that write's last checkpoint")
    size = os.fstat(fd).st_size
    eoa = stored_eoa(fd)
    dropped = 0
    if eoa is not None and size > eoa:  # the uncommitted tail: the committed superblock does not reach it
        os.ftruncate(fd, eoa)
        if fsync:
            os.fsync(fd)
        dropped = size - eoa
    os.unlink(jpath)
    if fsync:
        _fsync_dir(path)
    what = f"dropped {_mb(dropped)} written after it" if dropped else "nothing was written after it"
    return f"{path}: an interrupted write was rolled back to the store's last checkpoint ({what})"


def _lock(fd: int, path: str, kind: int = fcntl.LOCK_EX) -> None:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        raise WalError(f"{path}: cannot open store for writing (another process has it open; wait for it to "
                       f"finish)") from None


def recover(path: str | os.PathLike, fsync: bool | None = None) -> str | None:
    """Replay a complete journal of ``path`` or roll back an incomplete one (holding the store's lock while doing
    so); returns one line saying what was done, None when there was nothing to do."""
    path = os.fspath(path)
    if not os.path.exists(journal_path(path)) or not os.path.isfile(path):
        return None
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        _lock(fd, path)
        return _recover_locked(fd, path, fsync_enabled() if fsync is None else fsync)
    finally:
        os.close(fd)  # releases the lock


def check_no_pending_journal(path: str | os.PathLike) -> None:
    """Refuse (one line) to read ``path`` while a complete journal waits to be applied: a writer was killed inside
    its apply window and the store's pages are half old, half new until the journal is replayed."""
    path = os.fspath(path)
    jpath = journal_path(path)
    if not os.path.exists(jpath) or _read_record(jpath) is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # the caller reports the missing or unreadable store
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StoreError(f"{path}: being written by another process (committing); wait for it to finish") from None
    finally:
        os.close(fd)
    raise StoreError(f"{path}: an interrupted write is not finished ({jpath} is pending); rerun the command that was "
                     f"writing this store, which finishes it first")


# -- the file object -------------------------------------------------------------------------------------------

class WalFile:
    """A file object for ``h5py.File(wal, mode)``: the store ``path`` written through the journal (module docstring).

    Opening locks the store (:class:`WalError` when another process holds it) and recovers an interrupted session
    (:attr:`recovered` says how, in one line, or is None). ``fsync`` None: :func:`fsync_enabled`.
    """

    def __init__(self, path: str | os.PathLike, fsync: bool | None = None):
        self.path = os.fspath(path)
        self.jpath = journal_path(self.path)
        self.fsync = fsync_enabled() if fsync is None else fsync
        self.failed: BaseException | None = None
        self.stats = {"commits": 0, "pages": 0, "appended": 0, "journaled": 0}
        self._slots: dict[int, int] = {}   # page number -> slot in the journal
        self._apply_failed = False         # a write error after the commit point: the journal must be replayed
        self._dir_synced = False
        self.pos = 0
        self.fd = -1
        self.jfd = -1
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            _lock(fd, self.path)  # before recovery: the journal may be a live writer's
            self.recovered = _recover_locked(fd, self.path, self.fsync)
            self.jfd = os.open(self.jpath, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.base = os.fstat(fd).st_size  # the committed size: below it the file changes only at a commit
        self.size = self.base             # the logical size HDF5 sees

    # -- the file-object protocol of h5py's fileobj driver -----------------------------------------------------
    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self.pos = pos
        elif whence == os.SEEK_CUR:
            self.pos += pos
        else:
            self.pos = self.size + pos
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        pos = self.pos
        if n < 0:
            n = max(0, self.size - pos)
        data = os.pread(self.fd, n, pos)
        short = len(data) < n and pos + n <= self.size  # a hole below the logical size reads as zeros
        end = min(pos + n if short else pos + len(data), self.base)
        overlay = [p for p in range(pos // PAGE, (end - 1) // PAGE + 1) if p in self._slots] \
            if self._slots and pos < end else []
        if short or overlay:
            buf = bytearray(data)
            if short:
                buf.extend(bytes(n - len(buf)))
            for page in overlay:
                lo, hi = max(pos, page * PAGE), min(end, page * PAGE + PAGE)
                at = DATA0 + self._slots[page] * PAGE + lo - page * PAGE
                buf[lo - pos:hi - pos] = os.pread(self.jfd, hi - lo, at)
            data = bytes(buf)
        self.pos = pos + len(data)
        return data

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        pos, n = self.pos, len(view)
        if self.failed is None:
            try:
                below = min(max(self.base - pos, 0), n)  # bytes [0, below) land below the committed size
                if below:
                    self._journal(pos, view[:below])
                if below < n:
                    pwrite_all(self.fd, view[below:], pos + below)
                    self.stats["appended"] += n - below
            except BaseException as exc:
                self.failed = exc
                raise
        # poisoned: accepted and dropped (HDF5's close runs quietly), and never committed
        self.pos = pos + n
        self.size = max(self.size, self.pos)
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if self.failed is None and size >= self.base:
            try:
                have = os.fstat(self.fd).st_size
                if size > have:  # allocate now: a commit must never need new space
                    try:
                        os.posix_fallocate(self.fd, have, size - have)
                    except OSError as exc:
                        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                            raise
                os.ftruncate(self.fd, size)
            except BaseException as exc:
                self.failed = exc
                raise
        self.size = size  # below the committed size: applied at the commit
        return size

    def flush(self) -> None:
        """HDF5's flush (nothing to do: durability is :meth:`commit`'s)."""

    # -- the journal -------------------------------------------------------------------------------------------
    def _journal(self, pos: int, view: memoryview) -> None:
        off = 0
        while off < len(view):
            page, inpage = divmod(pos + off, PAGE)
            take = min(PAGE - inpage, len(view) - off)
            slot = self._slots.get(page)
            if slot is None:  # first change of this page in this session: start from its committed bytes
                slot = len(self._slots)
                old = os.pread(self.fd, PAGE, page * PAGE)
                pwrite_all(self.jfd, old + bytes(PAGE - len(old)), DATA0 + slot * PAGE)
                self._slots[page] = slot
            pwrite_all(self.jfd, view[off:off + take], DATA0 + slot * PAGE + inpage)
            self.stats["journaled"] += take
            off += take

    def commit(self) -> None:
        """Make everything HDF5 has written so far durable and visible (call it right after ``h5.flush()``).

        Raises the write error that poisoned the object, if any (nothing is committed then)."""
        if self.failed is not None:
            raise self.failed
        committed = False
        try:
            if self.fsync:
                os.fsync(self.fd)  # the appended data first: the metadata that points at it must not precede it
            keep = min(self.base, self.size)  # bytes of the committed file that survive this commit
            if self._slots or self.size < self.base:
                pages = []
                index = bytearray()
                for page, slot in sorted(self._slots.items()):
                    length = min(PAGE, keep - page * PAGE)
                    if length <= 0:
                        continue  # cut off by the commit's truncation
                    new = os.pread(self.jfd, length, DATA0 + slot * PAGE)
                    old = os.pread(self.fd, length, page * PAGE)
                    index += INDEX.pack(page, slot, length, zlib.crc32(new), zlib.crc32(old))
                    pages.append((page, new))
                index_at = DATA0 + len(self._slots) * PAGE
                pwrite_all(self.jfd, index, index_at)
                head = HEADER.pack(MAGIC, self.base, self.size, len(pages), index_at, zlib.crc32(index),
                                   os.fstat(self.fd).st_ino, 0)[:-4]
                pwrite_all(self.jfd, head + struct.pack("<I", zlib.crc32(head)), 0)
                if self.fsync:
                    os.fsync(self.jfd)  # the commit point
                    if not self._dir_synced:
                        _fsync_dir(self.path)  # the journal's directory entry, once
                        self._dir_synced = True
                committed = True
                for page, new in pages:  # the apply window
                    pwrite_all(self.fd, new, page * PAGE)
                os.ftruncate(self.fd, self.size)
                if self.fsync:
                    os.fsync(self.fd)
                os.ftruncate(self.jfd, 0)  # spent; durable before any later commit can move the file on
                if self.fsync:
                    os.fsync(self.jfd)
                self.stats["pages"] += len(pages)
            elif os.fstat(self.fd).st_size != self.size:
                os.ftruncate(self.fd, self.size)
                if self.fsync:
                    os.fsync(self.fd)
        except BaseException as exc:
            self.failed = exc
            self._apply_failed = committed
            raise
        self._slots = {}
        self.base = self.size
        self.stats["commits"] += 1

    def close(self, commit: bool = True) -> None:
        """Commit (unless a write failed or ``commit`` is False), then release the store, its journal and the lock.

        Without a commit the store is rolled back to its last commit here and now (unless a commit failed inside
        its apply window: then the journal stays, and the next writer replays it)."""
        if self.fd < 0:
            return
        try:
            if commit and self.failed is None:
                self.commit()
        finally:
            try:
                if not self._apply_failed:
                    if self.failed is not None or not commit:
                        os.ftruncate(self.fd, self.base)  # drop the uncommitted tail; needs no space
                    os.unlink(self.jpath)
            except OSError:
                pass  # the next writer rolls back what is left
            finally:
                os.close(self.jfd)
                os.close(self.fd)  # releases the lock
                self.fd = self.jfd = -1

    def __del__(self) -> None:  # a WalFile dropped without close: release the descriptors, commit nothing
        if getattr(self, "fd", -1) >= 0:
            try:
                os.close(self.jfd)
                os.close(self.fd)
            except OSError:
                pass


def write_error(path: str | Path, exc: BaseException) -> OSError:
    """The OSError of a failed write session of ``path`` (errno and reason of ``exc`` when it has them).

    >>> str(write_error("s.h5", OSError(27, "File too large")))
    "[Errno 27] File too large: 's.h5'"
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(path))
    return OSError(errno.EIO, str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__, os.fspath(path))

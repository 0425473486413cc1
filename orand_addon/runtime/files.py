"""Files written atomically (temporary name, then rename), checkpoints written and read safely (``torch.load``
with ``weights_only=True``; one-line errors naming the file)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..errors import OrandError, first_line, one_line


def pwrite_all(fd: int, data: Any, at: int) -> None:
    """Write all of ``data`` (bytes or a C-contiguous buffer) at offset ``at`` of ``fd`` (``os.pwrite`` may write
    less than it is given)."""
    view = memoryview(data).cast("B")
    while len(view):
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written

def _create_temporary(path: Path) -> tuple[Path, BinaryIO]:
    """A new temporary file next to ``path``, created exclusively: a file or symlink already at the name (planted,
    or left by another process) is never opened, so nothing is written through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for attempt in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # ranks may share a folder
        try:
            return tmp, os.fdopen(os.open(tmp, flags, 0o666), "wb")
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *, what: str = "file", sync: bool = False,
                 errors: tuple[type[BaseException], ...] = (OSError,)) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it over ``path``: readers never see a
    half-written file, and a failed or interrupted write leaves the old file as it was and no temporary behind.
    Nothing is written through a symlink: the temporary file is created exclusively, and a symlink at ``path`` is
    replaced by the new file (its target is left alone).

    ``sync`` forces the data to disk before the rename (checkpoints). An exception of ``errors`` (a full disk, an
    unwritable folder) becomes :class:`OrandError` naming ``path``; anything else (Ctrl-C included) is re-raised
    after the temporary file is removed.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(target, lambda fh: fh.write(b"hello")).read_text()
    'hello'
    >>> atomic_write(target, lambda fh: 1 / 0)
    Traceback (most recent call last):
    ...
    ZeroDivisionError: division by zero
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('hello', ['a.txt'])
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp, fh = _create_temporary(path)
    except OSError as exc:
        raise OrandError(f"{path}: cannot write {what} ({exc.strerror or exc})") from None
    try:
        with fh:
            write(fh)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, errors):
            reason = getattr(exc, "strerror", None) or one_line(str(exc)) or type(exc).__name__
            raise OrandError(f"{path}: writing the {what} failed ({reason}); the previous file is unchanged") from None
        raise
    return path


def atomic_write_text(path: str | Path, text: str, what: str = "file") -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), what=what)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written checkpoint.

    A full disk or an unwritable folder raises :class:`OrandError` naming the path; the old file stays intact, and
    no temporary file is left behind whatever happens (Ctrl-C included).
    """
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh), what="checkpoint", sync=True,
                        errors=(OSError, RuntimeError))


_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # torch's legacy format starts with it


def checkpoint_kind(path: Path) -> str:
    """``'torch.save'`` (zip or legacy format), ``'torchscript'`` (torch.jit.save) or ``'other'``, from the
    file's layout only (nothing is unpickled)."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
                return "torchscript"
            return "torch.save" if any(n.endswith("data.pkl") for n in names) else "other"
        with open(path, "rb") as fh:
            return "torch.save" if fh.read(len(_TORCH_LEGACY_MAGIC)) == _TORCH_LEGACY_MAGIC else "other"
    except (OSError, zipfile.BadZipFile, ValueError):
        return "other"


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file (torch's warnings about the
    file, e.g. its pickle protocol, are not printed: the error says what matters)."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    if not path.is_file():
        raise OrandError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        detail = " ".join(detail.split("Check the documentation of torch.load")[0].split())
        kind = checkpoint_kind(path)
        if "Unsupported global" in detail:
            refused = detail.split(" was not an allowed global")[0]
            raise OrandError(f"{path}: refused to load checkpoint (weights_only: {refused}; nothing from the file was "
                             f"run)") from None
        if kind == "torch.save":
            raise OrandError(f"{path}: refused to load checkpoint: a torch.save file that weights-only loading cannot "
                             f"read ({detail or first_line(exc)}; nothing from the file was run)") from None
        if kind == "torchscript":
            raise OrandError(f"{path}: a TorchScript archive (torch.jit.save), not a torch.save checkpoint") from None
        raise OrandError(f"{path}: corrupt or unreadable checkpoint (not a torch.save file: "
                         f"{detail or first_line(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        if checkpoint_kind(path) == "torchscript":
            raise OrandError(f"{path}: a TorchScript archive (torch.jit.save), not a torch.save checkpoint") from None
        reason = first_line(exc)
        reason = reason if len(reason) <= 200 else reason[:200] + "..."
        raise OrandError(f"{path}: corrupt or unreadable checkpoint ({reason})") from None

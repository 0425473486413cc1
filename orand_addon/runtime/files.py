"""Files written atomically (temporary name, then rename), checkpoints written and read safely (``torch.load``
with ``weights_only=True``; one-line errors naming the file)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..errors import OrandError, first_line, one_line


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *, what: str = "file", sync: bool = False,
                 errors: tuple[type[BaseException], ...] = (OSError,)) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it over ``path``: readers never see a
    half-written file, and a failed or interrupted write leaves the old file as it was and no temporary behind.

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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: ranks may share a folder
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(tmp, "wb")
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


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise OrandError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        detail = " ".join(detail.split("Check the documentation of torch.load")[0].split())
        if "Unsupported global" in detail:
            raise OrandError(f"{path}: refused to load checkpoint "
                             f"(weights_only: {detail.split(' was not an allowed global')[0]})") from None
        raise OrandError(f"{path}: corrupt or unreadable checkpoint ({detail or 'not a torch.save file'})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise OrandError(f"{path}: corrupt or unreadable checkpoint ({first_line(exc)})") from None

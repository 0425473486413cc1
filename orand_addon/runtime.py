"""Shared machinery of the training and prediction shells: device, seeding, checkpoints, progress, interrupts."""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import OrandError

DEVICE_HELP = "auto (GPU when there is one), cpu, cuda or cuda:N"


class Interrupted(OrandError):
    """Ctrl-C: the work so far is kept and the same command resumes."""

    exit_code = 130


def resolve_device(spec: str = "auto"):
    """A ``torch.device`` from ``auto``/``cpu``/``cuda``/``cuda:N``; asking for a missing GPU is an error.

    >>> str(resolve_device("cpu"))
    'cpu'
    """
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise OrandError(f"--device {spec}: no CUDA GPU is available here (use --device cpu or auto)")
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise OrandError(f"--device {spec!r} is not a valid device; valid: {DEVICE_HELP}") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OrandError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible")
        return device
    raise OrandError(f"--device {spec!r} is not a valid device; valid: {DEVICE_HELP}")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device, precision: str = "auto"):
    """Mixed-precision context: bf16 autocast on CUDA for ``auto``/``bf16``, fp16 for ``fp16``, none on CPU.

    >>> import torch
    >>> with autocast(torch.device("cpu")):
    ...     pass
    """
    import torch

    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type="cuda", dtype=dtype)


def poly_lr(base_lr: float, step: int, max_steps: int, power: float = 0.9) -> float:
    """Polynomial decay ``base * (1 - step / max_steps) ** power``.

    >>> round(poly_lr(0.1, 50, 100), 6)
    0.053589
    """
    return base_lr * (1 - min(step, max_steps) / max(max_steps, 1)) ** power


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written checkpoint.

    A full disk or an unwritable folder raises :class:`OrandError` naming the path; the old file stays intact.
    """
    import torch

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OrandError(f"{path}: cannot write checkpoint ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        reason = getattr(exc, "strerror", None) or str(exc)
        raise OrandError(f"{path}: writing the checkpoint failed ({reason}); the previous file is unchanged") from None
    return path


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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OrandError(f"{path}: corrupt or unreadable checkpoint ({first})") from None


def progress(iterable: Iterable | None = None, desc: str = "", total: int | None = None,
             enabled: bool = True, unit: str = "it", initial: int = 0):
    """A tqdm bar on stderr (disabled when ``enabled`` is False)."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not enabled, unit=unit, initial=initial,
                file=sys.stderr, dynamic_ncols=True)


@contextlib.contextmanager
def interruptible(what: str) -> Iterator[None]:
    """Turn Ctrl-C into :class:`Interrupted` with a message saying how to resume."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {what}") from None

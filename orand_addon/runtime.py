"""Shared machinery of the training and prediction shells: device, precision, seeding, RNG states, checkpoints and
atomic files, progress, Ctrl-C (:class:`StopRequest`, :func:`deferred_interrupt`), worker processes that leave
Ctrl-C to the main process (:func:`ignore_sigint`, :func:`worker_pool`), returning freed heap memory
(:func:`release_memory`) and digests for provenance."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import random
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, Sequence

import numpy as np

from .errors import OrandError, one_line

if TYPE_CHECKING:  # torch is imported inside the functions: ``--help`` stays fast
    import multiprocessing.pool

    import torch

DEVICE_HELP = "auto (GPU when there is one), cpu, cuda or cuda:N"
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


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


def rng_state() -> dict:
    """The torch RNG states a checkpoint keeps for an exact resume: the CPU generator's and, when CUDA is in use,
    every GPU's (``{"torch": ..., "cuda": [...]}``)."""
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`; the GPU states only where the same number of GPUs is in use (a checkpoint moved
    between machines keeps the CPU state). Raises KeyError/TypeError/RuntimeError for a damaged record.

    >>> import torch
    >>> saved = rng_state(); first = torch.rand(1)
    >>> set_rng_state(saved); bool(torch.rand(1) == first)
    True
    """
    import torch

    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def check_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`PRECISIONS`; a one-line error listing them otherwise.

    >>> check_precision("fp16")
    'fp16'
    >>> check_precision("fp8")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: unknown precision 'fp8'; valid: auto, bf16, fp16, fp32
    """
    if precision not in PRECISIONS:
        raise OrandError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(device: "torch.device", precision: str) -> str:
    """The precision actually used: fp32 on the CPU; on CUDA ``auto`` is bf16, and bf16 becomes fp16 where the GPU
    does not support it (training then scales the gradients: :func:`grad_scaler`).

    >>> import torch
    >>> resolve_precision(torch.device("cpu"), "bf16")
    'fp32'
    """
    import torch

    check_precision(precision)
    if device.type != "cuda":
        return "fp32"
    if precision in ("auto", "bf16"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def grad_scaler(precision: str) -> "torch.amp.GradScaler":
    """The gradient scaler of a training run at the resolved ``precision``: enabled for fp16 only.

    >>> grad_scaler("fp32").is_enabled()
    False
    """
    import torch

    return torch.amp.GradScaler("cuda", enabled=precision == "fp16")


@contextlib.contextmanager
def cudnn_mode(deterministic: bool, benchmark: bool) -> Iterator[None]:
    """Set cuDNN's algorithm choice for a block (deterministic kernels make GPU runs repeatable; ``benchmark``
    picks the fastest kernels for a few input sizes), then restore the previous settings."""
    import torch

    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors.

    >>> first_line(RuntimeError("Error(s) in loading state_dict:\\n\\tMissing key(s)")), first_line(KeyError())
    ('Error(s) in loading state_dict:', 'KeyError')
    """
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


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


# -- Ctrl-C in training loops -----------------------------------------------------------------------------------

def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class InterruptFlag:
    """Whether Ctrl-C was pressed while it was held (:func:`deferred_interrupt`)."""

    requested: bool = False


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[InterruptFlag]:
    """Hold Ctrl-C (SIGINT) until the block ends and report it in ``flag.requested`` (main thread only): a training
    step is never cut in half, so the checkpoint saved after it is consistent.

    >>> with deferred_interrupt() as flag:
    ...     os.kill(os.getpid(), signal.SIGINT)
    >>> flag.requested
    True
    """
    flag = InterruptFlag()
    if not _main_thread():
        yield flag
        return

    def remember(signum: int, frame: object) -> None:
        flag.requested = True

    previous = signal.signal(signal.SIGINT, remember)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def holding_interrupts(hold: bool) -> contextlib.AbstractContextManager[InterruptFlag]:
    """:func:`deferred_interrupt` for a whole loop when ``hold`` (under torchrun, which forwards Ctrl-C to every
    rank: all ranks act on it together after a step); otherwise Ctrl-C stays immediate between steps."""
    return deferred_interrupt() if hold else contextlib.nullcontext(InterruptFlag())


class StopRequest:
    """Ctrl-C (SIGINT) sets :attr:`requested` so the current step finishes and a checkpoint is saved; a second
    Ctrl-C interrupts at once (``KeyboardInterrupt``), except inside :meth:`step`, which holds it until the step
    ends. Outside the main thread, Ctrl-C stays a plain ``KeyboardInterrupt``.

    ``repeat_interrupts=False`` (under torchrun, which forwards the terminal's Ctrl-C a second time) ignores
    further Ctrl-C: every rank finishes the step, rank 0 saves, all stop together.

    >>> with StopRequest() as stop:
    ...     with stop.step():
    ...         os.kill(os.getpid(), signal.SIGINT)
    ...         os.kill(os.getpid(), signal.SIGINT)  # held: the step runs to its end
    >>> stop.requested
    True
    """

    def __init__(self, repeat_interrupts: bool = True) -> None:
        self.requested = False
        self.repeat_interrupts = repeat_interrupts
        self._previous = None

    def _handler(self, signum: int, frame: object) -> None:
        if self.requested and self.repeat_interrupts:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Hold Ctrl-C during one step (weights, optimizer and position change together); a Ctrl-C pressed
        meanwhile sets :attr:`requested`."""
        with deferred_interrupt() as flag:
            yield
        self.requested = self.requested or flag.requested


# -- worker processes ------------------------------------------------------------------------------------------

def ignore_sigint(*_: object) -> None:
    """Let Ctrl-C reach the main process only (it stops the work and says how to resume): the ``worker_init_fn``
    of DataLoaders and the initializer of worker pools. A worker that took it would die with a traceback of its
    own, and the main process would report "DataLoader worker exited unexpectedly" instead of saving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _init_pool_worker(initializer: Callable[..., None] | None, initargs: Sequence[Any]) -> None:
    ignore_sigint()
    if initializer is not None:
        initializer(*initargs)


def worker_pool(processes: int, initializer: Callable[..., None] | None = None,
                initargs: Sequence[Any] = ()) -> "multiprocessing.pool.Pool":
    """A ``multiprocessing`` pool of ``processes`` workers that ignore Ctrl-C (:func:`ignore_sigint`), started by
    forkserver (spawn where there is none), never by fork: torch's threads and an open HDF5 file in this process
    would be copied into the children half-locked. ``initializer`` must be a module-level function.

    >>> with worker_pool(1) as pool:
    ...     pool.apply(signal.getsignal, (signal.SIGINT,)) == signal.SIG_IGN
    True
    """
    import multiprocessing as mp

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(processes, initializer=_init_pool_worker,
                                       initargs=(initializer, tuple(initargs)))


# -- memory --------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to trim
        return None


def release_memory() -> bool:
    """Hand the heap's free pages back to the operating system (glibc ``malloc_trim``); False where there is none.

    Streaming loops that allocate many differently sized arrays (one image's maps after another) otherwise see
    their resident memory creep up with the number of images although nothing is kept: glibc keeps the freed,
    fragmented pages. Calling this every few images keeps the peak flat at a cost of a few per cent.

    >>> isinstance(release_memory(), bool)
    True
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


# -- provenance ----------------------------------------------------------------------------------------------------

def ids_digest(ids: Iterable[str]) -> str:
    """A short digest of a list of ids (in the given order; sort them first where the order does not matter).

    >>> ids_digest(["a", "b"]) == ids_digest(["a", "b"]) != ids_digest(["b", "a"])
    True
    >>> len(ids_digest([]))
    16
    """
    digest = hashlib.sha256()
    for image_id in ids:
        digest.update(image_id.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's content (hex, 16 characters): it changes whenever the file is written again with
    other content (a retrained checkpoint), whatever its name and time stamps."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise OrandError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()[:16]

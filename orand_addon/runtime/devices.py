"""Where and how precisely a stage computes: ``--device`` (auto/cpu/cuda/cuda:N) and ``--precision``
(autocast, the gradient scaler of fp16 training, cuDNN's algorithm choice)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

from ..errors import OrandError
from ..registries import PRECISIONS as _PRECISIONS

if TYPE_CHECKING:  # torch is imported inside the functions: ``--help`` stays fast

    import torch


DEVICE_HELP = "auto (GPU when there is one), cpu, cuda or cuda:N"


PRECISIONS = tuple(_PRECISIONS)


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

"""Seeds, and the RNG states a checkpoint keeps so that a resumed run continues exactly."""

from __future__ import annotations

import random

import numpy as np


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

"""The fuse stage: probabilistic OR / AND (paper Eq. 1) of two or more CAM sources into the store.

Core (pure): :mod:`.functional` (``fuse_or``, ``fuse_and``, ``fuse_mean``). Shell: :mod:`.stage` (``run_fuse``).
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "fuse_or": "functional",
    "fuse_and": "functional",
    "fuse_mean": "functional",
    "normalize_max": "functional",
    "run_fuse": "stage",
    "FuseOptions": "stage",
    "FuseReport": "stage",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

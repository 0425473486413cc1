"""``orand-addon demo``: the whole pipeline on a benchmark, ending in a Table-1-like table (:mod:`.run`); the
synthetic testbed lives in :mod:`.synthetic`, the MSRC-v2 benchmark in :mod:`.msrc`."""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS: dict[str, str] = {"run_demo": "run", "PLANS": "run"}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

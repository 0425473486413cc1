"""The HDF5 store every stage reads and writes (:mod:`.store`), the shard files of torchrun ranks
(:mod:`.shards`) and their merge (:mod:`.merge`, ``orand-addon merge``)."""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Store": "store",
    "MASK_GROUPS": "store",
    "merge_shards": "merge",
    "shard_path": "shards",
    "find_shards": "shards",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

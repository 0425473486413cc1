"""Rank shards of a per-image stage under torchrun: rank ``r`` of ``w`` writes the ids ``shard(ids, r, w)`` into
its own store ``STEM.rank{r}-of-{w}.h5`` next to the main store (HDF5 allows one writer per file). A shard is an
ordinary store plus a root attribute ``shard`` (JSON: rank, world_size, planned ids, complete) that
:func:`open_shard` and :func:`finish_shard` keep; it is flushed after every id, so a killed rank leaves a readable
shard and its rerun redoes only the missing ids. :mod:`.merge` (``orand-addon merge``) joins the shards.
"""

from __future__ import annotations

import re

from ..runtime.provenance import parameter_diff

import json
from pathlib import Path
from typing import Sequence


from ..runtime.distributed import DistInfo
from ..errors import OrandError
from .store import Store


SHARD_ATTR = "shard"


def open_shard(main: str | Path, info: DistInfo, class_names: Sequence[str], compression: str = "none") -> Store:
    """Open (or create) this rank's shard of the store ``main`` for writing."""
    return Store(shard_path(main, info.rank, info.world_size), mode="a", class_names=class_names,
                 compression=compression)


def _mark(store: Store, info: DistInfo, planned: int, complete: bool, plan: dict | None) -> None:
    record = {"rank": info.rank, "world_size": info.world_size, "planned": planned, "complete": complete}
    store.h5.attrs[SHARD_ATTR] = json.dumps({**record, **({"plan": plan} if plan else {})})
    store.flush()


def start_shard(store: Store, info: DistInfo, planned: int, plan: dict | None = None) -> None:
    """Record that this rank owns ``planned`` ids and has not finished them (flushed: readable from now on).

    ``plan``: settings that decide which ids are this rank's besides the rank (e.g. predict's batch size); a
    rerun must use the same, or the ranks' shares would overlap.
    """
    old = shard_mark(store)
    if old is not None and (old.get("plan") or None) != (plan or None) and any(store.ids(g) for g in store.groups()):
        diff = ", ".join(f"{k} {(old.get('plan') or {}).get(k)} -> {(plan or {}).get(k)}"
                         for k in parameter_diff(old.get("plan") or {}, plan or {}))
        raise OrandError(f"{store.path}: this shard was started with other settings ({diff}); rerun with the same "
                         f"ones, or merge it first (orand-addon merge --incomplete merge) and then rerun")
    _mark(store, info, planned, False, plan)


def finish_shard(store: Store, info: DistInfo, planned: int, plan: dict | None = None) -> None:
    """Record that this rank wrote all its ids."""
    _mark(store, info, planned, True, plan)


def shard_mark(store: Store) -> dict | None:
    """The ``shard`` record of a store, None for a store that is not a shard."""
    text = store.h5.attrs.get(SHARD_ATTR)
    return json.loads(text) if text is not None else None






SHARD_RE = re.compile(r"^(?P<stem>.+)\.rank(?P<rank>\d+)-of-(?P<world>\d+)(?P<suffix>\.[^.]*)?$")


def shard_path(path: str | Path, rank: int, world_size: int) -> Path:
    """The file rank ``rank`` of ``world_size`` writes instead of ``path``.

    >>> shard_path("runs/fused.h5", 0, 2).as_posix()
    'runs/fused.rank0-of-2.h5'
    >>> shard_path("fused", 3, 4).as_posix()
    'fused.rank3-of-4'
    """
    path = Path(path)
    return path.with_name(f"{path.stem if path.suffix else path.name}.rank{rank}-of-{world_size}{path.suffix}")


def parse_shard_path(path: str | Path) -> tuple[Path, int, int] | None:
    """``(main store, rank, world size)`` of a shard file name, or None for a name that is not one.

    >>> base, rank, world = parse_shard_path("runs/my.fused.rank1-of-2.h5")
    >>> base.as_posix(), rank, world
    ('runs/my.fused.h5', 1, 2)
    >>> parse_shard_path("fused.h5") is None
    True
    """
    path = Path(path)
    m = SHARD_RE.match(path.name)
    if m is None or int(m["rank"]) >= int(m["world"]):
        return None
    return path.with_name(m["stem"] + (m["suffix"] or "")), int(m["rank"]), int(m["world"])


def find_shards(path: str | Path) -> list[Path]:
    """The shard files of the store ``path`` (``STEM.rankR-of-W.SUFFIX`` next to it), in rank order.

    All ranks of one world size must be there; shards of two world sizes side by side are refused (pass the
    files explicitly to merge them anyway).
    """
    path = Path(path)
    folder = path.parent
    found: dict[int, dict[int, Path]] = {}
    for candidate in sorted(folder.glob(f"{glob_escape(path.stem if path.suffix else path.name)}.rank*-of-*")):
        parsed = parse_shard_path(candidate)
        if parsed is not None and parsed[0] == path and candidate.is_file():
            found.setdefault(parsed[2], {})[parsed[1]] = candidate
    if not found:
        raise OrandError(f"{path}: no shard files {shard_path(path, 0, 2).name.replace('0-of-2', '*-of-*')} "
                         f"in {folder}")
    if len(found) > 1:
        sizes = ", ".join(str(w) for w in sorted(found))
        raise OrandError(f"{path}: shards of runs with {sizes} ranks lie side by side; pass the files to merge "
                         f"explicitly (orand-addon merge --out {path.name} SHARD...)")
    (world, ranks), = found.items()
    missing = [r for r in range(world) if r not in ranks]
    if missing:
        raise OrandError(f"{path}: shard {missing[0]} of {world} ({shard_path(path, missing[0], world).name}) is "
                         f"missing; rerun the sharded command, or pass the shard files explicitly")
    return [ranks[r] for r in range(world)]


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters escaped.

    >>> glob_escape("a[1]*.h5")
    'a[[]1[]][*].h5'
    """
    return re.sub(r"([*?\[\]])", r"[\1]", text)

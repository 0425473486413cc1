"""Comparing stores: :func:`assert_same_store` (everything one store holds, the other holds the same), and small
readers of what a store or shard holds."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from orand_addon.store.store import Store


def assert_same_store(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> None:
    """``b`` holds what ``a`` holds: classes, groups, group provenance, ids, and per dataset its bytes, dtype,
    chunks, filters and attributes; the root provenance equal apart from the stage reports, of which the counts
    are compared. ``ignore``: ``"command"`` (provenance compared without the command text, which names the
    files), ``"reports"``, ``"root"`` (the root provenance)."""
    def drop(record: dict) -> dict:
        return {k: v for k, v in record.items() if not (k == "command" and "command" in ignore)}

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for attr in ("layout_version", "orand_addon_version"):
            assert fa.attrs[attr] == fb.attrs[attr], attr
        assert list(fa.attrs["class_names"]) == list(fb.attrs["class_names"])
        assert sorted(fa) == sorted(fb)
        for group in fa:
            assert drop(json.loads(fa[group].attrs["provenance"])) == drop(json.loads(fb[group].attrs["provenance"]))
            assert sorted(fa[group]) == sorted(fb[group]), group
            for image_id in fa[group]:
                x, y = fa[group][image_id], fb[group][image_id]
                assert (x.dtype, x.shape, x.chunks, x.compression) == (y.dtype, y.shape, y.chunks, y.compression)
                assert sorted(x.attrs) == sorted(y.attrs)
                for key in x.attrs:
                    np.testing.assert_array_equal(x.attrs[key], y.attrs[key])
                np.testing.assert_array_equal(x[()], y[()])
        if "root" in ignore:
            return
        pa, pb = drop(json.loads(fa.attrs["provenance"])), drop(json.loads(fb.attrs["provenance"]))
        ra, rb = pa.pop("reports", {}), pb.pop("reports", {})
        assert pa == pb
        if "reports" not in ignore:
            assert ra.keys() == rb.keys()
            for stage in ra:
                counts = lambda r: {k: v for k, v in r.items() if k != "notes"}  # noqa: E731
                assert counts(ra[stage]) == counts(rb[stage])
                assert {k: v["count"] for k, v in ra[stage].get("notes", {}).items()} == \
                       {k: v["count"] for k, v in rb[stage].get("notes", {}).items()}


def ids_of(path: Path, group: str) -> list[str]:
    with Store(path) as s:
        return s.ids(group)


def complete_ids(path: Path, groups: list[str]) -> set[str]:
    """Ids present in every one of ``groups`` (none when the file does not exist: a rank stopped before it opened
    its shard has written nothing)."""
    if not path.exists():
        return set()
    with Store(path) as s:
        return set.intersection(*[set(s.ids(g)) for g in groups])


def shard_complete(path: Path) -> bool:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["shard"])["complete"]


def written(log_dir: Path, rank: int, kind: str) -> list[str]:
    """Ids of ``kind`` a rank wrote, from the hook's log."""
    log = log_dir / f"rank{rank}.txt"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split(" ", 1)[1] for line in lines if line.split(" ", 1)[0] == kind]


def leave_parts(reference: Path, store: Path, ids: list[str], per_part: int) -> list[Path]:
    """The sealed part files that a run with worker processes leaves next to ``store`` when it stops before its
    merge: the entries ``ids`` of every group of ``reference``, ``per_part`` images per part, in that order; the
    part files in merge order."""
    from orand_addon.store.journal import GroupRecord, PartWriter, parts_dir

    with Store(reference) as ref:
        groups = ref.groups()
        records = {g: GroupRecord(ref.group_provenance(g)["command"], ref.group_provenance(g)["parameters"])
                   for g in groups}
        writer = PartWriter(parts_dir(store), "fuse-w0", ref.class_names, records, seal_every=per_part)
        for image_id in ids:
            maps = {g: ref.read_maps(g, image_id) for g in groups}
            writer.add(image_id, {g: (m.astype(np.float16), keys) for g, (m, keys) in maps.items()})
        writer.close()
    return writer.sealed

"""Shards of a per-image stage and ``orand-addon merge``, which joins them into one store.

Under torchrun (or any launcher that sets ``RANK``/``WORLD_SIZE``), rank ``r`` of ``w`` of ``fuse``/``predict``
writes the ids ``shard(ids, r, w)`` into its own store ``STEM.rank{r}-of-{w}.h5`` next to the main store (HDF5
allows one writer per file). A shard is an ordinary store (same layout, same group provenance as the one-process
run) plus a root attribute ``shard`` (JSON: rank, world_size, planned ids, complete) that :func:`open_shard` and
:func:`finish_shard` keep; it is flushed after every id, so a rank that is killed leaves a readable shard and its
rerun redoes only the ids that are not in it.

:func:`merge_shards` copies every dataset (bytes, dtype, chunks, compression and attributes as they are) and the
group provenance into the main store, refusing shards of different runs (class names or parameters differ) and an
id that two files hold with different content; ids already in the main store with the same content are skipped,
so a merge is resumable and idempotent. The main store is written through its journal (:mod:`.wal`) and committed
every 64 ids: a merge that is killed or runs out of space leaves it at its last commit, earlier data intact.
"""

from __future__ import annotations

from ..runtime.provenance import parameter_diff
from .shards import shard_mark

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from ..errors import Interrupted, OrandError, StoreError
from ..runtime.progress import progress
from .store import Store

INCOMPLETE = ("error", "merge")


# -- pure helpers --------------------------------------------------------------------------------------------


def merge_reports(reports: Sequence[dict]) -> dict:
    """One report from the per-shard reports of a stage: numbers are summed, lists concatenated (the first 10
    kept, as examples), dicts merged key by key, anything else taken from the first report that has it.

    >>> merge_reports([{"written": 3, "notes": {"x": {"count": 1, "examples": ["a"]}}},
    ...                {"written": 2, "notes": {"x": {"count": 2, "examples": ["b", "c"]}, "y": {"count": 1}}}])
    {'written': 5, 'notes': {'x': {'count': 3, 'examples': ['a', 'b', 'c']}, 'y': {'count': 1}}}
    """
    out: dict = {}
    for report in reports:
        for key, value in report.items():
            if key not in out:
                out[key] = merge_reports([value]) if isinstance(value, dict) else value
            elif isinstance(value, bool) or not isinstance(value, (int, float, list, dict)):
                continue
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = merge_reports([out[key], value])
            elif isinstance(value, list) and isinstance(out[key], list):
                out[key] = (out[key] + value)[:10]
            elif isinstance(value, (int, float)) and isinstance(out[key], (int, float)):
                out[key] = out[key] + value
    return out


def same_attrs(a: h5py.AttributeManager, b: h5py.AttributeManager) -> bool:
    """Same attribute names and values (arrays compared element-wise)."""
    if sorted(a) != sorted(b):
        return False
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def same_entry(a: h5py.Dataset, b: h5py.Dataset) -> bool:
    """Same shape, dtype, attributes and values (NaN equal to NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype or not same_attrs(a.attrs, b.attrs):
        return False
    x, y = a[()], b[()]
    return bool(np.array_equal(x, y, equal_nan=bool(np.issubdtype(a.dtype, np.floating))))


# -- the shard side (called by fuse / predict on every rank) ---------------------------------------------------


# -- the merge -----------------------------------------------------------------------------------------------

@dataclass
class MergeReport:
    """What a merge did, per group."""

    copied: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        groups = sorted(set(self.copied) | set(self.present))
        return [*self.recovered,
                *(f"/{g}: copied {self.copied.get(g, 0)} ids ({self.present.get(g, 0)} already there)" for g in groups)]


def check_shards(stores: Sequence[Store], incomplete: str) -> dict[str, tuple[Store, dict | None]]:
    """Refuse shards that do not belong together; returns ``group -> (first store with it, its provenance)``."""
    if incomplete not in INCOMPLETE:
        raise OrandError(f"unknown --incomplete {incomplete!r}; valid: {', '.join(INCOMPLETE)}")
    first = stores[0]
    reference: dict[str, tuple[Store, dict | None]] = {}
    for store in stores:
        if store.class_names != first.class_names:
            a, b = first.class_names, store.class_names
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise OrandError(f"{store.path}: class names differ from {first.path} ({len(b)} vs {len(a)} classes, "
                             f"position {at}: {b[at] if at < len(b) else None!r} vs {a[at] if at < len(a) else None!r})")
        mark = shard_mark(store)
        if mark is not None and not mark.get("complete") and incomplete == "error":
            raise OrandError(f"{store.path}: incomplete shard (rank {mark.get('rank')} of {mark.get('world_size')} "
                             f"did not finish its {mark.get('planned')} ids); rerun the same command to complete it, "
                             f"or merge what is there with --incomplete merge")
        for group in store.groups():
            prov = store.group_provenance(group)
            if group not in reference:
                reference[group] = (store, prov)
                continue
            ref_store, ref = reference[group]
            diff = parameter_diff((ref or {}).get("parameters"), (prov or {}).get("parameters"))
            if diff:
                raise OrandError(f"{store.path}: /{group} was written with other parameters than in {ref_store.path} "
                                 f"({', '.join(diff)} differ); merge only the shards of one run")
    return reference


def merged_provenance(target: dict, stores: Sequence[Store]) -> dict:
    """Root provenance of the merged store: the target's (or the first shard's when the target has none), with
    each stage report replaced by the merge of the shards' reports."""
    provenances = [s.provenance for s in stores]
    record = dict(target) if target else {k: v for k, v in provenances[0].items() if k != "reports"}
    stages = sorted({k for p in provenances for k in p.get("reports", {})})
    if stages:
        record["reports"] = {**record.get("reports", {}),
                             **{k: merge_reports([p["reports"][k] for p in provenances if k in p.get("reports", {})])
                                for k in stages}}
    return record


def _copy(source: Store, target: Store, group: str, image_id: str) -> None:
    """Copy ``/group/image_id`` as it is (data, dtype, chunks, filters, attrs), atomically (temporary name)."""
    target.copy_entry(source, group, image_id)


def merge_shards(out: str | Path, shards: Sequence[str | Path], overwrite: bool = False, incomplete: str = "error",
                 delete_shards: bool = False, show_progress: bool = True) -> MergeReport:
    """Join ``shards`` into the store ``out`` (created if missing); see the module docstring."""
    out = Path(out)
    if not shards:
        raise OrandError("nothing to merge: give shard files or --from-shards STORE.h5")
    paths = list(dict.fromkeys(Path(s) for s in shards))
    if any(p.resolve() == out.resolve() for p in paths):
        raise OrandError(f"{out}: the output store is also given as a shard")
    stores: list[Store] = []
    try:
        for path in paths:
            stores.append(Store(path))
        reference = check_shards(stores, incomplete)
        try:
            report = _merge_into(out, stores, reference, overwrite, show_progress)
        except (OSError, RuntimeError) as exc:
            from .journal import os_reason

            raise StoreError(f"{out}: merging the shards failed ({os_reason(exc)}); the store keeps what was merged "
                             f"up to its last checkpoint, the shards are kept, and the same merge command resumes "
                             f"once there is room") from None
    finally:
        for store in stores:
            store.close()
    if delete_shards:
        for path in paths:
            path.unlink()
    return report


def _merge_into(out: Path, stores: Sequence[Store], reference: dict[str, tuple[Store, dict | None]],
                overwrite: bool, show_progress: bool) -> MergeReport:
    report = MergeReport()
    total = sum(len(s.ids(g)) for s in stores for g in s.groups())
    with Store(out, mode="a", class_names=stores[0].class_names, journal=True) as target:
        if target.recovered:
            report.recovered.append(target.recovered)
        for group, (_, prov) in sorted(reference.items()):
            if prov is not None and "parameters" in prov:
                target.begin([group], prov.get("command", "orand-addon merge"), prov["parameters"], force=overwrite)
        target.set_provenance(merged_provenance(target.provenance, stores))
        target.flush()
        bar = progress(desc="merge", total=total, enabled=show_progress, unit="id")
        n = 0
        try:
            for group in sorted(reference):
                for store in stores:
                    for image_id in store.ids(group):
                        if target.has(group, image_id):
                            if not same_entry(target.h5[group][image_id], store.h5[group][image_id]):
                                raise OrandError(f"{image_id}: /{group}/{image_id} in {store.path} differs from the "
                                                 f"one already in {target.path}; these are not shards of one run")
                            report.present[group] = report.present.get(group, 0) + 1
                        else:
                            _copy(store, target, group, image_id)
                            report.copied[group] = report.copied.get(group, 0) + 1
                        n += 1
                        bar.update(1)
                        if n % 64 == 0:
                            target.flush()
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted after {n} of {total} ids; {out} keeps them and the same merge command "
                              f"resumes") from None
        finally:
            bar.close()
    return report


"""Where ``segment`` writes its masks and finds those of earlier runs: a folder of PNGs and/or a store group.

One process writes the store itself, flushing it every :data:`FLUSH_EVERY` masks and at the end (a crash leaves a
readable store with all but the last few masks). Under torchrun (``RANK``/``WORLD_SIZE``) rank ``r`` of ``w``
writes its ids into its own shard ``STEM.rank{r}-of-{w}.h5`` (HDF5 allows one writer per file; flushed after every
mask, so a killed rank keeps what it wrote) and skips the ids that the main store already holds from the same
parameters (read-only); ``orand-addon merge --from-shards STORE.h5`` joins the shards. PNGs need no merge: the
ranks' ids are disjoint and every file is written atomically (temporary name, then rename), so the ranks share the
folder, and a rerun skips the files that exist.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..distributed import DistInfo
from ..errors import OrandError
from ..io.images import load_label_png, save_label_png
from ..merge import done_ids, finish_shard, open_shard, start_shard
from ..runtime import atomic_write_text
from ..store import Store

RECORD = "segment.json"
FLUSH_EVERY = 64  # masks between two flushes of a one-process store (as fuse and predict)


def recorded_parameters(record: Path) -> dict:
    """The parameters in a folder's ``segment.json``; a one-line error naming it when it is not such a record."""
    try:
        doc = json.loads(record.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or (exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc))
        raise OrandError(f"{record}: unreadable record of an earlier segment run ({reason}); delete it or use a new "
                         f"--out") from None
    parameters = doc.get("parameters") if isinstance(doc, dict) else None
    if not isinstance(parameters, dict):
        raise OrandError(f"{record}: not a record of an earlier segment run (no parameters); delete it or use a new "
                         f"--out")
    return parameters


def check_png_folder(out: Path, parameters: dict, overwrite: bool) -> None:
    """Refuse a folder of masks written with other parameters (unless ``overwrite``); record ours in
    ``segment.json`` (atomically: every rank of a sharded run writes the same record)."""
    record = out / RECORD
    if record.is_file() and not overwrite:
        old = recorded_parameters(record)
        new = json.loads(json.dumps(parameters, default=str))
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise OrandError(f"{out}: masks there were written with other parameters ({', '.join(diff)} differ); "
                             f"use a new --out or --overwrite")
    atomic_write_text(record, json.dumps({"parameters": parameters}, indent=1, default=str), what="segment record")


def done_in_store(path: Path, group: str, class_names: Sequence[str], parameters: dict,
                  overwrite: bool) -> set[str]:
    """Ids of ``/group`` in the main store ``path`` written with ``parameters`` (none when it does not exist);
    the store must have ``class_names`` (the merge would refuse it otherwise)."""
    if not path.is_file():
        return set()
    with Store(path, class_names=class_names) as main:
        return done_ids(main, [group], parameters, overwrite)


class MaskOutputs:
    """The PNG folder and/or store (or shard) of one process, and the main store's masks of earlier runs."""

    def __init__(self, out: Path | None, store: Store | None, group: str, earlier: Path | None = None,
                 earlier_ids: frozenset[str] = frozenset(), flush_each: bool = False):
        self.out, self.store, self.group = out, store, group
        self.earlier_path, self.earlier_ids, self.flush_each = earlier, earlier_ids, flush_each
        self._earlier: Store | None = None
        self._unflushed = 0

    def done(self, image_id: str) -> bool:
        """Whether every output already holds ``image_id``."""
        png = self.out is None or (self.out / f"{image_id}.png").is_file()
        stored = self.store is None or image_id in self.earlier_ids or self.store.has(self.group, image_id)
        return png and stored

    def read(self, image_id: str) -> np.ndarray:
        """The mask written earlier (from the store when there is one, else the PNG)."""
        if self.store is None:
            return load_label_png(self.out / f"{image_id}.png")
        if self.store.has(self.group, image_id):
            return self.store.read_mask(self.group, image_id)
        if self._earlier is None:
            self._earlier = Store(self.earlier_path)
        return self._earlier.read_mask(self.group, image_id)

    def write(self, image_id: str, mask: np.ndarray) -> None:
        if self.out is not None:
            save_label_png(self.out / f"{image_id}.png", mask)
        if self.store is not None:
            self.store.write_mask(self.group, image_id, mask)
            self._unflushed += 1
            if self.flush_each or self._unflushed >= FLUSH_EVERY:
                self.store.flush()
                self._unflushed = 0

    def close(self) -> None:
        try:
            if self.store is not None and self._unflushed and self.store.h5.id.valid:
                self.store.flush()
                self._unflushed = 0
        finally:
            for store in (self.store, self._earlier):
                if store is not None:
                    store.close()


@contextlib.contextmanager
def open_outputs(out: Path | None, store: Path | None, group: str, class_names: Sequence[str], parameters: dict,
                 command: str, overwrite: bool, dist: DistInfo, planned: int) -> Iterator[MaskOutputs]:
    """The outputs of this process (see the module docstring); a shard is marked complete when the block ends
    without an error."""
    if out is not None:
        check_png_folder(out, parameters, overwrite)
    sharded = store is not None and dist.enabled
    if store is None:
        outputs = MaskOutputs(out, None, group)
    elif not sharded:
        outputs = MaskOutputs(out, Store(store, "a", class_names=class_names), group)
    else:
        earlier = frozenset(done_in_store(store, group, class_names, parameters, overwrite))
        outputs = MaskOutputs(out, open_shard(store, dist, class_names), group, store, earlier, flush_each=True)
    try:
        if outputs.store is not None:
            outputs.store.begin([group], command, parameters, force=overwrite)
        if sharded:
            start_shard(outputs.store, dist, planned)
        yield outputs
        if sharded:
            finish_shard(outputs.store, dist, planned)
    finally:
        outputs.close()

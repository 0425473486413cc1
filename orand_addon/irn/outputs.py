"""Where the per-image IRN steps (seeds, walk) read and write: the store itself, or this rank's shard of it.

One process: the store is opened for writing (created when missing, with ``class_names``: VOC when None) and is
both the source and the sink; it is flushed every :data:`FLUSH_EVERY` ids and when the step ends, so a crash
during hours of work leaves a readable store with all but the last few ids. Under
torchrun (or any launcher that sets ``RANK``/``WORLD_SIZE``), rank ``r`` of ``w`` reads the store (read-only, no
process group needed), takes ``shard(ids, r, w)`` and writes them into its own shard ``STEM.rank{r}-of-{w}.h5``
(flushed after every id, so a killed rank keeps all it wrote); ``orand-addon merge --from-shards STORE`` then
joins the shards into the store, identical to the one-process run. A rerun skips the ids already in the shard
and those the store holds from the same parameters (see :mod:`orand_addon.merge`)::

    with StepOutput(store_path, dist) as out:
        mine = out.share(select_ids(out.source, ...))        # every id in one process
        check_images(images, mine, ...)                      # before anything is written
        todo = out.begin(["seeds"], command, parameters, overwrite, mine)
        for image_id in todo:
            out.sink.write_mask("seeds", image_id, ...)
            out.wrote()
        out.finish()
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..distributed import DistInfo, shard, shard_path
from ..errors import StoreError
from ..merge import done_ids, finish_shard, open_shard, start_shard
from ..store import Store

FLUSH_EVERY = 64  # ids between two flushes of a one-process store (as fuse and predict)


class StepOutput:
    """The source and sink stores of one process of a per-image step (a context manager that closes them).

    ``class_names``: the classes of a store created here, and that an existing store must have (None: any)."""

    def __init__(self, store_path: str | Path, dist: DistInfo = DistInfo(),
                 class_names: Sequence[str] | None = None):
        self.path = Path(store_path)
        self.dist = dist
        self.class_names = list(class_names) if class_names is not None else None
        self._source: Store | None = None
        self._sink: Store | None = None
        self._planned = 0
        self._unflushed = 0

    def __enter__(self) -> "StepOutput":
        if not self.dist.enabled:
            self._source = self._sink = Store(self.path, mode="a", class_names=self.class_names)
        elif self.path.is_file():
            self._source = Store(self.path, class_names=self.class_names)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._sink is not None and self._unflushed and self._sink.h5.id.valid:
                self._sink.flush()
        finally:
            if self._sink is not None and self._sink is not self._source:
                self._sink.close()
            if self._source is not None:
                self._source.close()

    @property
    def source(self) -> Store:
        """The store the step reads (opened read-only under torchrun)."""
        if self._source is None:
            raise StoreError(f"{self.path}: store not found")
        return self._source

    @property
    def sink(self) -> Store:
        """Where this process writes: the store, or this rank's shard (after :meth:`begin`)."""
        assert self._sink is not None, "StepOutput.begin() opens the sink"
        return self._sink

    @property
    def target(self) -> Path:
        """The file this process writes."""
        return shard_path(self.path, self.dist.rank, self.dist.world_size) if self.dist.enabled else self.path

    def share(self, ids: Sequence[str]) -> list[str]:
        """The ids of this process: all of them, or this rank's strided share."""
        return shard(ids, self.dist.rank, self.dist.world_size) if self.dist.enabled else list(ids)

    def begin(self, groups: Sequence[str], command: str, parameters: dict, overwrite: bool,
              mine: Sequence[str]) -> list[str]:
        """Declare what the step writes (refusing other parameters unless ``overwrite``); returns the ids of
        ``mine`` still to do: those not in every group of the sink, nor (under torchrun) of the store."""
        in_main: set[str] = set()
        if self.dist.enabled:
            if self._source is not None:
                in_main = done_ids(self._source, groups, parameters, overwrite)
            names = self._source.class_names if self._source is not None else self.class_names
            self._sink = open_shard(self.path, self.dist, names)
        self.sink.begin(groups, command, parameters, force=overwrite)
        self._planned = len(mine)
        if self.dist.enabled:
            start_shard(self.sink, self.dist, self._planned)
        return [i for i in mine if i not in in_main and not all(self.sink.has(g, i) for g in groups)]

    def wrote(self) -> None:
        """After each id: a shard is flushed (a killed rank keeps every id it wrote), the store of one process every
        :data:`FLUSH_EVERY` ids (a crash keeps it readable)."""
        self._unflushed += 1
        if self.dist.enabled or self._unflushed >= FLUSH_EVERY:
            self.sink.flush()
            self._unflushed = 0

    def finish(self) -> None:
        """After the last id: a shard is marked complete (the merge checks it)."""
        if self.dist.enabled:
            finish_shard(self.sink, self.dist, self._planned)

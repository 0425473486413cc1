"""Checks of the inputs of the IRN steps, shared by seeds, training and the walk (one-line errors naming ids)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np

from ..errors import OrandError
from ..io.images import find_image, image_size
from ..store.store import Store

T = TypeVar("T")
R = TypeVar("R")


def select_ids(store: Store, group: str, wanted: Sequence[str] | None, what: str) -> list[str]:
    """Ids of ``group`` (all, or ``wanted`` which must all be there); error naming the first missing id."""
    present = store.ids(group)
    if not present:
        raise OrandError(f"{store.path}: no /{group} maps ({what}); kinds present: {', '.join(store.groups()) or 'none'}")
    if wanted is None:
        return present
    have = set(present)
    missing = [i for i in wanted if i not in have]
    if missing:
        raise OrandError(f"{missing[0]}: not in {store.path}:/{group} ({len(missing)} of the listed ids are missing)")
    return list(dict.fromkeys(wanted))


def kind_parameters(store: Store, kind: str) -> dict | None:
    """The parameters that wrote ``/kind`` (its provenance without the command line, which a rerun with the same
    parameters rewrites); recorded with what a step makes from the kind, so that a kind written again with other
    parameters is not mixed with results of the old one."""
    return (store.group_provenance(kind) or {}).get("parameters")


def check_images(images: str | Path, ids: Iterable[str], sizes: Callable[[str], tuple[int, int]], what: str) -> None:
    """Every id has an image in ``images`` whose (H, W) equals ``sizes(id)``; else one line naming the id."""
    folder = Path(images)
    if not folder.is_dir():
        raise OrandError(f"{folder}: image folder not found")
    for image_id in ids:
        find_image(folder, image_id)
        hw = image_size(folder, image_id)
        expected = tuple(sizes(image_id))
        if hw != expected:
            raise OrandError(f"{image_id}: {what} are {expected[0]}x{expected[1]} but the image is {hw[0]}x{hw[1]} "
                             f"({folder}); maps must be at image size")


def check_finite(image_id: str, array: np.ndarray, what: str) -> None:
    """Error naming the id when ``array`` has NaN or Inf."""
    if not np.isfinite(array).all():
        raise OrandError(f"{image_id}: {what} contain NaN or Inf")


class ReadsStoreMaps:
    """The plan, the checks and the store handle of a per-image stage that reads the ``/kind`` maps of its store
    (IRN's seeds and walk): ``store_path``, ``kind``, ``images``, ``wanted`` (ids or None) set by the stage;
    ``planned`` names the maps in the messages."""

    planned = "the maps"
    store_path: Path
    kind: str
    images: str
    wanted: list[str] | None
    _source: Store | None = None

    def plan(self, source: Store | None) -> list[tuple[str, ...]]:
        if source is None:
            from ..errors import StoreError

            raise StoreError(f"{self.store_path}: store not found")
        return [(i,) for i in select_ids(source, self.kind, self.wanted, self.planned)]

    def check(self, source: Store | None, ids: Sequence[str]) -> None:
        check_images(self.images, ids, lambda i: source.map_shape(self.kind, i)[1:], f"/{self.kind} maps")

    def setup(self) -> None:
        self._source = Store(self.store_path)

    def teardown(self) -> None:
        if self._source is not None:
            self._source.close()

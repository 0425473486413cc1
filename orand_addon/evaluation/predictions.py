"""What ``evaluate`` can score, and the ground truth it scores against.

A prediction source is opened from one spec string:

* ``STORE.h5:KIND`` — a map kind of an orand-addon store (``or``, ``and``, ``orandnet``, ``rw``...), turned into
  masks with a background threshold; or its ``masks`` / ``seeds`` group, used as masks directly;
* a folder of CAM dumps in any format :func:`orand_addon.read_cams` reads (maps);
* a folder of label PNGs ``<id>.png`` (masks: 0 background, 1..C-1 classes, 255 no prediction).

Each source lists its ids and returns a :class:`Prediction` per id. Sources are opened again inside worker
processes from the same spec (:class:`PredSpec`), so nothing unpicklable crosses a process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..classes import ImageLabels
from ..errors import OrandError
from ..io.images import load_label_png
from ..io.resize import resize_maps
from ..io.sources import cam_files, read_cams, split_store_spec
from ..store.store import MASK_GROUPS, Store


@dataclass
class Prediction:
    """One image's prediction: a label ``mask`` (H, W), or class ``maps`` (K, H, W) with 0-based ``keys``."""

    mask: np.ndarray | None = None
    maps: np.ndarray | None = None
    keys: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        arr = self.mask if self.mask is not None else self.maps
        return int(arr.shape[-2]), int(arr.shape[-1])


@dataclass(frozen=True)
class PredSpec:
    """How to open a prediction source (picklable, for worker processes)."""

    spec: str
    format: str = "auto"
    labels: ImageLabels | None = None


def resize_prediction(pred: Prediction, size: tuple[int, int]) -> Prediction:
    """Maps bilinearly, masks by nearest neighbour, to ``size`` (H, W).

    >>> resize_prediction(Prediction(mask=np.array([[1, 2]], np.uint8)), (2, 4)).mask.tolist()
    [[1, 1, 2, 2], [1, 1, 2, 2]]
    """
    if pred.size == tuple(size):
        return pred
    if pred.mask is not None:
        img = Image.fromarray(np.ascontiguousarray(pred.mask, np.uint8))
        return Prediction(mask=np.asarray(img.resize((size[1], size[0]), Image.NEAREST)))
    maps = resize_maps(pred.maps, size) if pred.maps.shape[0] else np.zeros((0, *size), np.float32)
    return Prediction(maps=maps, keys=pred.keys)


class _StoreSource:
    def __init__(self, path: Path, kind: str):
        self.path, self.kind = path, kind
        self.store = Store(path, mode="r")
        if kind in MASK_GROUPS:
            self.holds = "masks"
            if kind not in self.store.groups():
                groups = ", ".join(self.store.groups()) or "nothing"
                self.close()
                raise OrandError(f"{path}: no /{kind} group in the store (has: {groups})")
        else:
            self.holds = "maps"
            if kind not in self.store.kinds():
                kinds = ", ".join(self.store.groups()) or "nothing"
                self.close()
                raise OrandError(f"{path}: no kind {kind!r} in the store (has: {kinds})")
        try:
            self.store.check_entries(kind)
        except OrandError:
            self.close()
            raise
        self._ids = self.store.ids(kind)

    def ids(self) -> list[str]:
        return list(self._ids)

    def read(self, image_id: str) -> Prediction:
        if self.holds == "masks":
            return Prediction(mask=self.store.read_mask(self.kind, image_id))
        maps, keys = self.store.read_maps(self.kind, image_id)
        return Prediction(maps=maps, keys=keys)

    def siblings(self) -> list[str]:
        """Other map kinds of the same store (for the report's example grid)."""
        return self.store.kinds()

    def read_kind(self, kind: str, image_id: str) -> Prediction | None:
        if not self.store.has(kind, image_id) or kind in MASK_GROUPS:
            return None
        maps, keys = self.store.read_maps(kind, image_id)
        return Prediction(maps=maps, keys=keys)

    def close(self) -> None:
        self.store.close()

    def describe(self) -> str:
        return f"{self.path}:{self.kind}"


class _CamFolderSource:
    holds = "maps"

    def __init__(self, path: Path, format: str, labels: ImageLabels | None):
        self.path = path
        self.cams = read_cams(path, format=format, labels=labels)

    def ids(self) -> list[str]:
        return list(self.cams)

    def read(self, image_id: str) -> Prediction:
        record = self.cams[image_id]
        return Prediction(maps=record.maps, keys=record.keys)

    def siblings(self) -> list[str]:
        return []

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"{self.path} ({self.cams.format} CAMs)"


class _PngFolderSource:
    holds = "masks"

    def __init__(self, path: Path, files: list[Path]):
        self.path = path
        self.files = {p.stem: p for p in files}

    def ids(self) -> list[str]:
        return sorted(self.files)

    def read(self, image_id: str) -> Prediction:
        return Prediction(mask=load_label_png(self.files[image_id]))

    def siblings(self) -> list[str]:
        return []

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"{self.path} (label PNGs)"


def open_prediction(spec: PredSpec):
    """Open a prediction source; one-line errors for anything that cannot be scored.

    >>> open_prediction(PredSpec("/nonexistent/preds"))
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: /nonexistent/preds: prediction folder or store not found
    """
    store_spec = split_store_spec(spec.spec)
    if store_spec is not None:
        return _StoreSource(*store_spec)
    path = Path(spec.spec)
    if path.suffix in (".h5", ".hdf5"):
        if path.is_file():
            with Store(path) as store:
                groups = ", ".join(store.groups()) or "nothing"
            raise OrandError(f"{path}: name the kind to score as {path}:KIND (the store has: {groups})")
        raise OrandError(f"{path}: store not found")
    if not path.exists():
        raise OrandError(f"{path}: prediction folder or store not found")
    if not path.is_dir():
        raise OrandError(f"{path}: --pred must be a folder or STORE.h5:KIND")
    cams = cam_files(path)
    pngs = sorted(p for p in path.glob("*.png") if not p.name.startswith("."))
    if cams and pngs:
        raise OrandError(f"{path}: holds both CAM files (.npy/.npz) and label PNGs; put them in separate folders")
    if cams:
        return _CamFolderSource(path, spec.format, spec.labels)
    if pngs:
        return _PngFolderSource(path, pngs)
    raise OrandError(f"{path}: empty prediction folder (no .npy/.npz CAM files and no .png label masks)")


class GroundTruth:
    """A folder of ground-truth label PNGs ``<id>.png`` (e.g. VOC ``SegmentationClassAug``)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder)
        if not self.path.is_dir():
            raise OrandError(f"{self.path}: ground-truth folder not found")
        self._ids: set[str] | None = None

    def file(self, image_id: str) -> Path:
        return self.path / f"{image_id}.png"

    def missing(self, ids: list[str]) -> list[str]:
        """The ids without a ``<id>.png`` (the folder is listed once)."""
        if self._ids is None:
            self._ids = {p.stem for p in self.path.glob("*.png")}
        return [i for i in ids if i not in self._ids]

    def read(self, image_id: str) -> np.ndarray:
        return load_label_png(self.file(image_id))

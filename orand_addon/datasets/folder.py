"""A dataset in the PASCAL VOC layout that every command reads (``--images``, ``--gt``, ``--labels``,
``--classes``, ``--ids``)::

    ROOT/JPEGImages/<id>.jpg|png                 RGB images
    ROOT/SegmentationClassAug/<id>.png           palette PNGs: 0 background, 1..C classes, 255 void
    ROOT/ImageSets/Segmentation/<split>.txt      id lists
    ROOT/cls_labels.npy                          dict str id -> float32[C] multi-hot (MCTformer/PSA convention)
    ROOT/classes.txt                             class names, background first
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..classes import ClassSet, ImageLabels, get_class_set, load_labels


@dataclass(frozen=True)
class VocFolder:
    """Where a VOC-layout dataset lives and its train/val ids (the benchmark's WSSS lists).

    >>> VocFolder(Path("d"), ("background", "cat"), ("a",), ("b",)).list_path("val").as_posix()
    'd/ImageSets/Segmentation/val.txt'
    """

    root: Path
    class_names: tuple[str, ...]
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]

    @property
    def images(self) -> Path:
        return self.root / "JPEGImages"

    @property
    def masks(self) -> Path:
        return self.root / "SegmentationClassAug"

    @property
    def labels_path(self) -> Path:
        return self.root / "cls_labels.npy"

    @property
    def classes_path(self) -> Path:
        return self.root / "classes.txt"

    def list_path(self, split: str) -> Path:
        """``ImageSets/Segmentation/<split>.txt``."""
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def class_set(self) -> ClassSet:
        return get_class_set(str(self.classes_path))

    def labels(self) -> ImageLabels:
        return load_labels(self.labels_path, self.class_set())

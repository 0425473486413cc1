"""Class sets and image-level labels.

A :class:`ClassSet` is the ordered list of class names with background first (VOC: 21 names). Foreground class
*indices* are 0-based everywhere in CAM files (0 = aeroplane); label PNGs use ``index + 1`` and 0 for
background, 255 for void.

Image-level labels are a dict ``image id -> multi-hot float[K]``. Reference repositories key them either by the
integer form of the id (IRN/AMN: ``2007000032``) or by the string id (MCTformer/PSA: ``'2007_000032'``); both are
accepted, and :func:`labels_for` looks an id up under either convention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import OrandError

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

COCO_CLASSES: tuple[str, ...] = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


@dataclass(frozen=True)
class ClassSet:
    """Ordered class names, background first.

    >>> voc = get_class_set("voc")
    >>> voc.num_foreground, voc.names[1], voc.foreground_index("tvmonitor")
    (20, 'aeroplane', 19)
    """

    name: str
    names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes including background (21 for VOC)."""
        return len(self.names)

    @property
    def num_foreground(self) -> int:
        return len(self.names) - 1

    def foreground_index(self, class_name: str) -> int:
        try:
            return self.names.index(class_name) - 1
        except ValueError:
            raise OrandError(f"class {class_name!r} is not in the {self.name} class set") from None


CLASS_SETS: dict[str, ClassSet] = {
    "voc": ClassSet("voc", VOC_CLASSES),
    "coco": ClassSet("coco", COCO_CLASSES),
}


def read_text_file(path: str | Path, what: str) -> str:
    """The text of a UTF-8 file (a BOM is allowed); a file that is not UTF-8 text is a one-line error naming it.

    >>> import tempfile
    >>> bad = Path(tempfile.mkdtemp()) / "ids.txt"
    >>> _ = bad.write_bytes(b"2007_000032\\n\\xff\\xfe\\n")
    >>> read_text_file(bad, "id list")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: ...ids.txt: id list is not UTF-8 text (byte 0xff at offset 12)
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise OrandError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise OrandError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OrandError(f"{path}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
                         ) from None


def get_class_set(spec: str) -> ClassSet:
    """Class set by registry name (``voc``, ``coco``) or from a text file with one name per line.

    The file may list background first or not: a first line of ``background`` (any case) is kept as is,
    otherwise ``background`` is prepended.

    >>> get_class_set("nope")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: unknown class set 'nope'; valid: voc, coco, or a text file with one class name per line
    """
    if spec in CLASS_SETS:
        return CLASS_SETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise OrandError(
            f"unknown class set {spec!r}; valid: {', '.join(CLASS_SETS)}, or a text file with one class name per line"
        )
    names = [line.strip() for line in read_text_file(path, "class name file").splitlines() if line.strip()]
    if not names:
        raise OrandError(f"{path}: class name file is empty")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise OrandError(f"{path}: class {twice[0]!r} is listed twice")
    if names[0].lower() != "background":
        names.insert(0, "background")
    if len(names) > 255:
        raise OrandError(f"{path}: {len(names)} classes do not fit uint8 masks (at most 254 + background)")
    return ClassSet(path.stem, tuple(names))


def voc_data_file(name: str) -> Path:
    """Path of a bundled VOC file (``cls_labels.npy``, ``train.txt``, ``train_aug.txt``, ``val.txt``, ``test.txt``)."""
    ref = resources.files("orand_addon") / "data" / "voc12" / name
    path = Path(str(ref))
    if not path.is_file():
        raise OrandError(f"bundled VOC file {name!r} is missing from the installation ({path})")
    return path


def int_id(image_id: str) -> int | None:
    """The integer key IRN/AMN use for an id (``'2007_000032'`` -> ``2007000032``), or None.

    >>> int_id("2007_000032"), int_id("000000000009"), int_id("syn_0001")
    (2007000032, 9, None)
    """
    digits = image_id.replace("_", "")
    return int(digits) if digits.isdigit() else None


class ImageLabels:
    """Image-level labels: ``id -> sorted 0-based foreground class indices``.

    Accepts dicts keyed by the string id or by its integer form, values multi-hot vectors (``indices=True``:
    lists of class indices, the JSON convention).

    >>> labels = ImageLabels({2007000032: np.eye(20, dtype=np.float32)[[0, 14]].sum(0)}, num_foreground=20)
    >>> labels.get("2007_000032").tolist(), labels.get("2007_999999") is None
    ([0, 14], True)
    """

    def __init__(self, table: Mapping, num_foreground: int, source: str = "<dict>", indices: bool = False):
        self.source = source
        self.num_foreground = num_foreground
        self._table: dict[object, np.ndarray] = {}
        for key, value in table.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
                raise OrandError(f"{source}: image id {key!r} is neither a string nor an integer")
            vec = np.asarray(value).reshape(-1) if isinstance(value, (np.ndarray, list, tuple)) else None
            if vec is None or vec.dtype.kind not in "fiub" or (vec.dtype.kind == "f" and not np.isfinite(vec).all()):
                what = type(value).__name__ if vec is None else f"{vec.dtype} values" if vec.dtype.kind not in "f" \
                    else "NaN/Inf"
                raise OrandError(f"{source}: label of {key!r} must be numbers, got {what}")
            if indices:
                classes = vec  # a list of class indices (the JSON convention)
            elif vec.size == num_foreground:
                classes = np.flatnonzero(vec > 0.5)
            else:
                raise OrandError(
                    f"{source}: label of {key!r} has {vec.size} entries, expected {num_foreground} "
                    f"(multi-hot over the foreground classes)"
                )
            if classes.size and (classes.dtype.kind == "b" or not np.all(np.equal(np.mod(classes, 1), 0))):
                raise OrandError(f"{source}: label of {key!r} must list integer class indices")
            classes = np.unique(classes.astype(np.int64))
            if classes.size and (classes.min() < 0 or classes.max() >= num_foreground):
                raise OrandError(f"{source}: label of {key!r} has class indices outside 0..{num_foreground - 1}")
            self._table[key if isinstance(key, str) else int(key)] = classes

    def __len__(self) -> int:
        return len(self._table)

    def get(self, image_id: str) -> np.ndarray | None:
        if image_id in self._table:
            return self._table[image_id]
        key = int_id(image_id)
        if key is not None and key in self._table:
            return self._table[key]
        return None

    def ids(self) -> list[str]:
        """Ids as strings; integer VOC keys are rendered back as ``YYYY_NNNNNN``."""
        out = []
        for key in self._table:
            if isinstance(key, str):
                out.append(key)
            else:
                s = str(key)
                out.append(f"{s[:4]}_{s[4:]}" if len(s) == 10 else s)
        return out


def load_labels(path: str | Path | None, class_set: ClassSet) -> ImageLabels:
    """Load image-level labels: ``cls_labels.npy`` (multi-hot, either key convention) or JSON ``{id: [class index,
    ...]}`` (always indices, whatever the list's length).

    ``None`` means the bundled VOC labels (train_aug + val), valid only for the VOC class set.
    """
    from .io.safe_pickle import safe_load_npy

    if path is None:
        if class_set.name != "voc":
            raise OrandError(f"no bundled image-level labels for class set {class_set.name!r}; pass --labels FILE")
        bundled = voc_data_file("cls_labels.npy")  # package data, as trusted as this code (no input limit either)
        return ImageLabels(np.load(bundled, allow_pickle=True).item(), class_set.num_foreground, source=str(bundled))
    path = Path(path)
    if not path.is_file():
        raise OrandError(f"{path}: label file not found")
    if path.suffix == ".json":
        return ImageLabels(json_label_table(path, class_set), class_set.num_foreground, source=str(path),
                           indices=True)
    obj = safe_load_npy(path)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise OrandError(f"{path}: expected a pickled dict id -> multi-hot vector, got {type(obj).__name__}")
    return ImageLabels(obj, class_set.num_foreground, source=str(path))


def json_label_table(path: Path, class_set: ClassSet) -> dict[str, list[int]]:
    """``{id: [class, ...]}`` from a JSON label file; a class is a 0-based foreground index or a class name of
    ``class_set``. Anything else (``null``, a nested list, an unknown name, a file that is not UTF-8 JSON) is a
    one-line error naming the file and the id."""
    try:
        table = json.loads(read_text_file(path, "label file"))
    except json.JSONDecodeError as exc:
        raise OrandError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise OrandError(f"{path}: JSON nested too deeply to be a label file") from None
    if not isinstance(table, dict):
        raise OrandError(f"{path}: expected a JSON object {{id: [class index or name, ...]}}, got "
                         f"{type(table).__name__}")
    names = {name: i - 1 for i, name in enumerate(class_set.names) if i > 0}
    out: dict[str, list[int]] = {}
    for image_id, value in table.items():
        if not isinstance(value, list):
            raise OrandError(f"{path}: label of {image_id!r} must be a list of class indices or names, got "
                             f"{json.dumps(value)[:40]}")
        classes = []
        for item in value:
            if isinstance(item, str):
                if item not in names:
                    raise OrandError(f"{path}: label of {image_id!r} names class {item!r}, which is not in the "
                                     f"{class_set.name} class set ({', '.join(list(names)[:4])}, ...)")
                classes.append(names[item])
            elif isinstance(item, int) and not isinstance(item, bool):
                classes.append(item)
            else:
                raise OrandError(f"{path}: label of {image_id!r} holds {json.dumps(item)[:40]}; expected class "
                                 f"indices (0-based foreground) or class names")
        out[image_id] = classes
    return out


def check_keys(keys: np.ndarray, class_set: ClassSet, where: str, option: str = "--classes") -> None:
    """Every class key of a CAM file must be a foreground class of ``class_set`` (a dump made for another class
    set would otherwise be stored under wrong names).

    >>> check_keys(np.array([0, 18]), CLASS_SETS["voc"], "x.npy")
    >>> check_keys(np.array([0, 18]), ClassSet("three", ("background", "a", "b", "c")), "x.npy")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: x.npy: class key 18 is not one of the 3 classes of --classes three (keys 0..2); ...
    """
    bad = [int(k) for k in np.asarray(keys).reshape(-1) if not 0 <= int(k) < class_set.num_foreground]
    if bad:
        raise OrandError(f"{where}: class key {bad[0]} is not one of the {class_set.num_foreground} classes of "
                         f"{option} {class_set.name} (keys 0..{class_set.num_foreground - 1}); give the class set "
                         f"the CAMs were made with")


def read_id_list(path: str | Path) -> list[str]:
    """Ids from a list file, one per line; VOC ``SegmentationClass``-style lines ``id extra`` keep the first word.

    A bare name of a bundled VOC list (``train``, ``train_aug``, ``val``, ``test``) reads that list.
    """
    p = Path(path)
    if not p.is_file() and str(path) in {"train", "train_aug", "val", "test"}:
        p = voc_data_file(f"{path}.txt")
    if not p.is_file():
        raise OrandError(f"{p}: id list not found")
    ids = []
    for line in read_text_file(p, "id list").splitlines():
        word = line.strip().split(" ")[0] if line.strip() else ""
        if word:
            ids.append(Path(word).stem if "/" in word else word)
    if not ids:
        raise OrandError(f"{p}: id list is empty")
    return ids

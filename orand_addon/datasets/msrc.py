"""MSRC-v2 in its raw published layout, mapped to a VOC-style class set for WSSS (pure functions, no writing).

Layout read (a user's own MSRC-v2 download works as is)::

    ROOT/Images/<id>.bmp  (or .png, .jpg)             RGB photos, 320x213, 213x320, 320x240, ...
    ROOT/newsegmentations_mats/<id>_GT.mat            MATLAB v5 (v7.3 also read)
        newseg    (H, W)  region index of every pixel, 1..R, and R+1 for the part nobody labelled
        newlabels (1, R)  MSRC class of region r (1-based into MSRC_CLASSES)

In 429 of the 591 files ``newseg`` has one region more than ``newlabels`` has entries: the part nobody labelled
(walls, posters, shelves, pavement, the odd unlabelled person); 19.4 % of all pixels. It is MSRC's void.

Class set (:data:`CLASSES`): background + 14 objects in alphabetical order. MSRC's stuff classes (building, grass,
tree, sky, mountain, water, road) become background, face + body become person, and horse becomes void (3 images,
0.06 % of the pixels: two training images cannot teach a class, and "horse = background" would punish a cow CAM
firing on a horse). :class:`ClassMap` can keep horse as a class or make it background, and can make the unlabelled
part background instead of void.

Image-level labels come from the ground truth: a class counts when its pixels are at least ``min_fraction`` of
the image (0.5 %: it changes none of MSRC-v2's 516 object labels, whose smallest is a person at 0.82 %, and keeps
annotation slivers of other data out). The split is fixed and needs no randomness: within each MSRC sequence (the
``<seq>_<n>_s`` photo groups) the images in number order, every 4th one (positions 3, 7, 11, ...) to val.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ..errors import OrandError
from .matfile import read_mat

MSRC_CLASSES = (
    "building", "grass", "tree", "cow", "horse", "sheep", "sky", "mountain", "aeroplane", "water", "face",
    "car", "bicycle", "flower", "sign", "bird", "book", "chair", "road", "cat", "dog", "body", "boat",
)
STUFF = ("building", "grass", "tree", "sky", "mountain", "water", "road")
PERSON_PARTS = ("face", "body")
CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "book", "car", "cat", "chair", "cow", "dog",
    "flower", "person", "sheep", "sign",
)
VOID = 255
IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".BMP", ".PNG", ".JPG")
GT_FOLDER, GT_SUFFIX = "newsegmentations_mats", "_GT.mat"
MIN_FRACTION = 0.005
VAL_EVERY = 4

HorsePolicy = Literal["void", "keep", "background"]
UnlabelledPolicy = Literal["void", "background"]


@dataclass(frozen=True)
class ClassMap:
    """How MSRC labels become class indices: ``horse`` void (default), keep (a 15th object) or background;
    ``unlabelled`` (the region nobody labelled) void (default) or background.

    >>> cm = ClassMap()
    >>> cm.num_classes, cm(np.array([[0, 1, 4, 5, 11, 22]])).tolist()
    (15, [[255, 0, 9, 255, 12, 12]])
    >>> ClassMap(horse="keep").classes[9:12]
    ('cow', 'dog', 'flower')
    >>> ClassMap(horse="pony")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: horse policy 'pony': valid: void, keep, background
    """

    horse: HorsePolicy = "void"
    unlabelled: UnlabelledPolicy = "void"
    classes: tuple[str, ...] = field(init=False)
    lut: np.ndarray = field(init=False, repr=False, compare=False)  # index 0 unlabelled, 1..23 the MSRC classes

    def __post_init__(self) -> None:
        if self.horse not in ("void", "keep", "background"):
            raise OrandError(f"horse policy {self.horse!r}: valid: void, keep, background")
        if self.unlabelled not in ("void", "background"):
            raise OrandError(f"unlabelled policy {self.unlabelled!r}: valid: void, background")
        classes = ("background",) + tuple(sorted(CLASSES[1:] + ("horse",))) if self.horse == "keep" else CLASSES
        lut = np.full(256, VOID, np.uint8)
        lut[0] = 0 if self.unlabelled == "background" else VOID
        for k, name in enumerate(MSRC_CLASSES, start=1):
            if name in STUFF:
                lut[k] = 0
            elif name in PERSON_PARTS:
                lut[k] = classes.index("person")
            elif name == "horse" and self.horse != "keep":
                lut[k] = 0 if self.horse == "background" else VOID
            else:
                lut[k] = classes.index(name)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "lut", lut)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __call__(self, msrc_map: np.ndarray) -> np.ndarray:
        """(H, W) MSRC class map (0 unlabelled, 1..23) -> uint8 mask (0 background, 1..C-1, 255 void)."""
        return self.lut[msrc_map]


def msrc_class_map(newseg: np.ndarray, newlabels: np.ndarray, where: str = "ground truth") -> np.ndarray:
    """(H, W) uint8 MSRC class map from the two variables: region r -> ``newlabels[r-1]``; regions beyond
    ``newlabels`` (the unlabelled part) -> 0.

    >>> msrc_class_map(np.array([[1, 2], [3, 3]]), np.array([[4, 11]])).tolist()
    [[4, 11], [0, 0]]
    """
    seg = np.asarray(newseg)
    labels = np.asarray(newlabels).reshape(-1).astype(np.int64)
    if seg.ndim != 2:
        raise OrandError(f"{where}: newseg has shape {seg.shape}, expected (H, W)")
    if labels.size and (labels.min() < 0 or labels.max() > len(MSRC_CLASSES)):
        raise OrandError(f"{where}: newlabels outside 0..{len(MSRC_CLASSES)}")
    seg = seg.astype(np.int64)
    if seg.size and seg.min() < 0:
        raise OrandError(f"{where}: negative region index in newseg")
    lut = np.zeros(max(int(seg.max(initial=0)) + 1, labels.size + 1), np.uint8)
    lut[1:labels.size + 1] = labels
    return lut[seg]


def read_msrc_gt(path: str | Path) -> np.ndarray:
    """A ``*_GT.mat`` file -> (H, W) uint8 MSRC class map (0 unlabelled, 1..23)."""
    variables = read_mat(path, ("newseg", "newlabels"))
    missing = [n for n in ("newseg", "newlabels") if n not in variables]
    if missing:
        raise OrandError(f"{path}: no variable {missing[0]} (an MSRC-v2 ground-truth file has newseg and newlabels)")
    return msrc_class_map(variables["newseg"], variables["newlabels"], str(path))


def image_labels(mask: np.ndarray, num_classes: int, min_fraction: float = MIN_FRACTION) -> np.ndarray:
    """Multi-hot float32 (num_classes - 1,) of the foreground classes of a mask holding at least ``min_fraction``
    of its pixels (void counts in the denominator, so the rule does not depend on the void policy).

    >>> image_labels(np.array([[0, 1, 1, 3]] * 50, np.uint8), 4, 0.3).tolist()
    [1.0, 0.0, 0.0]
    """
    counts = np.bincount(np.asarray(mask).reshape(-1), minlength=256)[1:num_classes]
    need = max(1, int(np.ceil(min_fraction * mask.size)))
    return (counts >= need).astype(np.float32)


def sort_key(image_id: str) -> tuple[int, int, str]:
    """``'3_12_s'`` -> ``(3, 12, '3_12_s')``: MSRC's sequence and number; other ids sort last, by name.

    >>> sorted(["2_10_s", "x", "2_9_s", "10_1_s"], key=sort_key)
    ['2_9_s', '2_10_s', '10_1_s', 'x']
    """
    parts = image_id.split("_")
    try:
        return int(parts[0]), int(parts[1]), image_id
    except (IndexError, ValueError):
        return 10 ** 9, 10 ** 9, image_id


def sequence(image_id: str) -> int | None:
    """The MSRC sequence of an id (``'3_12_s'`` -> 3), None for an id of another form.

    >>> sequence("3_12_s"), sequence("cat")
    (3, None)
    """
    seq = sort_key(image_id)[0]
    return None if seq == 10 ** 9 else seq


def hashed_split(image_id: str, val_every: int = VAL_EVERY) -> str:
    """``"val"`` for about one id in ``val_every`` by a SHA-1 of the id (ids that are not MSRC ids).

    >>> hashed_split("photo_a"), hashed_split("photo_e")
    ('train', 'val')
    """
    digest = int(hashlib.sha1(f"msrc-v2:{image_id}".encode()).hexdigest(), 16)
    return "val" if digest % val_every == 0 else "train"


def make_split(ids: Sequence[str], val_every: int = VAL_EVERY) -> dict[str, list[str]]:
    """The fixed train/val split: per MSRC sequence, the images in number order, every ``val_every``-th to val
    (positions ``val_every - 1``, ``2 val_every - 1``, ...); other ids by :func:`hashed_split`.

    >>> make_split([f"1_{n}_s" for n in range(1, 10)])["val"]
    ['1_4_s', '1_8_s']
    """
    by_seq: dict[int, list[str]] = {}
    out: dict[str, list[str]] = {"train": [], "val": []}
    for image_id in ids:
        seq = sequence(image_id)
        if seq is None:
            out[hashed_split(image_id, val_every)].append(image_id)
        else:
            by_seq.setdefault(seq, []).append(image_id)
    for members in by_seq.values():
        for pos, image_id in enumerate(sorted(members, key=sort_key)):
            out["val" if pos % val_every == val_every - 1 else "train"].append(image_id)
    return {k: sorted(v, key=sort_key) for k, v in out.items()}


def spread(ids: Sequence[str], n: int) -> list[str]:
    """``n`` of ``ids`` spread over the MSRC sequences (each in proportion to its size, largest remainders first,
    then ties by sequence) and evenly over each sequence's number order; all of them when ``n >= len(ids)``.
    Deterministic; smaller sizes of the benchmark take these instead of a different code path.

    >>> spread([f"{s}_{k}_s" for s in (1, 2) for k in range(1, 7)], 4)
    ['1_2_s', '1_5_s', '2_2_s', '2_5_s']
    """
    ordered = sorted(ids, key=sort_key)
    if n >= len(ordered):
        return ordered
    groups: dict[object, list[str]] = {}
    for image_id in ordered:
        groups.setdefault(sequence(image_id) if sequence(image_id) is not None else "other", []).append(image_id)
    keys = list(groups)
    exact = [n * len(groups[k]) / len(ordered) for k in keys]
    quota = [int(q) for q in exact]
    for i in sorted(range(len(keys)), key=lambda i: (-(exact[i] - quota[i]), i))[:n - sum(quota)]:
        quota[i] += 1
    picked = []
    for key, q in zip(keys, quota):
        members = groups[key]
        picked += [members[int((j + 0.5) * len(members) / q)] for j in range(q)]
    return sorted(picked, key=sort_key)


def find_msrc_image(root: str | Path, image_id: str) -> Path:
    """``ROOT/Images/<id>.bmp`` (or .png/.jpg); one-line error naming the id."""
    for suffix in IMAGE_SUFFIXES:
        path = Path(root) / "Images" / f"{image_id}{suffix}"
        if path.is_file():
            return path
    raise OrandError(f"{image_id}: no image Images/{image_id}.bmp (.png, .jpg) under {root}")


def check_msrc_layout(root: str | Path) -> Path:
    """``root`` if it has the raw MSRC-v2 folders, else a one-line error naming it.

    >>> check_msrc_layout("/nonexistent")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: /nonexistent: not the MSRC-v2 layout (expected the folders Images/ and newsegmentations_mats/)
    """
    root = Path(root)
    if not (root / "Images").is_dir() or not (root / GT_FOLDER).is_dir():
        raise OrandError(f"{root}: not the MSRC-v2 layout (expected the folders Images/ and {GT_FOLDER}/)")
    return root


def list_msrc_ids(root: str | Path) -> list[str]:
    """Ids with both an image and a ground-truth file, in MSRC order; one-line errors for another layout."""
    root = check_msrc_layout(root)
    images, gts = root / "Images", root / GT_FOLDER
    with_image = {p.stem for p in images.iterdir() if p.suffix in IMAGE_SUFFIXES}
    with_gt = {p.name[:-len(GT_SUFFIX)] for p in gts.iterdir() if p.name.endswith(GT_SUFFIX)}
    ids = sorted(with_image & with_gt, key=sort_key)
    if not ids:
        raise OrandError(f"{root}: no image in Images/ has a {GT_FOLDER}/<id>{GT_SUFFIX} file")
    return ids

"""A folder (or store kind) of CAM dumps as a lazy mapping ``image id -> CamRecord``.

:func:`read_cams` is the public entry point. A source is one of

* a folder of ``<id>.npy`` files in any format of :mod:`orand_addon.io.formats` (``<id>_1.npy`` as written by
  the official ORANDNet code is accepted: when every file ends in ``_1`` the suffix is dropped from the ids);
* a folder of ``<id>.npz`` files (arrays ``keys`` and ``high_res``, no pickle);
* ``STORE.h5:KIND``, a kind of an orand-addon HDF5 store.

Files are only read when an id is looked up, through the restricted unpickler.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


from ..classes import ImageLabels
from ..errors import FormatError, OrandError
from .formats import CAM_FORMATS, CamRecord, get_format, structural_candidates
from .safe_pickle import safe_load_npy, safe_load_npz

DETECTION_SAMPLE = 16
NOTHING_READ = "no sampled file could be read"


def cam_files(folder: Path) -> list[Path]:
    """The CAM files of a folder (``.npy``/``.npz``; hidden and temporary files are ignored), sorted."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix in (".npy", ".npz") and not p.name.startswith(".") and p.is_file())


def undecodable_name(path: Path) -> str | None:
    """The name of a file whose name is not valid UTF-8, shown as its bytes (image ids are stored as UTF-8 text);
    None for a valid name.

    >>> undecodable_name(Path("2007_000032.npy")) is None, undecodable_name(Path(os.fsdecode(b"x\\xff.npy")))
    (True, "b'x\\\\xff.npy'")
    """
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return repr(os.fsencode(path.name))
    return None


def check_names(folder: Path, files: list[Path]) -> None:
    """Refuse a folder holding a file whose name is not UTF-8 (its id could not be stored or listed)."""
    bad = [name for name in map(undecodable_name, files) if name is not None]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise FormatError(f"{folder}: the file name {bad[0]} is not valid UTF-8{more}; image ids are stored as UTF-8 "
                          f"text: rename it, or move it out of the folder")


def file_ids(files: list[Path]) -> tuple[list[str], str]:
    """Image ids of CAM files and the suffix dropped from them: the official ORANDNet code writes ``<id>_1.npy``,
    so when every name ends in ``_1`` that suffix is not part of the id.

    >>> file_ids([Path("2007_000032_1.npy"), Path("2007_000039_1.npy")])
    (['2007_000032', '2007_000039'], '_1')
    >>> file_ids([Path("2007_000032.npy"), Path("x_1.npy")])
    (['2007_000032', 'x_1'], '')
    """
    stems = [p.stem for p in files]
    if stems and all(s.endswith("_1") for s in stems):
        return [s[:-2] for s in stems], "_1"
    return stems, ""


def load_cam_object(path: Path) -> object:
    """The raw object of one CAM file (dict for pickled dumps and npz)."""
    if path.suffix == ".npz":
        return safe_load_npz(path)
    return safe_load_npy(path)


@dataclass
class Detection:
    """What :func:`detect_format` concluded, and why."""

    format: str | None
    candidates: list[str]
    reason: str
    problems: list[str] = field(default_factory=list)


def _decide_int_keyed(objs: list[tuple[str, dict]], labels: ImageLabels | None) -> tuple[str | None, str]:
    """mctformer (key = class) vs crf-dict (key 0 = background, key = class + 1)."""
    for image_id, obj in objs:
        if 0 not in {int(k) for k in obj}:
            return "mctformer", f"{image_id} has no key 0, so keys are classes (crf-dict always has background 0)"
    if labels is None:
        return None, "every sampled file has key 0 and no labels were given to tell class 0 from background"
    votes = {"mctformer": 0, "crf-dict": 0}
    for image_id, obj in objs:
        classes = labels.get(image_id)
        if classes is None:
            continue
        keys = {int(k) for k in obj}
        if keys == set(classes.tolist()):
            votes["mctformer"] += 1
        elif keys == {0} | {c + 1 for c in classes.tolist()}:
            votes["crf-dict"] += 1
    if votes["mctformer"] and not votes["crf-dict"]:
        return "mctformer", f"keys equal the image-level labels in {votes['mctformer']} sampled files"
    if votes["crf-dict"] and not votes["mctformer"]:
        return "crf-dict", f"keys equal background + labels + 1 in {votes['crf-dict']} sampled files"
    return None, f"the labels do not settle it (votes {votes})"


def detect_format(files: list[Path], ids: list[str], labels: ImageLabels | None = None) -> Detection:
    """Decide the format of a folder from a spread sample of its files; ``format`` is None when ambiguous."""
    if not files:
        return Detection(None, [], "no files")
    if all(f.suffix == ".npz" for f in files):
        return Detection("npz", ["npz"], "all files are .npz")
    step = max(1, len(files) // DETECTION_SAMPLE)
    sample = list(zip(ids, files))[::step][:DETECTION_SAMPLE]
    seen: dict[str, list[str]] = {}
    objs: list[tuple[str, dict]] = []
    problems = []
    for image_id, path in sample:
        try:
            obj = load_cam_object(path)
        except OrandError as exc:
            problems.append(str(exc))
            continue
        cands = structural_candidates(obj)
        seen.setdefault("/".join(cands) or "unknown", []).append(path.name)
        if cands == ["mctformer", "crf-dict"] or cands == ["mctformer"]:
            objs.append((image_id, obj))
    if not seen:
        return Detection(None, [], NOTHING_READ, problems)
    if len(seen) > 1 and not set(seen) <= {"mctformer", "mctformer/crf-dict"}:
        detail = "; ".join(f"{k}: {', '.join(v[:3])}" for k, v in seen.items())
        return Detection(None, sorted(seen), f"files of different layouts ({detail})", problems)
    key = next(iter(seen)) if len(seen) == 1 else "mctformer/crf-dict"
    if key == "unknown":
        return Detection(None, [], f"no known CAM layout in {', '.join(seen['unknown'][:3])}", problems)
    cands = key.split("/")
    if len(cands) == 1:
        return Detection(cands[0], cands, "structure", problems)
    fmt, why = _decide_int_keyed(objs, labels)
    return Detection(fmt, cands, why, problems)


class CamSource(Mapping):
    """Lazy ``id -> CamRecord`` over a folder of CAM files."""

    def __init__(self, path: str | Path, format: str = "auto", labels: ImageLabels | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise OrandError(f"{self.path}: CAM folder not found")
        files = cam_files(self.path)
        if not files:
            raise OrandError(f"{self.path}: no .npy or .npz CAM files in this folder")
        check_names(self.path, files)
        stems, self.stripped_suffix = file_ids(files)
        self.files: dict[str, Path] = dict(zip(stems, files))
        if format == "auto":
            det = detect_format(files, stems, labels)
            if det.format is None and det.reason == NOTHING_READ:
                raise FormatError(det.problems[0])  # why the (first) file was refused names it
            if det.format is None:
                hint = (f"name it with --format-a/--format-b (fuse) or --format: {' or '.join(det.candidates)}"
                        if det.candidates else f"'orand-addon inspect {self.path}' shows what it found")
                raise FormatError(f"{self.path}: cannot tell the CAM format ({det.reason}); {hint}")
            self.detection = det
            self.format = det.format
        else:
            get_format(format)
            self.format = format
            self.detection = Detection(format, [format], "given")

    def __getitem__(self, image_id: str) -> CamRecord:
        path = self.files[image_id]
        obj = load_cam_object(path)
        fmt = get_format(self.format)
        if self.format != "npz" and not fmt.matches(obj):
            found = structural_candidates(obj)
            hint = f"it looks like {'/'.join(found)}" if found else "no known layout"
            raise FormatError(f"{path}: not a {self.format} CAM file ({hint})")
        try:
            return fmt.parse(obj, str(path))
        except KeyError as exc:
            raise FormatError(f"{path}: missing entry {exc} for format {self.format}") from None

    def __contains__(self, image_id: object) -> bool:  # without reading the file (Mapping would)
        return image_id in self.files

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> str:
        return f"{self.path} ({self.format}, {len(self)} files)"

    def close(self) -> None:
        """Nothing to release (files are opened per lookup); here so every source can be closed alike."""

    def __enter__(self) -> "CamSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoreCamSource(Mapping):
    """``id -> CamRecord`` over one kind of an orand-addon HDF5 store (``STORE.h5:KIND``)."""

    def __init__(self, path: str | Path, kind: str):
        from ..store.store import Store

        self.path = Path(path)
        self.kind = kind
        self.format = "h5"
        self.store = Store(self.path, mode="r")
        try:
            if kind not in self.store.kinds():
                have = ", ".join(self.store.kinds()) or "none"
                raise OrandError(f"{self.path}: no kind {kind!r} in the store (has: {have})")
            self.store.check_entries(kind)
        except OrandError:
            self.store.close()
            raise
        self._ids = self.store.ids(kind)
        self._id_set = set(self._ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._id_set

    def __getitem__(self, image_id: str) -> CamRecord:
        maps, keys = self.store.read_maps(self.kind, image_id, finite=False)  # the reader's --value-policy decides
        return CamRecord(keys=keys, maps=maps)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def describe(self) -> str:
        return f"{self.path}:{self.kind} (h5, {len(self)} maps)"

    def close(self) -> None:
        """Close the store (a source opened on a store keeps it open, read-only, until then)."""
        self.store.close()

    def __enter__(self) -> "StoreCamSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_store_spec(spec: str | Path) -> tuple[Path, str] | None:
    """``'x.h5:or'`` -> ``(Path('x.h5'), 'or')``; None for anything that is not a store spec.

    >>> split_store_spec("runs/fused.h5:orandnet")
    (PosixPath('runs/fused.h5'), 'orandnet')
    >>> split_store_spec("cams/amn") is None
    True
    """
    text = str(spec)
    if ":" in text:
        path, kind = text.rsplit(":", 1)
        if path.endswith((".h5", ".hdf5")) and kind:
            return Path(path), kind
    return None


def read_cams(path: str | Path, format: str = "auto", labels: ImageLabels | None = None) -> Mapping[str, CamRecord]:
    """Open CAM dumps as a lazy mapping ``id -> CamRecord``.

    ``path`` is a folder of ``.npy``/``.npz`` files or ``STORE.h5:KIND``. ``format`` is a name from
    :data:`orand_addon.io.formats.CAM_FORMATS` or ``auto`` (decides only when unambiguous; ``labels`` help to
    tell ``mctformer`` from ``crf-dict``).
    """
    spec = split_store_spec(path)
    if spec is not None:
        return StoreCamSource(*spec)
    if format not in ("auto", *CAM_FORMATS):
        get_format(format)
    return CamSource(path, format=format, labels=labels)

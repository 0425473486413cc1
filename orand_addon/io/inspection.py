"""What ``orand-addon inspect`` reports about a CAM folder or a store (read-only)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np

from ..classes import get_class_set, load_labels
from ..errors import OrandError
from .formats import get_format
from .sources import CamSource, cam_files, detect_format, file_ids, load_cam_object, split_store_spec
from ..store.store import MASK_GROUPS, Store


def class_list(indices, names: list[str]) -> str:
    """0-based foreground class indices as names (``names`` background first); an index out of range stays a number.

    >>> class_list([0, 14, 99], ["background", "aeroplane"] + ["x"] * 13 + ["person"])
    'aeroplane, person, 99'
    """
    return ", ".join(names[i + 1] if 0 <= i < len(names) - 1 else str(i) for i in (int(k) for k in indices))


def _range(values: list[float]) -> str:
    return f"{min(values):.3g} .. {max(values):.3g}" if values else "-"


def inspect_store(path: Path) -> Iterator[str]:
    """Lines describing a store; entries a reader would refuse are listed as problems and end the listing with an
    error (exit 2)."""
    problems: list[str] = []
    with Store(path) as store:
        yield f"{path}: orand-addon store, layout {int(store.h5.attrs['layout_version'])}, " \
              f"written by orand-addon {store.h5.attrs.get('orand_addon_version', '?')}"
        yield f"classes: {len(store.class_names)} ({', '.join(store.class_names[:6])}{', ...' if len(store.class_names) > 6 else ''})"
        for group in store.groups():
            foreign = store.foreign_entries(group)
            problems += [f"/{group}/{name}: not a dataset (a layout orand-addon does not write)" for name in foreign]
            ids = [i for i in store.ids(group) if i not in set(foreign)]
            what = "masks" if group in MASK_GROUPS else "maps"
            example = "-"
            if ids:
                try:
                    shape = store.map_shape(group, ids[0]) if what == "maps" else store.read_mask(group, ids[0]).shape
                    example = f"{ids[0]} {shape} {store.h5[group][ids[0]].dtype}"
                except OrandError as exc:
                    problems.append(str(exc))
                    example = f"{ids[0]} (unreadable)"
            try:
                prov = store.group_provenance(group) or {}
            except OrandError as exc:
                problems.append(str(exc))
                prov = {}
            yield f"/{group}: {len(ids)} {what}, e.g. {example}; by: {prov.get('command', '?')}"
        try:
            sources = store.provenance.get("sources", [])
        except OrandError as exc:
            problems.append(str(exc))
            sources = []
        for src in sources if isinstance(sources, list) else []:
            if isinstance(src, dict):
                yield f"source {src.get('name', '?')}: {src.get('path', '?')} ({src.get('format', '?')})"
    if problems:
        yield f"problems: {len(problems)}"
        yield from (f"  {text}" for text in problems)
        raise OrandError(f"{path}: {len(problems)} {'entry' if len(problems) == 1 else 'entries'} cannot be read "
                         f"(listed above)")


def inspect_folder(path: Path, fmt: str, class_spec: str, labels_path: str | None, limit: int | None) -> Iterator[str]:
    class_set = get_class_set(class_spec)
    labels = load_labels(labels_path, class_set) if labels_path or class_set.name == "voc" else None
    files = cam_files(path) if path.is_dir() else []
    if not files:
        raise OrandError(f"{path}: no .npy or .npz CAM files in this folder")
    source_ids, _ = file_ids(files)
    if fmt == "auto":
        det = detect_format(files, source_ids, labels)
        if det.format:
            yield f"{path}: format {det.format} ({det.reason}), {len(files)} files"
        else:
            yield f"{path}: format undecided ({det.reason}); candidates: {', '.join(det.candidates) or 'none'}"
        chosen = det.format
    else:
        get_format(fmt)
        chosen = fmt
        yield f"{path}: format {fmt} (given), {len(files)} files"
    problems: list[str] = []
    refused: list[str] = []
    class_counts: Counter = Counter()
    shapes: Counter = Counter()
    lows, highs, n_keys = [], [], []
    source = None
    if chosen:
        source = CamSource(path, format=chosen, labels=labels)
    items = list(source.files.items()) if source else list(zip(source_ids, files))
    for image_id, file in items[:limit]:
        try:
            if source is None:
                load_cam_object(file)
                continue
            rec = source[image_id]
        except OrandError as exc:
            problems.append(str(exc))
            refused.append(str(exc))
            continue
        n_keys.append(len(rec.keys))
        class_counts.update(int(k) for k in rec.keys)
        shapes[rec.maps.shape[1:]] += 1
        maps = rec.maps
        finite = np.isfinite(maps)
        if not finite.all():
            problems.append(f"{file}: {int((~finite).sum())} NaN/Inf values")
        good = maps[finite]
        if good.size:
            lows.append(float(good.min()))
            highs.append(float(good.max()))
            if good.min() < 0:
                problems.append(f"{file}: negative values (min {good.min():.3g})")
            if good.max() > 1 + 1e-3:
                problems.append(f"{file}: values above 1 (max {good.max():.3g})")
        zero = [int(k) for k, m in zip(rec.keys, maps) if not np.any(np.nan_to_num(m) > 0)]
        if zero:
            problems.append(f"{file}: all-zero map for {class_list(zero, class_set.names)}")
        bad_keys = [int(k) for k in rec.keys if not 0 <= int(k) < class_set.num_foreground]
        if bad_keys:
            problems.append(f"{file}: class indices {bad_keys} outside 0..{class_set.num_foreground - 1}")
        if labels is not None:
            lab = labels.get(image_id)
            if lab is None:
                problems.append(f"{file}: id {image_id} has no image-level label")
            elif set(lab.tolist()) != {int(k) for k in rec.keys}:
                problems.append(f"{file}: classes {class_list(sorted(rec.keys), class_set.names) or 'none'} differ "
                                f"from the labels' {class_list(lab, class_set.names) or 'none'}")
    if source is not None and source.stripped_suffix:
        yield f"ids: file names end in {source.stripped_suffix!r}, which is dropped from the ids"
    read = len(n_keys)
    yield f"read {read} of {len(files)} files" + (f" (--limit {limit})" if limit and limit < len(files) else "")
    if read:
        names = class_set.names
        top = ", ".join(f"{names[c + 1] if 0 <= c < class_set.num_foreground else c}: {n}"
                        for c, n in sorted(class_counts.items()))
        yield f"classes per image: {min(n_keys)} .. {max(n_keys)}; images per class: {top}"
        common = ", ".join(f"{h}x{w}: {n}" for (h, w), n in shapes.most_common(3))
        yield f"map sizes (H x W): {len(shapes)} distinct; most common {common}"
        yield f"value range: min {_range(lows)}, max {_range(highs)}"
    yield f"problems: {len(problems)}"
    for text in problems:
        yield f"  {text}"
    if refused:
        raise OrandError(f"{path}: {len(refused)} of {len(files)} files were refused or could not be read (listed "
                         f"above)")


def inspect_path(path: str, fmt: str = "auto", class_spec: str = "voc", labels: str | None = None,
                 limit: int | None = None) -> Iterator[str]:
    spec = split_store_spec(path)
    p = Path(spec[0] if spec else path)
    if p.is_file() and p.suffix in (".h5", ".hdf5"):
        yield from inspect_store(p)
        return
    if not p.exists():
        raise OrandError(f"{p}: not found")
    yield from inspect_folder(p, fmt, class_spec, labels, limit)

"""CAM dumps of the two synthetic classifiers in the native formats users have.

- ``cnn`` -> AMN format (``write_cam(..., "amn", ...)``): ``keys``, stride-4 ``cam`` and image-size ``high_res``
  with a background channel 0. Each class map is IRN's CAM (ReLU, summed over scales and flips, upsampled
  bilinearly, divided by its max + 1e-5); the background channel is ``1 - max over the image's classes``.
- ``vit`` -> MCTformer format (``{class: (H, W)}``): MCTformer's class-to-patch attention, summed over scales
  and flips, upsampled, min-max normalised per class as MCTformer does.

Maps are written only for the image-level classes of each image, for every train_aug and val image, exactly as
the reference code dumps them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ...io.writers import write_cam
from ...runtime.interrupts import interruptible
from ...runtime.progress import progress
from ...runtime.devices import resolve_device
from .classifiers import fit_or_load, load_split, to_input
from .generator import DatasetInfo, load_dataset

if TYPE_CHECKING:  # torch is imported inside the functions
    import torch

SOURCE_FORMATS: dict[str, str] = {"cnn": "amn", "vit": "mctformer"}
MARKER = "cams.json"  # what wrote a CAM folder (ignored by the CAM readers: not .npy)


def max_normalise(maps: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """IRN: each (already ReLU'd) map divided by its max + ``eps``.

    >>> max_normalise(np.array([[[0.0, 2.0]], [[0.0, 0.0]]], np.float32)).round(4).tolist()
    [[[0.0, 1.0]], [[0.0, 0.0]]]
    """
    peak = maps.max(axis=(-2, -1), keepdims=True) if maps.size else np.zeros((0, 1, 1), np.float32)
    return (maps / (peak + eps)).astype(np.float32)


def min_max_normalise(maps: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """MCTformer: each map mapped to [0, 1] by its min and max.

    >>> min_max_normalise(np.array([[[1.0, 3.0, 2.0]]], np.float32)).tolist()
    [[[0.0, 1.0, 0.5]]]
    """
    if not maps.size:
        return maps.astype(np.float32)
    lo = maps.min(axis=(-2, -1), keepdims=True)
    hi = maps.max(axis=(-2, -1), keepdims=True)
    return ((maps - lo) / (hi - lo + eps)).astype(np.float32)


def raw_cams(model: "torch.nn.Module", images: np.ndarray, scales: Sequence[float] = (1.0,), flip: bool = True,
             device: str = "auto", batch_size: int = 32) -> np.ndarray:
    """Unnormalised CAMs (N, K, H, W) at image size for all classes: ``model.cam`` at each scale (and its
    horizontal flip, flipped back), upsampled bilinearly and summed, as IRN's ``make_cam``."""
    import torch
    import torch.nn.functional as F

    dev = resolve_device(device)
    h, w = images.shape[-2:]
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_input(torch.from_numpy(images[start : start + batch_size])).to(dev)
            total = 0
            for scale in scales:
                xs = x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
                views = [(xs, False)] + ([(xs.flip(-1), True)] if flip else [])
                for view, flipped in views:
                    cam = model.cam(view)
                    cam = cam.flip(-1) if flipped else cam
                    total = total + F.interpolate(cam.float(), size=(h, w), mode="bilinear", align_corners=False)
            out.append(total.cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def image_maps(source: str, cams: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """One image's written maps (len(classes), H, W): the labelled classes, normalised as ``source``'s method."""
    maps = cams[np.asarray(classes, np.int64)]
    return max_normalise(maps) if SOURCE_FORMATS[source] == "amn" else min_max_normalise(maps)


def write_source_cams(source: str, model: "torch.nn.Module", info: DatasetInfo, out_dir: str | Path,
                      ids: Sequence[str], device: str = "auto", scales: Sequence[float] = (1.0,),
                      show_progress: bool = True, chunk: int = 128) -> Path:
    """Write the CAMs of ``model`` for ``ids`` into ``out_dir`` in ``source``'s native format."""
    out_dir = Path(out_dir)
    labels = info.labels()
    fmt = SOURCE_FORMATS[source]
    bar = progress(total=len(ids), desc=f"CAMs {source} ({fmt})", unit="img", enabled=show_progress)
    for start in range(0, len(ids), chunk):
        part = list(ids[start : start + chunk])
        images, _ = load_split(info, part)
        cams = raw_cams(model, images, scales=scales, device=device)
        for image_id, cam in zip(part, cams):
            classes = labels.get(image_id)
            write_cam(out_dir, image_id, fmt, classes, image_maps(source, cam, classes))
            bar.update(1)
    bar.close()
    return out_dir


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def make_cams(dataset_root: str | Path, out_dir: str | Path, seed: int = 0, device: str = "auto",
              epochs: dict[str, int] | None = None, scales: Sequence[float] = (1.0,),
              show_progress: bool = True) -> dict[str, Path]:
    """Train (or reuse) both classifiers and write their CAMs for all train_aug and val images.

    Returns ``{"cnn": out_dir/"cnn_amn", "vit": out_dir/"vit_mctformer"}``; checkpoints are kept in
    ``out_dir/checkpoints``. ``epochs`` overrides the training length per classifier (``{"cnn": 3}``). A CAM
    folder written by the same classifier (its ``cams.json`` matches) is completed, not rewritten (so an
    interrupted call resumes); one written by another classifier is rewritten.
    """
    from dataclasses import replace

    from .classifiers import DEFAULT_CONFIGS

    info = load_dataset(dataset_root)
    out_dir = Path(out_dir)
    ids = list(info.train_ids) + list(info.val_ids)
    folders: dict[str, Path] = {}
    for source, fmt in SOURCE_FORMATS.items():
        config = DEFAULT_CONFIGS[source]
        if epochs and source in epochs:
            config = replace(config, epochs=int(epochs[source]))
        folder = out_dir / f"{source}_{fmt}"
        model, record = fit_or_load(source, info, out_dir / "checkpoints", config, seed, device, show_progress)
        marker = {"source": source, "format": fmt, "classifier": record["key"], "scales": list(scales)}
        same = _read_marker(folder) == marker
        todo = [i for i in ids if not (same and (folder / f"{i}.npy").is_file())]
        if not same:  # claim the folder first: an interrupted run then resumes instead of starting over
            folder.mkdir(parents=True, exist_ok=True)
            (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        if todo:
            with interruptible(f"writing {source} CAMs to {folder}; the same call resumes"):
                write_source_cams(source, model, info, folder, todo, device, scales, show_progress)
        folders[source] = folder
    return folders

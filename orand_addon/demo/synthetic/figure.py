"""A picture of the synthetic testbed: image | ground truth | CNN CAM (AMN dump) | ViT CAM (MCTformer dump)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ...errors import OrandError
from ...io.images import load_image, load_label_png, voc_palette
from ...io.sources import read_cams
from .cams import SOURCE_FORMATS
from .generator import DatasetInfo

TITLES = {"cnn": "CNN", "vit": "ViT"}


def class_map_rgb(maps: np.ndarray, keys: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) float picture of CAMs: each pixel takes its strongest class's mask colour, as bright as the map.

    >>> maps = np.array([[[1.0, 0.0]], [[0.0, 0.5]]], np.float32)
    >>> class_map_rgb(maps, np.array([0, 1]), np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)).tolist()
    [[[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]]]
    """
    if maps.shape[0] == 0:
        return np.zeros((*maps.shape[-2:], 3), np.float32)
    best = maps.argmax(axis=0)
    colour = palette[np.asarray(keys)[best] + 1].astype(np.float32) / 255
    return colour * maps.max(axis=0)[..., None]


def plot_examples(info: DatasetInfo, cam_dirs: Mapping[str, str | Path], out_png: str | Path,
                  ids: Sequence[str] | None = None, count: int = 5) -> Path:
    """Write a grid of ``count`` images (rows) with their ground truth and both sources' CAMs (columns)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OrandError("the picture needs matplotlib: pip install 'orand-addon[plot]'") from None
    ids = list(ids or info.val_ids[:count])
    sources = {name: read_cams(path, format=SOURCE_FORMATS[name]) for name, path in cam_dirs.items()}
    palette = voc_palette()
    columns = ["image", "ground truth"] + [f"{TITLES.get(n, n)} CAM ({SOURCE_FORMATS[n]} dump)" for n in sources]
    fig, axes = plt.subplots(len(ids), len(columns), figsize=(2.2 * len(columns), 1.9 * len(ids)), squeeze=False)
    for row, image_id in enumerate(ids):
        gt = load_label_png(info.masks / f"{image_id}.png")
        panels = [load_image(info.images, image_id), palette[gt]]
        for records in sources.values():
            record = records[image_id]
            panels.append(class_map_rgb(record.maps, record.keys, palette))
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
        names = [info.class_names[v] for v in np.unique(gt) if 0 < v < 255]
        axes[row, 0].set_ylabel(", ".join(names), fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png

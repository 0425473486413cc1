"""Two real CAM sources from image-level labels only: frozen ImageNet EfficientNet-Lite features + a linear
multi-label head, IRN-style CAMs, written in the native dump formats users have.

* source ``a``: EfficientNet-Lite0 -> AMN format (``keys``, stride-4 ``cam``, ``high_res`` with a background
  channel 0 = 1 - max over the image's classes);
* source ``b``: EfficientNet-Lite2 -> MCTformer format (``{class: (H, W)}``).

Both are CNN CAMs from two different ImageNet networks (the AMN/MCTformer names are the dump layouts, not the
methods). Per source: the backbone stays frozen (eval mode, the ImageNet weights of the ``real`` extra); each
training image and its flip give global-average-pooled head features (1280 channels, scale 1); a linear head
(14 outputs, bias) learns the image labels with binary cross-entropy, full batch, Adam (lr 1e-2, weight decay 1e-4,
cosine over 300 epochs, seed fixed), on the WSSS train images and the object-less ones (negatives). The CAM of class
k is IRN's: ``ReLU(W_k . F)`` without the bias on the feature map of every scale and of its flip (flipped back),
each upsampled bilinearly to cover the image and cropped, summed, then divided by its max + 1e-5.

Nothing here sees a pixel of ground truth. Every step resumes: a head is kept in ``<source>_head.pt`` and dumps
already written (by the same head and scales, per ``cams.json``) are kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ...errors import OrandError
from ...io.images import imagenet_normalize, load_image
from ...io.writers import write_cam
from ...runtime.files import atomic_save, load_checkpoint
from ...runtime.interrupts import interruptible
from ...runtime.progress import progress
from ...runtime.provenance import ids_digest

if TYPE_CHECKING:
    import torch

SOURCES: dict[str, tuple[str, str]] = {"a": ("effnet-lite0", "amn"), "b": ("effnet-lite2", "mctformer")}
MARKER = "cams.json"


@dataclass(frozen=True)
class HeadRecipe:
    """How a linear head is fitted (the defaults were chosen on MSRC-v2's train split, see docs/msrc.md)."""

    epochs: int = 300
    lr: float = 1e-2
    weight_decay: float = 1e-4
    seed: int = 0


def input_pair(image: np.ndarray, scale: float = 1.0) -> "torch.Tensor":
    """(2, 3, h, w): the ImageNet-normalised image at ``scale`` (bilinear) and its horizontal flip."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(imagenet_normalize(image).transpose(2, 0, 1)))[None]
    if scale != 1.0:
        h, w = image.shape[:2]
        x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
                          align_corners=False)
    return torch.cat([x, x.flip(-1)])


def pair_features(backbone: "torch.nn.Module", image: np.ndarray, scale: float, device: "torch.device") -> "torch.Tensor":
    """(2, C, h, w) float32 features of the image and of its flip, the flip's flipped back."""
    import torch

    with torch.inference_mode():
        feats = backbone(input_pair(image, scale).to(device)).float()
    return torch.stack([feats[0], feats[1].flip(-1)])


def fit_head(x: np.ndarray, y: np.ndarray, recipe: HeadRecipe = HeadRecipe()) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (K, C), bias (K,))`` of a linear multi-label head on features ``x`` (N, C) for labels ``y`` (N, K):
    binary cross-entropy, full batch, Adam with a cosine schedule; deterministic for a fixed seed."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(recipe.seed)
    head = torch.nn.Linear(x.shape[1], y.shape[1])
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.float32))
    opt = torch.optim.Adam(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.epochs)
    for _ in range(recipe.epochs):
        loss = F.binary_cross_entropy_with_logits(head(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy()


def class_cams(features: Sequence[tuple[float, "torch.Tensor"]], weight: np.ndarray, keys: np.ndarray,
               size: tuple[int, int], stride: int) -> np.ndarray:
    """IRN-style CAMs (len(keys), H, W) in [0, 1] from ``(scale, (2, C, h, w) features)`` pairs: ``ReLU(W_k . F)``
    of the image and its flip summed, upsampled to cover ``h * stride / scale`` pixels and cropped to ``size``,
    summed over scales, each class divided by its max + 1e-5."""
    import torch
    import torch.nn.functional as F

    keys = np.asarray(keys, np.int64)
    h, w = size
    total = torch.zeros(len(keys), h, w)
    if not len(keys):
        return total.numpy()
    wk = torch.from_numpy(np.asarray(weight, np.float32)[keys])
    for scale, feats in features:
        cam = F.relu(torch.einsum("kc,nchw->nkhw", wk, feats.cpu())).sum(0)
        fh, fw = cam.shape[-2:]
        cover = (math.ceil(fh * stride / scale), math.ceil(fw * stride / scale))
        total += F.interpolate(cam[None], size=cover, mode="bilinear", align_corners=False)[0, :, :h, :w]
    peak = total.flatten(1).max(dim=1).values
    return (total / (peak[:, None, None] + 1e-5)).numpy().astype(np.float32)


def image_keys(labels, image_id: str) -> np.ndarray:
    """The 0-based classes of an image (one-line error for an image without labels)."""
    keys = labels.get(image_id)
    if keys is None:
        raise OrandError(f"{image_id}: no image-level label in {labels.source}")
    return np.asarray(keys, np.int64)


def multi_hot(keys: Sequence[np.ndarray], num_foreground: int) -> np.ndarray:
    """(N, num_foreground) float32 multi-hot rows of class-index lists.

    >>> multi_hot([np.array([0, 2]), np.array([], np.int64)], 3).tolist()
    [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    out = np.zeros((len(keys), num_foreground), np.float32)
    for row, k in enumerate(keys):
        out[row, k] = 1
    return out


def head_for(source: str, backbone, images: Path, head_ids: Sequence[str], labels, num_foreground: int,
             out_dir: Path, recipe: HeadRecipe, device, show_progress: bool) -> tuple[np.ndarray, dict]:
    """The fitted head of ``source`` (``out_dir/<source>_head.pt``, reused when fitted on the same ids with the same
    recipe) and its record."""
    path = out_dir / f"{source}_head.pt"
    record = {"source": source, "arch": SOURCES[source][0], "ids": ids_digest(sorted(head_ids)),
              "n_ids": len(head_ids), "recipe": asdict(recipe)}
    if path.is_file():
        saved = load_checkpoint(path)
        if isinstance(saved, dict) and saved.get("record") == record:
            return saved["weight"].numpy(), record
    gap = []
    for image_id in progress(head_ids, desc=f"features {source} ({record['arch']})", unit="img",
                             enabled=show_progress):
        gap.append(pair_features(backbone, load_image(images, image_id), 1.0, device).mean(dim=(2, 3)).numpy())
    x = np.concatenate(gap)  # image, flip, image, flip, ...
    y = np.repeat(multi_hot([image_keys(labels, i) for i in head_ids], num_foreground), 2, axis=0)
    weight, bias = fit_head(x, y, recipe)
    import torch

    atomic_save({"record": record, "weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)}, path)
    return weight, record


def make_sources(folder, out_dir: str | Path, cam_ids: Sequence[str], head_ids: Sequence[str],
                 scales: Sequence[float] = (1.0,), recipe: HeadRecipe = HeadRecipe(), device: str = "auto",
                 show_progress: bool = True) -> dict[str, Path]:
    """Fit both heads on ``head_ids`` and write the CAMs of ``cam_ids`` in each source's format.

    ``folder``: a VOC-layout dataset (``images``, ``labels()``, ``class_set()``). Returns ``{"a": out_dir/"a_amn",
    "b": out_dir/"b_mctformer"}``. Needs the optional extra ``real`` (one-line error naming it otherwise).
    """
    from ...pretrained.efficientnet import build_lite
    from ...runtime.devices import resolve_device

    out_dir = Path(out_dir)
    labels = folder.labels()
    num_foreground = folder.class_set().num_foreground
    dev = resolve_device(device)
    folders = {}
    for source, (arch, fmt) in SOURCES.items():
        backbone = build_lite(arch, output_stride=32, pretrained="imagenet").to(dev).eval()
        with interruptible(f"fitting the {source} head; the same call resumes"):
            weight, record = head_for(source, backbone, folder.images, head_ids, labels, num_foreground, out_dir,
                                      recipe, dev, show_progress)
        target = out_dir / f"{source}_{fmt}"
        marker = {**record, "format": fmt, "scales": list(scales), "stride": 32}
        same = _read_marker(target) == marker
        todo = [i for i in cam_ids if not (same and (target / f"{i}.npy").is_file())]
        if not same:  # claim the folder first: an interrupted run then resumes instead of starting over
            target.mkdir(parents=True, exist_ok=True)
            (target / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        with interruptible(f"writing the {source} CAMs to {target}; the same call resumes"):
            for image_id in progress(todo, desc=f"CAMs {source} ({fmt})", unit="img", enabled=show_progress):
                image = load_image(folder.images, image_id)
                keys = image_keys(labels, image_id)
                feats = [(s, pair_features(backbone, image, s, dev)) for s in scales]
                maps = class_cams(feats, weight, keys, image.shape[:2], backbone.output_stride)
                write_cam(target, image_id, fmt, keys, maps)
        folders[source] = target
    return folders


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None

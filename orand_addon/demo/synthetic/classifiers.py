"""Training the two classifiers of the synthetic benchmark on image-level labels only (multi-label BCE).

:func:`train_classifier` is the loop (seeded, AdamW with warm-up and poly decay, flip + shift augmentation);
:func:`fit_or_load` wraps it with a checkpoint (``runtime.atomic_save``) so a rerun reuses the trained model.
Pixel labels are never read: the inputs are the JPEG images and ``cls_labels.npy``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ...errors import OrandError
from ...io.images import load_image
from ...runtime.files import atomic_save, load_checkpoint
from ...runtime.interrupts import interruptible
from ...engine.training import poly_lr
from ...runtime.progress import progress
from ...runtime.devices import resolve_device
from ...runtime.seeding import seed_everything
from .generator import DatasetInfo
from .models import build_classifier

if TYPE_CHECKING:  # torch is imported inside the functions
    import torch

MEAN, STD = 0.5, 0.25


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one classifier's training (stored in its checkpoint)."""

    epochs: int = 15
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    max_shift: int = 8


DEFAULT_CONFIGS: dict[str, TrainConfig] = {
    "cnn": TrainConfig(lr=2e-3, weight_decay=1e-4),
    "vit": TrainConfig(lr=2e-3, weight_decay=0.05),
}


def to_input(images: "torch.Tensor") -> "torch.Tensor":
    """uint8 (B, 3, H, W) -> normalised float (B, 3, H, W).

    >>> import torch
    >>> to_input(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)).flatten().tolist()
    [2.0, 2.0, 2.0]
    """
    return (images.float() / 255 - MEAN) / STD


def load_split(info: DatasetInfo, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, H, W) uint8 and image-level labels (N, C) float32 of ``ids`` (no pixel labels)."""
    labels = info.labels()
    images, targets = [], []
    for image_id in ids:
        image = load_image(info.images, image_id)
        if image.shape[:2] != tuple(info.image_size):
            raise OrandError(f"{image_id}: image is {image.shape[:2]}, the dataset says {info.image_size}")
        classes = labels.get(image_id)
        if classes is None:
            raise OrandError(f"{image_id}: no image-level label in {info.labels_path}")
        target = np.zeros(labels.num_foreground, np.float32)
        target[classes] = 1
        images.append(image.transpose(2, 0, 1))
        targets.append(target)
    return np.stack(images), np.stack(targets)


def augment(batch: "torch.Tensor", max_shift: int, generator: "torch.Generator") -> "torch.Tensor":
    """Random horizontal flip and a random shift of up to ``max_shift`` pixels (reflect padding), per sample.

    >>> import torch
    >>> augment(torch.zeros(2, 3, 8, 8), 2, torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3, 8, 8])
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = batch.shape
    flip = torch.rand(n, generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    if max_shift <= 0:
        return batch
    padded = F.pad(batch, (max_shift,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


def train_classifier(name: str, images: np.ndarray, targets: np.ndarray, config: TrainConfig, seed: int = 0,
                     device: str = "auto", show_progress: bool = True) -> tuple["torch.nn.Module", list[float]]:
    """Train classifier ``name`` (``cnn`` or ``vit``) with multi-label BCE; returns the model (eval mode) and
    the mean training loss of every epoch."""
    import torch
    import torch.nn.functional as F

    dev = resolve_device(device)
    seed_everything(seed)
    model = build_classifier(name, targets.shape[1], images.shape[-2:]).to(dev)
    no_decay = [p.ndim < 2 or n.split(".")[0] in ("pos", "cls") for n, p in model.named_parameters()]
    decay = [p for (_, p), skip in zip(model.named_parameters(), no_decay) if not skip]
    other = [p for (_, p), skip in zip(model.named_parameters(), no_decay) if skip]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=config.lr)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(targets)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(images) // config.batch_size)
    total, warmup = steps_per_epoch * config.epochs, int(steps_per_epoch * config.warmup_epochs)
    history: list[float] = []
    model.train()
    bar = progress(total=total, desc=f"train {name}", unit="step", enabled=show_progress)
    step = 0
    for _epoch in range(config.epochs):
        order = torch.randperm(len(images), generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            x = augment(to_input(x_all[idx]), config.max_shift, gen).to(dev)
            lr = config.lr * (step + 1) / warmup if step < warmup else poly_lr(config.lr, step - warmup, total - warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = F.binary_cross_entropy_with_logits(model(x), y_all[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        history.append(float(np.mean(losses)))
    bar.close()
    return model.eval(), history


def _checkpoint_key(name: str, info: DatasetInfo, config: TrainConfig, seed: int) -> dict:
    return {"name": name, "seed": seed, "config": asdict(config), "image_size": list(info.image_size),
            "n_train": len(info.train_ids), "dataset_seed": info.seed}


def fit_or_load(name: str, info: DatasetInfo, out_dir: str | Path, config: TrainConfig | None = None, seed: int = 0,
                device: str = "auto", show_progress: bool = True) -> tuple["torch.nn.Module", dict]:
    """The trained classifier ``name`` from ``out_dir/<name>.pt`` when it matches, else train and save it.

    Returns the model (eval mode, on ``device``) and the checkpoint record (``history``: loss per epoch).
    """
    config = config or DEFAULT_CONFIGS.get(name, TrainConfig())
    dev = resolve_device(device)
    path = Path(out_dir) / f"{name}.pt"
    key = _checkpoint_key(name, info, config, seed)
    if path.is_file():
        record = load_checkpoint(path)
        if isinstance(record, dict) and record.get("key") == key:
            model = build_classifier(name, len(info.class_names) - 1, info.image_size)
            model.load_state_dict(record["state_dict"])
            return model.to(dev).eval(), record
    images, targets = load_split(info, info.train_ids)
    with interruptible(f"training the {name} classifier (nothing saved yet; the same call trains it again)"):
        model, history = train_classifier(name, images, targets, config, seed, str(dev), show_progress)
    record = {"key": key, "history": history,
              "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    atomic_save(record, path)
    return model, record

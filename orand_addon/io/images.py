"""Images and label PNGs (VOC conventions: palette PNGs, 0 background, 1..C classes, 255 void)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import OrandError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (H, W, 3): ``(x / 255 - mean) / std`` with ImageNet's mean and std (IRN's
    ``TorchvisionNormalize``; padding a normalised image with 0 pads it with the mean colour).

    >>> [round(float(v), 3) for v in imagenet_normalize(np.full((1, 1, 3), 255, np.uint8))[0, 0]]
    [2.249, 2.429, 2.64]
    """
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    return (np.asarray(image).astype(np.float32) / np.float32(255.0) - mean) / std


def voc_palette(n: int = 256) -> np.ndarray:
    """The standard VOC colour map, (n, 3) uint8 (class 1 aeroplane = dark red, 255 void = cream).

    >>> voc_palette()[[0, 1, 15, 255]].tolist()
    [[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]
    """
    palette = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[index] = (r, g, b)
    return palette


def find_image(folder: str | Path, image_id: str) -> Path:
    """``folder/<id>.jpg`` (or .jpeg/.png); error naming the id when absent."""
    folder = Path(folder)
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{image_id}{suffix}"
        if path.is_file():
            return path
    raise OrandError(f"{image_id}: no image {image_id}.jpg/.png in {folder}")


def _checked_decode(path: Path, im: Image.Image, channels: int) -> None:
    """Refuse an image whose pixels would be over the input limit (as float32) before it is decoded."""
    from .limits import OverLimit, check_array, refusal

    w, h = im.size
    try:
        check_array((h, w, channels), np.float32, "the decoded image")
    except OverLimit as exc:
        raise refusal(str(path), exc) from None


def image_size(folder: str | Path, image_id: str) -> tuple[int, int]:
    """(H, W) of an image, from its header only."""
    path = find_image(folder, image_id)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise OrandError(f"{path}: unreadable image ({exc})") from None
    return h, w


def load_image(folder: str | Path, image_id: str) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    path = find_image(folder, image_id)
    try:
        with Image.open(path) as im:
            _checked_decode(path, im, 3)
            return np.asarray(im.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as exc:
        raise OrandError(f"{path}: unreadable image ({exc})") from None


def load_label_png(path: str | Path) -> np.ndarray:
    """Label indices (H, W) uint8 from a palette or greyscale PNG (palette indices, never colours)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise OrandError(f"{path}: label PNG must be palette or greyscale (indices), got mode {im.mode}")
            _checked_decode(path, im, 1)
            arr = np.asarray(im)
    except FileNotFoundError:
        raise OrandError(f"{path}: label PNG not found") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise OrandError(f"{path}: unreadable label PNG ({exc})") from None
    if arr.max(initial=0) > 255:
        raise OrandError(f"{path}: label values above 255")
    return arr.astype(np.uint8)


def save_label_png(path: str | Path, mask: np.ndarray) -> None:
    """Write a mask as a VOC palette PNG (atomically: temporary file, then rename)."""
    from ..runtime.files import atomic_write

    img = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    img.putpalette(_PALETTE)
    atomic_write(path, lambda fh: img.save(fh, format="PNG"), what="label PNG")


_PALETTE = voc_palette().reshape(-1).tolist()

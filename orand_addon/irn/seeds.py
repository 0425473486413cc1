"""IRN's seeds (``step/cam_to_ir_label.py``): confident foreground and background from class maps + dense CRF.

For one image with class maps (K, H, W) at image size and 0-based foreground ``keys``:

1. prepend a constant channel ``fg_thres`` (0.30), take the arg-max, refine the labels with a dense CRF, map the
   channels through ``[0, keys + 1]``: the *foreground pass*;
2. the same with ``bg_thres`` (0.05): the *background pass*;
3. seed = the class of the foreground pass where it is not background; 0 where both passes say background;
   255 (unsure) elsewhere.

The CRF is IRN's ``crf_inference_label``: unary from the labels (``gt_prob`` 0.7, no "unsure" label), a Gaussian
term (sxy 3, compat 3) and a bilateral term (sxy 50, srgb 5, compat 10) on the RGB image, 10 mean-field
iterations. An image with no class (K = 0) gets an all-background seed without running the CRF (a CRF with a
single label cannot change anything).

>>> maps = np.zeros((1, 2, 3), np.float32); maps[0, 0, :2] = [0.9, 0.2]
>>> threshold_labels(maps, 0.30).tolist(), threshold_labels(maps, 0.05).tolist()
([[1, 0, 0], [0, 0, 0]], [[1, 1, 0], [0, 0, 0]])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class CrfParams:
    """Dense CRF settings (IRN's values)."""

    iterations: int = 10
    gt_prob: float = 0.7
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0


@dataclass(frozen=True)
class SeedOptions:
    """Thresholds of the two passes and the CRF (IRN: ``conf_fg_thres`` 0.30, ``conf_bg_thres`` 0.05)."""

    fg_thres: float = 0.30
    bg_thres: float = 0.05
    crf: CrfParams = field(default_factory=CrfParams)


def threshold_labels(maps: np.ndarray, thres: float) -> np.ndarray:
    """Channel arg-max of ``[thres, maps...]``: 0 = background, ``c`` = channel ``c − 1``; ties go to background.

    >>> threshold_labels(np.array([[[0.3, 0.5]]], np.float32), 0.3).tolist()
    [[0, 1]]
    """
    maps = np.asarray(maps, dtype=np.float32)
    stacked = np.concatenate([np.full((1, *maps.shape[1:]), thres, np.float32), maps], axis=0)
    return np.argmax(stacked, axis=0).astype(np.int64)


def channel_to_class(channels: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Map channel indices (0 = background, c = ``keys[c − 1]``) to mask labels (``key + 1``).

    >>> channel_to_class(np.array([[0, 1, 2]]), np.array([4, 14])).tolist()
    [[0, 5, 15]]
    """
    table = np.concatenate([[0], np.asarray(keys, dtype=np.int64).reshape(-1) + 1])
    return table[channels]


def crf_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, params: CrfParams = CrfParams()) -> np.ndarray:
    """IRN's ``crf_inference_label``: dense CRF over ``n_labels`` labels starting from hard ``labels`` (H, W).

    >>> img = np.zeros((40, 60, 3), np.uint8); img[:, 30:] = 255
    >>> lab = np.zeros((40, 60), np.int64); lab[:, 30:] = 1
    >>> bool((crf_labels(img, lab, 2) == lab).all())
    True
    """
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    h, w = labels.shape
    if n_labels < 2:
        return np.zeros((h, w), np.int64)
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=params.gt_prob, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.array(image, dtype=np.uint8, order="C"),  # a writable copy
                             compat=params.bilateral_compat)
    q = np.array(crf.inference(params.iterations)).reshape(n_labels, h, w)
    return np.argmax(q, axis=0).astype(np.int64)


def combine_passes(fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Seed from the class labels of the two passes: fg class, 0 where both are background, else 255.

    >>> combine_passes(np.array([[3, 0, 0]]), np.array([[3, 2, 0]])).tolist()
    [[3, 255, 0]]
    """
    seed = np.where(fg > 0, fg, 255)
    seed[(fg == 0) & (bg == 0)] = 0
    return seed.astype(np.uint8)


def seed_from_labels(image: np.ndarray, fg_channels: np.ndarray, bg_channels: np.ndarray, keys: np.ndarray,
                     crf: CrfParams = CrfParams()) -> np.ndarray:
    """The seed (H, W) uint8 from the thresholded channels of both passes (CRF, keys mapping, combination)."""
    n_labels = len(keys) + 1
    fg = channel_to_class(crf_labels(image, fg_channels, n_labels, crf), keys)
    bg = channel_to_class(crf_labels(image, bg_channels, n_labels, crf), keys)
    return combine_passes(fg, bg)


def make_seed(image: np.ndarray, maps: np.ndarray, keys: np.ndarray, options: SeedOptions = SeedOptions()) -> np.ndarray:
    """IRN's seed of one image: RGB uint8 (H, W, 3), maps (K, H, W), keys (K,) -> uint8 (H, W).

    >>> img = np.zeros((60, 60, 3), np.uint8); img[:20] = 200; img[20:40] = 100    # three bands
    >>> maps = np.zeros((1, 60, 60), np.float32); maps[0, :20] = 1.0; maps[0, 20:40] = 0.1
    >>> make_seed(img, maps, np.array([6]))[::20, 0].tolist()    # class 6 -> 7; 0.1 is unsure; 0 background
    [7, 255, 0]
    """
    return seed_from_labels(image, threshold_labels(maps, options.fg_thres), threshold_labels(maps, options.bg_thres),
                            keys, options.crf)

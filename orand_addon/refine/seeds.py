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

The thresholding and the channel -> class mapping are :func:`orand_addon.masks.maps_to_channels` and
:func:`~orand_addon.masks.channels_to_labels` (the steps of ``maps_to_mask``, with the CRF in between).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..masks import channels_to_labels, maps_to_channels


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
    fg = channels_to_labels(crf_labels(image, fg_channels, n_labels, crf), keys)
    bg = channels_to_labels(crf_labels(image, bg_channels, n_labels, crf), keys)
    return combine_passes(fg, bg)


def make_seed(image: np.ndarray, maps: np.ndarray, keys: np.ndarray, options: SeedOptions = SeedOptions()) -> np.ndarray:
    """IRN's seed of one image: RGB uint8 (H, W, 3), maps (K, H, W), keys (K,) -> uint8 (H, W).

    >>> img = np.zeros((60, 60, 3), np.uint8); img[:20] = 200; img[20:40] = 100    # three bands
    >>> maps = np.zeros((1, 60, 60), np.float32); maps[0, :20] = 1.0; maps[0, 20:40] = 0.1
    >>> make_seed(img, maps, np.array([6]))[::20, 0].tolist()    # class 6 -> 7; 0.1 is unsure; 0 background
    [7, 255, 0]
    """
    return seed_from_labels(image, maps_to_channels(maps, options.fg_thres), maps_to_channels(maps, options.bg_thres),
                            keys, options.crf)

"""Segmentation stage: DeepLab on the pseudo-masks with scale scheduling (DESIGN §7, docs/segmentation.md).

The Python API, imported lazily (``orand_addon.segment.schedule`` needs no torch)::

    from orand_addon.segment import SegTrainConfig, train_segmentation, segment_images
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "SegTrainConfig": "train",
    "train_segmentation": "train",
    "segment_images": "stage",
    "SegmentConfig": "stage",
    "load_segmenter": "infer",
    "build_model": "models",
    "MODELS": "models",
    "LOSSES": "losses",
    "parse_schedule": "schedule",
    "factor_for_epoch": "schedule",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""orand-addon: the ORANDNet ensemble (Park & Shim, AAAI 2024 workshop) as a drop-in final step for WSSS CAMs.

The public Python API is re-exported here and imported lazily (``import orand_addon`` stays fast)::

    from orand_addon import fuse_or, fuse_and, read_cams, random_walk, confusion_matrix, segmentation_scores
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "fuse_or": "orand_addon.fusion",
    "fuse_and": "orand_addon.fusion",
    "fuse_mean": "orand_addon.fusion",
    "normalize_max": "orand_addon.fusion",
    "read_cams": "orand_addon.io.sources",
    "CamRecord": "orand_addon.io.formats",
    "CAM_FORMATS": "orand_addon.io.formats",
    "Store": "orand_addon.store",
    "maps_to_mask": "orand_addon.masks",
    "run_fuse": "orand_addon.fuse",
    "FuseOptions": "orand_addon.fuse",
    "OrandError": "orand_addon.errors",
    "random_walk": "orand_addon.irn.random_walk",
    "confusion_matrix": "orand_addon.metrics.functional",
    "segmentation_scores": "orand_addon.metrics.functional",
    "ConfusionAccumulator": "orand_addon.metrics.functional",
    "ThresholdSweep": "orand_addon.metrics.functional",
    "evaluate": "orand_addon.metrics.evaluate",
    "EvalResult": "orand_addon.metrics.evaluate",
    "train_orandnet": "orand_addon.orandnet.train",
    "TrainConfig": "orand_addon.orandnet.train",
    "predict_orandnet": "orand_addon.orandnet.predict",
    "PredictConfig": "orand_addon.orandnet.predict",
    "train_segmentation": "orand_addon.seg.train",
    "SegTrainConfig": "orand_addon.seg.train",
    "segment_images": "orand_addon.seg.infer",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'orand_addon' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__

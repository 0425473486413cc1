"""orand-addon: the ORANDNet ensemble (Park & Shim, AAAI 2024 workshop) as a drop-in final step for WSSS CAMs.

The public Python API is re-exported here and imported lazily (``import orand_addon`` stays fast)::

    from orand_addon import fuse_or, fuse_and, read_cams, random_walk, confusion_matrix, segmentation_scores
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "fuse_or": "fusion",
    "fuse_and": "fusion",
    "fuse_mean": "fusion",
    "normalize_max": "fusion",
    "read_cams": "io.sources",
    "CamRecord": "io.formats",
    "CAM_FORMATS": "io.formats",
    "Store": "store",
    "maps_to_mask": "masks",
    "run_fuse": "fuse",
    "FuseOptions": "fuse",
    "OrandError": "errors",
    "random_walk": "irn.random_walk",
    "confusion_matrix": "metrics.functional",
    "segmentation_scores": "metrics.functional",
    "ConfusionAccumulator": "metrics.functional",
    "ThresholdSweep": "metrics.functional",
    "evaluate": "metrics.evaluate",
    "EvalResult": "metrics.evaluate",
    "train_orandnet": "orandnet.train",
    "TrainConfig": "orandnet.train",
    "predict_orandnet": "orandnet.predict",
    "PredictConfig": "orandnet.predict",
    "train_segmentation": "seg.train",
    "SegTrainConfig": "seg.train",
    "segment_images": "seg.infer",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, ["__version__"])

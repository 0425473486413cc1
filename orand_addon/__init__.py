"""orand-addon: the ORANDNet ensemble (Park & Shim, AAAI 2024 workshop) as a drop-in final step for WSSS CAMs.

The public Python API is re-exported here and imported lazily (``import orand_addon`` stays fast)::

    from orand_addon import fuse_or, fuse_and, read_cams, random_walk, confusion_matrix, segmentation_scores
"""

from __future__ import annotations

from .lazy import lazy_exports

from .version import __version__  # noqa: F401 (in __all__)

_EXPORTS: dict[str, str] = {
    "fuse_or": "fuse.functional",
    "fuse_and": "fuse.functional",
    "fuse_mean": "fuse.functional",
    "normalize_max": "fuse.functional",
    "read_cams": "io.sources",
    "CamRecord": "io.formats",
    "CAM_FORMATS": "io.formats",
    "Store": "store.store",
    "maps_to_mask": "masks",
    "run_fuse": "fuse.stage",
    "FuseOptions": "fuse.stage",
    "OrandError": "errors",
    "random_walk": "refine.random_walk",
    "confusion_matrix": "evaluation.functional",
    "segmentation_scores": "evaluation.functional",
    "ConfusionAccumulator": "evaluation.functional",
    "ThresholdSweep": "evaluation.functional",
    "evaluate": "evaluation.stage",
    "EvalResult": "evaluation.stage",
    "train_orandnet": "orandnet.train",
    "TrainConfig": "orandnet.train",
    "predict_orandnet": "orandnet.predict",
    "PredictConfig": "orandnet.predict",
    "train_segmentation": "segment.train",
    "SegTrainConfig": "segment.train",
    "segment_images": "segment.stage",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, ["__version__"])

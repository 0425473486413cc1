"""orand-addon: the ORANDNet ensemble (Park & Shim, AAAI 2024 workshop) as a drop-in final step for WSSS CAMs.

The public Python API is re-exported here and imported lazily (``import orand_addon`` stays fast; torch is imported
only by what needs it)::

    from orand_addon import fuse_or, fuse_and, read_cams, random_walk, confusion_matrix, segmentation_scores

Each stage is a function taking its config object: :func:`run_fuse` (:class:`FuseOptions`), :func:`train_orandnet`
(:class:`TrainConfig`), :func:`predict_orandnet` (:class:`PredictConfig`), ``orand_addon.refine.refine``
(:class:`RefineConfig`; the name ``refine`` at the top is the stage's package),
:func:`train_segmentation` (:class:`SegTrainConfig`), :func:`segment_images` (:class:`SegmentConfig`),
:func:`evaluate`; a new per-image stage subclasses :class:`Stage` and runs with :func:`run_stage`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports
from .version import __version__  # noqa: F401 (in __all__)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load on first use
    from .engine.stage import ImageResult, RunOptions, Stage, StageReport, run_stage
    from .errors import Interrupted, OrandError
    from .evaluation.functional import (ConfusionAccumulator, ThresholdSweep, confusion_matrix,
                                        segmentation_scores)
    from .evaluation.stage import EvalResult, evaluate
    from .fuse.functional import fuse_and, fuse_mean, fuse_or, normalize_max
    from .fuse.stage import FuseOptions, run_fuse
    from .io.formats import CAM_FORMATS, CamRecord
    from .io.sources import read_cams
    from .masks import maps_to_mask
    from .orandnet.predict import PredictConfig, predict_orandnet
    from .orandnet.train import TrainConfig, train_orandnet
    from .refine.pipeline import RefineConfig
    from .refine.random_walk import random_walk
    from .segment.stage import SegmentConfig, segment_images
    from .segment.train import SegTrainConfig, train_segmentation
    from .store.store import Store

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
    "Interrupted": "errors",
    "random_walk": "refine.random_walk",
    "RefineConfig": "refine.pipeline",
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
    "SegmentConfig": "segment.stage",
    "Stage": "engine.stage",
    "ImageResult": "engine.stage",
    "RunOptions": "engine.stage",
    "StageReport": "engine.stage",
    "run_stage": "engine.stage",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, ["__version__"])

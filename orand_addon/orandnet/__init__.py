"""ORANDNet: the VGG16 FCN-8s that maps the OR map of a class to its AND map (DESIGN §5).

Pure parts: :mod:`.model` (the network, weight mapping), :mod:`.losses` (registry of training losses).
Shells: :mod:`.data` (store -> class-map batches), :mod:`.train` (``train_orandnet``), :mod:`.predict`
(``predict_orandnet``). Heavy imports (torch) happen inside those modules, so importing this package is cheap.

    from orand_addon.orandnet import TrainConfig, train_orandnet, predict_orandnet
    ckpt = train_orandnet("fused.h5", "runs/orandnet", TrainConfig(iterations=5000))
    predict_orandnet("fused.h5", ckpt)
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "FCN8s": "model",
    "ARCHS": "model",
    "build_model": "model",
    "load_orandnet": "model",
    "LOSSES": "losses",
    "get_loss": "losses",
    "TrainConfig": "train",
    "train_orandnet": "train",
    "PredictConfig": "predict",
    "predict_orandnet": "predict",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

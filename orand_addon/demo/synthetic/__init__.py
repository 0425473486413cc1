"""The synthetic WSSS testbed: a VOC-layout dataset with exact ground truth and two real CAM sources.

::

    from orand_addon.demo.synthetic import make_dataset, make_cams, resolve_size

    size = resolve_size("default")                      # or "ci", "large", "default,n_train=2000"
    info = make_dataset("run/data", size.n_train, size.n_val, size.image_size, seed=0)
    dirs = make_cams(info.root, "run/cams", seed=0, epochs={"cnn": size.cnn_epochs, "vit": size.vit_epochs})
    # dirs["cnn"]: AMN-format dumps of a small ResNet; dirs["vit"]: MCTformer-format dumps of a small ViT

Both classifiers learn from the image-level labels only (``cls_labels.npy``). See ``docs/synthetic.md``.
Heavy modules (torch) are imported on first use.
"""

from __future__ import annotations

from ...lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "make_dataset": "generator",
    "load_dataset": "generator",
    "DatasetInfo": "generator",
    "CLASS_NAMES": "scene",
    "SizeSpec": "sizes",
    "SIZES": "sizes",
    "resolve_size": "sizes",
    "make_cams": "cams",
    "SOURCE_FORMATS": "cams",
    "fit_or_load": "classifiers",
    "TrainConfig": "classifiers",
    "build_classifier": "models",
    "evaluate_testbed": "sanity",
    "format_table": "sanity",
    "plot_examples": "figure",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

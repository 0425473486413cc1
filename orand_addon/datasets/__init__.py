"""Real datasets in their published layouts, turned into the VOC layout that every command reads.

::

    from orand_addon.datasets import prepare_msrc
    folder = prepare_msrc("MSRC_ObjCategImageDatabase_v2", "msrc_voc")   # Images/ + newsegmentations_mats/
    folder.images, folder.masks, folder.labels_path, folder.classes_path, folder.train_ids

:mod:`.matfile` reads MATLAB ``.mat`` files with numpy alone (no scipy); :mod:`.msrc` maps MSRC-v2's classes,
derives the image-level labels and fixes the split; :mod:`.prepare` writes the work folder.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "read_mat": "matfile",
    "MatFileError": "matfile",
    "ClassMap": "msrc",
    "CLASSES": "msrc",
    "read_msrc_gt": "msrc",
    "image_labels": "msrc",
    "make_split": "msrc",
    "spread": "msrc",
    "VocFolder": "folder",
    "MsrcFolder": "prepare",
    "prepare_msrc": "prepare",
    "load_msrc_folder": "prepare",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""The checks of ``train-seg`` and ``segment`` before they start (see :mod:`.problems`), and their id lists:
without a list they take the ids actually present, with a list every id must be there (else one line saying how
many are missing and how to pass a list).

* ``train-seg``: training ids = those with both an image and a mask (``--train-list`` to choose); validation ids
  (with ``--gt``) = those with an image and ground truth that are not training ids (``--val-list`` to choose).
  On VOC with masks of ``train_aug`` that is ``val``.
* ``segment``: with ``--gt`` the ids with an image and ground truth, else every image (``--ids`` to choose).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from .checks import check_folder, check_weights, folder_ids, missing_ids_problem, read_list, store_ids
from .problems import Problems


def mask_ids(p: Problems, spec: str) -> set[str] | None:
    """The ids of a ``--masks`` source (a store group or a PNG folder); None when it cannot be read (recorded)."""
    from ..segment.data import MaskReader, parse_mask_source

    source = p.run(parse_mask_source, spec)
    if source is None or p.run(MaskReader, source) is None:
        return None
    if source.kind == "png":
        return folder_ids(source.path, (".png",))
    return set(store_ids(source.path, source.group) or ())


def resolve_train_seg(p: Problems, c, train_spec: str | None, val_spec: str | None):
    """``c`` (a SegTrainConfig) with its training and validation lists resolved to ids; every problem recorded.
    Returns ``(config, notes)``."""
    from ..segment.config import check_config
    from ..segment.models import MODELS
    from ..segment.state import check_run_folder

    notes: list[str] = []
    p.run(check_run_folder, Path(c.out), c.resume)
    images = folder_ids(c.images) if check_folder(p, "--images", c.images, "image") else None
    masks = mask_ids(p, c.masks)
    train = _train_ids(p, c, train_spec, images, masks)
    if train is not None and 0 < len(train) < c.batch_size:
        p.add(f"--batch-size {c.batch_size}: more than the {len(train)} training images (use a smaller --batch-size)")
    val = _val_ids(p, c, val_spec, images, train, notes)
    if c.model in MODELS and c.pretrained not in ("none", "", None):
        check_weights(p, MODELS[c.model].arch, c.pretrained)
    resolved = dataclasses.replace(c, train_list=train or [], val_list=val or None, gt=c.gt if val else None)
    p.run(check_config, resolved)
    return resolved, notes


def _train_ids(p: Problems, c, spec: str | None, images: set[str] | None,
               masks: set[str] | None) -> list[str] | None:
    listed = read_list(p, "--train-list", spec)
    if images is None or masks is None:
        return listed
    have = images & masks
    if listed is not None:
        p.add(missing_ids_problem("--train-list", str(spec), listed, have,
                                  f"no image in {c.images} or no mask in {c.masks}", "to train on every id with both"))
        return listed
    if not have:
        p.add(f"no id has both an image in {c.images} and a mask in {c.masks} ({len(images)} images, {len(masks)} "
              f"masks): nothing to train on")
    return sorted(have)


def _val_ids(p: Problems, c, spec: str | None, images: set[str] | None, train: Sequence[str] | None,
             notes: list[str]) -> list[str] | None:
    listed = read_list(p, "--val-list", spec)
    if c.gt is None:
        if listed is not None:
            p.add("--val-list needs --gt: per-epoch validation scores against ground truth")
        return None
    if not check_folder(p, "--gt", c.gt, "ground-truth") or images is None:
        return listed
    have = images & folder_ids(c.gt, (".png",))
    if listed is not None:
        p.add(missing_ids_problem("--val-list", str(spec), listed, have,
                                  f"no image in {c.images} or no ground truth in {c.gt}",
                                  "to validate on every id with both that is not a training id"))
        return listed
    val = sorted(have - set(train or ()))
    if not val:
        notes.append(f"no validation: every id with an image and ground truth in {c.gt} is a training id "
                     f"(--val-list chooses ids)")
    return val


def resolve_segment_ids(p: Problems, checkpoint: str, images: str, spec: str | None, gt: str | None,
                        out: str | None, store: str | None) -> list[str]:
    """The ids ``segment`` takes (see the module docstring); every problem recorded."""
    if not Path(checkpoint).is_file():
        p.add(f"{checkpoint}: checkpoint not found (--checkpoint takes RUN_DIR/model.pt of 'orand-addon train-seg', "
              f"or its last.pt)")
    if out is None and store is None:
        p.add("segment: give --out DIR (PNG masks) and/or --store STORE.h5")
    have = folder_ids(images) if check_folder(p, "--images", images, "image") else None
    truth = folder_ids(gt, (".png",)) if gt is not None and check_folder(p, "--gt", gt, "ground-truth") else None
    listed = read_list(p, "--ids", spec)
    if listed is not None:
        for present, what in ((have, f"no image in {images}"), (truth, f"no ground truth in {gt}")):
            if present is not None:
                p.add(missing_ids_problem("--ids", str(spec), listed, present, what,
                                          "to segment every image" + (" with ground truth" if gt else "")))
        return listed
    if have is None or (gt is not None and truth is None):
        return []
    ids = sorted(have & truth) if truth is not None else sorted(have)
    if not ids:
        p.add(f"no image in {images}" + (f" has ground truth in {gt}" if gt else "") + ": nothing to segment")
    return ids

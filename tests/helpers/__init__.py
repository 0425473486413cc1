"""The shared test helpers, one concern per module:

* :mod:`.builders` — small set-ups the stage tests share (a tiny fused store, small images with pseudo-CAMs);
* :mod:`.data` — real VOC images (tests/data/voc12-mini), their official masks, pseudo-CAMs and native dumps;
* :mod:`.references` — independent references of the formulas (Eq. 1, metrics, the mask rule);
* :mod:`.cli` — the command line in this process (:func:`run`) or with Ctrl-C pressed (:func:`ctrl_c_during`);
* :mod:`.torchrun` — real multi-process runs on the loopback;
* :mod:`.stores` — comparing stores and reading shards;
* :mod:`.real` — MSRC-v2 and the optional weight packages (skips with the reason when missing);
* :mod:`.testers` — scenarios every stage of a kind must pass (a killed rank, an interrupted training), each stage
  a short subclass.
"""

from .builders import (CLASS_COLOURS, SHRINK, add_empty_image, make_tiny_store, small_mask, small_voc, tiny_voc,
                       two_source_dumps, voc_pairs, write_store)
from .cli import CTRL_C_AFTER, ctrl_c_during, run
from .data import (DATA, GT, JPEG, VOC_MINI, gt_classes, gt_mask, one_torch_thread, pseudo_cams, voc_mini_ids,
                   write_voc_mini_cams)
from .real import MSRC_ENV, hed_weights, msrc_root, require_real_extra
from .references import (ref_mask, ref_pairs, ref_scores, reference_bg_softmax, reference_official,
                         reference_or_and)
from .stores import assert_same_store, complete_ids, ids_of, leave_parts, shard_complete, written
from .torchrun import DIST_ENV, free_port, loopback, one_process_env, torchrun

__all__ = ["CLASS_COLOURS", "SHRINK", "add_empty_image", "make_tiny_store", "small_mask", "small_voc", "tiny_voc",
           "two_source_dumps", "voc_pairs", "write_store", "reference_bg_softmax", "reference_official", "written",
           "CTRL_C_AFTER", "ctrl_c_during", "run", "DATA", "GT", "JPEG", "VOC_MINI", "gt_classes", "gt_mask",
           "one_torch_thread", "pseudo_cams", "voc_mini_ids", "write_voc_mini_cams", "ref_mask", "ref_pairs",
           "ref_scores", "reference_or_and", "assert_same_store", "complete_ids", "ids_of",
           "leave_parts", "shard_complete",
           "DIST_ENV", "free_port", "loopback", "one_process_env", "torchrun", "MSRC_ENV", "hed_weights", "msrc_root",
           "require_real_extra"]

"""The evaluation shell: stream a prediction source against ground-truth PNGs into dataset-level counts.

:func:`evaluate` reads one image at a time (or chunks of ids in worker processes), adds it to a
:class:`~.functional.ConfusionAccumulator` (masks) or :class:`~.functional.ThresholdSweep` (maps, every
threshold in the same pass), and returns an :class:`EvalResult`. Memory does not grow with the number of images.

Background threshold for maps when neither ``bg_thres`` nor ``sweep`` is given: ``default_bg_thres`` when given
(a recipe's or config file's ``bg-thres``, which masks ignore), else 0.25 for the random-walk kind ``rw`` (IRN's
``sem_seg_bg_thres``) and 0.15 for everything else (IRN's ``cam_eval_thres``).

Scoring rules (each a parameter, the official ORANDNet evaluation in brackets): ``scored_classes`` all | drop-last
[drop-last: 20 VOC classes], ``undefined`` zero | nan [nan], ``precision_rule`` first-ge | official [official],
and ``unsure`` miss | ignore [ignore: its 20x20 matrix drops every prediction outside 0..19].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from ..classes import ClassSet, ImageLabels, get_class_set
from ..errors import Interrupted, OrandError
from ..runtime.progress import progress as progress_bar
from ..runtime.workers import worker_pool
from .functional import (PRECISION_RULES, SCORED, UNDEFINED, UNSURE_POLICIES, ConfusionAccumulator, ThresholdSweep,
                         best_index, drop_last_class, parse_sweep, precision_aware_index, segmentation_scores)
from .predictions import GroundTruth, Prediction, PredSpec, open_prediction, resize_prediction

DEFAULT_BG_THRES = 0.15
KIND_BG_THRES = {"rw": 0.25}
EXAMPLES_IN_ERRORS = 5


@dataclass
class EvalResult:
    """Dataset-level counts of one evaluation and everything derived from them.

    ``conf`` is (T, C, C) and ``unsure`` (T, C), one row per threshold (T = 1 for masks or one threshold);
    ``thresholds`` is None for masks. ``selected`` is the headline threshold: the given one, or the best-mIoU
    one of a sweep.
    """

    pred: str
    gt: str
    class_names: list[str]
    ids: list[str]
    mode: str  # "masks", "threshold" or "sweep"
    conf: np.ndarray
    unsure: np.ndarray
    thresholds: list[float] | None = None
    unsure_pixels: int = 0
    unsure_policy: str = "miss"
    resized: int = 0
    scored_classes: str = "all"
    undefined: str = "zero"
    precision_rule: str = "first-ge"
    extra: dict = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return len(self.ids)

    @cached_property
    def scores(self) -> list[dict]:
        """:func:`segmentation_scores` per threshold."""
        return [segmentation_scores(c, u, self.undefined) for c, u in zip(self.conf, self.unsure)]

    def curve(self, metric: str) -> np.ndarray:
        """A mean metric (``mean_iou``, ``mean_precision``...) per threshold."""
        return np.array([s[metric] for s in self.scores])

    @property
    def best(self) -> int | None:
        """Index of the best-mIoU threshold (None for masks)."""
        return best_index(self.curve("mean_iou")) if self.thresholds is not None else None

    @property
    def precision_aware(self) -> int | None:
        """Index of the precision-aware threshold under ``precision_rule`` (None for masks; with ``first-ge``
        also when precision never reaches recall)."""
        if self.thresholds is None:
            return None
        return precision_aware_index(self.curve("mean_precision"), self.curve("mean_recall"), self.precision_rule)

    @property
    def best_threshold(self) -> float | None:
        return None if self.best is None else self.thresholds[self.best]

    @property
    def precision_aware_threshold(self) -> float | None:
        return None if self.precision_aware is None else self.thresholds[self.precision_aware]

    @property
    def selected(self) -> int:
        return self.best if self.mode == "sweep" and self.best is not None else 0

    @property
    def threshold(self) -> float | None:
        return None if self.thresholds is None else self.thresholds[self.selected]

    @property
    def headline(self) -> dict:
        """Scores at the selected threshold."""
        return self.scores[self.selected]

    def to_dict(self) -> dict:
        """The ``--json`` document: means, per-class numbers by class name, confusion matrix, sweep curves."""
        from .results import result_dict

        return result_dict(self)


def default_bg_thres(pred: str) -> float:
    """The background threshold used when none is given (see the module docstring).

    >>> default_bg_thres("run/fused.h5:rw"), default_bg_thres("cams/amn")
    (0.25, 0.15)
    """
    kind = str(pred).rsplit(":", 1)[-1] if ".h5:" in str(pred) or ".hdf5:" in str(pred) else ""
    return KIND_BG_THRES.get(kind, DEFAULT_BG_THRES)


def _thresholds(holds: str, pred: str, bg_thres: float | None, sweep: str | Sequence[float] | None,
                fallback: float | None = None) -> list[float] | None:
    if bg_thres is not None and sweep is not None:
        raise OrandError("give either a background threshold (--bg-thres) or a sweep (--sweep), not both")
    if holds == "masks":
        if bg_thres is not None or sweep is not None:
            raise OrandError(f"{pred} holds label masks; --bg-thres and --sweep apply to class maps only")
        return None
    if sweep is not None:
        values = parse_sweep(sweep) if isinstance(sweep, str) else np.asarray(sweep, np.float64)
        return [float(v) for v in values]
    if bg_thres is None:
        bg_thres = fallback if fallback is not None else default_bg_thres(pred)
    return [float(bg_thres)]


def check_rules(unsure: str, scored_classes: str, undefined: str, precision_rule: str) -> None:
    """One-line errors for unknown scoring rules."""
    for what, value, valid in (("unsure policy", unsure, UNSURE_POLICIES), ("class set rule", scored_classes, SCORED),
                               ("rule for undefined scores", undefined, UNDEFINED),
                               ("precision-aware rule", precision_rule, PRECISION_RULES)):
        if value not in valid:
            raise OrandError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def _list(ids: Sequence[str]) -> str:
    more = f" (+{len(ids) - EXAMPLES_IN_ERRORS} more)" if len(ids) > EXAMPLES_IN_ERRORS else ""
    return ", ".join(ids[:EXAMPLES_IN_ERRORS]) + more


def resolve_ids(available: Sequence[str], gt: GroundTruth, ids: Sequence[str] | None, pred: str) -> list[str]:
    """The ids to score: ``ids`` or all of the prediction's; each needs a prediction and a ground truth."""
    wanted = list(dict.fromkeys(ids)) if ids is not None else list(available)
    if not wanted:
        raise OrandError(f"{pred}: no predictions to evaluate")
    have = set(available)
    no_pred = [i for i in wanted if i not in have]
    if no_pred:
        raise OrandError(f"{len(no_pred)} ids have no prediction in {pred}: {_list(no_pred)}")
    no_gt = gt.missing(wanted)
    if no_gt:
        raise OrandError(f"{len(no_gt)} ids have no ground truth in {gt.path}: {_list(no_gt)}; "
                         f"pass --ids to score a subset")
    return wanted


@dataclass(frozen=True)
class _Job:
    spec: PredSpec
    gt: str
    num_classes: int
    thresholds: tuple[float, ...] | None
    unsure: str
    resize_pred: bool


def _new_accumulator(job: _Job):
    if job.thresholds is None:
        return ConfusionAccumulator(job.num_classes, unsure=job.unsure)
    return ThresholdSweep(job.num_classes, job.thresholds)


def score_image(acc, pred: Prediction, gt: np.ndarray, image_id: str, resize: bool, gt_file: Path) -> bool:
    """Add one image to ``acc``; returns whether the prediction had to be resized."""
    resized = pred.size != gt.shape
    if resized:
        if not resize:
            h, w = pred.size
            raise OrandError(f"{image_id}: prediction is {h}x{w} but the ground truth {gt_file} is "
                             f"{gt.shape[0]}x{gt.shape[1]}; pass --resize-pred to resize predictions")
        pred = resize_prediction(pred, gt.shape)
    if isinstance(acc, ThresholdSweep):
        acc.update(gt, pred.maps, pred.keys, name=image_id)
    else:
        acc.update(gt, pred.mask, name=image_id)
    return resized


def _score_ids(job: _Job, source, ids: Sequence[str], bar=None):
    gt = GroundTruth(job.gt)
    acc = _new_accumulator(job)
    resized = 0
    for image_id in ids:
        resized += score_image(acc, source.read(image_id), gt.read(image_id), image_id, job.resize_pred,
                               gt.file(image_id))
        if bar is not None:
            bar.update(1)
    return acc, resized


_WORKER: dict = {}


def _init_worker(job: _Job) -> None:
    _WORKER["job"], _WORKER["source"] = job, open_prediction(job.spec)


def _score_chunk(ids: list[str]):
    return _score_ids(_WORKER["job"], _WORKER["source"], ids), len(ids)


def _run(job: _Job, source, ids: list[str], workers: int, progress: bool):
    bar = progress_bar(total=len(ids), desc="evaluate", unit="img", enabled=progress)
    try:
        if workers <= 1:
            return _score_ids(job, source, ids, bar)
        size = max(8, -(-len(ids) // (workers * 8)))
        chunks = [ids[i:i + size] for i in range(0, len(ids), size)]
        acc, resized = _new_accumulator(job), 0
        # never forked (torch may be loaded and threaded in this process); the workers leave Ctrl-C to it
        with worker_pool(workers, _init_worker, (job,)) as pool:
            for (part, part_resized), n in pool.imap_unordered(_score_chunk, chunks):
                acc.merge(part)
                resized += part_resized
                bar.update(n)
        return acc, resized
    except KeyboardInterrupt:
        raise Interrupted("interrupted; an evaluation writes nothing until it has counted every image") from None
    finally:
        bar.close()


def evaluate(
    pred: str | Path,
    gt: str | Path,
    ids: Sequence[str] | None = None,
    *,
    bg_thres: float | None = None,
    sweep: str | Sequence[float] | None = None,
    classes: str | ClassSet = "voc",
    format: str = "auto",
    labels: ImageLabels | None = None,
    unsure: str = "miss",
    resize_pred: bool = False,
    workers: int = 1,
    progress: bool = False,
    scored_classes: str = "all",
    undefined: str = "zero",
    precision_rule: str = "first-ge",
    default_bg_thres: float | None = None,
) -> EvalResult:
    """Score ``pred`` (``STORE.h5:KIND``, a CAM folder or a folder of label PNGs) against the label PNGs in ``gt``.

    Maps become masks with ``bg_thres`` (default: see the module docstring) or are scored at every threshold
    of ``sweep`` (``"0.05:0.60:0.01"`` or a list) in one pass. ``unsure`` says what a mask value 255 (no
    prediction, e.g. IRN seeds) counts as: ``miss`` (default) or ``ignore``. Sizes must match the ground truth
    unless ``resize_pred``. ``format`` and ``labels`` are passed to :func:`orand_addon.read_cams`.
    ``scored_classes``, ``undefined`` and ``precision_rule``: the scoring rules of the module docstring.
    """
    class_set = classes if isinstance(classes, ClassSet) else get_class_set(classes)
    check_rules(unsure, scored_classes, undefined, precision_rule)
    if scored_classes == "drop-last" and class_set.num_classes < 3:
        raise OrandError(f"scoring without the last class needs at least 3 classes, {class_set.name} has "
                         f"{class_set.num_classes}")
    ground_truth = GroundTruth(gt)
    spec = PredSpec(str(pred), format, labels)
    source = open_prediction(spec)
    try:
        thresholds = _thresholds(source.holds, str(pred), bg_thres, sweep, default_bg_thres)
        todo = resolve_ids(source.ids(), ground_truth, ids, source.describe())
        job = _Job(spec, str(gt), class_set.num_classes, tuple(thresholds) if thresholds else None, unsure,
                   resize_pred)
        workers = workers if len(todo) >= 2 * workers else 1
        if workers > 1:  # each worker opens its own reader; no open HDF5 handle is forked
            source.close()
        acc, resized = _run(job, source, todo, workers, progress)
    finally:
        source.close()
    conf, unsure_counts = acc.confusions()
    names = list(class_set.names)
    if scored_classes == "drop-last":
        conf, unsure_counts = drop_last_class(conf, unsure_counts)
        names = names[:-1]
    mode = "masks" if thresholds is None else ("sweep" if sweep is not None else "threshold")
    return EvalResult(
        pred=str(pred), gt=str(gt), class_names=names, ids=todo, mode=mode, conf=conf,
        unsure=unsure_counts, thresholds=thresholds, unsure_policy=unsure, resized=resized,
        unsure_pixels=int(acc.unsure.sum()) if isinstance(acc, ConfusionAccumulator) else 0,
        scored_classes=scored_classes, undefined=undefined, precision_rule=precision_rule,
    )

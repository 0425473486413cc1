"""``orand-addon train-seg`` and ``orand-addon segment``: DeepLab on the pseudo-masks, then masks for new images."""

from __future__ import annotations

import dataclasses
import json
import math

import click

from ..registries import SCALE_SCHEDULES, SEG_LOSSES, SEG_MODELS, help_text
from ..runtime.distributed import DistInfo
from . import recipe_option
from .checks_seg import resolve_segment_ids, resolve_train_seg
from .common import (command_line, device_option, echo_lines, precision_option, progress_option, seed_option,
                     workers_option)
from .problems import Problems

# parameter names of the run records -> the options that set them ("... differ" messages name the options)
PARAMETER_OPTIONS = {"train_ids": "--train-list (its ids)", "class_names": "--classes (the masks' classes)",
                     "checkpoint_sha256": "--checkpoint content"}

MAX_SCALE = 8.0  # segment --scales: 8 x a VOC image is already 4000 x 3000 pixels


def parse_floats(text: str, option: str, count: int | None = None, maximum: float | None = None
                 ) -> tuple[float, ...]:
    """``"0.5,1.0"`` -> ``(0.5, 1.0)``: finite positive numbers (at most ``maximum``); a usage error naming
    ``option`` otherwise.

    >>> parse_floats("0.5, 1.5", "--scale-range", 2)
    (0.5, 1.5)
    >>> parse_floats("1,nan", "--scales")
    Traceback (most recent call last):
    ...
    click.exceptions.BadParameter: '1,nan': expected positive numbers, comma-separated
    """
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=option) from None
    if not values or (count is not None and len(values) != count) or any(not 0 < v < math.inf for v in values):
        want = f"{count} positive numbers" if count else "positive numbers"
        raise click.BadParameter(f"{text!r}: expected {want}, comma-separated", param_hint=option)
    if maximum is not None and max(values) > maximum:
        raise click.BadParameter(f"{text!r}: at most {maximum:g} (a larger scale makes a larger image than any "
                                 f"network input)", param_hint=option)
    return values


@click.command(name="train-seg", context_settings={"max_content_width": 110})
@click.option("--images", type=click.Path(file_okay=False), required=True, help="Image folder (<id>.jpg/.png).")
@click.option("--masks", required=True,
              help="Pseudo-masks: STORE.h5 (group masks), STORE.h5:GROUP, or a folder of label PNGs (<id>.png).")
@click.option("--train-list", default=None,
              help="Training ids: a list file (one id per line), or train/train_aug for the bundled VOC lists. "
                   "Default: every id with an image and a mask.")
@click.option("--val-list", default=None,
              help="Validation ids for a per-epoch mIoU (needs --gt). Default with --gt: every id with an image and "
                   "ground truth that is not a training id (VOC: val).")
@click.option("--gt", type=click.Path(file_okay=False), default=None,
              help="Ground-truth label PNGs: validate every epoch.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run folder (checkpoints, logs).")
@click.option("--model", default="deeplabv2-resnet101", show_default=True, help=f"One of: {', '.join(SEG_MODELS)}.")
@click.option("--scale-schedule", default="8:2,4:2,2:2", show_default=True,
              help="factor:epochs phases in order, then full size (8:2,4:2,2:2 = epochs 1-2 at 1/8, 3-4 at 1/4, "
                   "5-6 at 1/2); factor@end spells end epochs (8@2,4@4,2@6 is the same); none: off; or a name: "
                   + help_text(SCALE_SCHEDULES) + ".")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=10, show_default=True,
              help="Images per step, all processes together (under torchrun each takes batch-size / N).")
@click.option("--crop-size", type=int, default=321, show_default=True)
@click.option("--scale-range", default="0.5,1.5", show_default=True, help="Random rescaling range LOW,HIGH.")
@click.option("--lr", type=float, default=2.5e-4, show_default=True, help="Backbone learning rate (head: x10).")
@click.option("--head-lr-mult", type=float, default=10.0, show_default=True, help="Head learning rate / --lr.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True,
              help="sgd: the DeepLab recipe; adamw: learns faster from scratch (small CPU runs, e.g. --lr 1e-3).")
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--power", type=float, default=0.9, show_default=True, help="Poly learning-rate decay power.")
@click.option("--loss", default="ce", show_default=True, help=help_text(SEG_LOSSES) + ".")
@click.option("--smoothing", type=float, default=0.1, show_default=True, help="Label smoothing of balanced-ls-ce.")
@click.option("--pretrained", default="imagenet", show_default=True,
              help="Backbone weights: imagenet (torchvision's ResNet*_Weights.IMAGENET1K_V1 from "
                   "$TORCH_HOME/hub/checkpoints, downloaded there when missing; deeplabv1-resnet38: PSA/SEAM's "
                   "ilsvrc-cls_rna-a1_cls1000_ep-0001.params or a PSA-key .pth there), a file, or none (from scratch).")
@click.option("--bn", type=click.Choice(["auto", "frozen", "train"]), default="auto", show_default=True,
              help="Backbone batch norm; auto: frozen with pretrained weights, trained from scratch.")
@click.option("--classes", "class_spec", default=None,
              help="Class set for PNG masks: voc (default), coco, or a names file. A store brings its own.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@device_option
@precision_option
@workers_option
@seed_option
@progress_option
@recipe_option("train-seg")
def train_seg(**kw) -> None:
    """Train DeepLab on images + pseudo-masks with scale scheduling.

    \b
    Examples:
      orand-addon train-seg --images VOC2012/JPEGImages --masks fused.h5 --gt VOC2012/SegmentationClassAug \\
          --out runs/deeplab
      orand-addon train-seg --images VOC2012/JPEGImages --masks fused.h5 --train-list train_aug \\
          --val-list val --gt VOC2012/SegmentationClassAug --out runs/deeplab
      orand-addon train-seg ... --out runs/deeplab --resume            # after Ctrl-C
      orand-addon train-seg ... --scale-schedule 8@2,4@4,2@6           # the same schedule, end epochs
      orand-addon train-seg ... --scale-schedule none --model deeplabv3-resnet101
      orand-addon train-seg ... --recipe paper     # DeepLab-v1 LargeFOV on ResNet-38, balanced-ls-ce, schedule

    Without --train-list it trains on every id that has an image and a mask; a list must name ids that have
    both. Every option and input is checked before training starts (all problems at once). The cost of the run is
    printed after its first steps; Ctrl-C stops within seconds and saves RUN_DIR/last.pt (the last finished
    step); --resume continues exactly.

    \b
    Several GPUs or machines (DDP; --batch-size is the global batch, split over the processes; rank 0 writes
    RUN_DIR; resumable with any number of processes that divides --batch-size):
      torchrun --nproc-per-node 4 -m orand_addon train-seg ... --batch-size 16 --out runs/deeplab
    """
    from ..runtime.distributed import dist_info
    from ..segment.train import SegTrainConfig, train_segmentation

    names = {f.name for f in dataclasses.fields(SegTrainConfig)}
    config = SegTrainConfig(**{k: v for k, v in kw.items() if k in names and k != "scale_range"},
                            classes=kw["class_spec"], show_progress=kw["progress"],
                            scale_range=parse_floats(kw["scale_range"], "--scale-range", 2))
    problems = Problems()
    config, notes = resolve_train_seg(problems, config, kw["train_list"], kw["val_list"])
    problems.raise_if_any()
    if dist_info().is_main:
        for note in notes:
            click.echo(f"note: {note}", err=True)
    path = train_segmentation(config)
    if dist_info().is_main:
        click.echo(f"wrote {path}")


@click.command(name="segment", context_settings={"max_content_width": 110})
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True, help="RUN_DIR/model.pt (or last.pt).")
@click.option("--images", type=click.Path(file_okay=False), required=True, help="Image folder (<id>.jpg/.png).")
@click.option("--ids", default=None,
              help="Ids to segment: a list file (one id per line), or val/test/train for the bundled VOC lists. "
                   "Default: every image with ground truth (--gt), else every image.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder for VOC palette PNG masks.")
@click.option("--store", default=None, help="Also (or instead) write masks to STORE.h5 group seg (STORE.h5:GROUP).")
@click.option("--scales", default="0.5,0.75,1.0,1.25,1.5", show_default=True,
              help=f"Inference scales (averaged), each in (0, {MAX_SCALE:g}].")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Also average horizontally flipped input.")
@click.option("--crf/--no-crf", default=False, show_default=True, help="Refine with a dense CRF (pydensecrf).")
@click.option("--gt", type=click.Path(file_okay=False), default=None, help="Ground-truth label PNGs: report mIoU.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the scores as JSON.")
@click.option("--overwrite", is_flag=True, help="Recompute masks already written (other parameters too).")
@device_option
@precision_option
@progress_option
def segment(**kw) -> None:
    """Segment images with a trained DeepLab: multi-scale + flip, optional CRF; score against --gt.

    \b
    Examples:
      orand-addon segment --checkpoint runs/deeplab/model.pt --images VOC2012/JPEGImages --ids val \\
          --out runs/deeplab/val --gt VOC2012/SegmentationClassAug
      orand-addon segment --checkpoint runs/deeplab/model.pt --images VOC2012/JPEGImages --ids test \\
          --out runs/deeplab/test --crf --scales 1.0

    Masks already written are kept (an interrupted run resumes) and still scored.

    \b
    Several GPUs or machines (torchrun; each rank segments every N-th id, PNGs into --out, store masks into
    its shard STORE.rankR-of-N.h5; with --gt rank 0 reports the scores of all ids):
      torchrun --nproc-per-node 4 -m orand_addon segment --checkpoint runs/deeplab/model.pt \\
          --images VOC2012/JPEGImages --ids val --out runs/deeplab/val --store seg.h5 --gt VOC2012/SegmentationClassAug
      orand-addon merge --from-shards seg.h5
    """
    from ..runtime.distributed import dist_info
    from ..segment.stage import SegmentConfig, segment_images

    store, group = kw["store"], "seg"
    if store and ":" in store.rsplit("/", 1)[-1]:
        store, group = store.rsplit(":", 1)
    scales = parse_floats(kw["scales"], "--scales", maximum=MAX_SCALE)  # a usage error, as click's own
    problems = Problems()
    ids = resolve_segment_ids(problems, kw["checkpoint"], kw["images"], kw["ids"], kw["gt"], kw["out"], store)
    problems.raise_if_any()
    dist = dist_info()
    config = SegmentConfig(out=kw["out"], store=store, group=group, scales=scales,
                           flip=kw["flip"], crf=kw["crf"], gt=kw["gt"], device=kw["device"],
                           precision=kw["precision"], overwrite=kw["overwrite"], show_progress=kw["progress"])
    result = segment_images(kw["checkpoint"], kw["images"], ids, config, command=command_line(), dist=dist)
    echo_lines(summary_lines(result, dist, store, kw["gt"]))
    if kw["json_path"] and dist.is_main:
        with open(kw["json_path"], "w") as fh:
            json.dump(result, fh, indent=1)


def summary_lines(result: dict, dist: DistInfo, store: str | None, gt: str | None = None) -> list[str]:
    """What ``segment`` prints: the images done (per rank under torchrun, with the merge to run for a store) and,
    on rank 0, the scores of all ids."""
    where = "".join(f" -> {result[k]}" for k in ("out", "store") if result[k])
    done = f"segmented {result['written']} images ({result['skipped']} already done){where}"
    if not dist.enabled:
        lines = [done]
    else:
        lines = [f"rank {dist.rank} of {dist.world_size}: {done}"
                 + (f"; when every rank is done: orand-addon merge --from-shards {store}" if store else "")]
    if "miou" in result and dist.is_main:
        lines.append(f"mIoU {100 * result['miou']:.2f}, precision {100 * result['mean_precision']:.2f}, recall "
                     f"{100 * result['mean_recall']:.2f}" + (" (all ranks)" if dist.enabled else ""))
        lines += score_table(result, gt)
    return lines


def score_table(result: dict, gt: str | None) -> list[str]:
    """The per-class table of ``evaluate`` (IoU, precision, recall, FP/union, FN/union, GT pixels) from the
    confusion matrix that ``segment`` counted."""
    import numpy as np

    from ..evaluation.results import table_lines
    from ..evaluation.stage import EvalResult

    conf = np.asarray(result["confusion"], np.int64)
    scored = EvalResult(pred=result["out"] or result["store"] or "segment", gt=str(gt), class_names=list(result["iou"]),
                        ids=[""] * result["scored"], mode="masks", conf=conf[None], unsure=np.zeros((1, len(conf))))
    return table_lines(scored)[1:]

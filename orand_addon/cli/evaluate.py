"""``orand-addon evaluate``: score any stage (CAMs, fused maps, ORANDNet, random walk, masks, seeds, segmentation
predictions) against ground-truth label PNGs: mIoU, precision, recall, thresholds, report, CI gate."""

from __future__ import annotations

from pathlib import Path

import click

from ..registries import PRECISION_AWARE_RULES, SCORED_CLASSES, UNDEFINED_SCORES, help_text
from . import recipe_option
from .checks import check_evaluate, read_list
from .common import FORMAT_CHOICES, class_options, echo_lines, progress_option, workers_option
from .problems import Problems


def from_defaults(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` took its value from ``ctx.default_map`` (a recipe or a --config file)."""
    return ctx.get_parameter_source(name) == click.core.ParameterSource.DEFAULT_MAP


def _has_npy(pred: str) -> bool:
    path = Path(pred)
    return path.is_dir() and next(path.glob("*.npy"), None) is not None


@click.command(context_settings={"max_content_width": 110})
@click.option("--pred", required=True, metavar="STORE.h5:KIND|DIR",
              help="What to score: a store kind (fused.h5:or, fused.h5:masks, fused.h5:seeds), a CAM folder in "
                   "any readable format, or a folder of label PNGs.")
@click.option("--gt", required=True, type=click.Path(), metavar="DIR",
              help="Ground-truth label PNGs <id>.png (VOC SegmentationClassAug; 255 = void, ignored).")
@click.option("--ids", type=click.Path(), default=None, metavar="LIST",
              help="Only these ids: a list file or train/train_aug/val for the bundled VOC lists "
                   "(default: every prediction).")
@click.option("--bg-thres", type=click.FloatRange(min=0, min_open=False), default=None, metavar="T",
              help="Constant background score turning maps into masks (a pixel whose highest class map is below "
                   "it is background) [default: 0.15; 0.25 for kind rw]. Not refine's --seed-bg-thres.")
@click.option("--sweep", default=None, metavar="A:B:S",
              help="Score every threshold A, A+S, ..., B in one pass; report the best-mIoU and the "
                   "precision-aware threshold (e.g. 0.05:0.60:0.01).")
@click.option("--format", "cam_format", type=click.Choice(FORMAT_CHOICES), default="auto", show_default=True,
              help="Format of a CAM folder (auto decides only when unambiguous).")
@click.option("--unsure", type=click.Choice(["miss", "ignore"]), default="miss", show_default=True,
              help="Mask value 255 (no prediction, e.g. IRN seeds): miss counts the pixel against its class's "
                   "recall and IoU; ignore leaves it out like void ground truth.")
@click.option("--scored-classes", type=click.Choice(list(SCORED_CLASSES)), default="all", show_default=True,
              help=help_text(SCORED_CLASSES) + ".")
@click.option("--undefined-as", "undefined", type=click.Choice(list(UNDEFINED_SCORES)), default="zero",
              show_default=True, help=help_text(UNDEFINED_SCORES) + ". A class absent from both sides is always "
                                      "left out.")
@click.option("--precision-rule", type=click.Choice(list(PRECISION_AWARE_RULES)), default="first-ge",
              show_default=True, help="The precision-aware threshold of a sweep: " + help_text(PRECISION_AWARE_RULES)
                                      + ".")
@click.option("--resize-pred", is_flag=True,
              help="Resize predictions whose size differs from the ground truth (maps bilinear, masks nearest) "
                   "instead of stopping.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write every number (per class, means, confusion matrix, sweep curves) as JSON.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write per-class numbers as CSV.")
@click.option("--report", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write pictures and an HTML page (needs the plot extra: pip install 'orand-addon[plot]').")
@click.option("--images", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Image folder (JPEGImages) for the report's examples.")
@click.option("--examples", type=click.IntRange(0, 64), default=4, show_default=True,
              help="Example rows in the report.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="An earlier --json output: exit 1 naming every metric that fell more than --tolerance below it.")
@click.option("--tolerance", type=float, default=0.5, show_default=True, metavar="X",
              help="Allowed drop against --baseline, in points of percent (0.5 = half a mIoU point).")
@click.option("--gate-per-class", is_flag=True, help="Also gate each class's IoU, not only the means.")
@class_options
@workers_option
@progress_option
@recipe_option("evaluate")
def evaluate(**kw) -> None:
    """Score predictions against ground truth: per-class IoU, precision, recall, FP/union, FN/union and their
    means over all classes (background included), counted over the whole dataset.

    \b
    Examples:
      orand-addon evaluate --pred fused.h5:or --gt VOC2012/SegmentationClassAug --sweep 0.05:0.60:0.01
      orand-addon evaluate --pred fused.h5:masks --gt VOC2012/SegmentationClassAug --ids train --json m.json
      orand-addon evaluate --pred amn_cams/ --gt VOC2012/SegmentationClassAug --bg-thres 0.25 \\
          --report report/ --images VOC2012/JPEGImages
      orand-addon evaluate --pred seg_out/ --gt VOC2012/SegmentationClassAug --ids val \\
          --baseline last.json --tolerance 0.5

    Maps become masks with a constant background threshold; --sweep finds the best-mIoU threshold and the
    precision-aware one (--precision-rule). --recipe official scores as the released ORANDNet code: 20 VOC
    classes, NaN-excluded means, its threshold rule, background threshold 0.25 (a --bg-thres from a recipe or
    --config is ignored for masks and gives way to --sweep). Exit status: 0 ok, 1 below the baseline, 2 bad
    input.

    \b
      orand-addon evaluate --pred fused.h5:orandnet --gt VOC2012/SegmentationClassAug --ids train --recipe official
    """
    from ..classes import get_class_set, load_labels
    from ..evaluation.stage import evaluate as run_evaluate
    from ..evaluation.predictions import PredSpec
    from ..evaluation.results import gate, result_dict, table_lines, write_csv, write_json

    default_thres = None
    if kw["bg_thres"] is not None and from_defaults(click.get_current_context(), "bg_thres"):
        default_thres, kw["bg_thres"] = kw["bg_thres"], None  # a recipe's or --config's: for maps, if no --sweep
    problems = Problems()
    class_set = problems.run(get_class_set, kw["class_spec"])
    labels = problems.run(load_labels, kw["labels"], class_set) if kw["labels"] and class_set else None
    if labels is None and class_set is not None and class_set.name == "voc" and kw["cam_format"] == "auto" \
            and _has_npy(kw["pred"]):
        labels = load_labels(None, class_set)  # the bundled labels tell mctformer from crf-dict dumps
    ids = read_list(problems, "--ids", kw["ids"])
    check_evaluate(problems, kw["pred"], kw["gt"], kw["bg_thres"], kw["sweep"], kw["images"],
                   kw["report"], kw["baseline"], kw["tolerance"])
    problems.raise_if_any()
    result = run_evaluate(
        kw["pred"], kw["gt"], ids, bg_thres=kw["bg_thres"], sweep=kw["sweep"], classes=class_set,
        format=kw["cam_format"], labels=labels, unsure=kw["unsure"], resize_pred=kw["resize_pred"],
        workers=kw["workers"], progress=kw["progress"], scored_classes=kw["scored_classes"],
        undefined=kw["undefined"], precision_rule=kw["precision_rule"], default_bg_thres=default_thres,
    )
    echo_lines(table_lines(result))
    doc = result_dict(result)
    if kw["json_path"]:
        write_json(result, kw["json_path"])
        click.echo(f"wrote {kw['json_path']}")
    if kw["csv_path"]:
        write_csv(result, kw["csv_path"])
        click.echo(f"wrote {kw['csv_path']}")
    if kw["report"]:
        from ..evaluation.report import write_report

        page = write_report(result, kw["report"], images=kw["images"], examples=kw["examples"],
                            spec=PredSpec(kw["pred"], kw["cam_format"], labels))
        click.echo(f"wrote {page}")
    if kw["baseline"]:
        click.echo(gate(doc, kw["baseline"], kw["tolerance"], kw["gate_per_class"]))

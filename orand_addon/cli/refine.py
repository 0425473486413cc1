"""``orand-addon refine``: IRN on stored maps — seeds + CRF, IRN training, random walk -> kind ``rw`` and masks.

Under torchrun: DDP training, and per-rank shards for the seeds and the walk (see ``orand_addon.refine.pipeline``)."""

from __future__ import annotations

import click

from ..registries import IRN_BACKBONES, IRN_LABEL_SAMPLING, help_text
from . import recipe_option
from .checks import check_refine, read_list
from .common import (command_line, device_option, dtype_option, echo_lines, precision_option, progress_option,
                     seed_option)
from .problems import Problems


# renamed options whose old spelling still works (hidden): old parameter -> new parameter
ALIASES = {"bg_thres": "seed_bg_thres", "fg_thres": "seed_fg_thres"}
# parameter names of the store's records -> the options that set them ("... differ" messages name the options)
PARAMETER_OPTIONS = {"seeds:fg_thres": "--seed-fg-thres", "seeds:bg_thres": "--seed-bg-thres",
                     "crf": "--crf-iterations", "bg_thres": "--sem-seg-bg-thres", "kind": "--kind",
                     "kind_parameters": "--kind maps' parameters", "checkpoint_sha256": "--checkpoint content",
                     "dir": "--seeds-png"}


def parse_edge_pad(text: str) -> int | None:
    """``--edge-pad``: ``auto`` -> None (the IRN checkpoint's crop size), ``none`` -> 0, or a size in pixels.

    >>> parse_edge_pad("auto"), parse_edge_pad("none"), parse_edge_pad("512")
    (None, 0, 512)
    """
    text = str(text).strip().lower()
    if text == "auto":
        return None
    if text in ("none", "0"):
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise click.BadParameter(f"{text!r}: expected auto, none or a size in pixels", param_hint="--edge-pad")
    return value


def _seed_opts(f):
    f = click.option("--crf-iterations", type=click.IntRange(0, 100), default=10, show_default=True,
                     help="Dense CRF mean-field iterations of each seed pass.")(f)
    f = click.option("--bg-thres", "bg_thres", type=float, default=None, hidden=True)(f)  # old spelling
    f = click.option("--fg-thres", "fg_thres", type=float, default=None, hidden=True)(f)  # old spelling
    f = click.option("--seed-bg-thres", type=float, default=0.05, show_default=True,
                     help="Seeds: constant background score of the background pass (IRN conf_bg_thres); not the "
                          "masks' threshold (--sem-seg-bg-thres).")(f)
    f = click.option("--seed-fg-thres", type=float, default=0.30, show_default=True,
                     help="Seeds: constant background score of the foreground pass (IRN conf_fg_thres).")(f)
    return f


def _train_opts(f):
    for decorator in reversed([
        click.option("--pretrained", default="imagenet", show_default=True,
                     help="IRN's ResNet-50 backbone: imagenet (torchvision's ResNet50_Weights.IMAGENET1K_V1 from "
                          "$TORCH_HOME/hub/checkpoints, downloaded there when missing), a weights file, or none "
                          "(needs --backbone trainable)."),
        click.option("--backbone", type=click.Choice(["frozen", "trainable"]), default="frozen", show_default=True,
                     help="frozen: IRN's fixed ImageNet backbone; trainable: train it too (no ImageNet weights)."),
        click.option("--arch", type=click.Choice(list(IRN_BACKBONES)), default="resnet50", show_default=True,
                     help="Backbone network: " + help_text(IRN_BACKBONES) + "."),
        click.option("--crop-size", type=click.IntRange(16, 4096), default=512, show_default=True),
        click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True,
                     help="Crops per step: the global batch, split evenly over the processes under torchrun."),
        click.option("--epochs", type=click.IntRange(1, 1000), default=3, show_default=True),
        click.option("--max-steps", type=click.IntRange(1, None), default=None,
                     help="Stop after this many steps (the poly schedule spans them)."),
        click.option("--lr", type=float, default=0.1, show_default=True, help="Boundary-head learning rate."),
        click.option("--dp-lr", type=float, default=1.0, show_default=True, help="Displacement-head learning rate."),
        click.option("--backbone-lr", type=float, default=None, help="Trainable backbone learning rate (default: --lr)."),
        click.option("--weight-decay", type=float, default=1e-4, show_default=True),
        click.option("--momentum", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                     help="SGD momentum (IRN's PolyOptimizer effectively used 1e-4)."),
        click.option("--label-sampling", type=click.Choice(list(IRN_LABEL_SAMPLING)), default="nearest",
                     show_default=True, help="Stride-4 labels of the training crops: " + help_text(IRN_LABEL_SAMPLING)
                     + "."),
        precision_option,
        click.option("--checkpoint-every", type=click.IntRange(1, None), default=100, show_default=True,
                     help="Save RUN_DIR/irn_last.pt every N steps."),
        click.option("--resume/--no-resume", default=True, show_default=True,
                     help="Continue from RUN_DIR/irn_last.pt (and skip a finished RUN_DIR/irn.pt) when the "
                          "settings match; --no-resume trains again from scratch."),
    ]):
        f = decorator(f)
    return f


def _walk_opts(f):
    for decorator in reversed([
        click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
                     help="IRN weights for the walk (default: RUN_DIR/irn.pt)."),
        click.option("--beta", type=float, default=10.0, show_default=True, help="Affinity exponent."),
        click.option("--exp-times", type=click.IntRange(0, 16), default=8, show_default=True,
                     help="The walk applies the transition 2^exp_times times."),
        click.option("--radius", type=click.IntRange(1, 20), default=5, show_default=True,
                     help="Neighbourhood radius of the walk (stride-4 pixels)."),
        click.option("--sem-seg-bg-thres", type=float, default=0.25, show_default=True,
                     help="Masks: constant background score against the random-walk maps (IRN sem_seg_bg_thres; "
                          "what evaluate calls --bg-thres)."),
        click.option("--cam-power", type=float, default=1.0, show_default=True,
                     help="Raise the stride-4 maps to this power before the walk (AMN: 1.3)."),
        click.option("--edge-pad", default="auto", show_default=True,
                     help="Zero-pad each image (and its flip) on the right and bottom to NxN before the boundary "
                          "network, then crop back, as IRN (512); auto: the IRN training crop size; none: off."),
        dtype_option,
    ]):
        f = decorator(f)
    return f


@click.command(context_settings={"max_content_width": 110})
@click.option("--store", type=click.Path(dir_okay=False), required=True, help="The HDF5 store (read and written).")
@click.option("--kind", default="orandnet", show_default=True, help="Maps to refine (any kind in the store).")
@click.option("--images", type=click.Path(file_okay=False), required=True, help="Image folder (<id>.jpg).")
@click.option("--steps", default="seeds,train,walk", show_default=True, help="Any of seeds, train, walk.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where IRN weights go (default: <store>_irn next to the store).")
@click.option("--seeds-png", type=click.Path(file_okay=False), default=None,
              help="Take the seeds from <id>.png label files (0, 1..C, 255) instead of computing them.")
@click.option("--ids", type=click.Path(), default=None,
              help="Only these ids: a list file or train/train_aug/val (default: every id of --kind / seeds).")
@click.option("--classes", "class_spec", default=None,
              help="Class set: voc, coco, or a text file with one class name per line. A store created by "
                   "--seeds-png gets it (default voc); an existing store must have it (default: its own).")
@_seed_opts
@_train_opts
@_walk_opts
@click.option("--workers", type=click.IntRange(0, 256), default=None,
              help="CRF processes for the seeds (default: every CPU core) and data-loader workers for training "
                   "(default: up to 4).")
@click.option("--overwrite", is_flag=True, help="Replace /seeds, rw and /masks written earlier with other settings.")
@device_option
@seed_option
@progress_option
@recipe_option("refine")
def refine(**kw) -> None:
    """Refine stored maps with IRN: seeds + dense CRF -> /seeds, IRN training -> RUN_DIR/irn.pt, random walk ->
    kind rw and /masks (uint8 pseudo-masks).

    \b
    Examples:
      orand-addon refine --store fused.h5 --kind orandnet --images VOC2012/JPEGImages
      orand-addon refine --store fused.h5 --kind orandnet --images VOC2012/JPEGImages --steps seeds --workers 16
      orand-addon refine --store fused.h5 --kind orandnet --images VOC2012/JPEGImages --steps walk \\
          --checkpoint runs/irn/irn.pt --cam-power 1.3
      orand-addon refine --store syn.h5 --kind or --images syn/images --pretrained none --backbone trainable \\
          --crop-size 128 --batch-size 8

    The train step needs ImageNet ResNet-50 weights (--pretrained imagenet: torchvision's resnet50-0676ba61.pth,
    downloaded into $TORCH_HOME/hub/checkpoints when missing) unless --pretrained none --backbone trainable.
    Every option, input and the weights are checked before the first step starts; all problems are reported at
    once. Every step resumes: a rerun of the same command skips the seeds and masks already written and continues
    the training from RUN_DIR/irn_last.pt.

    \b
    Several GPUs or machines (torchrun; see docs/distributed.md):
      torchrun --nproc-per-node 4 -m orand_addon refine --store fused.h5 --images JPEGImages --steps seeds
      orand-addon merge --from-shards fused.h5
      torchrun --nproc-per-node 4 -m orand_addon refine --store fused.h5 --images JPEGImages --steps train,walk
      orand-addon merge --from-shards fused.h5
    Training is DDP (--batch-size stays the global batch); seeds and walk write one shard per rank.
    """
    from ..classes import get_class_set
    from ..runtime.distributed import dist_info
    from ..refine.pipeline import RefineConfig, refine as run_refine
    from ..refine.seeds import CrfParams, SeedOptions
    from ..refine.train import TrainOptions
    from ..refine.walk_stage import WalkOptions

    for old, new in ALIASES.items():
        value = kw.pop(old)
        if value is not None:
            kw[new] = value
    problems = Problems()
    listed = read_list(problems, "--ids", kw["ids"])
    class_set = problems.run(get_class_set, kw["class_spec"]) if kw["class_spec"] else None
    seed_options = SeedOptions(kw["seed_fg_thres"], kw["seed_bg_thres"], CrfParams(iterations=kw["crf_iterations"]))
    train_options = TrainOptions(
        crop_size=kw["crop_size"], batch_size=kw["batch_size"], epochs=kw["epochs"], lr=kw["lr"], dp_lr=kw["dp_lr"],
        backbone_lr=kw["backbone_lr"], weight_decay=kw["weight_decay"], momentum=kw["momentum"],
        label_sampling=kw["label_sampling"], backbone=kw["backbone"], arch=kw["arch"], pretrained=kw["pretrained"],
        max_steps=kw["max_steps"], seed=kw["seed"])
    walk_options = WalkOptions(beta=kw["beta"], exp_times=kw["exp_times"], radius=kw["radius"],
                               bg_thres=kw["sem_seg_bg_thres"], cam_power=kw["cam_power"], dtype=kw["dtype"],
                               edge_pad=parse_edge_pad(kw["edge_pad"]))
    config = RefineConfig(
        steps=kw["steps"], run_dir=kw["run_dir"], seeds_png=kw["seeds_png"],
        ids=tuple(listed) if listed else None, seed_options=seed_options,
        train_options=train_options, walk_options=walk_options, checkpoint=kw["checkpoint"], workers=kw["workers"],
        device=kw["device"], precision=kw["precision"], resume=kw["resume"], checkpoint_every=kw["checkpoint_every"],
        overwrite=kw["overwrite"], progress=kw["progress"],
        class_names=tuple(class_set.names) if class_set is not None else None)
    dist = dist_info()
    check_refine(problems, kw["store"], kw["kind"], kw["images"], config, dist, kw["ids"])
    problems.raise_if_any()
    report = run_refine(kw["store"], kw["kind"], kw["images"], config, command=command_line(), dist=dist)
    echo_lines(report.lines())

"""``orand-addon refine``: IRN on stored maps — seeds + CRF, IRN training, random walk -> kind ``rw`` and masks.

Under torchrun: DDP training, and per-rank shards for the seeds and the walk (see ``orand_addon.refine.pipeline``)."""

from __future__ import annotations

import click

from ..registries import IRN_BACKBONES, help_text
from .common import (command_line, device_option, dtype_option, echo_lines, precision_option, progress_option,
                     seed_option)


def _seed_opts(f):
    f = click.option("--crf-iterations", type=click.IntRange(0, 100), default=10, show_default=True,
                     help="Dense CRF mean-field iterations of each seed pass.")(f)
    f = click.option("--bg-thres", type=float, default=0.05, show_default=True,
                     help="Seeds: constant background of the background pass (IRN conf_bg_thres).")(f)
    f = click.option("--fg-thres", type=float, default=0.30, show_default=True,
                     help="Seeds: constant background of the foreground pass (IRN conf_fg_thres).")(f)
    return f


def _train_opts(f):
    for decorator in reversed([
        click.option("--pretrained", default="imagenet", show_default=True,
                     help="Backbone weights: imagenet (torchvision file in $TORCH_HOME/hub/checkpoints), a file, "
                          "or none."),
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
                     help="Constant background score of the masks."),
        click.option("--cam-power", type=float, default=1.0, show_default=True,
                     help="Raise the stride-4 maps to this power before the walk (AMN: 1.3)."),
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

    Every step resumes: a rerun of the same command skips the seeds and masks already written and continues
    the training from RUN_DIR/irn_last.pt.

    \b
    Several GPUs or machines (torchrun; see docs/distributed.md):
      torchrun --nproc-per-node 4 -m orand_addon refine --store fused.h5 --images JPEGImages --steps seeds
      orand-addon merge --from-shards fused.h5
      torchrun --nproc-per-node 4 -m orand_addon refine --store fused.h5 --images JPEGImages --steps train,walk
      orand-addon merge --from-shards fused.h5
    Training is DDP (--batch-size stays the global batch); seeds and walk write one shard per rank.
    """
    from ..classes import get_class_set, read_id_list
    from ..runtime.distributed import dist_info
    from ..refine.pipeline import RefineConfig, refine as run_refine
    from ..refine.seeds import CrfParams, SeedOptions
    from ..refine.train import TrainOptions
    from ..refine.walk_stage import WalkOptions

    seed_options = SeedOptions(kw["fg_thres"], kw["bg_thres"], CrfParams(iterations=kw["crf_iterations"]))
    train_options = TrainOptions(
        crop_size=kw["crop_size"], batch_size=kw["batch_size"], epochs=kw["epochs"], lr=kw["lr"], dp_lr=kw["dp_lr"],
        backbone_lr=kw["backbone_lr"], weight_decay=kw["weight_decay"], backbone=kw["backbone"],
        arch=kw["arch"], pretrained=kw["pretrained"], max_steps=kw["max_steps"], seed=kw["seed"])
    walk_options = WalkOptions(beta=kw["beta"], exp_times=kw["exp_times"], radius=kw["radius"],
                               bg_thres=kw["sem_seg_bg_thres"], cam_power=kw["cam_power"], dtype=kw["dtype"])
    config = RefineConfig(
        steps=kw["steps"], run_dir=kw["run_dir"], seeds_png=kw["seeds_png"],
        ids=tuple(read_id_list(kw["ids"])) if kw["ids"] else None, seed_options=seed_options,
        train_options=train_options, walk_options=walk_options, checkpoint=kw["checkpoint"], workers=kw["workers"],
        device=kw["device"], precision=kw["precision"], resume=kw["resume"], checkpoint_every=kw["checkpoint_every"],
        overwrite=kw["overwrite"], progress=kw["progress"],
        class_names=tuple(get_class_set(kw["class_spec"]).names) if kw["class_spec"] else None)
    report = run_refine(kw["store"], kw["kind"], kw["images"], config, command=command_line(), dist=dist_info())
    echo_lines(report.lines())

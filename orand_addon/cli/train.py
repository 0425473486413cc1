"""``orand-addon train``: train ORANDNet (VGG16 FCN-8s, OR map -> AND map) on the store."""

from __future__ import annotations

import click

from ..registries import ORANDNET_ARCHS, ORANDNET_CROPS, ORANDNET_LOSSES, ORANDNET_LR_SCHEDULES, help_text
from . import recipe_option
from .checks import check_train, read_list
from .problems import Problems
from .common import device_option, precision_option, progress_option, seed_option, workers_option



@click.command(context_settings={"max_content_width": 110})
@click.option("--store", "store_path", type=click.Path(dir_okay=False), required=True,
              help="HDF5 store with kinds or and and (from 'orand-addon fuse'). Only read.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Run folder: last.pt while training (resumable: weights + optimizer state), model.pt at the end "
                   "(weights only, for predict), train_log.json (settings and losses).")
@click.option("--iterations", type=int, default=5000, show_default=True,
              help="SGD steps, each on ranks x --accumulate images (one image with one process).")
@click.option("--accumulate", type=int, default=1, show_default=True,
              help="Images per process per step, gradients averaged (one process with --accumulate N takes the "
                   "steps of torchrun --nproc-per-node N).")
@click.option("--pretrained", default="imagenet", show_default=True,
              help="imagenet (torchvision's VGG16_Weights.IMAGENET1K_V1, vgg16-397923af.pth, from "
                   "$TORCH_HOME/hub/checkpoints; downloaded there when missing), a weights file (VGG16, ORANDNet or "
                   "the official EncDec encdec*.pth), or none.")
@click.option("--loss", type=click.Choice(list(ORANDNET_LOSSES)), default="official", show_default=True,
              help=help_text(ORANDNET_LOSSES) + ".")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Base learning rate (poly decay).")
@click.option("--momentum", type=float, default=0.0, show_default=True,
              help="SGD momentum (the paper names none; the official run effectively used 1e-4).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True,
              help="SGD weight decay (paper: none).")
@click.option("--power", type=float, default=0.9, show_default=True, help="Poly decay power.")
@click.option("--lr-schedule", type=click.Choice(list(ORANDNET_LR_SCHEDULES)), default="poly", show_default=True,
              help=help_text(ORANDNET_LR_SCHEDULES) + ".")
@click.option("--checkpoint-every", type=int, default=500, show_default=True,
              help="Save RUN_DIR/last.pt every N iterations (also on Ctrl-C).")
@click.option("--resume", is_flag=True, help="Continue RUN_DIR/last.pt exactly (same options required).")
@click.option("--ids", type=click.Path(), default=None,
              help="Train only on these ids: a list file or train/train_aug/val (bundled VOC lists).")
@click.option("--arch", type=click.Choice(list(ORANDNET_ARCHS)), default="fcn8s", show_default=True,
              help=help_text(ORANDNET_ARCHS) + ".")
@click.option("--crop", type=click.Choice(list(ORANDNET_CROPS)), default="aligned", show_default=True,
              help="Crop rule of fcn8s (recorded in the checkpoint; predict uses it): "
                   + help_text(ORANDNET_CROPS) + ".")
@click.option("--width-div", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Divide every VGG16 channel count by N (tiny smoke-test models; ImageNet weights need 1).")
@precision_option
@device_option
@workers_option
@seed_option
@progress_option
@recipe_option("train")
def train(store_path: str, out_dir: str, ids: str | None, resume: bool, **kw) -> None:
    """Train ORANDNet: the VGG16 FCN-8s that maps each class's OR map to its AND map.

    One step is one image with all its classes, at full resolution, as the paper; SGD with poly decay. The cost of
    the run is printed after its first steps. Ctrl-C stops within seconds and saves RUN_DIR/last.pt (the last
    finished iteration); the same command with --resume continues exactly where it stopped. At the end
    RUN_DIR/model.pt (weights only) replaces last.pt.

    \b
    Examples:
      orand-addon train --store fused.h5 --out runs/orandnet
      orand-addon train --store fused.h5 --out runs/orandnet --resume
      orand-addon train --store fused.h5 --out runs/bg --loss bg-softmax --iterations 2000
      orand-addon train --store fused.h5 --out runs/official --recipe official   # the released run's settings
      orand-addon train --store fused.h5 --out runs/scratch --pretrained none --device cpu

    \b
    Several GPUs or machines (DDP; global batch = processes x --accumulate images; rank 0 writes RUN_DIR):
      torchrun --nproc-per-node 4 -m orand_addon train --store fused.h5 --out runs/ddp --iterations 1250
    """
    from ..runtime.distributed import dist_info
    from ..orandnet.train import TrainConfig, train_orandnet

    problems = Problems()
    listed = read_list(problems, "--ids", ids)
    config = TrainConfig(ids=tuple(listed) if listed else None, **kw)
    check_train(problems, store_path, out_dir, config, resume, ids)
    problems.raise_if_any()
    ckpt = train_orandnet(store_path, out_dir, config, resume=resume, echo=lambda line: click.echo(line, err=True))
    if dist_info().is_main:
        click.echo(f"wrote {ckpt}")

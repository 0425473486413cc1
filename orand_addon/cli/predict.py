"""``orand-addon predict``: apply a trained ORANDNet to the store's OR maps, writing kind ``orandnet``."""

from __future__ import annotations

import click

from ..registries import MAP_NORMS, help_text
from . import recipe_option
from .checks import check_predict, read_list
from .problems import Problems
from .common import command_line, device_option, dtype_option, overwrite_option, precision_option, progress_option


@click.command(context_settings={"max_content_width": 110})
@click.option("--store", "store_path", type=click.Path(dir_okay=False), required=True,
              help="HDF5 store with kind or; kind orandnet is added to it.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True,
              help="RUN_DIR/model.pt written by 'orand-addon train' (or the last.pt of an unfinished run), or the "
                   "official EncDec state dict (encdec*.pth).")
@click.option("--batch-size", type=click.IntRange(0, 4096), default=0, show_default=True,
              help="Class maps per forward pass (images of one size are batched together); 0: 16 on a GPU, 4 on CPU.")
@click.option("--ids", type=click.Path(), default=None, help="Only these ids: a list file or train/train_aug/val.")
@click.option("--map-norm", type=click.Choice(list(MAP_NORMS)), default="max", show_default=True,
              help=help_text(MAP_NORMS) + ".")
@precision_option
@dtype_option
@overwrite_option("an orandnet kind")
@device_option
@progress_option
@recipe_option("predict")
def predict(store_path: str, checkpoint: str, ids: str | None, **kw) -> None:
    """Write ORANDNet maps (kind orandnet): ReLU (official loss) or sigmoid (bce, bg-softmax) of the scores, then
    each class map divided by its own max.

    The output has the keys and size of kind or, and exports to IRN's layout (keys, stride-4 cam, high_res). A
    rerun skips the images already written, so an interrupted run resumes.

    \b
    Examples:
      orand-addon predict --store fused.h5 --checkpoint runs/orandnet/model.pt
      orand-addon predict --store fused.h5 --checkpoint runs/orandnet/model.pt --batch-size 32 --device cuda:1
      orand-addon predict --store fused.h5 --checkpoint encdec.pth --recipe official   # the released weights
      orand-addon export --store fused.h5 --kind orandnet --to irn --out orandnet_cams/

    \b
    Several GPUs or machines (torchrun; each rank writes its shard fused.rankR-of-N.h5, then merge):
      torchrun --nproc-per-node 4 -m orand_addon predict --store fused.h5 --checkpoint runs/orandnet/model.pt
      orand-addon merge --from-shards fused.h5
    """
    from ..runtime.distributed import dist_info
    from ..store.shards import shard_path
    from ..orandnet.predict import PredictConfig, predict_orandnet

    dist = dist_info()
    problems = Problems()
    listed = read_list(problems, "--ids", ids)
    config = PredictConfig(ids=tuple(listed) if listed else None, **kw)
    check_predict(problems, store_path, checkpoint, config, ids)
    problems.raise_if_any()
    n = predict_orandnet(store_path, checkpoint, config, command=command_line(),
                         echo=lambda line: click.echo(line, err=True), dist=dist)
    if not dist.enabled:
        click.echo(f"wrote {n} images to {store_path}:orandnet")
        return
    click.echo(f"rank {dist.rank} of {dist.world_size}: wrote {n} images to "
               f"{shard_path(store_path, dist.rank, dist.world_size)}:orandnet; when every rank is done: "
               f"orand-addon merge --from-shards {store_path}")

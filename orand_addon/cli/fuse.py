"""``orand-addon fuse``: CAM folders of two (or more) methods -> OR / AND / mean maps in the HDF5 store."""

from __future__ import annotations

import click

from ..registries import FUSED_KINDS, help_text
from . import recipe_option
from .checks import check_fuse, read_list
from .common import FORMAT_CHOICES, class_options, command_line, echo_lines, progress_option, workers_option
from .problems import Problems

SOURCE_LETTERS = "abcd"
# parameter names of the store's records -> the options that set them ("... differ" messages name the options)
PARAMETER_OPTIONS = {"normalize": "--fusion-norm", "formats": "--format-a/-b/...", "shifts": "--shift-a/-b/...",
                     "class_set": "--classes", "sources": "--cams-a/-b/... (their files)"}


def _source_options(f):
    """--cams-X, --format-X and --shift-X for sources a, b, c (shown) and d (hidden: a fourth source)."""
    for letter in reversed(SOURCE_LETTERS):
        name, last = letter.upper(), letter == SOURCE_LETTERS[-1]
        f = click.option(f"--shift-{letter}", type=float, default=0.0, show_default=True, hidden=last,
                         help=f"Constant added to source {name} before fusing"
                              + (" (official ResNet+ViT variant: --shift-b 0.15)." if letter == "b" else "."))(f)
        f = click.option(f"--format-{letter}", type=click.Choice(FORMAT_CHOICES), default="auto", hidden=last,
                         show_default=True, help=f"Format of source {name} (auto decides only when unambiguous).")(f)
        f = click.option(f"--cams-{letter}", type=str, required=letter in "ab", hidden=last,
                         help=f"CAM folder of method {name} (or STORE.h5:KIND)"
                              + ("; also --cams-d, --format-d, --shift-d for a fourth." if letter == "c" else "."))(f)
    return f


@click.command(context_settings={"max_content_width": 110})
@_source_options
@class_options
@click.option("--ids", type=click.Path(), default=None,
              help="Only these ids: a list file (one id per line) or train/train_aug/val for the bundled VOC lists.")
@click.option("--on-missing", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="What to do with ids absent from a source.")
@click.option("--images", type=click.Path(file_okay=False), default=None,
              help="Image folder; maps are resized to the true image size (default: the largest map size).")
@click.option("--kinds", default="or,and,mean", show_default=True,
              help="Fused kinds to write, comma-separated: " + help_text(FUSED_KINDS) + ".")
@click.option("--fusion-norm", type=click.Choice(["max", "none"]), default="max", show_default=True,
              help="max: divide each fused class map by its max (paper Eq. 1); none: raw a+b-ab and ab as the "
                   "official AMN+MCTformer code.")
@click.option("--keep-sources/--no-keep-sources", default=False, show_default=True,
              help="Also store the aligned source maps as kinds a, b, ...")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--compression", type=click.Choice(["none", "lzf", "gzip"]), default="none", show_default=True,
              help="HDF5 compression of the maps: lzf/gzip make the store ~35-50% smaller but fusing slower.")
@click.option("--value-policy", type=click.Choice(["fix", "error"]), default="fix", show_default=True,
              help="fix: NaN/Inf -> 0, negatives -> 0, maps above 1 divided by their max (all reported); "
                   "error: stop at the first such file.")
@click.option("--overwrite", is_flag=True, help="Replace kinds written earlier with other parameters.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The HDF5 store to write (or resume).")
@workers_option
@progress_option
@recipe_option("fuse")
def fuse(**kw) -> None:
    """Fuse the CAMs of two methods into OR, AND and mean maps (paper Eq. 1) in one HDF5 store.

    \b
    Examples:
      orand-addon fuse --cams-a amn/ --cams-b mct/ --out fused.h5
      orand-addon fuse --cams-a amn/ --cams-b mct/ --ids train_aug --fusion-norm none --out fused.h5
      orand-addon fuse --cams-a resnet/ --cams-b vit/ --format-b orandnet --shift-b 0.15 --out fused.h5
      orand-addon fuse --cams-a amn/ --cams-b mct/ --recipe official --out fused.h5   # the released code's maps

    A rerun of the same command skips the ids already written, so an interrupted run resumes.

    \b
    Several processes or machines (torchrun; each rank writes OUT's shard, then merge):
      torchrun --nproc-per-node 4 -m orand_addon fuse --cams-a amn/ --cams-b mct/ --out fused.h5
      orand-addon merge --from-shards fused.h5
    """
    from ..classes import get_class_set, load_labels
    from ..runtime.distributed import dist_info
    from ..store.shards import shard_path
    from ..fuse.stage import MAP_KINDS, FuseOptions, run_fuse

    letters = [x for x in SOURCE_LETTERS if kw[f"cams_{x}"]]
    if letters != list(SOURCE_LETTERS[: len(letters)]):
        raise click.UsageError("give sources in order: --cams-a, --cams-b, then --cams-c, --cams-d")
    kinds = tuple(k.strip() for k in kw["kinds"].split(",") if k.strip())
    bad = [k for k in kinds if k not in MAP_KINDS]
    if bad or not kinds:
        raise click.BadParameter(f"{','.join(bad) or 'nothing'}; valid: {', '.join(MAP_KINDS)}", param_hint="--kinds")
    dist = dist_info()
    problems = Problems()
    class_set = problems.run(get_class_set, kw["class_spec"])
    labels = None
    if class_set is not None and (kw["labels"] or class_set.name == "voc"):
        labels = problems.run(load_labels, kw["labels"], class_set)
    ids = read_list(problems, "--ids", kw["ids"])
    sources = [kw[f"cams_{x}"] for x in letters]
    if not problems:
        check_fuse(problems, sources, [kw[f"format_{x}"] for x in letters], labels, ids, kw["on_missing"],
                   kw["images"])
    problems.raise_if_any()
    options = FuseOptions(
        formats=tuple(kw[f"format_{x}"] for x in letters),
        normalize=kw["fusion_norm"] == "max",
        shifts=tuple(kw[f"shift_{x}"] for x in letters),
        kinds=kinds,
        keep_sources=kw["keep_sources"],
        dtype=kw["dtype"],
        value_policy=kw["value_policy"],
        on_missing=kw["on_missing"],
    )
    report = run_fuse(
        sources, kw["out"], class_set, labels, options, ids=ids, images=kw["images"], workers=kw["workers"],
        compression=kw["compression"], command=command_line(), overwrite=kw["overwrite"], progress=kw["progress"],
        dist=dist,
    )
    if not dist.enabled:
        echo_lines(report.lines())
        click.echo(f"wrote {kw['out']} (kinds: {', '.join(kinds)})")
        return
    where = f"rank {dist.rank} of {dist.world_size}"
    echo_lines([f"{where}: {line}" for line in report.lines()])
    click.echo(f"{where}: wrote {shard_path(kw['out'], dist.rank, dist.world_size)} (kinds: {', '.join(kinds)}); "
               f"when every rank is done: orand-addon merge --from-shards {kw['out']}")

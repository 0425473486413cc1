"""``orand-addon merge``: join the shard stores of a torchrun run of fuse, predict or refine into one store."""

from __future__ import annotations

import click

from .common import echo_lines, progress_option


@click.command(context_settings={"max_content_width": 110})
@click.argument("shards", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The store to write (created if missing; default: the store of --from-shards).")
@click.option("--from-shards", "from_shards", type=click.Path(dir_okay=False), default=None,
              help="STORE.h5: merge every STORE.rankR-of-N.h5 next to it into it.")
@click.option("--incomplete", type=click.Choice(["error", "merge"]), default="error", show_default=True,
              help="A shard whose rank did not finish: error, or merge the ids it has.")
@click.option("--shards-after", type=click.Choice(["keep", "delete"]), default="keep", show_default=True,
              help="Delete the shard files after a successful merge.")
@click.option("--overwrite", is_flag=True, help="Replace kinds the store holds from a run with other parameters.")
@progress_option
def merge(shards: tuple[str, ...], out: str | None, from_shards: str | None, incomplete: str, shards_after: str,
          overwrite: bool, progress: bool) -> None:
    """Merge the shards written by 'fuse', 'predict' or 'refine' (seeds, walk) under torchrun into one store.

    Datasets and provenance are copied as they are, so the result equals the one-process run. Shards of different
    runs (other parameters or classes), an id held twice with different content and unfinished shards are refused.
    Ids already in the store with the same content are skipped: an interrupted merge resumes, a rerun changes
    nothing.

    \b
    Examples:
      orand-addon merge --from-shards fused.h5
      orand-addon merge --out fused.h5 fused.rank0-of-2.h5 fused.rank1-of-2.h5
      orand-addon merge --from-shards fused.h5 --shards-after delete
    """
    from ..runtime.distributed import dist_info
    from ..store.shards import find_shards
    from ..errors import OrandError
    from ..store.merge import merge_shards

    if dist_info().enabled:
        raise OrandError("merge runs as one process, not under torchrun (run it once every rank has finished)")
    if from_shards and shards:
        raise click.UsageError("give either --from-shards STORE.h5 or shard files, not both")
    if not from_shards and not (out and shards):
        raise click.UsageError("give --from-shards STORE.h5, or --out STORE.h5 and the shard files")
    files = find_shards(from_shards) if from_shards else list(shards)
    target = out or from_shards
    report = merge_shards(target, files, overwrite=overwrite, incomplete=incomplete,
                          delete_shards=shards_after == "delete", show_progress=progress)
    echo_lines(report.lines())
    click.echo(f"merged {len(files)} shards into {target}" + (" (shards deleted)" if shards_after == "delete" else ""))

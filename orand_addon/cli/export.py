"""``orand-addon export``: a store kind as IRN-layout .npy files, palette PNGs, or VOC-style lists."""

from __future__ import annotations

import click

from .common import progress_option


@click.command(context_settings={"max_content_width": 110})
@click.option("--store", "store_path", type=click.Path(dir_okay=False, exists=True), required=True)
@click.option("--kind", required=True, help="Kind to export: or, and, mean, orandnet, rw, masks, seeds, ...")
@click.option("--to", "target", type=click.Choice(["irn", "png", "lists"]), required=True,
              help="irn: <id>.npy dicts (torch keys, stride-4 cam, numpy high_res) for IRN/AMN scripts; png: "
                   "VOC palette masks; lists: <kind>_ids.txt and cls_labels.npy.")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--ids", type=click.Path(), default=None, help="Only these ids (list file).")
@click.option("--bg-thres", type=float, default=None, help="Background threshold when exporting maps as PNG masks.")
@progress_option
def export(store_path: str, kind: str, target: str, out: str, ids: str | None, bg_thres: float | None,
           progress: bool) -> None:
    """Export one kind of a store.

    \b
    Examples:
      orand-addon export --store fused.h5 --kind orandnet --to irn --out orandnet_cams/
      orand-addon export --store fused.h5 --kind masks --to png --out pseudo_masks/
      orand-addon export --store fused.h5 --kind or --to png --bg-thres 0.3 --out or_masks/
    """
    from ..classes import read_id_list
    from ..io.export import export_kind

    n = export_kind(store_path, kind, target, out, read_id_list(ids) if ids else None, bg_thres, progress)
    click.echo(f"wrote {n} files to {out}")

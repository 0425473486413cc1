"""``orand-addon inspect``: what a CAM folder or store holds, and every problem found; writes nothing."""

from __future__ import annotations

import click

from .common import class_options


@click.command(context_settings={"max_content_width": 110})
@click.argument("path")
@click.option("--format", "fmt", default="auto", show_default=True, help="Read as this format instead of detecting.")
@class_options
@click.option("--limit", type=int, default=None, help="Inspect only the first N files (default: all).")
def inspect(path: str, fmt: str, class_spec: str, labels: str | None, limit: int | None) -> None:
    """Describe a CAM folder (or an HDF5 store): detected format, files, classes, shapes, value ranges, and
    every problem found. Nothing is written.

    \b
    Examples:
      orand-addon inspect amn_cams/
      orand-addon inspect fused.h5
    """
    from ..io.inspection import inspect_path

    for line in inspect_path(path, fmt, class_spec, labels, limit):
        click.echo(line)

"""Options shared by several commands, as decorators."""

from __future__ import annotations

import shlex
import sys
from typing import Callable

import click

from ..runtime.devices import DEVICE_HELP

# the names of orand_addon.io.formats.CAM_FORMATS (kept literal so --help does not import numpy; a test checks it)
FORMAT_CHOICES = ["auto", "irn", "amn", "orandnet", "mctformer", "crf-dict", "toco", "clip-es", "npz"]


def device_option(f: Callable) -> Callable:
    return click.option("--device", default="auto", show_default=True, help=f"Where to compute: {DEVICE_HELP}.")(f)


def workers_option(f: Callable) -> Callable:
    return click.option("--workers", type=click.IntRange(0, 256), default=1, show_default=True,
                        help="Worker processes for reading/preprocessing (0 or 1: in the main process).")(f)


def seed_option(f: Callable) -> Callable:
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def progress_option(f: Callable) -> Callable:
    return click.option("--progress/--no-progress", default=True, show_default=True,
                        help="Show progress bars on stderr.")(f)


def class_options(f: Callable) -> Callable:
    f = click.option("--labels", type=click.Path(dir_okay=False), default=None,
                     help="Image-level labels: cls_labels.npy (int or str id keys) or JSON {id: [classes]}. "
                          "Default: the bundled VOC 2012 labels (train_aug + val).")(f)
    f = click.option("--classes", "class_spec", default="voc", show_default=True,
                     help="Class set: voc, coco, or a text file with one class name per line.")(f)
    return f


def command_line() -> str:
    """The command line as typed (recorded as provenance)."""
    return "orand-addon " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)

"""Options shared by several commands, as decorators."""

from __future__ import annotations

import shlex
import sys
from typing import Callable

import click

from ..registries import CAM_FORMATS, PRECISIONS
from ..runtime.devices import DEVICE_HELP

FORMAT_CHOICES = ["auto", *CAM_FORMATS]


def device_option(f: Callable) -> Callable:
    return click.option("--device", default="auto", show_default=True, help=f"Where to compute: {DEVICE_HELP}.")(f)


def precision_option(f: Callable) -> Callable:
    return click.option("--precision", type=click.Choice(list(PRECISIONS)), default="auto", show_default=True,
                        help="Autocast on a GPU (auto: bf16 where supported, else fp16); the CPU always computes "
                             "in fp32.")(f)


def dtype_option(f: Callable) -> Callable:
    return click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
                        help="Storage type of the maps written to the store.")(f)


def overwrite_option(what: str) -> Callable[[Callable], Callable]:
    """``--overwrite``: replace ``what`` written earlier with other parameters."""
    return click.option("--overwrite", is_flag=True, help=f"Replace {what} written earlier with other parameters.")


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

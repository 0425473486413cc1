"""The ``orand-addon`` command line.

Each command lives in its own module of this package and is imported only when used (``--help`` stays fast).
Problems with the input are :class:`~orand_addon.errors.OrandError` and end as one line on stderr with a
non-zero exit code; Ctrl-C exits 130 after the command has saved what it can. Anything else is a bug: it too
ends as one line (exit code 1) unless ``ORAND_ADDON_TRACEBACK=1`` asks for the traceback to report.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from pathlib import Path

import click

from ..errors import OrandError, one_line
from ..runtime.memory import keep_freed_memory
from ..runtime.threads import passive_openmp

# command name -> "module:attribute" (modules relative to this package)
COMMANDS: dict[str, str] = {
    "fuse": "fuse:fuse",
    "inspect": "inspect_cmd:inspect",
    "export": "export:export",
    "evaluate": "evaluate:evaluate",
    "train": "train:train",
    "predict": "predict:predict",
    "refine": "refine:refine",
    "train-seg": "seg:train_seg",
    "segment": "seg:segment",
    "demo": "demo:demo",
    "merge": "merge:merge",
}


class CliError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(one_line(message))
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"orand-addon: error: {self.message}", err=True)


class OrandGroup(click.Group):
    """Lazy command loading + turning user errors into one line."""

    def spelled(self, ctx: click.Context, message: str) -> str:
        """``message`` naming the options of the command that failed instead of its parameter names
        (:mod:`.spelling`)."""
        from .spelling import command_names, option_spelling

        name = ctx.invoked_subcommand
        if name not in COMMANDS or " differ)" not in message:
            return message
        command = self.get_command(ctx, name)
        module = importlib.import_module(f"{__name__}.{COMMANDS[name].split(':')[0]}")
        return option_spelling(message, command_names(command, getattr(module, "PARAMETER_OPTIONS", None)))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OrandError as exc:
            raise CliError(self.spelled(ctx, str(exc)), exc.exit_code) from None
        except KeyboardInterrupt:
            raise CliError("interrupted; work written so far is kept", 130) from None
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise CliError(f"{where}{exc.strerror or exc}", 1) from None


def option_names(command: click.Command) -> dict[str, str]:
    """``{config key: parameter name}`` of a command: each long flag without dashes (``cams-a`` and ``cams_a``).

    >>> option_names(click.Command("x", params=[click.Option(["--classes", "class_spec"])]))
    {'classes': 'class_spec'}
    """
    names: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        for flag in param.opts + param.secondary_opts:
            if flag.startswith("--"):
                key = flag[2:]
                if not key.startswith("no-") or flag in param.opts:
                    names[key] = names[key.replace("-", "_")] = param.name
    return names


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if not value:
        return
    path = Path(value)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise click.BadParameter(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - set(COMMANDS))
    if unknown:
        raise click.BadParameter(f"{path}: unknown sections {unknown}; valid: {', '.join(COMMANDS)}")
    defaults: dict[str, dict] = {}
    for section, options in data.items():
        names = option_names(ctx.command.get_command(ctx, section))
        bad = sorted(k for k in options if k not in names)
        if bad:
            valid = ", ".join(sorted({k.replace("_", "-") for k in names}))
            raise click.BadParameter(f"{path}: [{section}] has unknown options {bad}; valid: {valid}")
        defaults[section] = {names[k]: v for k, v in options.items()}
    ctx.default_map = defaults


def _set_input_limit(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    """``--max-input-mb``: the input limit (:mod:`orand_addon.io.limits`) for this command, passed on to its worker
    processes through the environment, restored when the command ends."""
    if value is None:
        return
    from ..io.limits import LIMIT_ENV

    before = os.environ.get(LIMIT_ENV)
    os.environ[LIMIT_ENV] = f"{value:g}"

    def restore() -> None:
        if before is None:
            os.environ.pop(LIMIT_ENV, None)
        else:
            os.environ[LIMIT_ENV] = before

    ctx.call_on_close(restore)


def apply_recipe(ctx: click.Context, command: str, name: str) -> None:
    """Put recipe ``name``'s defaults for ``command`` into ``ctx.default_map``, beneath those already there (from
    ``--config``); options given on the command line win over both."""
    from ..recipes import recipe_section

    section = recipe_section(name, command)
    names = option_names(ctx.command)
    unknown = sorted(k for k in section if k not in names)
    if unknown:  # a bundled file out of step with the command: a bug
        raise RuntimeError(f"recipe {name} sets unknown {command} options {unknown}")
    ctx.default_map = {**{names[k]: v for k, v in section.items()}, **(ctx.default_map or {})}


def recipe_option(command: str):
    """``--recipe official|paper`` for ``command``: option defaults from the bundled TOML recipe.

    Precedence, highest first: the command line, ``--config FILE`` (its ``[command]`` section, which may itself
    name a ``recipe``), the recipe, the built-in defaults.
    """
    from ..registries import RECIPES, help_text

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value:
            apply_recipe(ctx, command, value)
        return value

    return click.option(
        "--recipe", type=click.Choice(list(RECIPES)), default=None, is_eager=True, expose_value=False,
        callback=callback,
        help=f"Option defaults from a bundled recipe ({help_text(RECIPES)}); options given on the command line "
             f"or in --config win. Every choice: the README's recipe table.")


@click.group(cls=OrandGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="orand-addon", prog_name="orand-addon")
@click.option("--max-input-mb", type=click.FloatRange(min=1), default=None, metavar="MB", expose_value=False,
              callback=_set_input_limit,
              help="Refuse an input file (a CAM dump, a label file, one map of a store) that would take more than MB "
                   "megabytes once read [default: 256, or $ORAND_ADDON_MAX_INPUT_MB]; raise it for genuinely large "
                   "maps, e.g. orand-addon --max-input-mb 2048 fuse ...")
@click.option("--config", type=click.Path(dir_okay=False), callback=_load_config, is_eager=True,
              expose_value=False,
              help="TOML file with one [section] per command setting option defaults, e.g. [fuse] workers = 2.")
def cli() -> None:
    """ORANDNet ensemble for weakly supervised semantic segmentation: fuse two methods' CAMs with a
    probabilistic OR/AND, train ORANDNet, refine with IRN, train DeepLab, and score every stage.

    \b
    Typical run:
      orand-addon fuse --cams-a amn_cams/ --cams-b mct_cams/ --out fused.h5
      orand-addon train --store fused.h5 --out runs/orandnet
      orand-addon predict --store fused.h5 --checkpoint runs/orandnet/model.pt
      orand-addon refine --store fused.h5 --kind orandnet --images VOC2012/JPEGImages
      orand-addon evaluate --pred fused.h5:masks --gt VOC2012/SegmentationClassAug
    """


TRACEBACK_ENV = "ORAND_ADDON_TRACEBACK"


def main(argv: list[str] | None = None) -> None:
    passive_openmp()  # before torch is imported: idle OpenMP threads sleep instead of spinning (runtime/threads.py)
    keep_freed_memory()  # the heap reuses what a training step frees instead of page-faulting it in again
    try:
        cli.main(args=argv, prog_name="orand-addon")
    except Exception as exc:  # not bad input (that is an OrandError): a bug, still one line unless asked
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        click.echo(f"orand-addon: internal error: {type(exc).__name__}: {one_line(str(exc))} (a bug; rerun with "
                   f"{TRACEBACK_ENV}=1 for the traceback to report)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

"""Bundled recipes: TOML files of option defaults, one ``[command]`` section each (``official.toml``,
``paper.toml``), the same layout as a ``--config`` file. ``--recipe NAME`` on a command sets that command's
defaults from its section; an option given on the command line, or in a ``--config`` file, wins
(:func:`orand_addon.cli.recipe_option`). Every choice of a recipe, with its source, is in the README's recipe
table (decisions: docs/decisions.md).

>>> sorted(load_recipe("official"))
['evaluate', 'fuse', 'predict', 'refine', 'train', 'train-seg']
>>> load_recipe("official")["train"]["momentum"]
0.0001
>>> load_recipe("fast")
Traceback (most recent call last):
...
orand_addon.errors.OrandError: unknown recipe 'fast'; valid: official, paper
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..registries import RECIPES, check_choice

RECIPE_DIR = Path(__file__).resolve().parent


def recipe_path(name: str) -> Path:
    """The bundled TOML file of recipe ``name``."""
    return RECIPE_DIR / f"{check_choice(RECIPES, name, 'recipe')}.toml"


def load_recipe(name: str) -> dict[str, dict[str, object]]:
    """``{command: {long option name: value}}`` of recipe ``name``."""
    path = recipe_path(name)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:  # a broken installation, not bad input
        raise RuntimeError(f"{path}: bundled recipe unreadable ({exc})") from None
    return {section: dict(options) for section, options in data.items()}


def recipe_section(name: str, command: str) -> dict[str, object]:
    """The option defaults recipe ``name`` gives ``command`` (empty when it has none).

    >>> recipe_section("official", "fuse")["fusion-norm"]
    'none'
    """
    return load_recipe(name).get(command, {})

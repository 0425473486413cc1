"""Messages in the words of the command line: the parameter names that a store or a checkpoint records
(``normalize``) become the options that set them (``--fusion-norm``) in ``(... differ)`` messages.

Python callers see the Python names (those of the functions they call); the CLI rewrites them with the command's
options: every option's parameter name maps to its flag, and a command module may add ``PARAMETER_OPTIONS`` for
names that differ (``"normalize": "--fusion-norm"``; ``"seeds:bg_thres"`` for a name in one store group only).
"""

from __future__ import annotations

import re
from typing import Mapping

import click

DIFFER = re.compile(r"\(([^()]*?) differ\)")
GROUP = re.compile(r"/(\w+)\b")


def option_spelling(message: str, names: Mapping[str, str]) -> str:
    """``message`` with the names inside ``(a, b differ)`` replaced by ``names`` (``group:name`` first, for the
    last ``/group`` named before them).

    >>> option_spelling("s.h5: /or was written by 'fuse' with other parameters (dtype, normalize differ); use ...",
    ...                 {"normalize": "--fusion-norm", "dtype": "--dtype"})
    "s.h5: /or was written by 'fuse' with other parameters (--dtype, --fusion-norm differ); use ..."
    >>> option_spelling("s.h5: /seeds was written ... (bg_thres differ)", {"seeds:bg_thres": "--seed-bg-thres"})
    's.h5: /seeds was written ... (--seed-bg-thres differ)'
    """
    def spell(match: re.Match) -> str:
        groups = GROUP.findall(message[: match.start()])
        group = groups[-1] if groups else ""
        words = [names.get(f"{group}:{w}", names.get(w, w)) for w in match.group(1).split(", ")]
        return f"({', '.join(words)} differ)"

    return DIFFER.sub(spell, message)


def command_names(command: click.Command, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{parameter name: --flag}`` of a command's options, updated with ``extra``.

    >>> command_names(click.Command("x", params=[click.Option(["--fusion-norm"])]), {"normalize": "--fusion-norm"})
    {'fusion_norm': '--fusion-norm', 'normalize': '--fusion-norm'}
    """
    names = {}
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            longs = [o for o in param.opts if o.startswith("--")]
            if longs and param.name:
                names[param.name] = longs[0]
    return {**names, **(extra or {})}

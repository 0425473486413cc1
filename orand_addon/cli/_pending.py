"""Placeholder for commands whose stage has not landed yet: they say so instead of failing obscurely."""

from __future__ import annotations

import click

from ..errors import OrandError


def pending_command(name: str, issue: str) -> click.Command:
    @click.command(name=name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def _cmd() -> None:
        raise OrandError(f"'orand-addon {name}' is not available in this version yet ({issue})")

    _cmd.__doc__ = f"Not available yet ({issue})."
    return _cmd

"""Progress bars (tqdm on stderr) of every long step."""

from __future__ import annotations

import sys
from typing import Iterable


def progress(iterable: Iterable | None = None, desc: str = "", total: int | None = None,
             enabled: bool = True, unit: str = "it", initial: int = 0):
    """A tqdm bar on stderr (disabled when ``enabled`` is False, and when there is nothing to do: ``total`` 0)."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not enabled or total == 0, unit=unit, initial=initial,
                file=sys.stderr, dynamic_ncols=True)

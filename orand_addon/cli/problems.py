"""Checking a whole command before it starts: every problem with its options, inputs and weights, at once.

Each command runs cheap checks of everything it will need (files, ids, sizes of its lists, option combinations,
pretrained weights) before any step writes anything, collecting their one-line errors in :class:`Problems`;
:meth:`Problems.raise_if_any` then raises one :class:`ProblemsFound` that lists them all on one line::

    problems = Problems()
    with problems.check():
        check_store(...)                   # raises OrandError: collected, the next check still runs
    ids = problems.run(select_ids, ...)    # the value, or None when it raised
    if ids is not None and batch > len(ids):
        problems.add(f"--batch-size {batch} ...")
    problems.raise_if_any()                # nothing found: nothing happens

Format: one problem is its own line, unchanged; several are ``N problems (nothing was started): 1) ...; 2) ...``.
Checks that need the result of an earlier one run only when that one passed (``run`` returns None otherwise).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, TypeVar

from ..errors import Interrupted, OrandError, one_line

T = TypeVar("T")


class ProblemsFound(OrandError):
    """Every problem a command found before starting, in one line."""

    def __init__(self, items: list[str]):
        self.items = list(items)
        super().__init__(format_problems(self.items))


def format_problems(items: list[str]) -> str:
    """One line for any number of problems.

    >>> format_problems(["a.h5: store not found"])
    'a.h5: store not found'
    >>> format_problems(["a.h5: store not found", "--batch-size 32: more than the 11 images"])
    '2 problems (nothing was started): 1) a.h5: store not found; 2) --batch-size 32: more than the 11 images'
    """
    items = [one_line(i) for i in items]
    if len(items) == 1:
        return items[0]
    listed = "; ".join(f"{n}) {text}" for n, text in enumerate(items, start=1))
    return f"{len(items)} problems (nothing was started): {listed}"


class Problems:
    """The problems found so far by the checks of one command (see the module docstring)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str | None) -> None:
        """Record one problem (a one-line message naming the option, file or id); None, empty text and
        duplicates are dropped."""
        if text and text not in self.items:
            self.items.append(text)

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        """Run the block; an :class:`OrandError` it raises is recorded (every item of a :class:`ProblemsFound`)."""
        try:
            yield
        except Interrupted:
            raise
        except ProblemsFound as exc:
            for item in exc.items:
                self.add(item)
        except OrandError as exc:
            self.add(str(exc))

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T | None:
        """``fn(*args, **kwargs)``, or None when it raised an :class:`OrandError` (recorded)."""
        with self.check():
            return fn(*args, **kwargs)
        return None

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ProblemsFound(self.items)

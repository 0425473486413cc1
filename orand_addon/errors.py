"""Errors a user can act on.

Every problem with the user's input is raised as :class:`OrandError` (or a subclass) with a one-line message
that names the file or image id. The CLI prints that line and exits non-zero; it never shows a traceback for
these. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class OrandError(Exception):
    """A problem with the input or the environment, explained in one line."""

    exit_code = 2


class UnsafePickleError(OrandError):
    """A pickled file asked for an object outside the allow-list; nothing of it was run."""


class FormatError(OrandError):
    """A CAM file does not have the layout of the format it was read as."""


class StoreError(OrandError):
    """The HDF5 store is missing, unreadable, or inconsistent with the requested work."""


def one_line(text: str) -> str:
    """Collapse a message to a single line (multi-line messages break log parsers).

    >>> one_line("a\\n  b")
    'a b'
    """
    return " ".join(text.split())


class Interrupted(OrandError):
    """Ctrl-C: the work so far is kept and the same command resumes."""

    exit_code = 130


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors.

    >>> first_line(RuntimeError("Error(s) in loading state_dict:\\n\\tMissing key(s)")), first_line(KeyError())
    ('Error(s) in loading state_dict:', 'KeyError')
    """
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__

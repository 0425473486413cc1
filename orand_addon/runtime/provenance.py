"""What a store records about how a result was made: digests of id lists and files, and parameter records
compared between runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from ..errors import OrandError


def ids_digest(ids: Iterable[str]) -> str:
    """A short digest of a list of ids (in the given order; sort them first where the order does not matter).

    >>> ids_digest(["a", "b"]) == ids_digest(["a", "b"]) != ids_digest(["b", "a"])
    True
    >>> len(ids_digest([]))
    16
    """
    digest = hashlib.sha256()
    for image_id in ids:
        digest.update(image_id.encode("utf-8") + b"\n")
    return digest.hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's content (hex, 16 characters): it changes whenever the file is written again with
    other content (a retrained checkpoint), whatever its name and time stamps."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise OrandError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()[:16]


def normalize(parameters: dict | None) -> dict | None:
    """Parameters as the store keeps them (a JSON round trip, as :meth:`Store.begin`).

    >>> normalize({"shifts": (0.0, 0.15), "path": Path("a")})
    {'shifts': [0.0, 0.15], 'path': 'a'}
    """
    return None if parameters is None else json.loads(json.dumps(parameters, default=str))


def parameter_diff(old: dict | None, new: dict | None) -> list[str]:
    """Names of the parameters that differ (``<all>`` when only one side has any).

    >>> parameter_diff({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 3], "c": 0})
    ['b', 'c']
    >>> parameter_diff(None, {"a": 1})
    ['<all>']
    """
    if old is None or new is None:
        return [] if old == new else ["<all>"]
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))

"""Public names of a package imported on first use (PEP 562), so that ``import orand_addon`` and ``--help`` stay
fast and torch is imported only by what needs it. Each package ``__init__`` declares a plain dict of its names."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence


def lazy_exports(package: str, exports: Mapping[str, str], extra: Sequence[str] = ()
                 ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``, whose name ``n`` lives in the module
    ``package + "." + exports[n]``; ``extra`` names (defined in the ``__init__`` itself) join ``__all__``.

    >>> names, get, _ = lazy_exports("orand_addon", {"fuse_or": "fuse.functional"})
    >>> names, get("fuse_or").__module__
    (['fuse_or'], 'orand_addon.fuse.functional')
    >>> get("fuse_xor")
    Traceback (most recent call last):
    AttributeError: module 'orand_addon' has no attribute 'fuse_xor'
    """
    names = sorted(exports) + list(extra)

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return list(names)

    return names, __getattr__, __dir__

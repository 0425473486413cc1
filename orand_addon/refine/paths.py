"""IRN's pixel pairs and the paths between them, as window tables (pure functions).

IRN (``misc/indexing.py``, ``PathIndex``) pairs a pixel with every pixel at an integer offset ``(dy, dx)`` of the
half disc ``0 < dy² + dx² < radius²`` with ``dy > 0``, or ``dy == 0`` and ``dx > 0`` (the other half is the same
pairs seen from the other end). The *path* of an offset is every lattice point ``(y, x)`` of the bounding box of
``(0, 0)`` and ``(dy, dx)`` whose distance to the line through them is below one pixel,
``(dy·x − dx·y)² < dy² + dx²``; it contains both end points. The affinity of a pair is ``1 − max`` of the
boundary map over its path.

Everything here is expressed through *windows*: ``F.unfold`` with a ``radius × (2·radius − 1)`` kernel gives, for
every source pixel, the values at all offsets ``oy ∈ [0, radius)``, ``ox ∈ (−radius, radius)``; window row
``oy·(2·radius − 1) + ox + radius − 1`` holds offset ``(oy, ox)``. Unfolding an unpadded ``h × w`` map gives IRN's
training sources (rows ``[0, h − radius + 1)``, columns ``[radius − 1, w − radius + 1)``); padding it first with
``radius − 1`` at the bottom, left and right gives one window per pixel of the image (the random walk).

>>> table = path_table(5)
>>> len(table.directions), table.window_shape, table.source_row
(34, (5, 9), 4)
>>> path_points((2, 1)).tolist()
[[2, 1], [1, 1], [2, 0], [0, 1], [1, 0], [0, 0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def directions(radius: int) -> list[tuple[int, int]]:
    """The offsets IRN pairs within ``radius``, in IRN's search order (row 0 first, then row by row).

    >>> directions(2)
    [(0, 1), (1, -1), (1, 0), (1, 1)]
    >>> directions(1)
    []
    """
    if int(radius) != radius or radius < 1:
        raise ValueError(f"radius must be a positive integer, got {radius!r}")
    r = int(radius)
    found = [(0, dx) for dx in range(1, r)]
    found += [(dy, dx) for dy in range(1, r) for dx in range(-r + 1, r) if dy * dy + dx * dx < r * r]
    return found


def path_points(direction: tuple[int, int]) -> np.ndarray:
    """The lattice points of the path from ``(0, 0)`` to ``direction``, destination first, (L, 2) int.

    Points are ordered by decreasing ``|y| + |x|`` (ties keep row-major order), as IRN orders them.

    >>> path_points((0, 3)).tolist()
    [[0, 3], [0, 2], [0, 1], [0, 0]]
    """
    dy, dx = direction
    length_sq = dy * dy + dx * dx
    points = [(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
              if (dy * x - dx * y) ** 2 < length_sq]
    points.sort(key=lambda p: -abs(p[0]) - abs(p[1]))
    return np.asarray(points, dtype=np.int64).reshape(-1, 2)


@dataclass(frozen=True)
class PathTable:
    """Directions and their paths as window rows, for one radius."""

    radius: int
    directions: np.ndarray  # (D, 2) int: (dy, dx)
    paths: np.ndarray  # (D, Lmax) int: window rows of each path, short paths padded with their destination
    lengths: np.ndarray  # (D,) int: true path lengths

    @property
    def window_shape(self) -> tuple[int, int]:
        return self.radius, 2 * self.radius - 1

    @property
    def source_row(self) -> int:
        """The window row of offset (0, 0)."""
        return self.radius - 1

    @property
    def dest_rows(self) -> np.ndarray:
        """(D,) window rows of the destinations."""
        return self.paths[:, 0]

    def row(self, dy: int, dx: int) -> int:
        """Window row of offset ``(dy, dx)``.

        >>> path_table(3).row(1, -2)
        5
        """
        return dy * (2 * self.radius - 1) + dx + self.radius - 1


@lru_cache(maxsize=8)
def path_table(radius: int) -> PathTable:
    """The :class:`PathTable` of ``radius`` (cached).

    >>> t = path_table(3)
    >>> t.directions.tolist()
    [[0, 1], [0, 2], [1, -2], [1, -1], [1, 0], [1, 1], [1, 2], [2, -2], [2, -1], [2, 0], [2, 1], [2, 2]]
    >>> t.lengths.tolist()
    [2, 3, 6, 4, 2, 4, 6, 7, 6, 3, 6, 7]
    """
    dirs = directions(radius)
    width = 2 * radius - 1
    rows = [[p[0] * width + p[1] + radius - 1 for p in path_points(d)] for d in dirs]
    lmax = max((len(r) for r in rows), default=1)
    paths = np.array([r + [r[0]] * (lmax - len(r)) for r in rows], dtype=np.int64).reshape(len(rows), lmax)
    return PathTable(int(radius), np.asarray(dirs, dtype=np.int64).reshape(-1, 2), paths,
                     np.array([len(r) for r in rows], dtype=np.int64))


def path_max(windows, table: PathTable, chunk: int = 16):
    """Max of the windowed map along every path: (B, U, m) windows -> (B, D, m).

    The arg-max is found without gradient, then the winning values are gathered, so the result is
    differentiable like a max (the gradient goes to the maximum) while only an index per pair is kept.

    >>> import torch
    >>> edge = torch.zeros(1, 1, 3, 5); edge[0, 0, 1, 2] = 0.9
    >>> import torch.nn.functional as F
    >>> out = path_max(F.unfold(edge, path_table(2).window_shape), path_table(2))
    >>> out.shape, [round(v, 2) for v in out[0, :, 0].tolist()]  # source (0, 1): only the path to (1, 2) crosses it
    (torch.Size([1, 4, 6]), [0.0, 0.0, 0.0, 0.9])
    """
    import torch

    paths = torch.as_tensor(table.paths, device=windows.device)
    n_dirs = paths.shape[0]
    batch, _, m = windows.shape
    if not (windows.requires_grad and torch.is_grad_enabled()):
        if n_dirs == 0:
            return windows.new_zeros((batch, 0, m))
        return torch.cat([windows[:, rows].amax(dim=2) for rows in paths.split(chunk)], dim=1)
    winners = []
    with torch.no_grad():
        for start in range(0, n_dirs, chunk):
            rows = paths[start:start + chunk]  # (c, L)
            values = windows[:, rows]  # (B, c, L, m)
            best = values.argmax(dim=2)  # (B, c, m)
            winners.append(rows[torch.arange(rows.shape[0], device=rows.device)[None, :, None], best])
    index = torch.cat(winners, dim=1) if winners else windows.new_zeros((batch, 0, m), dtype=torch.int64)
    return torch.gather(windows, 1, index)

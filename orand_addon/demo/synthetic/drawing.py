"""Drawing primitives of the synthetic dataset: shape polygons, anti-aliased masks, textures, colours.

Everything here is a pure function of its arguments (random draws come from a ``numpy.random.Generator`` passed
in), so an image is a deterministic function of its seed. Images are float32 RGB in [0, 1], (H, W, 3).
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

Polygon = list[tuple[float, float]]

SUPERSAMPLE = 4  # masks are drawn at 4x and box-filtered: anti-aliased edges, as in photographs


def rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate (N, 2) points (x, y) about the origin by ``angle`` radians.

    >>> rotate(np.array([[1.0, 0.0]]), np.pi / 2).round(6).tolist()
    [[0.0, 1.0]]
    """
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def ellipse(rx: float, ry: float, n: int = 40) -> np.ndarray:
    """(n, 2) points of an origin-centred ellipse.

    >>> ellipse(2.0, 1.0, n=4).round(6).tolist()
    [[2.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [-0.0, -1.0]]
    """
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)


def star(outer: float, inner: float, points: int = 5) -> np.ndarray:
    """(2 * points, 2) vertices of a star, first tip pointing up (-y).

    >>> star(1.0, 0.5, points=4).shape
    (8, 2)
    """
    t = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def cross(half: float, arm: float) -> np.ndarray:
    """(12, 2) vertices of a plus sign of half-length ``half`` and half arm width ``arm``.

    >>> cross(2.0, 0.5)[:3].tolist()
    [[-0.5, -2.0], [0.5, -2.0], [0.5, -0.5]]
    """
    h, a = half, arm
    return np.array([[-a, -h], [a, -h], [a, -a], [h, -a], [h, a], [a, a], [a, h], [-a, h], [-a, a], [-h, a],
                     [-h, -a], [-a, -a]], dtype=np.float64)


def place(points: np.ndarray, center: tuple[float, float], angle: float = 0.0) -> Polygon:
    """Rotate origin-centred points and move them to ``center`` (x, y); a list of (x, y) tuples.

    >>> place(np.array([[1.0, 0.0]]), (10.0, 5.0))
    [(11.0, 5.0)]
    """
    moved = rotate(np.asarray(points, np.float64), angle) + np.asarray(center, np.float64)
    return [(float(x), float(y)) for x, y in moved]


def polygon_alpha(size: tuple[int, int], fill: list[Polygon], holes: list[Polygon] = ()) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] (H, W) of the union of ``fill`` polygons minus ``holes``.

    Edges are exact to a quarter of a pixel (PIL fills the outline pixels of the 4x supersampled canvas).

    >>> a = polygon_alpha((8, 8), [[(2, 2), (6, 2), (6, 6), (2, 6)]])
    >>> round(float(a.sum()), 1), float(a[4, 4]), float(a[0, 0])
    (18.1, 1.0, 0.0)
    """
    h, w = size
    s = SUPERSAMPLE
    canvas = Image.new("L", (w * s, h * s), 0)
    draw = ImageDraw.Draw(canvas)
    for poly, value in [(p, 255) for p in fill] + [(p, 0) for p in holes]:
        # pixel (i, j) covers [j, j+1) x [i, i+1); supersampled pixel centres sit at (k + 0.5) / s
        draw.polygon([(x * s - 0.5, y * s - 0.5) for x, y in poly], fill=value)
    small = canvas.reduce(s)
    return np.asarray(small, dtype=np.float32) / 255.0


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """An RGB colour (3,) float32 from hue (any real, wraps), saturation and value in [0, 1].

    >>> hsv(1.0, 1.0, 1.0).tolist()
    [1.0, 0.0, 0.0]
    """
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)``, each (H, W) float32.

    >>> [a.tolist() for a in grid((1, 2))]
    [[[0.5, 0.5]], [[0.5, 1.5]]]
    """
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    return yy + 0.5, xx + 0.5


def smooth_noise(size: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random ``cells``-wide grid upsampled bicubically.

    >>> smooth_noise((6, 9), 2, np.random.default_rng(0)).shape
    (6, 9)
    """
    h, w = size
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    coarse = Image.fromarray(rng.random((gh, gw), dtype=np.float32), mode="F")
    out = np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=np.float32)
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo) if hi > lo else np.zeros(size, np.float32)


def pattern(kind: str, size: tuple[int, int], scale: float, angle: float, center: tuple[float, float],
            rng: np.random.Generator) -> np.ndarray:
    """A texture pattern in [0, 1] (H, W): how much of the second colour each pixel takes.

    ``scale`` is the texture period in pixels, ``angle`` its orientation, ``center`` (x, y) its origin (the
    centre of ``rings``). Kinds: plain, stripes, dots, checker, rings, zigzag, mottled, gradient, waves.

    >>> p = pattern("checker", (4, 4), 2.0, 0.0, (0.0, 0.0), np.random.default_rng(0))
    >>> p.astype(int).tolist()[1:3]
    [[0, 0, 1, 1], [1, 1, 0, 0]]
    """
    yy, xx = grid(size)
    u0, v0 = xx - center[0], yy - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * u0 + s * v0, -s * u0 + c * v0
    if kind == "plain":
        return np.zeros(size, np.float32)
    if kind == "stripes":
        return (np.sin(2 * np.pi * u / scale) > 0).astype(np.float32)
    if kind == "dots":
        du, dv = np.mod(u, scale) - scale / 2, np.mod(v, scale) - scale / 2
        return np.clip(1.5 - np.hypot(du, dv) / (0.18 * scale), 0, 1).astype(np.float32)
    if kind == "checker":
        return (np.mod(np.floor(u / scale) + np.floor(v / scale), 2) > 0).astype(np.float32)
    if kind == "rings":
        return (np.sin(2 * np.pi * np.hypot(u0, v0) / scale) > 0).astype(np.float32)
    if kind == "zigzag":
        tri = np.abs(np.mod(u, scale) - scale / 2)
        return (np.sin(2 * np.pi * (v + tri) / scale) > 0).astype(np.float32)
    if kind == "mottled":
        cells = max(2, round(max(size) / max(2 * scale, 1.0)))
        return 0.25 + 0.5 * smooth_noise(size, cells, rng)
    if kind == "gradient":
        return np.clip(0.5 + u / (6 * scale), 0, 1).astype(np.float32)
    if kind == "waves":
        wave = v + 0.25 * scale * np.sin(2 * np.pi * u / (3 * scale) + 2 * np.pi * rng.random())
        return (0.5 + 0.5 * np.sin(2 * np.pi * wave / scale)).astype(np.float32) ** 2
    raise ValueError(f"unknown pattern {kind!r}")


def paint(canvas: np.ndarray, alpha: np.ndarray, colour_a: np.ndarray, colour_b: np.ndarray,
          texture: np.ndarray) -> None:
    """Composite a two-colour textured layer with coverage ``alpha`` onto ``canvas`` (H, W, 3) in place.

    >>> c = np.zeros((1, 2, 3), np.float32)
    >>> paint(c, np.array([[1.0, 0.5]], np.float32), np.ones(3, np.float32), np.zeros(3, np.float32),
    ...       np.zeros((1, 2), np.float32))
    >>> c[..., 0].tolist()
    [[1.0, 0.5]]
    """
    layer = colour_a * (1 - texture[..., None]) + colour_b * texture[..., None]
    canvas *= 1 - alpha[..., None]
    canvas += layer * alpha[..., None]


def void_border(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """VOC-style void band: pixels within ``width`` (4-neighbour steps) of a label change become 255.

    Both sides of every object outline are marked (background/object and object/object boundaries).

    >>> m = np.zeros((1, 6), np.uint8); m[0, 3:] = 2
    >>> void_border(m).tolist()
    [[0, 0, 255, 255, 2, 2]]
    """
    edge = np.zeros(mask.shape, bool)
    diff_v = mask[1:, :] != mask[:-1, :]
    diff_h = mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= diff_v
    edge[:-1, :] |= diff_v
    edge[:, 1:] |= diff_h
    edge[:, :-1] |= diff_h
    for _ in range(width - 1):
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    out = mask.copy()
    out[edge] = 255
    return out

"""One synthetic scene: sampling a layout (pure, seeded) and rendering it to an image and a VOC label mask.

Six object classes, each a distinct silhouette whose *body* is painted like everything else (textures and colours
shared with the other classes and the clutter) and which carries one *discriminative part*: a patch of the
class's own texture in the class's colours (or, for ``boat``, its sail). Colour distributions overlap between
classes, so colour alone does not tell them apart. As on real photographs, only part of each object is really
distinctive: the trait that makes CNN CAMs cover the discriminative part only. Objects may occlude each other and
clutter may occlude objects. The co-occurrence trap: ``boat`` nearly always floats on a ``water`` texture that is background in the
ground truth, so a classifier trained on image-level labels learns water as evidence for boat and its CAM leaks
onto the water (as VOC boat CAMs leak onto the sea).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import drawing as d

CLASS_NAMES: tuple[str, ...] = ("background", "ball", "box", "star", "boat", "ring", "cross")


@dataclass(frozen=True)
class ClassStyle:
    """How one class looks: its shape, the texture of its discriminative part, and that part's colour
    distribution (mean hue, hue spread)."""

    shape: str
    marker: str
    hue: float
    hue_spread: float = 0.09


STYLES: dict[str, ClassStyle] = {
    "ball": ClassStyle("ball", "rings", 0.02),
    "box": ClassStyle("box", "stripes", 0.93),
    "star": ClassStyle("star", "dots", 0.12),
    "boat": ClassStyle("boat", "sail", 0.10),
    "ring": ClassStyle("ring", "checker", 0.58),
    "cross": ClassStyle("cross", "zigzag", 0.33),
}
CLUTTER_SHAPES = ("triangle", "bar", "blob", "chip")
BODY_TEXTURES = ("plain", "mottled", "gradient")  # shared by every class and the clutter
MARKER_TEXTURES = ("rings", "stripes", "dots", "checker", "zigzag")
P_CLUTTER_MARKER = 0.15  # clutter sometimes wears a class texture, so texture alone is not enough either

P_WATER_WITH_BOAT = 0.95  # the co-occurrence trap
P_WATER_WITHOUT_BOAT = 0.08
CLASS_COUNT_PROBS = (0.5, 0.35, 0.15)  # 1, 2 or 3 classes per image
MAX_OVERLAP = 0.3  # a new object may cover at most this much of an earlier one (and vice versa)


@dataclass
class Item:
    """One drawn thing: polygons to fill (and holes), its two colours and texture, and its label (0: clutter).

    ``marker`` optionally paints a discriminative part over it: ``(polygons, colours, texture)``, clipped to the
    item's own coverage.
    """

    label: int
    fill: list
    holes: list = field(default_factory=list)
    colours: tuple = ()
    texture: str = "plain"
    texture_scale: float = 4.0
    texture_angle: float = 0.0
    center: tuple[float, float] = (0.0, 0.0)
    marker: tuple | None = None


@dataclass
class Scene:
    """Everything needed to render an image; ``items`` are drawn in order (later ones occlude earlier ones)."""

    size: tuple[int, int]
    background: tuple
    water_line: float | None
    items: list[Item]
    texture_seed: int


def class_colours(style: ClassStyle, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours of a discriminative part: a hue drawn around the class hue, and a lighter/darker partner."""
    hue = style.hue + style.hue_spread * rng.standard_normal()
    a = d.hsv(hue, rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.95))
    b = d.hsv(hue + rng.uniform(-0.05, 0.05), rng.uniform(0.2, 0.9), rng.uniform(0.15, 1.0))
    return a, b


def any_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours of any hue: object bodies and clutter."""
    return (d.hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.9)),
            d.hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.9)))


def marker_polygons(shape: str, fill: list, center: tuple[float, float], r: float, rng: np.random.Generator) -> list:
    """Where the discriminative part of an object is: the sail of a boat, else a disc of radius ~0.5 r
    somewhere on the object (clipped to the object when drawn).

    >>> len(marker_polygons("box", [], (10.0, 10.0), 5.0, np.random.default_rng(0))[0])
    24
    """
    if shape == "boat":
        return [fill[1]]
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(0.6, 0.85) * r if shape == "ring" else rng.uniform(0, 0.45) * r  # on the ring's band
    at = (center[0] + offset * np.cos(angle), center[1] + offset * np.sin(angle))
    return [d.place(d.ellipse(1.0, 1.0, n=24) * rng.uniform(0.45, 0.6) * r, at)]


def object_polygons(shape: str, center: tuple[float, float], r: float, rng: np.random.Generator) -> tuple[list, list]:
    """Fill polygons and hole polygons of a class object of radius ``r`` at ``center`` (x, y).

    >>> fill, holes = object_polygons("ring", (10.0, 10.0), 5.0, np.random.default_rng(0))
    >>> len(fill), len(holes), len(fill[0])
    (1, 1, 40)
    """
    angle = rng.uniform(0, 2 * np.pi)
    if shape == "ball":
        return [d.place(d.ellipse(r, r * rng.uniform(0.85, 1.0)), center, angle)], []
    if shape == "box":
        half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * [0.85 * r, 0.85 * r * rng.uniform(0.5, 1.0)]
        return [d.place(half, center, angle)], []
    if shape == "star":
        return [d.place(d.star(r, r * rng.uniform(0.4, 0.5)), center, angle)], []
    if shape == "ring":
        squash = rng.uniform(0.8, 1.0)
        return [d.place(d.ellipse(r, r * squash), center, angle)], [d.place(d.ellipse(0.55 * r, 0.55 * r * squash), center, angle)]
    if shape == "cross":
        return [d.place(d.cross(r, r * rng.uniform(0.25, 0.35)), center, rng.uniform(-0.5, 0.5))], []
    if shape == "boat":  # hull (top edge at the centre line), mast and a triangular sail, upright
        flip = 1.0 if rng.random() < 0.5 else -1.0
        tilt = rng.uniform(-0.12, 0.12)
        hull = np.array([[-r, 0], [r, 0], [0.6 * r, 0.45 * r], [-0.6 * r, 0.45 * r]])
        sail = np.array([[-0.1 * r, -0.05 * r], [-0.1 * r, -1.45 * r], [0.75 * r, -0.05 * r]]) * [flip, 1]
        mast = np.array([[-0.16 * r, 0], [-0.1 * r, 0], [-0.1 * r, -1.5 * r], [-0.16 * r, -1.5 * r]]) * [flip, 1]
        return [d.place(hull, center, tilt), d.place(sail, center, tilt), d.place(mast, center, tilt)], []
    raise ValueError(f"unknown shape {shape!r}")


def clutter_polygons(shape: str, center: tuple[float, float], r: float, rng: np.random.Generator) -> list:
    """Polygons of a background distractor (never a class: triangles, bars, blobs, chips)."""
    angle = rng.uniform(0, 2 * np.pi)
    if shape == "triangle":
        return [d.place(d.ellipse(r, r, n=3), center, angle)]
    if shape == "bar":
        return [d.place(np.array([[-r, -0.15 * r], [r, -0.15 * r], [r, 0.15 * r], [-r, 0.15 * r]]), center, angle)]
    if shape == "blob":
        return [d.place(d.ellipse(r, r * rng.uniform(0.3, 0.7), n=24), center, angle)]
    if shape == "chip":  # an irregular pentagon
        pts = d.ellipse(1.0, 1.0, n=5) * rng.uniform(0.6, 1.0, (5, 1)) * r
        return [d.place(pts, center, angle)]
    raise ValueError(f"unknown clutter shape {shape!r}")


def _overlap_ok(alpha: np.ndarray, placed: list[np.ndarray]) -> bool:
    area = alpha.sum()
    for other in placed:
        inter = np.minimum(alpha, other).sum()
        if inter > MAX_OVERLAP * min(area, other.sum()):
            return False
    return area > 0


def sample_scene(rng: np.random.Generator, size: tuple[int, int]) -> Scene:
    """A random scene layout of image ``size`` (H, W): classes, objects, clutter, water, background colours."""
    h, w = size
    side = min(h, w)
    names = CLASS_NAMES[1:]
    n_classes = int(rng.choice(len(CLASS_COUNT_PROBS), p=CLASS_COUNT_PROBS)) + 1
    classes = sorted(int(c) + 1 for c in rng.choice(len(names), size=n_classes, replace=False))
    has_boat = CLASS_NAMES.index("boat") in classes
    water = rng.random() < (P_WATER_WITH_BOAT if has_boat else P_WATER_WITHOUT_BOAT)
    water_line = float(rng.uniform(0.45, 0.7) * h) if water else None
    background = (rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.5), rng.uniform(0.35, 0.85),
                  rng.uniform(0.35, 0.85), rng.uniform(0, 2 * np.pi))
    behind, front = [], []
    for _ in range(int(rng.integers(3, 8))):
        shape = CLUTTER_SHAPES[int(rng.integers(len(CLUTTER_SHAPES)))]
        r = rng.uniform(0.04, 0.13) * side
        center = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
        pool = MARKER_TEXTURES if rng.random() < P_CLUTTER_MARKER else BODY_TEXTURES
        item = Item(0, clutter_polygons(shape, center, r, rng), colours=any_colours(rng),
                    texture=pool[int(rng.integers(len(pool)))], texture_scale=rng.uniform(2.5, 6) * side / 96,
                    texture_angle=rng.uniform(0, np.pi), center=center)
        (front if rng.random() < 0.25 else behind).append(item)
    objects, alphas = [], []
    scale = 1.0 if n_classes == 1 else 0.85 if n_classes == 2 else 0.75
    instances = [c for c in classes for _ in range(2 if rng.random() < 0.2 else 1)]
    for label in instances:
        style = STYLES[CLASS_NAMES[label]]
        for _attempt in range(30):
            r = rng.uniform(0.13, 0.27) * side * scale
            if style.shape == "boat" and water_line is not None:  # the hull sits in the water
                cy = rng.uniform(water_line - 0.1 * r, min(h - 0.3 * r, water_line + 0.6 * (h - water_line)))
            else:
                cy = rng.uniform(0.15 * h, 0.85 * h)
            center = (float(rng.uniform(0.15 * w, 0.85 * w)), float(cy))
            fill, holes = object_polygons(style.shape, center, r, rng)
            alpha = d.polygon_alpha(size, fill, holes)
            if _overlap_ok(alpha, alphas):
                break
        else:
            continue
        alphas.append(alpha)
        marker = (marker_polygons(style.shape, fill, center, r, rng), class_colours(style, rng), style.marker)
        body = BODY_TEXTURES[int(rng.integers(len(BODY_TEXTURES)))]
        objects.append(Item(label, fill, holes, any_colours(rng), body, texture_scale=rng.uniform(0.25, 0.45) * r,
                            texture_angle=rng.uniform(0, np.pi), center=center, marker=marker))
    return Scene(size, background, water_line, behind + objects + front, int(rng.integers(2**31)))


def render_background(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Background: a two-colour gradient with blotches, plus the water band when the scene has one."""
    h, w = scene.size
    hue_a, hue_b, sat, val_a, val_b, angle = scene.background
    yy, xx = d.grid(scene.size)
    ramp = ((np.cos(angle) * xx + np.sin(angle) * yy) / max(h, w) + 1) / 2
    blotch = d.smooth_noise(scene.size, 4, rng)
    mix = np.clip(0.6 * ramp + 0.4 * blotch, 0, 1)[..., None]
    image = d.hsv(hue_a, sat, val_a) * (1 - mix) + d.hsv(hue_b, sat, val_b) * mix
    if scene.water_line is not None:
        wobble = 0.02 * h * np.sin(2 * np.pi * xx / (0.5 * w) + rng.uniform(0, 2 * np.pi))
        alpha = np.clip(yy - (scene.water_line + wobble) + 0.5, 0, 1)
        hue = 0.55 + 0.04 * rng.standard_normal()
        texture = d.pattern("waves", scene.size, rng.uniform(3, 5) * min(h, w) / 96, 0.0, (0.0, 0.0), rng)
        d.paint(image, alpha.astype(np.float32), d.hsv(hue, rng.uniform(0.5, 0.8), rng.uniform(0.35, 0.6)),
                d.hsv(hue + 0.03, rng.uniform(0.2, 0.5), rng.uniform(0.7, 0.95)), texture)
    return image.astype(np.float32)


def render_scene(scene: Scene, void_width: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3) and label mask uint8 (H, W) (0 background, class ids, 255 void on outlines)."""
    rng = np.random.default_rng(scene.texture_seed)
    image = render_background(scene, rng)
    mask = np.zeros(scene.size, np.uint8)
    for item in scene.items:
        alpha = d.polygon_alpha(scene.size, item.fill, item.holes)
        texture = d.pattern(item.texture, scene.size, item.texture_scale, item.texture_angle, item.center, rng)
        d.paint(image, alpha, *item.colours, texture)
        if item.marker is not None:
            polygons, colours, kind = item.marker
            part = np.minimum(d.polygon_alpha(scene.size, polygons), alpha)
            kind = "gradient" if kind == "sail" else kind  # a sail: a smooth shade of the class colours
            pattern = d.pattern(kind, scene.size, item.texture_scale, item.texture_angle, item.center, rng)
            d.paint(image, part, *colours, pattern)
        mask[alpha >= 0.5] = item.label
    light = 0.85 + 0.3 * d.smooth_noise(scene.size, 2, rng)
    image = image * light[..., None] + 0.025 * rng.standard_normal(image.shape).astype(np.float32)
    image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return image, d.void_border(mask, void_width)

"""A VOC-format synthetic dataset that any laptop can generate in seconds.

:func:`make_synthetic_voc` writes a real ``VOCdevkit/VOC2012`` tree: JPEG photos, palette PNG
class masks with 255 "void" bands at object borders, instance PNGs, XML annotations with boxes,
and the ``ImageSets/Segmentation`` split files. Every loader in ``minseg`` reads it with exactly
the code that reads real Pascal VOC, so lessons run offline and switch to VOC by changing a path.

The scenes are built so that segmenting them needs more than a colour lookup:

* **shape**: each of the 20 VOC classes is a distinct procedural silhouette (a person is a head,
  torso, arms and legs; a bicycle is two thin rings and a frame), while object colours are drawn
  from one palette shared by all classes;
* **context**: a scene type (road, field, water, indoor room, railway) decides which classes may
  appear and where (aeroplanes and birds in the sky, boats on water, bottles on tables);
* **imbalance**: class frequencies follow the scene priors, so persons and cars are common and
  bottles or trains rare, as in VOC;
* **hard cases**: thin structures (bicycle spokes, masts, chair legs), small objects, occlusion,
  and touching instances of the same class (two sheep side by side), which a semantic mask
  cannot tell apart.

A lesson can build the data its claim needs with :class:`SceneOptions` (``scene=`` of
:func:`make_synthetic_voc`): a class subset and class frequencies (a few genuinely rare
classes), objects per image, object sizes (a tiny foreground, strong scale variation), touching
twins, finer or coarser thin parts, *lookalike* scenes where every object has one silhouette
and only the surroundings tell the classes apart, and *flat* scenes whose object outlines are
strong image edges.

Everything is deterministic for a given ``seed`` and options (one NumPy generator per image),
and the tree is cached: calling again with the same parameters returns at once.

Size: one job (write a synthetic VOC tree) in about 700 lines, most of them the twenty small
drawing functions, one per VOC class, that give each class its shape and context.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from minseg.data.voc import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE

GENERATOR_VERSION = 1
MANIFEST = "minseg_synthetic.json"

# Scene types: the classes each may contain, with relative frequencies (the class imbalance).
SCENES: dict[str, dict[str, float]] = {
    "road": {"person": 6, "car": 5, "bus": 1.5, "bicycle": 2, "motorbike": 1.5, "dog": 1,
             "bird": 0.7, "aeroplane": 0.5},
    "field": {"person": 3, "cow": 2, "sheep": 2.5, "horse": 1.5, "dog": 1.5, "bird": 1,
              "cat": 0.7, "aeroplane": 0.5},
    "water": {"boat": 4, "person": 2, "bird": 2, "aeroplane": 0.8, "dog": 0.5},
    "indoor": {"person": 3, "chair": 2.5, "sofa": 1.2, "diningtable": 1.2, "tvmonitor": 1.5,
               "pottedplant": 1.5, "bottle": 1.5, "cat": 1.5, "dog": 1},
    "rail": {"train": 4, "person": 2, "bird": 0.6},
}
SCENE_WEIGHTS = {"road": 3, "field": 2.5, "water": 1.5, "indoor": 3, "rail": 1}
SKY_CLASSES = {"aeroplane", "bird"}
TABLE_TOP_CLASSES = {"bottle", "pottedplant", "tvmonitor"}
CLASS_ID = {name: i for i, name in enumerate(VOC_CLASSES)}
# ``lookalike`` scenes: the one class each scene type holds (every object has the same silhouette).
LOOKALIKE_CLASS = {"road": "car", "water": "boat", "field": "cow", "indoor": "sofa",
                   "rail": "train"}


@dataclass(frozen=True)
class SceneOptions:
    """What the generator draws, so that a lesson can build data around its claim.

    The defaults are the standard scenes (and give byte-identical files to a call without
    options). Every option is deterministic for a given seed.

    Attributes:
        classes: only these object classes appear; scene types without any of them are
            dropped, and each scene draws from its remaining classes.
        class_weights: ``(class, weight)`` pairs replacing the scenes' relative frequencies of
            those classes: ``(("bottle", 0.05),)`` makes bottles rare.
        objects: inclusive range of objects placed per image (before twins).
        scale: range of the random size factor of each object (its class height times this):
            ``(0.3, 0.5)`` gives a tiny foreground, ``(0.4, 2.0)`` strong scale variation.
        twins: probability that an object gets a touching twin of its own class.
        thin: width factor of thin parts (limbs, spokes, masts, legs); below 1 is finer.
        lookalike: every object has one shared silhouette and a random colour, and each scene
            type holds a single class (road: car, water: boat, field: cow, indoor: sofa,
            rail: train): only the surroundings tell the classes apart.
        flat: objects and backgrounds without texture or shading, so that every object outline
            is a strong image edge (what a CRF's appearance kernel looks for).
    """

    classes: tuple[str, ...] | None = None
    class_weights: tuple[tuple[str, float], ...] = ()
    objects: tuple[int, int] = (1, 4)
    scale: tuple[float, float] = (0.7, 1.3)
    twins: float = 0.25
    thin: float = 1.0
    lookalike: bool = False
    flat: bool = False

    def __post_init__(self):
        for name in (self.classes or ()) + tuple(c for c, _ in self.class_weights):
            if name not in CLASS_ID or name == "background":
                raise ValueError(f"unknown object class {name!r}; valid: "
                                 f"{', '.join(VOC_CLASSES[1:])}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
            if not self.classes:
                raise ValueError("classes must name at least one class (or be None for all)")
            if not any(set(self.classes) & set(SCENES[sc]) for sc in SCENES):
                raise ValueError(f"no scene type holds any of {self.classes}")
        object.__setattr__(self, "class_weights",
                           tuple((str(c), float(w)) for c, w in dict(self.class_weights).items()))
        if any(not w > 0 for _, w in self.class_weights):
            raise ValueError(f"class weights must be > 0, got {self.class_weights}")
        lo, hi = self.objects
        if not 1 <= lo <= hi:
            raise ValueError(f"objects must be a range 1 <= lo <= hi, got {self.objects}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be a range 0 < lo <= hi, got {self.scale}")
        if not 0 <= self.twins <= 1:
            raise ValueError(f"twins is a probability, got {self.twins}")
        if not self.thin > 0:
            raise ValueError(f"thin must be > 0, got {self.thin}")
        if self.lookalike and self.classes is not None:
            raise ValueError("lookalike scenes fix their classes (one per scene type); "
                             "leave classes unset")

    @property
    def is_default(self) -> bool:
        return self == SceneOptions()

    def to_dict(self) -> dict:
        """The non-default options (what the cache key and the manifest record)."""
        d = asdict(self)
        return {k: v for k, v in d.items() if v != getattr(SceneOptions(), k)}

    def scenes(self) -> dict[str, dict[str, float]]:
        """Scene type -> {class: relative frequency} under these options."""
        if self.lookalike:
            return {sc: {c: 1.0} for sc, c in LOOKALIKE_CLASS.items()}
        weights = dict(self.class_weights)
        out = {}
        for sc, classes in SCENES.items():
            kept = {c: weights.get(c, w) for c, w in classes.items()
                    if self.classes is None or c in self.classes}
            if kept:
                out[sc] = kept
        return out


# --------------------------------------------------------------------------- drawing primitives
class _Canvas:
    """One object's silhouette, drawn in a local frame where the object is about 1 unit tall."""

    def __init__(self, size: int, cx: float, base_y: float, scale: float, flip: bool,
                 thin: float = 1.0):
        self.img = Image.new("L", (size, size), 0)
        self.draw = ImageDraw.Draw(self.img)
        self.cx, self.base_y, self.s, self.flip, self.thin = cx, base_y, scale, flip, thin

    def pt(self, x: float, y: float) -> tuple[float, float]:
        # local (x right, y up from the base) -> pixel coordinates
        x = -x if self.flip else x
        return self.cx + x * self.s, self.base_y - y * self.s

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        (a, b), (c, d) = self.pt(x0, y0), self.pt(x1, y1)
        return [min(a, c), min(b, d), max(a, c), max(b, d)]

    def rect(self, x0, y0, x1, y1, fill=255):
        self.draw.rectangle(self.box(x0, y0, x1, y1), fill=fill)

    def ellipse(self, x0, y0, x1, y1, fill=255):
        self.draw.ellipse(self.box(x0, y0, x1, y1), fill=fill)

    def ring(self, cx, cy, r, width):
        self.draw.ellipse(self.box(cx - r, cy - r, cx + r, cy + r), outline=255,
                          width=max(1, round(width * self.thin * self.s)))

    def poly(self, pts, fill=255):
        self.draw.polygon([self.pt(x, y) for x, y in pts], fill=fill)

    def line(self, pts, width):
        self.draw.line([self.pt(x, y) for x, y in pts], fill=255,
                       width=max(1, round(width * self.thin * self.s)))

    def mask(self) -> np.ndarray:
        return np.asarray(self.img) > 0


def _person(c: _Canvas, r: np.random.Generator):
    c.ellipse(-0.09, 0.8, 0.09, 1.0)                          # head
    c.rect(-0.13, 0.42, 0.13, 0.8)                             # torso
    arm = r.uniform(-0.15, 0.25)
    c.line([(-0.12, 0.76), (-0.28, 0.5 + arm)], 0.05)         # arms: thin structures
    c.line([(0.12, 0.76), (0.28, 0.5 - arm)], 0.05)
    c.line([(-0.07, 0.44), (-0.11, 0.0)], 0.07)               # legs
    c.line([(0.07, 0.44), (0.11, 0.0)], 0.07)


def _bicycle(c: _Canvas, r):
    c.ring(-0.35, 0.22, 0.22, 0.04)
    c.ring(0.35, 0.22, 0.22, 0.04)
    c.line([(-0.35, 0.22), (-0.05, 0.55), (0.3, 0.55), (0.35, 0.22)], 0.035)
    c.line([(-0.05, 0.55), (0.05, 0.22), (-0.35, 0.22)], 0.035)
    c.line([(-0.08, 0.55), (-0.1, 0.65)], 0.04)
    c.line([(0.3, 0.55), (0.28, 0.7), (0.2, 0.72)], 0.035)


def _motorbike(c: _Canvas, r):
    c.ellipse(-0.55, 0.0, -0.15, 0.4)
    c.ellipse(0.15, 0.0, 0.55, 0.4)
    c.poly([(-0.35, 0.25), (-0.1, 0.55), (0.3, 0.5), (0.4, 0.25)])
    c.line([(0.3, 0.5), (0.35, 0.75)], 0.05)


def _car(c: _Canvas, r):
    c.rect(-0.9, 0.12, 0.9, 0.5)
    c.poly([(-0.5, 0.5), (-0.3, 0.85), (0.35, 0.85), (0.6, 0.5)])
    c.ellipse(-0.7, 0.0, -0.35, 0.3)
    c.ellipse(0.35, 0.0, 0.7, 0.3)


def _bus(c: _Canvas, r):
    c.rect(-1.3, 0.15, 1.3, 1.0)
    c.ellipse(-0.95, 0.0, -0.6, 0.32)
    c.ellipse(0.6, 0.0, 0.95, 0.32)


def _train(c: _Canvas, r):
    c.rect(-2.5, 0.12, 1.2, 0.9)
    c.poly([(1.2, 0.12), (1.2, 0.9), (1.5, 0.7), (1.6, 0.12)])
    c.rect(-2.5, 0.0, 1.6, 0.12)


def _aeroplane(c: _Canvas, r):
    c.ellipse(-1.0, 0.35, 1.0, 0.65)                           # fuselage
    c.poly([(-0.15, 0.5), (0.25, 0.5), (-0.3, 1.2), (-0.45, 1.2)])   # wing up (far)
    c.poly([(-0.15, 0.5), (0.25, 0.5), (-0.3, -0.2), (-0.45, -0.2)])  # wing down (near)
    c.poly([(-0.8, 0.55), (-1.05, 1.0), (-0.9, 1.0), (-0.6, 0.55)])  # tail fin


def _bird(c: _Canvas, r):
    c.ellipse(-0.35, 0.3, 0.35, 0.6)
    c.ellipse(0.25, 0.5, 0.5, 0.72)
    flap = r.uniform(0.4, 0.9)
    c.poly([(-0.1, 0.5), (0.15, 0.5), (-0.35, 0.5 + flap)])
    c.poly([(0.45, 0.62), (0.65, 0.58), (0.45, 0.56)])         # beak
    c.poly([(-0.3, 0.45), (-0.65, 0.35), (-0.6, 0.55)])        # tail


def _boat(c: _Canvas, r):
    c.poly([(-0.9, 0.35), (0.9, 0.35), (0.6, 0.0), (-0.6, 0.0)])    # hull
    c.line([(0.0, 0.35), (0.0, 1.4)], 0.035)                        # mast: thin
    if r.random() < 0.7:
        c.poly([(0.05, 1.35), (0.05, 0.45), (0.6, 0.45)])           # sail


def _bottle(c: _Canvas, r):
    c.rect(-0.15, 0.0, 0.15, 0.65)
    c.poly([(-0.15, 0.65), (0.15, 0.65), (0.06, 0.8), (-0.06, 0.8)])
    c.rect(-0.05, 0.8, 0.05, 1.0)


def _chair(c: _Canvas, r):
    c.rect(-0.3, 0.45, 0.3, 0.53)                  # seat
    c.rect(-0.3, 0.53, -0.24, 1.0)                 # back post
    c.rect(-0.3, 0.85, -0.05, 0.95)
    c.line([(-0.27, 0.45), (-0.27, 0.0)], 0.04)    # legs: thin
    c.line([(0.27, 0.45), (0.27, 0.0)], 0.04)


def _sofa(c: _Canvas, r):
    c.rect(-1.0, 0.1, 1.0, 0.45)
    c.rect(-1.0, 0.45, 1.0, 0.8)
    c.rect(-1.15, 0.1, -0.9, 0.6)
    c.rect(0.9, 0.1, 1.15, 0.6)
    c.rect(-1.0, 0.0, -0.9, 0.1)
    c.rect(0.9, 0.0, 1.0, 0.1)


def _table(c: _Canvas, r):
    c.rect(-1.0, 0.62, 1.0, 0.72)
    c.line([(-0.85, 0.62), (-0.85, 0.0)], 0.06)
    c.line([(0.85, 0.62), (0.85, 0.0)], 0.06)


def _tv(c: _Canvas, r):
    c.rect(-0.6, 0.25, 0.6, 1.0)
    c.rect(-0.06, 0.08, 0.06, 0.25)
    c.rect(-0.3, 0.0, 0.3, 0.08)


def _plant(c: _Canvas, r):
    c.poly([(-0.25, 0.35), (0.25, 0.35), (0.17, 0.0), (-0.17, 0.0)])  # pot
    for _ in range(5):
        a = r.uniform(-1.2, 1.2)
        x, y = math.sin(a) * 0.3, 0.35 + math.cos(a) * 0.35
        c.ellipse(x - 0.12, y - 0.2, x + 0.12, y + 0.2)
    c.line([(0.0, 0.35), (0.0, 0.6)], 0.04)


def _quadruped(c: _Canvas, r, body, leg, neck, head, ears=None, tail=None):
    bx, by = body
    c.ellipse(-bx, leg, bx, leg + by)                               # body
    for x in (-bx * 0.7, -bx * 0.45, bx * 0.45, bx * 0.7):
        c.line([(x, leg + by * 0.3), (x, 0.0)], 0.06)               # legs
    nx, ny = neck
    c.poly([(bx * 0.6, leg + by * 0.6), (bx * 0.85, leg + by * 0.75),
            (bx + nx, leg + by + ny), (bx + nx - 0.1, leg + by + ny - 0.05)])
    hx, hy, hr = bx + nx, leg + by + ny, head
    c.ellipse(hx - hr, hy - hr * 0.7, hx + hr * 1.3, hy + hr * 0.7)
    if ears:
        c.poly([(hx - hr * 0.6, hy + hr * 0.4), (hx - hr * 0.2, hy + hr * 0.5),
                (hx - hr * 0.5, hy + hr * 0.5 + ears)])
    if tail:
        c.line([(-bx, leg + by * 0.7), (-bx - tail[0], leg + by * 0.7 + tail[1])], 0.04)


def _cow(c, r):
    _quadruped(c, r, body=(0.6, 0.45), leg=0.35, neck=(0.15, 0.05), head=0.15, tail=(0.1, -0.3))


def _horse(c, r):
    _quadruped(c, r, body=(0.55, 0.35), leg=0.55, neck=(0.25, 0.45), head=0.13, ears=0.12,
               tail=(0.2, -0.35))


def _dog(c, r):
    _quadruped(c, r, body=(0.45, 0.3), leg=0.25, neck=(0.15, 0.2), head=0.14, ears=0.1,
               tail=(0.2, 0.25))


def _cat(c, r):
    _quadruped(c, r, body=(0.4, 0.25), leg=0.18, neck=(0.1, 0.15), head=0.13, ears=0.16,
               tail=(0.25, 0.45))


def _sheep(c, r):
    for x, y in ((-0.35, 0.45), (-0.1, 0.55), (0.15, 0.5), (0.35, 0.45), (0.0, 0.35),
                 (-0.25, 0.3), (0.25, 0.32)):
        c.ellipse(x - 0.22, y - 0.18, x + 0.22, y + 0.18)           # fleece: a cloud of lumps
    c.ellipse(0.45, 0.45, 0.7, 0.65)
    for x in (-0.3, -0.15, 0.15, 0.3):
        c.line([(x, 0.2), (x, 0.0)], 0.05)


def _lookalike(c: _Canvas, r):
    # one silhouette for every class of a lookalike scene: a rounded box on a low base
    c.rect(-0.8, 0.15, 0.8, 0.75)
    c.ellipse(-0.95, 0.15, -0.6, 0.75)
    c.ellipse(0.6, 0.15, 0.95, 0.75)
    c.rect(-0.6, 0.0, 0.6, 0.15)


LOOKALIKE_HEIGHT = 0.3

SHAPES = {
    "aeroplane": _aeroplane, "bicycle": _bicycle, "bird": _bird, "boat": _boat,
    "bottle": _bottle, "bus": _bus, "car": _car, "cat": _cat, "chair": _chair, "cow": _cow,
    "diningtable": _table, "dog": _dog, "horse": _horse, "motorbike": _motorbike,
    "person": _person, "pottedplant": _plant, "sheep": _sheep, "sofa": _sofa, "train": _train,
    "tvmonitor": _tv,
}
# Height of each class as a fraction of the image (before random jitter): sets relative sizes.
HEIGHTS = {
    "aeroplane": 0.16, "bicycle": 0.22, "bird": 0.1, "boat": 0.25, "bottle": 0.12, "bus": 0.3,
    "car": 0.17, "cat": 0.18, "chair": 0.3, "cow": 0.26, "diningtable": 0.22, "dog": 0.2,
    "horse": 0.3, "motorbike": 0.2, "person": 0.4, "pottedplant": 0.2, "sheep": 0.2,
    "sofa": 0.3, "train": 0.25, "tvmonitor": 0.2,
}


# --------------------------------------------------------------------------- textures and scenes
def _noise(r: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    grid = r.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def _random_colour(r: np.random.Generator) -> np.ndarray:
    # One palette for every class: colour alone never identifies an object.
    return r.uniform(30, 230, 3).astype(np.float32)


def _texture(r, size, colour) -> np.ndarray:
    kind = r.integers(3)
    base = np.broadcast_to(colour, (size, size, 3)).astype(np.float32)
    if kind == 0:      # mottled
        return base * (1 + 0.25 * _noise(r, size, 6)[..., None])
    if kind == 1:      # stripes
        period = r.uniform(3, 8)
        ang = r.uniform(0, math.pi)
        yy, xx = np.mgrid[0:size, 0:size]
        s = np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period)
        return base * (1 + 0.2 * s[..., None])
    return base * (1 + 0.1 * _noise(r, size, 3)[..., None])  # nearly flat


def _background(r: np.random.Generator, size: int, scene: str) -> tuple[np.ndarray, int]:
    """Scene background (H, W, 3 float) and the horizon row (where ground objects stand)."""
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    if scene == "indoor":
        horizon = int(size * r.uniform(0.45, 0.65))
        wall = r.uniform(120, 230, 3)
        floor = r.uniform(60, 160, 3)
        img = np.where(yy * size < horizon, wall, floor) * np.ones((1, size, 1))
        img = img * (1 + 0.08 * _noise(r, size, 4)[..., None])
        # floor boards or tiles
        if r.random() < 0.5:
            img[horizon:, :: max(4, size // 12)] *= 0.8
    else:
        horizon = int(size * r.uniform(0.35, 0.55))
        sky_top, sky_bottom = r.uniform([40, 90, 150], [140, 180, 255]), r.uniform(170, 250, 3)
        sky = sky_top + (sky_bottom - sky_top) * (yy / max(horizon / size, 1e-3))
        ground = {
            "road": r.uniform(70, 130) * r.uniform(0.92, 1.08, 3),
            "field": r.uniform([40, 110, 30], [120, 190, 90]),
            "water": r.uniform([20, 60, 110], [80, 130, 200]),
            "rail": r.uniform([90, 80, 60], [150, 130, 110]),
        }[scene]
        img = np.where(yy * size < horizon, sky, ground) * np.ones((1, size, 1))
        img[:horizon] *= 1 + 0.05 * _noise(r, size, 3)[:horizon, :, None]
        img[horizon:] *= 1 + 0.18 * _noise(r, size, 10)[horizon:, :, None]
        if scene == "road":          # lane markings
            y = int(horizon + (size - horizon) * 0.6)
            for x in range(int(r.integers(0, 10)), size, max(8, size // 6)):
                img[y:y + max(1, size // 64), x:x + size // 14] = 230
        if scene == "rail":          # rails
            for y in (horizon + (size - horizon) // 3, horizon + (size - horizon) // 3 + size // 40):
                img[y:y + max(1, size // 96)] = 60
    return img.astype(np.float32), horizon


def _place(r, size, horizon, name, scene, opts: SceneOptions) -> tuple[float, float, float]:
    """(centre x, base y, pixels per unit) for one object, following the scene's context."""
    base_height = LOOKALIKE_HEIGHT if opts.lookalike else HEIGHTS[name]
    height = base_height * size * r.uniform(*opts.scale)
    cx = r.uniform(0.1, 0.9) * size
    if name in SKY_CLASSES and (scene != "indoor") and r.random() < 0.85:
        base = r.uniform(0.1, 0.8) * horizon + height * 0.5
    elif name in TABLE_TOP_CLASSES and scene == "indoor":
        base = horizon + r.uniform(-0.05, 0.1) * size
    elif name == "boat":
        base = horizon + r.uniform(0.05, 0.5) * (size - horizon)
    elif name == "train":
        base = horizon + (size - horizon) // 3 + size // 40
        cx = r.uniform(0.3, 0.7) * size
    else:       # standing on the ground: lower in the image means closer, so larger
        depth = r.uniform(0.1, 1.0)
        base = horizon + depth * (size - horizon) * 0.95
        height *= 0.6 + 0.7 * depth
    return cx, base, height


def _void_band(instances: np.ndarray, width: int) -> np.ndarray:
    """Pixels just outside each object (or between two touching objects): VOC's void band.

    A pixel is void when a 4-neighbour within ``width`` steps belongs to a *higher* instance
    id; background is 0, so the band lies on the background side of every outline, and thin
    structures one pixel wide keep their label.
    """
    band = np.zeros(instances.shape, dtype=bool)
    cur = instances
    for _ in range(width):
        nb = cur.copy()
        for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
            rolled = np.roll(cur, shift, axis=axis)
            # np.roll wraps around: blank the wrapped row/column
            idx = [slice(None)] * 2
            idx[axis] = slice(0, 1) if shift == 1 else slice(-1, None)
            rolled[tuple(idx)] = 0
            nb = np.maximum(nb, rolled)
        cur = nb
    band |= cur > instances
    return band


def render_scene(index: int, seed: int, size: int, options: SceneOptions | None = None) -> dict:
    """Render one scene: RGB uint8 image, class mask (with 255 void), instance mask, objects.

    Pure function of ``(index, seed, size, options)``.
    """
    r = np.random.default_rng([seed, index, GENERATOR_VERSION])
    opts = options or SceneOptions()
    for _attempt in range(10):      # redraw the rare scene whose objects all fell outside
        s = _render(r, size, opts)
        if s["objects"]:
            break
    return s


def _render(r: np.random.Generator, size: int, opts: SceneOptions) -> dict:
    scenes = opts.scenes()
    scene_weights = {sc: w for sc, w in SCENE_WEIGHTS.items() if sc in scenes}
    scene = r.choice(list(scene_weights), p=_norm(scene_weights))
    img, horizon = _background(r, size, scene)
    if opts.flat:                   # no texture: smooth the background to its row means
        img[:] = img.mean(axis=1, keepdims=True)
    cls_mask = np.zeros((size, size), np.uint8)
    inst_mask = np.zeros((size, size), np.uint8)
    names, probs = list(scenes[scene]), _norm(scenes[scene])
    n_obj = int(r.integers(opts.objects[0], opts.objects[1] + 1))
    placements = []
    for _ in range(n_obj):
        name = str(r.choice(names, p=probs))
        placements.append((name, *_place(r, size, horizon, name, scene, opts)))
        if r.random() < opts.twins and name not in ("train", "diningtable"):
            # a touching twin of the same class, one body-width away
            cx, base, h = placements[-1][1:]
            placements.append((name, cx + h * r.choice([-1, 1]) * r.uniform(0.5, 0.75),
                               base + r.uniform(-0.03, 0.03) * size, h * r.uniform(0.9, 1.1)))
    placements.sort(key=lambda p: p[2])       # far (higher in the image) first: painter's order
    objects = []
    for name, cx, base, height in placements:
        canvas = _Canvas(size, cx, base, height, flip=bool(r.random() < 0.5), thin=opts.thin)
        (_lookalike if opts.lookalike else SHAPES[name])(canvas, r)
        m = canvas.mask()
        if not m.any():
            continue
        if opts.flat:
            img[m] = _random_colour(r)
        else:
            tex = _texture(r, size, _random_colour(r))
            shade = 1 + 0.15 * _noise(r, size, 2)[..., None]
            img[m] = (tex * shade)[m]
        objects.append(name)
        inst_mask[m] = len(objects)
        cls_mask[m] = CLASS_ID[name]
    band = _void_band(inst_mask, width=max(1, size // 128))
    cls_mask[band] = IGNORE_INDEX
    inst_mask[band] = IGNORE_INDEX
    # objects fully hidden behind later ones (or by the void band) leave no pixels: drop them
    # from the annotation and renumber the rest 1..K
    visible = [k + 1 for k in range(len(objects)) if (inst_mask == k + 1).any()]
    remap = np.zeros(256, np.uint8)
    remap[IGNORE_INDEX] = IGNORE_INDEX
    remap[visible] = np.arange(1, len(visible) + 1)
    inst_mask = remap[inst_mask]
    objects = [objects[k - 1] for k in visible]
    img = img + r.normal(0, 4, img.shape)      # sensor noise
    boxes = []
    for k, name in enumerate(objects, start=1):
        ys, xs = np.nonzero(inst_mask == k)
        boxes.append((name, int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1))
    return {
        "image": np.clip(img, 0, 255).astype(np.uint8),
        "mask": cls_mask,
        "instances": inst_mask,
        "objects": boxes,
        "scene": scene,
    }


def _norm(weights: dict[str, float]) -> np.ndarray:
    w = np.array(list(weights.values()), dtype=np.float64)
    return w / w.sum()


# --------------------------------------------------------------------------- writing the tree
def _palette_png(mask: np.ndarray, path: Path) -> None:
    im = Image.fromarray(mask, mode="P")
    im.putpalette(VOC_PALETTE.reshape(-1).tolist())
    im.save(path, optimize=False)


def _annotation_xml(name: str, size: int, objects, scene: str) -> str:
    objs = "".join(
        f"\t<object>\n\t\t<name>{escape(c)}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n"
        f"\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n"
        f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for c, x0, y0, x1, y1 in objects)
    return (f"<annotation>\n\t<folder>VOC2012</folder>\n\t<filename>{name}.jpg</filename>\n"
            f"\t<source>\n\t\t<database>minseg synthetic ({scene})</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{size}</width>\n\t\t<height>{size}</height>\n"
            f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>1</segmented>\n{objs}</annotation>\n")


def _write_one(args) -> None:
    voc, name, index, seed, size, options = args
    s = render_scene(index, seed, size, options)
    Image.fromarray(s["image"]).save(voc / "JPEGImages" / f"{name}.jpg", quality=92)
    _palette_png(s["mask"], voc / "SegmentationClass" / f"{name}.png")
    _palette_png(s["instances"], voc / "SegmentationObject" / f"{name}.png")
    (voc / "Annotations" / f"{name}.xml").write_text(
        _annotation_xml(name, size, s["objects"], s["scene"]))


def default_synthetic_root(num_train: int, num_val: int, image_size: int, seed: int,
                           options: SceneOptions | None = None) -> Path:
    """Where :func:`make_synthetic_voc` caches a set with these parameters by default (scene
    options other than the defaults add a short hash of themselves to the name)."""
    from minseg.config import data_dir

    name = f"synthetic-voc-{image_size}px-{num_train}+{num_val}-seed{seed}"
    if options is not None and not options.is_default:
        blob = json.dumps(options.to_dict(), sort_keys=True).encode()
        name += "-" + hashlib.sha1(blob).hexdigest()[:10]
    return data_dir() / name


def make_synthetic_voc(root: str | os.PathLike | None = None, *, num_train: int = 400,
                       num_val: int = 100, image_size: int = 128, seed: int = 0,
                       scene: SceneOptions | None = None, overwrite: bool = False,
                       workers: int | None = None, verbose: bool = False) -> Path:
    """Write (or reuse) a synthetic Pascal-VOC-format dataset and return its root.

    The returned directory contains ``VOCdevkit/VOC2012`` and can be passed as ``root`` to
    :class:`minseg.data.VOCSegmentationDataset` or to plain
    ``torchvision.datasets.VOCSegmentation(root, year="2012")``.

    Args:
        root: target directory; default ``$MINSEG_DATA/synthetic-voc-...`` (see
            :func:`default_synthetic_root`).
        num_train, num_val: images in ``train.txt`` / ``val.txt`` (``trainval.txt`` has both).
        image_size: side of the square images in pixels.
        seed: the same seed gives byte-identical files.
        scene: :class:`SceneOptions` (classes, frequencies, object sizes, twins, thin parts,
            lookalike or flat scenes); default: the standard scenes.
        overwrite: regenerate even if a matching cached tree exists.
        workers: processes used to render (default: up to 2; ``1`` renders in this process).
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train}, {num_val}")
    scene = scene or SceneOptions()
    root = Path(root) if root is not None else default_synthetic_root(num_train, num_val,
                                                                       image_size, seed, scene)
    params = {"generator_version": GENERATOR_VERSION, "num_train": num_train,
              "num_val": num_val, "image_size": image_size, "seed": seed}
    if not scene.is_default:
        params["scene"] = json.loads(json.dumps(scene.to_dict()))
    manifest = root / MANIFEST
    if not overwrite and manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("params") == params:
                return root
        except json.JSONDecodeError:
            pass
    t0 = time.perf_counter()
    root.parent.mkdir(parents=True, exist_ok=True)
    # Render into a temporary sibling and rename at the end: an interrupted run leaves no
    # half-written tree that a later call would mistake for a finished one.
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=root.parent))
    try:
        voc = tmp / "VOCdevkit" / "VOC2012"
        for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations",
                    "ImageSets/Segmentation", "ImageSets/Main"):
            (voc / sub).mkdir(parents=True)
        names = [f"synth_{i:06d}" for i in range(num_train + num_val)]
        jobs = [(voc, n, i, seed, image_size, scene) for i, n in enumerate(names)]
        workers = workers or min(2, os.cpu_count() or 1)
        if workers > 1 and len(jobs) >= 64:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_write_one, jobs, chunksize=16))
        else:
            for job in jobs:
                _write_one(job)
        sets = voc / "ImageSets" / "Segmentation"
        (sets / "train.txt").write_text("".join(n + "\n" for n in names[:num_train]))
        (sets / "val.txt").write_text("".join(n + "\n" for n in names[num_train:]))
        (sets / "trainval.txt").write_text("".join(n + "\n" for n in names))
        (tmp / MANIFEST).write_text(json.dumps({"params": params}, indent=1) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"wrote {num_train + num_val} synthetic VOC images ({image_size}px) to {root} "
              f"in {time.perf_counter() - t0:.1f}s")
    return root

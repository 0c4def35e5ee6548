"""Weak labels derived from a full mask: points, scribbles and boxes (lesson 14)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from minseg.validate import IGNORE_INDEX


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _check_mask2d(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer class-id mask, got dtype {mask.dtype}")
    if mask.ndim != 2:
        raise ValueError(f"{name} must have shape H,W; got {tuple(mask.shape)}")
    if bool((mask < 0).any()):
        raise ValueError(f"{name} contains negative class ids")
    return mask.long()


def _check_instances(instances, mask: torch.Tensor):
    """``None``, or an instance-id map of the same shape as ``mask``."""
    if instances is None:
        return None
    instances = _check_mask2d(instances, "instances")
    if instances.shape != mask.shape:
        raise ValueError(f"instances has shape {tuple(instances.shape)} but mask has "
                         f"{tuple(mask.shape)}")
    return instances


def _rng(seed) -> np.random.Generator:
    """One NumPy generator from an int or a sequence of ints (e.g. ``[seed, image_index]``)."""
    return np.random.default_rng(seed)


def _classes(mask: torch.Tensor, ignore_index: int, include_background: bool,
             background: int) -> list[int]:
    cls = [c for c in torch.unique(mask).tolist() if c != ignore_index]
    return [c for c in cls if include_background or c != background]


def _erode(region: torch.Tensor, steps: int) -> torch.Tensor:
    """Shrink a bool ``H,W`` region by ``steps`` pixels (8-neighbourhood; the image border does
    not erode, it is not a label boundary)."""
    out = region
    for _ in range(steps):
        out = out & ~(F.max_pool2d((~out).float()[None, None], 3, 1, 1)[0, 0] > 0)
    return out


def _disk(radius: float) -> list[tuple[int, int]]:
    r = int(math.floor(radius))
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if dy * dy + dx * dx <= radius * radius + 1e-9]


def _paint(out: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, radius: float, value: int,
           allowed: torch.Tensor) -> None:
    """Set ``out`` to ``value`` on disks of ``radius`` around ``(ys, xs)``, only where
    ``allowed`` (so a weak label never crosses into another class)."""
    H, W = out.shape
    for dy, dx in _disk(radius):
        y, x = ys + dy, xs + dx
        ok = (y >= 0) & (y < H) & (x >= 0) & (x < W)
        y, x = y[ok], x[ok]
        keep = allowed[y, x]
        out[y[keep], x[keep]] = value


# ---------------------------------------------------------------------------------------------
# points and scribbles: sparse masks for partial cross entropy
# ---------------------------------------------------------------------------------------------
def points_from_mask(mask: torch.Tensor, points_per_class: int = 1, *, seed=0,
                     instances: torch.Tensor | None = None, radius: float = 0,
                     include_background: bool = True, background: int = 0,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Simulated point clicks: a sparse mask where a few pixels keep their class.

    For each class present in ``mask`` (``include_background``: the background too, since a
    partial cross entropy with no background pixel would never predict background), pick
    ``points_per_class`` pixels of that class uniformly at random; with ``instances`` (an
    ``H,W`` map of object ids ``> 0``), pick ``points_per_class`` per *object* instead, and per
    class for background. Bearman et al. 2016 (https://arxiv.org/abs/1506.02106) click one
    point per class; their "random points" variant samples them from the ground truth, as
    here. ``radius > 0`` paints a disk around each point, clipped to the point's class, so
    that it survives downscaling augmentation (a single pixel often vanishes under
    nearest-neighbour resizing).

    Returns ``int64 H,W``: the class at labelled pixels, ``ignore_index`` elsewhere (void
    pixels of ``mask`` are never labelled). Deterministic in ``seed`` (an int or a sequence
    of ints, e.g. ``[seed, image_index]``).
    """
    mask = _check_mask2d(mask)
    if not isinstance(points_per_class, int) or points_per_class < 1:
        raise ValueError(f"points_per_class must be a positive int, got {points_per_class!r}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    instances = _check_instances(instances, mask)
    rng = _rng(seed)
    out = torch.full_like(mask, ignore_index)
    regions = _object_regions(mask, instances, ignore_index, include_background, background)
    for c, region in regions:
        ys, xs = torch.nonzero(region, as_tuple=True)
        k = min(points_per_class, len(ys))
        pick = torch.from_numpy(rng.choice(len(ys), size=k, replace=False)).long()
        _paint(out, ys[pick], xs[pick], radius, c, mask == c)
    return out


def _segment(y0: int, x0: int, y1: int, x1: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(abs(y1 - y0), abs(x1 - x0)) + 1
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    return (y0 + t * (y1 - y0)).round().long(), (x0 + t * (x1 - x0)).round().long()


def _object_regions(mask: torch.Tensor, instances: torch.Tensor | None, ignore_index: int,
                    include_background: bool, background: int) -> list[tuple[int, torch.Tensor]]:
    """(class, bool region) pairs: one per class, or with ``instances`` one per object of a
    thing class (and one per class for background and for pixels without an instance id)."""
    regions = []
    for c in _classes(mask, ignore_index, include_background, background):
        cls = mask == c
        if instances is None or c == background:
            regions.append((c, cls))
            continue
        ids = [i for i in torch.unique(instances[cls]).tolist() if i not in (0, ignore_index)]
        for i in ids:
            regions.append((c, cls & (instances == i)))
        rest = cls & ((instances == 0) | (instances == ignore_index))
        if not ids or bool(rest.any()):  # class pixels that belong to no instance
            regions.append((c, rest if ids else cls))
    return regions


def scribbles_from_mask(mask: torch.Tensor, *, seed=0, instances: torch.Tensor | None = None,
                        vertices: int = 4, width: int = 1, margin: int = 2, min_area: int = 10,
                        include_background: bool = True, background: int = 0,
                        ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Simulated scribbles: one stroke through every class region (or, with ``instances``,
    through every object), the rest unlabelled.

    For each region of at least ``min_area`` pixels (``include_background``: the background
    too), pick ``vertices`` random points well inside it (at least ``margin`` pixels from its
    edge, less when the region is too thin), order them along the region's main axis, and join
    them with straight strokes ``width`` pixels wide. Stroke pixels that leave the region are
    dropped, so a scribble never labels a pixel with the wrong class (and a region made of
    several pieces gets a stroke with gaps). In the spirit of ScribbleSup (Lin et al. 2016,
    https://arxiv.org/abs/1604.05144).

    Returns ``int64 H,W`` with the class on stroke pixels and ``ignore_index`` elsewhere;
    deterministic in ``seed`` (an int or a sequence of ints).
    """
    mask = _check_mask2d(mask)
    if vertices < 1 or width < 1 or margin < 0 or min_area < 1:
        raise ValueError(f"need vertices >= 1, width >= 1, margin >= 0, min_area >= 1; got "
                         f"{vertices}, {width}, {margin}, {min_area}")
    instances = _check_instances(instances, mask)
    rng = _rng(seed)
    out = torch.full_like(mask, ignore_index)
    for c, region in _object_regions(mask, instances, ignore_index, include_background, background):
        if int(region.sum()) < min_area:
            continue
        inner = region
        for m in range(margin, 0, -1):  # the deepest interior that is not empty
            eroded = _erode(region, m)
            if bool(eroded.any()):
                inner = eroded
                break
        ys, xs = torch.nonzero(inner, as_tuple=True)
        pick = torch.from_numpy(rng.choice(len(ys), size=min(vertices, len(ys)),
                                           replace=False)).long()
        py, px = ys[pick].double(), xs[pick].double()
        # order the vertices along the region's principal axis: a stroke, not a zigzag
        ry, rx = torch.nonzero(region, as_tuple=True)
        coords = torch.stack([ry.double(), rx.double()], 1)
        coords = coords - coords.mean(0)
        axis = torch.linalg.eigh(coords.T @ coords)[1][:, -1]
        order = torch.argsort(py * axis[0] + px * axis[1], stable=True)
        py, px = py[order].long().tolist(), px[order].long().tolist()
        sy, sx = [torch.tensor([py[0]])], [torch.tensor([px[0]])]
        for i in range(len(py) - 1):
            a, b = _segment(py[i], px[i], py[i + 1], px[i + 1])
            sy.append(a), sx.append(b)
        _paint(out, torch.cat(sy), torch.cat(sx), (width - 1) / 2, c, region)
    return out


# ---------------------------------------------------------------------------------------------
# boxes: box-to-mask pseudo-labels
# ---------------------------------------------------------------------------------------------
def boxes_from_instances(mask: torch.Tensor, instances: torch.Tensor, background: int = 0,
                         ignore_index: int = IGNORE_INDEX) -> list[tuple[int, int, int, int, int]]:
    """The tight box of every object: ``[(class_id, x0, y0, x1, y1)]`` with 0-based inclusive
    pixel coordinates, in instance-id order.

    ``instances`` holds an id ``> 0`` per object (VOC's ``SegmentationObject`` PNG; 0 and
    ``ignore_index`` elsewhere). An object's class is the most frequent non-void,
    non-background class of ``mask`` under it; objects with none (e.g. a class remapped to
    background) are skipped. VOC's XML boxes are 1-based: subtract 1 to compare.
    """
    mask, instances = _check_mask2d(mask), _check_mask2d(instances, "instances")
    if mask.shape != instances.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and instances {tuple(instances.shape)} "
                         f"must have the same shape")
    boxes = []
    for i in torch.unique(instances).tolist():
        if i in (0, ignore_index):
            continue
        obj = instances == i
        cls = mask[obj]
        cls = cls[(cls != background) & (cls != ignore_index)]
        if cls.numel() == 0:
            continue
        c = int(torch.mode(cls).values)
        ys, xs = torch.nonzero(obj, as_tuple=True)
        boxes.append((c, int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
    return boxes


def boxes_to_masks(boxes: Iterable[Sequence[int]], shape: tuple[int, int], *,
                   inner: float | None = None, background: int = 0,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Box-to-mask pseudo-label: every box filled with its class, background elsewhere.

    ``boxes``: ``(class_id, x0, y0, x1, y1)`` with 0-based inclusive pixel coordinates (as
    :func:`boxes_from_instances` returns). Boxes are drawn from the largest to the smallest
    area, so where boxes overlap the smaller one wins (a small object in front of a large one
    usually covers it; the large box would erase it otherwise). With ``inner`` in ``(0, 1)``
    only the central part of each box (``inner`` times its width and height, centred) is
    labelled with the class, and the rim between it and the box edge becomes
    ``ignore_index``: the rim is where a box is most often wrong (corners lie outside most
    objects), so it is better left unlabelled than labelled wrongly (Khoreva et al. 2017,
    https://arxiv.org/abs/1603.07485). ``shape`` is ``(H, W)``; returns ``int64 H,W``.
    """
    H, W = shape
    if inner is not None and not 0 < inner <= 1:
        raise ValueError(f"inner must be in (0, 1] or None, got {inner!r}")
    out = torch.full((H, W), background, dtype=torch.long)
    checked = []
    for b in boxes:
        if len(b) != 5:
            raise ValueError(f"a box is (class_id, x0, y0, x1, y1); got {tuple(b)!r}")
        c, x0, y0, x1, y1 = (int(v) for v in b)
        if not (0 <= x0 <= x1 < W and 0 <= y0 <= y1 < H):
            raise ValueError(f"box {tuple(b)} is not inside a {H}x{W} image with x0 <= x1, "
                             f"y0 <= y1 (0-based inclusive coordinates)")
        checked.append((c, x0, y0, x1, y1))
    # largest first; ties keep the given order (stable sort)
    order = sorted(range(len(checked)), key=lambda k: -(checked[k][3] - checked[k][1] + 1)
                   * (checked[k][4] - checked[k][2] + 1))
    for k in order:
        c, x0, y0, x1, y1 = checked[k]
        if inner is None or inner >= 1:
            out[y0:y1 + 1, x0:x1 + 1] = c
            continue
        out[y0:y1 + 1, x0:x1 + 1] = ignore_index
        w, h = x1 - x0 + 1, y1 - y0 + 1
        iw, ih = max(1, round(w * inner)), max(1, round(h * inner))
        ix0, iy0 = x0 + (w - iw) // 2, y0 + (h - ih) // 2
        out[iy0:iy0 + ih, ix0:ix0 + iw] = c
    return out

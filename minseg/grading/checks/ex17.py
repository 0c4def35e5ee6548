"""Exercise 17 (separating instances): connected components, counting blobs, and the distance
transform behind watershed splitting."""
from __future__ import annotations

import torch

from minseg.grading.checks._common import blobs, rng
from minseg.grading.tasks import Case, Task, close, exact
from minseg.instances import connected_components as ref_cc

SLUG = "17_separating_instances"
TITLE = "Can semantic segmentation separate two people?"


def _cc_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex17.cc")
    out = []
    for h, w, p, conn in [(6, 7, 0.45, 4), (8, 8, 0.5, 8), (7, 9, 0.4, 4), (5, 5, 0.0, 4), (9, 6, 0.55, 8)]:
        m = torch.rand(h, w, generator=g) < p
        out.append(Case({"mask": m, "connectivity": conn},
                        f"{h}x{w} bool mask, {int(m.sum())} pixels, {conn}-connectivity"))
    return out


def _count_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex17.count")
    out = []
    for h, w, c, n in [(10, 10, 3, 4), (12, 9, 4, 6), (8, 12, 2, 5)]:
        sem = blobs(g, h, w, c, count=n)
        cls = int(sem.max())
        out.append(Case({"semantic": sem, "class_id": cls}, f"{h}x{w} label map, class {cls}"))
    return out


def _dt_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex17.dt")
    out = []
    for h, w, p, note in [(6, 7, 0.7, "random region"), (7, 9, 0.85, "mostly region"),
                          (5, 5, 1.0, "the whole image (no background)"), (4, 6, 0.0, "empty")]:
        m = torch.rand(h, w, generator=g) < p
        out.append(Case({"mask": m}, f"{h}x{w} bool mask, {int(m.sum())} pixels, {note}"))
    two = torch.zeros(9, 14, dtype=torch.bool)     # two touching discs: two peaks in the map
    yy, xx = torch.meshgrid(torch.arange(9), torch.arange(14), indexing="ij")
    two |= (yy - 4) ** 2 + (xx - 4) ** 2 <= 12
    two |= (yy - 4) ** 2 + (xx - 9) ** 2 <= 12
    out.append(Case({"mask": two}, "two touching discs"))
    return out


def _ref_distance(mask: torch.Tensor) -> torch.Tensor:
    """Float64 brute force: for every True pixel, the distance to the nearest False pixel, the
    image being surrounded by False (pixels outside it count as background)."""
    h, w = mask.shape
    ys, xs = torch.meshgrid(torch.arange(-1, h + 1), torch.arange(-1, w + 1), indexing="ij")
    bg = torch.ones(h + 2, w + 2, dtype=torch.bool)
    bg[1:-1, 1:-1] = ~mask
    by, bx = ys[bg].double(), xs[bg].double()
    py, px = torch.meshgrid(torch.arange(h).double(), torch.arange(w).double(), indexing="ij")
    d = ((py[..., None] - by) ** 2 + (px[..., None] - bx) ** 2).sqrt().amin(-1)
    return torch.where(mask, d, torch.zeros_like(d))


TASKS = [
    Task("ex17.connected_components", "connected_components", 3,
         "label the connected True regions of a bool mask 1..count (raster order of each "
         "region's first pixel), 0 elsewhere; return (labels, count)", _cc_cases,
         lambda mask, connectivity: ref_cc(mask, connectivity), compare=exact(),
         hint="scan pixels in raster order; start a flood fill (BFS) at every unlabelled True pixel"),
    Task("ex17.count_instances", "count_instances", 1,
         "the number of 8-connected regions of class class_id in a label map", _count_cases,
         lambda semantic, class_id: ref_cc(semantic == class_id, 8)[1], compare=exact()),
    Task("ex17.distance_transform", "distance_transform", 2,
         "Euclidean distance transform: for every True pixel the distance to the nearest False "
         "pixel (outside the image counts as False), 0 on False pixels; float64 H,W",
         _dt_cases, _ref_distance, compare=close(rtol=1e-9, atol=1e-9),
         hint="brute force is fine at these sizes: pad the mask with False, then take the minimum "
              "distance from each pixel to every False pixel"),
]

"""Exercise 17 (separating instances): connected components and counting blobs."""
from __future__ import annotations

import torch

from minseg.grading.checks._common import blobs, rng
from minseg.grading.tasks import Case, Task, exact
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


TASKS = [
    Task("ex17.connected_components", "connected_components", 3,
         "label the connected True regions of a bool mask 1..count (raster order of each "
         "region's first pixel), 0 elsewhere; return (labels, count)", _cc_cases,
         lambda mask, connectivity: ref_cc(mask, connectivity), compare=exact(),
         hint="scan pixels in raster order; start a flood fill (BFS) at every unlabelled True pixel"),
    Task("ex17.count_instances", "count_instances", 1,
         "the number of 8-connected regions of class class_id in a label map", _count_cases,
         lambda semantic, class_id: ref_cc(semantic == class_id, 8)[1], compare=exact()),
]

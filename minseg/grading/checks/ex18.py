"""Exercise 18 (why data is expensive): annotation time, a learning curve, its extrapolation."""
from __future__ import annotations

import math

import numpy as np
import torch

from minseg.grading.checks._common import rng
from minseg.grading.tasks import Case, Task, close
from minseg.weak import annotation_seconds

SLUG = "18_data_cost"
TITLE = "Why data is expensive"


def _hour_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex18.hours")
    out = []
    for kind in ("full", "tags", "points", "boxes"):
        n = int(torch.randint(100, 5000, (1,), generator=g))
        objs = round(float(torch.rand(1, generator=g)) * 4 + 1, 1)
        cls = round(min(objs, float(torch.rand(1, generator=g)) * 2 + 1), 1)
        out.append(Case({"kind": kind, "images": n, "objects_per_image": objs, "classes_per_image": cls},
                        f"{kind}: {n} images, {objs} objects and {cls} classes per image"))
    return out


def _ref_hours(kind, images, objects_per_image, classes_per_image):
    return annotation_seconds(kind, objects=objects_per_image, classes=classes_per_image) * images / 3600


def _curve_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex18.curve")
    out = []
    for k in range(3):
        a = 0.1 + 0.2 * float(torch.rand(1, generator=g))
        b = 0.1 + 0.3 * float(torch.rand(1, generator=g))
        n = torch.tensor([10.0, 20, 50, 100, 200, 500][: 4 + k], dtype=torch.float64)
        miou = a * n ** b * torch.exp(torch.randn(len(n), generator=g, dtype=torch.float64) * 0.03)
        out.append(Case({"n": n, "miou": miou}, f"{len(n)} points, n = {n.int().tolist()}"))
    return out


def _ref_fit(n, miou):
    slope, intercept = np.polyfit(np.log(n.numpy()), np.log(miou.numpy()), 1)
    return (float(math.exp(intercept)), float(slope))


def _need_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex18.need")
    out = []
    for _ in range(4):
        a = 0.1 + 0.2 * float(torch.rand(1, generator=g))
        b = 0.1 + 0.3 * float(torch.rand(1, generator=g))
        t = round(a * (50 + 400 * float(torch.rand(1, generator=g))) ** b, 3)
        out.append(Case({"a": a, "b": b, "target": t}, f"a={a:.3f}, b={b:.3f}, target mIoU {t}"))
    return out


TASKS = [
    Task("ex18.annotation_hours", "annotation_hours", 2,
         "hours to label a dataset with full masks (79 s/object), tags (1 s x 20 classes), points "
         "(tags + 2.4 s per click: one per class present + one background) or boxes (7 s/object)",
         _hour_cases, _ref_hours, compare=close(rtol=1e-6, atol=1e-9)),
    Task("ex18.fit_power_law", "fit_power_law", 2,
         "fit miou = a * n^b by least squares on log(miou) = log(a) + b log(n); return (a, b)",
         _curve_cases, _ref_fit, compare=close(rtol=1e-4, atol=1e-6)),
    Task("ex18.images_needed", "images_needed", 1,
         "the smallest whole number of images n with a * n^b >= target", _need_cases,
         lambda a, b, target: math.ceil((target / a) ** (1 / b))),
]

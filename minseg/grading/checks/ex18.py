"""Exercise 18 (why data is expensive): annotation time, a learning curve, its extrapolation."""
from __future__ import annotations

import math

import numpy as np
import torch

from minseg.grading.checks._common import rng
from minseg.grading.tasks import Case, Task, close
from minseg.cost import annotation_hours

SLUG = "18_data_cost"
TITLE = "Why data is expensive"


def _hour_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex18.hours")
    out = []
    for costs, clicks, note in [(None, None, "every kind priced per image, object or class"),
                                (None, True, "every kind, clicks given"),
                                (["polygon", "tags"], None, "two kinds, in the order asked"),
                                (["click", "box_extreme", "full_mask"], True, "clicks and boxes"),
                                (["tags"], None, "tags for a 5-class label set")]:
        n = int(torch.randint(0, 5000, (1,), generator=g))
        objects = int(torch.randint(0, 4 * n + 1, (1,), generator=g))
        k = 5 if note.endswith("label set") else 20
        c = int(torch.randint(n, 3 * n + 1, (1,), generator=g)) if clicks else None
        out.append(Case({"num_images": n, "num_objects": objects, "num_classes": k, "num_clicks": c,
                         "costs": costs}, f"{note}: {n} images, {objects} objects"))
    return out


def _ref_hours(num_images, num_objects, num_classes, num_clicks, costs):
    return annotation_hours(num_images, num_objects, num_classes=num_classes, num_clicks=num_clicks,
                            costs=costs)


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
         "hours per annotation kind of minseg.cost.LABEL_COSTS: seconds x count, the count being "
         "the images, the objects, images x num_classes or num_clicks as the kind's unit says",
         _hour_cases, _ref_hours, compare=close(rtol=1e-6, atol=1e-9),
         hint="look at each LabelCost's unit; per-click kinds only when num_clicks is given"),
    Task("ex18.fit_power_law", "fit_power_law", 2,
         "fit miou = a * n^b by least squares on log(miou) = log(a) + b log(n); return (a, b)",
         _curve_cases, _ref_fit, compare=close(rtol=1e-4, atol=1e-6)),
    Task("ex18.images_needed", "images_needed", 1,
         "the smallest whole number of images n with a * n^b >= target", _need_cases,
         lambda a, b, target: math.ceil((target / a) ** (1 / b))),
]

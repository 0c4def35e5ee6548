"""Exercise 10 (class imbalance): pixel counts, median frequency and inverse frequency weights,
class-balanced image sampling weights, and a rare-class training challenge."""
from __future__ import annotations

import torch

from minseg.grading.challenge import Challenge
from minseg.grading.checks._common import blobs, challenge_task, rng
from minseg.grading.tasks import Case, Task, close
from minseg.data.sampling import balanced_image_weights
from minseg.losses import class_frequencies, class_weights

SLUG = "10_class_imbalance"
TITLE = "Class imbalance"


def _mask_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex10.masks")
    out = []
    for n, c, ignore, note in [(2, 3, False, "2 images"), (4, 5, True, "4 images, void borders"),
                               (3, 6, True, "3 images, some classes in one image only")]:
        masks = torch.stack([blobs(g, 8, 9, c, count=k + 1, ignore_border=ignore) for k in range(n)])
        out.append(Case({"masks": masks, "num_classes": c}, f"masks {n}x8x9, {c} classes, {note}"))
    return out


def _count_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex10.counts")
    out = []
    for c, zeros, note in [(4, [], "4 classes"), (5, [3], "5 classes, class 3 never occurs"),
                           (6, [0, 4], "6 classes, two absent (even number present)")]:
        counts = torch.randint(1, 5000, (c,), generator=g)
        counts[zeros] = 0
        totals = counts + torch.randint(1, 20000, (c,), generator=g)
        totals[zeros] = 0
        out.append(Case({"counts": counts, "image_pixels": totals}, note))
    return out



def _presence_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex10.presence")
    out = []
    for n, c, power, note in [(6, 4, 0.5, "6 images, 4 classes"), (8, 5, 1.0, "power 1, class 4 in no image"),
                              (5, 3, 0.0, "power 0 (uniform)")]:
        presence = torch.rand(n, c, generator=g) < 0.4
        presence[:, 0] = True                    # background nearly everywhere
        presence[0, 1:] = False                  # an image holding background only
        if c == 5:
            presence[:, 4] = False
        out.append(Case({"presence": presence, "power": power}, note))
    return out


CHALLENGE = Challenge(
    classes=("person", "car", "bus", "cow"),
    scene={"classes": ["person", "car", "bus", "cow"], "class_weights": [["bus", 0.6], ["cow", 0.6]],
           "scale": [1.2, 1.8], "flat": True},
    metric="iou_of", focus=("bus", "cow"), bands=((0.10, 1 / 3), (0.12, 2 / 3), (0.135, 1.0)),
    steps=300, num_train=3000, num_test=200,
    test_scene={"classes": ["person", "car", "bus", "cow"], "scale": [1.2, 1.8], "flat": True})
"""Two classes rare by images in training (bus, cow) among two frequent ones; the held-out
scenes show all four classes equally often, so the rare classes' IoU is measured on many
examples."""


def _challenge_reference(num_classes: int, data) -> dict:
    from minseg.data.contents import image_class_presence
    from minseg.data.sampling import balanced_image_weights
    from minseg.models import build_model

    presence = image_class_presence(data, num_classes)
    return {"model": build_model("deeplabv3", num_classes, width=16), "lr": 3e-3,
            "sampler_weights": balanced_image_weights(presence)}

TASKS = [
    Task("ex10.class_pixel_counts", "class_pixel_counts", 1,
         "return (counts, image_pixels): pixels of each class, and the valid pixels of the "
         "images in which that class occurs, ignoring 255",
         _mask_cases,
         lambda masks, num_classes: class_frequencies(masks, num_classes, per_image_totals=True),
         hint="loop over the images: an image adds its valid pixel count to every class it contains"),
    Task("ex10.median_frequency_weights", "median_frequency_weights", 2,
         "median frequency balancing: freq_c = counts_c / image_pixels_c, w_c = median(freq) / "
         "freq_c over classes that occur, 0 for classes that never occur",
         lambda seed: _count_cases(seed),
         lambda counts, image_pixels: class_weights(counts, "median", image_pixels),
         hint="take the median over the present classes only; with an even number, average the "
              "two middle values (torch.quantile(x, 0.5))"),
    Task("ex10.inverse_frequency_weights", "inverse_frequency_weights", 1,
         "w_c = total / (K * counts_c) over the K classes that occur, 0 for absent classes",
         lambda seed: [Case({"counts": c.inputs["counts"]}, c.note) for c in _count_cases(seed)],
         lambda counts: class_weights(counts, "inverse")),
    Task("ex10.image_sampling_weights", "image_sampling_weights", 2,
         "class-balanced sampling weights: f_c = share of images containing class c (background, "
         "class 0, left out), factor_c = (1 / f_c)^power for classes that occur; an image's weight "
         "is the largest factor among its classes, or the smallest factor if it holds none",
         _presence_cases,
         lambda presence, power: balanced_image_weights(presence, power),
         compare=close(rtol=1e-6, atol=1e-9),
         hint="classes in no image have no factor; an image with background only still gets drawn"),
    challenge_task("ex10", CHALLENGE, _challenge_reference,
                   "a recipe whose mean IoU of the rare classes (bus, cow) on held-out scenes "
                   "reaches the bands within the challenge's steps",
                   hint="show the model the images that hold the rare classes more often"),
]

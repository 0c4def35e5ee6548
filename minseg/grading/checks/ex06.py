"""Exercise 06 (mIoU): confusion matrix with ignore, IoU per class, mIoU, dataset mIoU."""
from __future__ import annotations

import torch

from minseg.grading.checks._common import labels, noisy_prediction, rng
from minseg.grading.tasks import Case, Task, exact
from minseg.metrics import ConfusionMatrix, confusion_matrix as ref_confusion_matrix
from minseg.metrics import scores_from_confusion

SLUG = "06_miou"
TITLE = "mIoU"


def _label_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex06.labels")
    cases = []
    specs = [  # (N, H, W, C, classes in target, classes in prediction, ignore fraction, note)
        (1, 4, 5, 3, None, None, 0.0, "no ignore pixels"),
        (2, 6, 7, 4, [0, 1, 2], None, 0.15, "ignore pixels (255); class 3 only predicted"),
        (3, 5, 5, 5, [0, 1, 2, 3], [0, 1, 2, 3], 0.2, "ignore pixels; class 4 absent everywhere"),
        (2, 3, 9, 6, None, None, 0.3, "many ignore pixels"),
        (1, 2, 3, 3, None, None, 1.0, "every pixel ignored"),
    ]
    for n, h, w, c, tcls, pcls, ign, note in specs:
        target = labels(g, (n, h, w), c, tcls, ign)
        pred = noisy_prediction(g, target, c, classes=pcls)
        if pcls is None and tcls is not None:
            pred[0, 0, 0] = c - 1  # the class absent from the target is predicted once
        cases.append(Case({"pred": pred, "target": target, "num_classes": c},
                          f"{n} images {h}x{w}, {c} classes, {note}"))
    return cases


def _matrix_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex06.matrix")
    cases = []
    for c, zero_rows, zero_cols, note in [
        (3, [], [], "every class present"),
        (4, [3], [], "class 3 never in the target, but predicted"),
        (5, [2], [2], "class 2 absent from target and prediction (IoU NaN)"),
        (4, [0, 3], [3], "class 3 absent everywhere; class 0 only predicted"),
    ]:
        m = torch.randint(0, 20, (c, c), generator=g)
        m[zero_rows, :] = 0
        m[:, zero_cols] = 0
        cases.append(Case({"mat": m}, f"{c}x{c} matrix, {note}"))
    return cases


def _ref_iou(mat: torch.Tensor) -> torch.Tensor:
    return scores_from_confusion(mat)["iou"]


def _ref_miou(mat: torch.Tensor) -> float:
    return scores_from_confusion(mat)["miou"]


def _batch_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex06.batches")
    cases = []
    for sizes, c, note in [([1, 1, 1], 3, "3 batches of 1 image"),
                           ([2, 1], 4, "batches of 2 and 1 images, a class missing from one batch"),
                           ([1, 3, 2], 5, "3 batches, ignore pixels, class 4 never present")]:
        batches = []
        for k, n in enumerate(sizes):
            cls = list(range(c - 1)) if c == 5 else (list(range(c)) if k else [0, 1])
            target = labels(g, (n, 4, 6), c, cls, 0.1)
            batches.append((noisy_prediction(g, target, c, classes=cls), target))
        cases.append(Case({"batches": batches, "num_classes": c}, note))
    return cases


def _ref_dataset_miou(batches, num_classes: int) -> float:
    cm = ConfusionMatrix(num_classes)
    for pred, target in batches:
        cm.update(pred, target)
    return cm.compute()["miou"]


TASKS = [
    Task("ex06.confusion_matrix", "confusion_matrix", 2,
         "count pixels per (target, prediction) pair into a C x C int64 matrix, rows = target, "
         "dropping pixels whose target is ignore_index",
         _label_cases, lambda pred, target, num_classes: ref_confusion_matrix(pred, target, num_classes),
         compare=exact(),
         hint="drop pixels where target == 255 before counting; bincount(target * C + pred)"),
    Task("ex06.iou_per_class", "iou_per_class", 1,
         "IoU_c = TP / (TP + FP + FN) from the confusion matrix, NaN for a class absent from "
         "both target and prediction",
         _matrix_cases, _ref_iou,
         hint="TP is the diagonal, TP + FN the row sums, TP + FP the column sums; 0/0 -> NaN"),
    Task("ex06.miou", "miou", 1,
         "the mean IoU over classes present in target or prediction (skip NaN), as a float",
         _matrix_cases, _ref_miou, hint="torch.nanmean skips the NaN of absent classes"),
    Task("ex06.dataset_miou", "dataset_miou", 1,
         "mIoU of a whole dataset given as a list of (pred, target) batches: accumulate one "
         "confusion matrix, then compute mIoU once",
         _batch_cases, _ref_dataset_miou,
         hint="averaging the mIoU of each batch gives a different (wrong) number"),
]

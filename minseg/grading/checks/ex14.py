"""Exercise 14 (weak supervision): partial cross entropy, boxes to masks, image tags, and the
log-sum-exp pooling of multiple-instance learning."""
from __future__ import annotations

import torch

from minseg.grading.checks._common import IGNORE, blobs, call_loss_and_grad, labels, logits, rng
from minseg.grading.tasks import Case, Task, exact
from minseg.losses import partial_cross_entropy as ref_partial_ce
from minseg.grading.tasks import close
from minseg.data.contents import class_presence
from minseg.weak import boxes_to_masks, mil_pool

SLUG = "14_weak_supervision"
TITLE = "Weak supervision"


def _pce_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex14.pce")
    out = []
    for n, c, h, w, frac, note in [(1, 3, 6, 6, 0.1, "10% of pixels labelled"),
                                   (2, 4, 5, 7, 0.05, "5% labelled, 2 images"),
                                   (2, 3, 4, 4, 0.0, "nothing labelled (loss 0)")]:
        target = labels(g, (n, h, w), c)
        target[torch.rand(n, h, w, generator=g) >= frac] = IGNORE
        if frac and not bool((target != IGNORE).any()):
            target[0, 0, 0] = 1
        out.append(Case({"logits": logits(g, n, c, h, w), "sparse_target": target},
                        f"logits {n}x{c}x{h}x{w}, {note}"))
    return out


def _box_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex14.boxes")
    out = []
    for h, w, count, note in [(8, 10, 1, "one box"), (9, 9, 3, "three boxes, overlapping"),
                              (10, 12, 5, "five boxes")]:
        boxes = []
        for _ in range(count):
            x0, y0 = int(torch.randint(0, w - 1, (1,), generator=g)), int(torch.randint(0, h - 1, (1,), generator=g))
            x1, y1 = int(torch.randint(x0, w, (1,), generator=g)), int(torch.randint(y0, h, (1,), generator=g))
            boxes.append((int(torch.randint(1, 6, (1,), generator=g)), x0, y0, x1, y1))
        out.append(Case({"boxes": boxes, "shape": (h, w)}, f"{h}x{w} image, {note}: {boxes}"))
    return out


def _tag_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex14.tags")
    return [Case({"mask": blobs(g, 7, 8, c, count=k, ignore_border=True), "num_classes": c},
                 f"7x8 mask, {c} classes, {k} objects, void borders")
            for c, k in [(4, 1), (6, 3), (21, 5)]] + [
        Case({"mask": torch.zeros(4, 4, dtype=torch.long), "num_classes": 3}, "background only")]


def _lse_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex14.lse")
    out = []
    for n, c, h, w, scale, r, note in [(1, 3, 5, 5, 1.0, 1.0, "r = 1"),
                                       (2, 4, 6, 4, 2.0, 5.0, "r = 5, 2 images"),
                                       (2, 2, 4, 4, 10.0, 20.0, "r = 20, large scores (overflow without care)")]:
        valid = torch.rand(n, h, w, generator=g) > 0.3
        valid[:, 0, 0] = True                        # no empty bag
        out.append(Case({"scores": torch.randn(n, c, h, w, generator=g) * scale, "valid": valid, "r": r},
                        f"scores {n}x{c}x{h}x{w}, {note}, some pixels outside the bag"))
    return out


TASKS = [
    Task("ex14.partial_cross_entropy", "partial_cross_entropy", 2,
         "cross entropy averaged over the labelled pixels only (unlabelled = 255) of the whole "
         "batch; 0 when nothing is labelled", _pce_cases,
         lambda logits, sparse_target: ref_partial_ce(logits, sparse_target), call=call_loss_and_grad),
    Task("ex14.boxes_to_mask", "boxes_to_mask", 2,
         "fill each (class, x0, y0, x1, y1) box (inclusive) with its class on a background-0 "
         "mask; where boxes overlap the smaller box wins", _box_cases,
         lambda boxes, shape: boxes_to_masks(boxes, shape), compare=exact(),
         hint="draw boxes from the largest area to the smallest (stable for ties)"),
    Task("ex14.tags_from_mask", "tags_from_mask", 1,
         "image-level tags: a bool vector [C], True for every foreground class (not 0, not 255) "
         "in the mask", _tag_cases,
         lambda mask, num_classes: class_presence(mask, num_classes, background=0),
         compare=exact()),
    Task("ex14.lse_pool", "lse_pool", 2,
         "log-sum-exp pooling of multiple-instance learning: for each image and class, (1/r) log("
         "mean over the bag's pixels (valid True) of exp(r * score)); N,C", _lse_cases,
         lambda scores, valid, r: mil_pool(scores, valid, "lse", r=r), compare=close(rtol=1e-4, atol=1e-5),
         hint="mask the pixels outside the bag with -inf and use torch.logsumexp, then subtract "
              "log |bag|: exp(r * score) alone overflows"),
]

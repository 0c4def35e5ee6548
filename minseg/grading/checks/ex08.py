"""Exercise 08 (the standard loss): per-pixel cross entropy, weighted CE with ignore, focal."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minseg.grading.checks._common import call_loss_and_grad, labels, logits, rng
from minseg.grading.tasks import Case, Task
from minseg.losses import cross_entropy, focal_loss

SLUG = "08_standard_loss"
TITLE = "The standard loss"

_SPECS = [  # N, C, H, W, classes in target, ignore fraction, note
    (1, 3, 3, 4, None, 0.0, "no ignore pixels"),
    (2, 4, 4, 5, None, 0.2, "ignore pixels (255)"),
    (2, 5, 3, 3, [0, 1, 4], 0.3, "ignore pixels, classes 2 and 3 absent"),
    (1, 3, 2, 2, None, 1.0, "every pixel ignored (loss 0)"),
]


def _cases(seed: int, salt: str, weighted: bool = False, gamma: bool = False) -> list[Case]:
    g = rng(seed, salt)
    out = []
    for k, (n, c, h, w, cls, ign, note) in enumerate(_SPECS):
        inputs = {"logits": logits(g, n, c, h, w), "target": labels(g, (n, h, w), c, cls, ign)}
        if weighted:
            wt = torch.rand(c, generator=g) * 3
            if k == 2:
                wt[1] = 0.0
                note += ", a zero class weight"
            inputs["weight"] = wt
        if gamma:
            inputs["gamma"] = [2.0, 0.0, 1.5, 2.0][k]
            note += f", gamma {inputs['gamma']}"
        out.append(Case(inputs, f"logits {n}x{c}x{h}x{w}, {note}"))
    return out


def _ref_pixel(logits, target):
    return F.cross_entropy(logits, target, ignore_index=255, reduction="none")


TASKS = [
    Task("ex08.pixel_losses", "pixel_losses", 1,
         "per-pixel cross entropy -log softmax(logits)[target] as an N,H,W tensor, 0 at ignored "
         "pixels", lambda seed: _cases(seed, "ex08.pixel"), _ref_pixel,
         hint="log_softmax over dim 1, gather the target class; replace 255 by 0 before gather"),
    Task("ex08.weighted_cross_entropy", "weighted_cross_entropy", 3,
         "class-weighted cross entropy: sum_i w[y_i] l_i / sum_i w[y_i] over non-ignored pixels "
         "of the whole batch (0 if there are none)",
         lambda seed: _cases(seed, "ex08.wce", weighted=True),
         lambda logits, target, weight: cross_entropy(logits, target, weight=weight),
         call=call_loss_and_grad,
         hint="the denominator is the sum of the weights of the counted pixels, not their number"),
    Task("ex08.focal_loss", "focal_loss", 2,
         "softmax focal loss: mean over non-ignored pixels of -(1 - p_t)^gamma log p_t",
         lambda seed: _cases(seed, "ex08.focal", gamma=True),
         lambda logits, target, gamma: focal_loss(logits, target, gamma=gamma),
         call=call_loss_and_grad, hint="p_t = exp(-l_i) where l_i is the pixel's cross entropy"),
]

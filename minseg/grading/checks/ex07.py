"""Exercise 07 (Dice): Dice from the confusion matrix, Dice vs IoU, the soft Dice loss."""
from __future__ import annotations

import torch

from minseg.grading.challenge import Challenge
from minseg.grading.checks._common import call_loss_and_grad, challenge_task, labels, logits, rng
from minseg.grading.checks.ex06 import _matrix_cases
from minseg.grading.tasks import Case, Task
from minseg.losses import dice_loss
from minseg.metrics import scores_from_confusion

SLUG = "07_dice"
TITLE = "Dice"


def _ref_dice(mat: torch.Tensor) -> torch.Tensor:
    return scores_from_confusion(mat)["dice"]


def _iou_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex07.iou")
    out = []
    for n, note in [(3, "3 classes"), (6, "6 classes, one NaN (absent)"), (5, "IoU 0 and 1 included")]:
        iou = torch.rand(n, generator=g, dtype=torch.float64)
        if n == 6:
            iou[2] = float("nan")
        if n == 5:
            iou[0], iou[4] = 0.0, 1.0
        out.append(Case({"iou": iou}, note))
    return out


def _ref_dice_from_iou(iou: torch.Tensor) -> torch.Tensor:
    # from the same TP/FP/FN: Dice = 2TP/(2TP+FP+FN) = 2 IoU / (1 + IoU)
    mats = []
    for v in iou.tolist():
        if v != v:
            mats.append(float("nan"))
            continue
        mat = torch.tensor([[v, 1 - v], [0.0, 0.0]], dtype=torch.float64)  # TP = v, FN = 1 - v
        mats.append(float(scores_from_confusion(mat)["dice"][0]))
    return torch.tensor(mats, dtype=torch.float64)


def _loss_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex07.loss")
    out = []
    for n, c, h, w, cls, ign, smooth, note in [
        (1, 2, 4, 4, None, 0.0, 1.0, "2 classes, no ignore"),
        (2, 3, 4, 5, None, 0.2, 1.0, "3 classes, ignore pixels (255)"),
        (2, 4, 3, 5, [0, 1, 3], 0.1, 1.0, "class 2 absent from the target (not averaged)"),
        (1, 3, 5, 4, None, 0.1, 0.0, "smooth = 0"),
        (1, 3, 2, 3, None, 1.0, 1.0, "every pixel ignored (loss 0)"),
    ]:
        out.append(Case({"logits": logits(g, n, c, h, w), "target": labels(g, (n, h, w), c, cls, ign),
                         "smooth": smooth}, f"logits {n}x{c}x{h}x{w}, {note}"))
    return out


def _ref_loss(logits, target, smooth=1.0):
    return dice_loss(logits, target, smooth=smooth)



CHALLENGE = Challenge(
    classes=("bird",), scene={"classes": ["bird"], "scale": [0.4, 0.7]},
    metric="iou_of", focus=("bird",), bands=((0.15, 1 / 3), (0.19, 2 / 3), (0.23, 1.0)), steps=200)
"""A tiny foreground: small birds on large backgrounds."""


def _challenge_reference(num_classes: int, data) -> dict:
    from minseg.models import build_model

    return {"model": build_model("fastscnn", num_classes, width=16), "loss": "dice", "lr": 3e-3,
            "warmup_steps": 10}

TASKS = [
    Task("ex07.dice_per_class", "dice_per_class", 1,
         "Dice_c = 2 TP / (2 TP + FP + FN) from the confusion matrix (rows = target), NaN for "
         "absent classes", _matrix_cases, _ref_dice,
         hint="TP + FN is the row sum, TP + FP the column sum"),
    Task("ex07.dice_from_iou", "dice_from_iou", 1,
         "convert per-class IoU to Dice (the same TP, FP, FN): Dice = 2 IoU / (1 + IoU)",
         _iou_cases, _ref_dice_from_iou),
    Task("ex07.soft_dice_loss", "soft_dice_loss", 3,
         "soft Dice loss: softmax probabilities, sums over the valid pixels of the whole batch, "
         "1 - dice averaged over the classes present in the target",
         _loss_cases, _ref_loss, call=call_loss_and_grad,
         hint="mask out ignored pixels in both the probabilities and the one-hot target; "
              "average 1 - dice_c only over classes with target pixels"),
    challenge_task("ex07", CHALLENGE, _challenge_reference,
                   "a recipe whose bird IoU on held-out scenes with tiny birds reaches the bands "
                   "within the challenge's steps",
                   hint="plain CE is dominated by the background pixels; an overlap loss is not"),
]

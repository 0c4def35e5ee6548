"""Exercise 04 (U-Net): matching a skip's size, the decoder's up-and-concatenate step,
the size arithmetic of the original (unpadded) U-Net."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minseg.blocks import fit_to as ref_fit_to
from minseg.grading.challenge import Challenge
from minseg.grading.checks._common import challenge_task, rng
from minseg.grading.tasks import Case, Task

SLUG = "04_unet_skip_connections"
TITLE = "U-Net and skip connections"


def _fit_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex04.fit")
    return [Case({"x": torch.randn(1, 2, h, w, generator=g), "size": size}, f"x {h}x{w} to {size}")
            for h, w, size in [(8, 8, (7, 7)), (6, 10, (5, 9)), (5, 5, (5, 5)), (4, 4, (7, 6))]]


def _up_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex04.up")
    out = []
    for n, cin, cout, cs, h, w, sh, sw in [(1, 4, 2, 2, 3, 3, 6, 6), (2, 6, 3, 3, 4, 5, 7, 9), (1, 2, 2, 1, 2, 2, 4, 3)]:
        out.append(Case({"x": torch.randn(n, cin, h, w, generator=g), "skip": torch.randn(n, cs, sh, sw, generator=g),
                         "up_weight": torch.randn(cin, cout, 2, 2, generator=g), "up_bias": torch.randn(cout, generator=g)},
                        f"x {n}x{cin}x{h}x{w}, skip {n}x{cs}x{sh}x{sw}"))
    return out


def _ref_up(x, skip, up_weight, up_bias):
    up = F.conv_transpose2d(x, up_weight, up_bias, stride=2)
    return torch.cat([skip, ref_fit_to(up, skip.shape[-2:])], 1)


def _size_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex04.sizes")
    out = [Case({"size": 572, "depth": 4}, "572 px, depth 4 (the paper's tile)"),
           Case({"size": 573, "depth": 4}, "573 px, depth 4 (an odd size on the way down)")]
    for k in range(3):
        d = int(torch.randint(1, 5, (1,), generator=g))
        s = int(torch.randint(5, 30, (1,), generator=g))  # the bottleneck's input side
        for _ in range(d):
            s = 2 * s + 4  # a size that pools evenly at every level
        if k == 2:
            s += 2 * int(torch.randint(1, 3, (1,), generator=g))  # usually odd somewhere
        out.append(Case({"size": s, "depth": d}, f"{s} px, depth {d}"))
    return out


def _ref_size(size: int, depth: int):
    """Run the size through unpadded 3x3 convs, 2x2 max pools and 2x transposed convs."""
    x = torch.zeros(1, 1, size, size)
    conv = lambda t: F.conv2d(F.conv2d(t, torch.zeros(1, 1, 3, 3)), torch.zeros(1, 1, 3, 3))
    for _ in range(depth):
        x = conv(x)
        if x.shape[-1] <= 0 or x.shape[-1] % 2:
            return None
        x = F.max_pool2d(x, 2)
    x = conv(x)
    for _ in range(depth):
        x = conv(F.conv_transpose2d(x, torch.zeros(1, 1, 2, 2), stride=2))
    return int(x.shape[-1]) if x.shape[-1] > 0 else None



CHALLENGE = Challenge(
    classes=("person", "bicycle", "chair"),
    scene={"classes": ["person", "bicycle", "chair"], "thin": 0.8, "scale": [1.2, 1.6]},
    metric="boundary_f1", bands=((0.26, 1 / 3), (0.30, 2 / 3), (0.34, 1.0)), steps=200)
"""Thin parts (bicycle frames, chair legs) whose edges only skips bring back."""


def _challenge_reference(num_classes: int, data) -> dict:
    from minseg.models import build_model

    return {"model": build_model("unet", num_classes, width=8), "lr": 3e-3}

TASKS = [
    Task("ex04.fit_to", "fit_to", 2,
         "make x (N,C,H,W) spatially `size`: crop the excess at the bottom/right when larger, "
         "resize bilinearly (align_corners=False) when smaller", _fit_cases,
         lambda x, size: ref_fit_to(x, size)),
    Task("ex04.up_and_concat", "up_and_concat", 2,
         "U-Net decoder step: 2x2 transposed conv with stride 2, fit to the skip's size, "
         "concatenate [skip, upsampled] along channels", _up_cases, _ref_up),
    Task("ex04.unpadded_output_size", "unpadded_output_size", 1,
         "output side of the original U-Net (unpadded 3x3 convs) for a square input; None if a "
         "max-pool would meet an odd size", _size_cases, _ref_size,
         hint="each level: two convs (-4), pool (/2); bottleneck -4; each up level: x2, then -4"),
    challenge_task("ex04", CHALLENGE, _challenge_reference,
                   "a recipe (model and training settings) whose boundary F1 on held-out thin-part "
                   "scenes reaches the bands within the challenge's steps",
                   hint="keep the encoder's detail: skip connections, little downsampling"),
]

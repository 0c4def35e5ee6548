"""Exercise 11 (ASPP): receptive fields with dilation, atrous kernels, an ASPP forward pass."""
from __future__ import annotations

import torch

from minseg.grading.challenge import Challenge
from minseg.grading.checks._common import challenge_task, rng
from minseg.grading.tasks import Case, Task, close, exact
from minseg.models.deeplab import ASPP
from minseg.receptive import receptive_field as ref_receptive_field

SLUG = "11_aspp"
TITLE = "ASPP"


def _rf_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex11.rf")
    out = [Case({"layers": [(3, 1, 1)] * 3}, "three 3x3 convs"),
           Case({"layers": [(3, 1, 1), (3, 1, 2), (3, 1, 4)]}, "3x3 convs with dilations 1, 2, 4")]
    for note, n in [("a random chain with strides and dilations", 5), ("a longer random chain", 8)]:
        layers = []
        for _ in range(n):
            k = int(torch.randint(1, 8, (1,), generator=g))
            s = int(torch.randint(1, 3, (1,), generator=g))
            d = int(torch.randint(1, 4, (1,), generator=g))
            layers.append((k, s, d))
        out.append(Case({"layers": layers}, f"{note}: {layers}"))
    return out


def _kernel_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex11.kernel")
    return [Case({"weight": torch.randn(o, i, k, k, generator=g), "rate": r},
                 f"weight {o}x{i}x{k}x{k}, rate {r}")
            for o, i, k, r in [(1, 1, 3, 2), (2, 3, 3, 1), (2, 2, 3, 4), (1, 2, 5, 3)]]


def _ref_dilate(weight: torch.Tensor, rate: int) -> torch.Tensor:
    o, i, kh, kw = weight.shape
    out = torch.zeros(o, i, rate * (kh - 1) + 1, rate * (kw - 1) + 1, dtype=weight.dtype)
    out[:, :, ::rate, ::rate] = weight
    return out


def _aspp_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex11.aspp")
    out = []
    for n, cin, cout, h, w, rates in [(1, 3, 2, 6, 7, [1, 2]), (2, 4, 3, 9, 8, [2, 3, 5]),
                                      (1, 2, 4, 5, 5, [6])]:
        out.append(Case({
            "x": torch.randn(n, cin, h, w, generator=g),
            "w1x1": torch.randn(cout, cin, 1, 1, generator=g) * 0.5,
            "w_atrous": [torch.randn(cout, cin, 3, 3, generator=g) * 0.3 for _ in rates],
            "rates": rates,
            "w_pool": torch.randn(cout, cin, 1, 1, generator=g) * 0.5,
            "w_project": torch.randn(cout, cout * (len(rates) + 2), 1, 1, generator=g) * 0.3},
            f"x {n}x{cin}x{h}x{w}, {cout} channels per branch, rates {rates}"
            + (" (rate close to the map size)" if max(rates) >= min(h, w) else "")))
    return out


@torch.no_grad()
def _ref_aspp(x, w1x1, w_atrous, rates, w_pool, w_project):
    cout, cin = w1x1.shape[:2]
    aspp = ASPP(cin, cout, rates=rates, pool_norm="none", dropout=0.0).eval()
    aspp.convs[0][0].weight.copy_(w1x1)
    for k, wk in enumerate(w_atrous):
        aspp.convs[1 + k][0].weight.copy_(wk)
    aspp.convs[-1][1].weight.copy_(w_pool)
    aspp.convs[-1][1].bias.zero_()
    aspp.project[0].weight.copy_(w_project)
    return aspp(x)  # BatchNorm in eval mode with fresh statistics: x / sqrt(1 + 1e-5)



CHALLENGE = Challenge(
    classes=("car", "boat", "cow", "sofa", "train"), scene={"lookalike": True, "scale": [1.5, 2.5]},
    metric="miou", bands=((0.36, 1 / 3), (0.40, 2 / 3), (0.43, 1.0)), steps=200)
"""Look-alike objects whose class only the surroundings reveal."""


def _challenge_reference(num_classes: int, data) -> dict:
    from minseg.models import build_model

    return {"model": build_model("deeplabv3", num_classes, width=16), "lr": 3e-3}

TASKS = [
    Task("ex11.receptive_field", "receptive_field", 2,
         "the receptive field (pixels) of a chain of (kernel, stride, dilation) layers",
         _rf_cases, lambda layers: ref_receptive_field(layers).size,
         hint="r += dilation * (kernel - 1) * jump, then jump *= stride (start r = jump = 1)"),
    Task("ex11.dilate_kernel", "dilate_kernel", 1,
         "insert rate - 1 zeros between the taps of a k x k kernel (size rate (k - 1) + 1)",
         _kernel_cases, _ref_dilate, compare=exact()),
    Task("ex11.aspp_forward", "aspp_forward", 3,
         "ASPP: 1x1 branch, one 3x3 atrous branch per rate, image pooling branch, concatenate, "
         "project; ReLU after every conv, no bias", _aspp_cases, _ref_aspp,
         compare=close(rtol=1e-3, atol=1e-4),
         hint="branch order: 1x1, atrous rates in order, image pooling; a 3x3 conv with dilation "
              "r needs padding r to keep H, W"),
    challenge_task("ex11", CHALLENGE, _challenge_reference,
                   "a recipe whose mIoU on held-out look-alike scenes (the class is in the "
                   "surroundings) reaches the bands within the challenge's steps",
                   hint="a receptive field that covers the surroundings: ASPP, image pooling"),
]

"""Exercise 03 (FCN): a Linear head as a convolution, and conv output sizes."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minseg.grading.checks._common import rng
from minseg.grading.tasks import Case, Task
from minseg.models.fcn import linear_to_conv1x1 as ref_linear_to_conv

SLUG = "03_fully_convolutional_networks"
TITLE = "Fully convolutional networks"


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def _apply_conv(conv, x: torch.Tensor) -> dict:
    if not isinstance(conv, nn.Conv2d):
        return {"type": type(conv).__name__}
    with torch.no_grad():
        return {"type": "Conv2d", "kernel_size": tuple(conv.kernel_size), "out": conv(x)}


def call_1x1(fn, inputs: dict) -> dict:
    """Convert a Linear built from the case, then apply the conv to a feature map."""
    return _apply_conv(fn(_linear(inputs["weight"], inputs["bias"])), inputs["x"])


def call_hw(fn, inputs: dict) -> dict:
    lin = _linear(inputs["weight"], inputs["bias"])
    return _apply_conv(fn(lin, inputs["in_ch"], inputs["h"], inputs["w"]), inputs["x"])


def _cases_1x1(seed: int) -> list[Case]:
    g = rng(seed, "ex03.1x1")
    out = []
    for n, cin, cout, h, w, bias in [(1, 4, 3, 1, 1, True), (2, 6, 5, 3, 4, True), (1, 3, 2, 5, 2, False)]:
        out.append(Case({"weight": torch.randn(cout, cin, generator=g),
                         "bias": torch.randn(cout, generator=g) if bias else None,
                         "x": torch.randn(n, cin, h, w, generator=g)},
                        f"Linear({cin}, {cout}{'' if bias else ', bias=False'}) applied to a "
                        f"{n}x{cin}x{h}x{w} map"))
    return out


def _cases_hw(seed: int) -> list[Case]:
    g = rng(seed, "ex03.hw")
    out = []
    for cin, h, w, cout, H, W in [(2, 2, 2, 3, 2, 2), (3, 2, 3, 4, 5, 6), (1, 3, 1, 2, 7, 3)]:
        out.append(Case({"weight": torch.randn(cout, cin * h * w, generator=g),
                         "bias": torch.randn(cout, generator=g), "in_ch": cin, "h": h, "w": w,
                         "x": torch.randn(1, cin, H, W, generator=g)},
                        f"Linear({cin}*{h}*{w}, {cout}) as a {h}x{w} conv, on a {H}x{W} map"))
    return out


def call_sizes(fn, inputs: dict) -> list:
    return [fn(*p) for p in inputs["params"]]


def _size_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex03.sizes")
    out = []
    for note, dil in [("no dilation", False), ("with dilation", True), ("mixed", True)]:
        params = []
        for _ in range(6):
            k = int(torch.randint(1, 8, (1,), generator=g))
            s = int(torch.randint(1, 4, (1,), generator=g))
            p = int(torch.randint(0, k, (1,), generator=g))
            d = int(torch.randint(1, 4, (1,), generator=g)) if dil else 1
            n = d * (k - 1) + 1 + int(torch.randint(0, 40, (1,), generator=g))
            params.append((n, k, s, p, d))
        out.append(Case({"params": params}, f"6 settings (size, kernel, stride, padding, dilation), {note}: {params}"))
    return out


def _ref_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    x = torch.zeros(1, 1, size, 1)
    return F.conv2d(x, torch.zeros(1, 1, kernel, 1), stride=(stride, 1), padding=(padding, 0),
                    dilation=(dilation, 1)).shape[2]


TASKS = [
    Task("ex03.linear_to_conv1x1", "linear_to_conv1x1", 2,
         "return an nn.Conv2d with a 1x1 kernel that computes the same as the Linear layer at "
         "every pixel (copy weight and bias)",
         _cases_1x1, lambda linear: ref_linear_to_conv(linear, linear.in_features), call=call_1x1,
         hint="reshape the (out, in) weight to (out, in, 1, 1)"),
    Task("ex03.linear_to_conv", "linear_to_conv", 2,
         "return the nn.Conv2d with an h x w kernel equal to a Linear applied to a flattened "
         "in_ch x h x w map; on a larger map it slides",
         _cases_hw, lambda linear, in_ch, h, w: ref_linear_to_conv(linear, in_ch, h, w), call=call_hw,
         hint="flattening N,C,H,W orders features channel, row, column: the order of a conv weight"),
    Task("ex03.conv_output_size", "conv_output_size", 1,
         "the output length of a convolution: floor((size + 2 padding - dilation (kernel - 1) "
         "- 1) / stride) + 1", _size_cases, _ref_size, call=call_sizes),
]

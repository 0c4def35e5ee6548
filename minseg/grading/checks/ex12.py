"""Exercise 12 (PSPNet): adaptive pooling by hand and the pyramid pooling module."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minseg.grading.checks._common import rng
from minseg.grading.tasks import Case, Task, close
from minseg.models.pspnet import PyramidPooling

SLUG = "12_pspnet"
TITLE = "PSPNet"


def _bin_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex12.bins")
    out = [Case({"size": 6, "bins": 3}, "size 6, 3 bins (divides)"),
           Case({"size": 7, "bins": 3}, "size 7, 3 bins (overlapping bins)")]
    for _ in range(3):
        b = int(torch.randint(1, 7, (1,), generator=g))
        n = b + int(torch.randint(0, 20, (1,), generator=g))
        out.append(Case({"size": n, "bins": b}, f"size {n}, {b} bins"))
    return out


def _ref_bins(size: int, bins: int) -> list:
    weights = F.adaptive_avg_pool1d(torch.eye(size, dtype=torch.float64)[None], bins)[0]
    out = []
    for b in range(bins):
        rows = weights[:, b].nonzero().flatten()
        out.append((int(rows.min()), int(rows.max()) + 1))
    return out


def _pool_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex12.pool")
    return [Case({"x": torch.randn(n, c, h, w, generator=g), "bins": b}, f"x {n}x{c}x{h}x{w}, {b} bins")
            for n, c, h, w, b in [(1, 2, 6, 6, 2), (2, 3, 7, 5, 3), (1, 1, 4, 9, 6), (1, 2, 5, 5, 1)]]


def _ppm_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex12.ppm")
    out = []
    for n, c, h, w, bins, bc in [(1, 4, 6, 6, [1, 2, 3], 2), (2, 8, 7, 9, [1, 2, 3, 6], 2),
                                 (1, 3, 5, 4, [1, 4], 3)]:
        out.append(Case({"x": torch.randn(n, c, h, w, generator=g),
                         "weights": [torch.randn(bc, c, 1, 1, generator=g) for _ in bins], "bins": bins},
                        f"x {n}x{c}x{h}x{w}, bins {bins}, {bc} channels per branch"))
    return out


@torch.no_grad()
def _ref_ppm(x, weights, bins):
    ppm = PyramidPooling(x.shape[1], bins=bins, branch_ch=weights[0].shape[0]).eval()
    for branch, w in zip(ppm.branches, weights):
        conv = branch[1][0]
        conv.weight.copy_(w)
        if conv.bias is not None:
            conv.bias.zero_()
    return ppm(x)  # BatchNorm in eval mode with fresh statistics: x / sqrt(1 + 1e-5)


TASKS = [
    Task("ex12.adaptive_bins", "adaptive_bins", 1,
         "the (start, end) index range of each bin of adaptive pooling: start = floor(i n / b), "
         "end = ceil((i + 1) n / b)", _bin_cases, _ref_bins),
    Task("ex12.adaptive_avg_pool", "adaptive_avg_pool", 2,
         "average-pool N,C,H,W to N,C,bins,bins with adaptive bins, without nn.AdaptiveAvgPool2d",
         _pool_cases, lambda x, bins: F.adaptive_avg_pool2d(x, bins)),
    Task("ex12.pyramid_pooling", "pyramid_pooling", 3,
         "PSPNet's module: for each bin size pool, 1x1 conv (no bias), ReLU, upsample bilinearly "
         "(align_corners=False) to H, W; concatenate [x, branch outputs...]",
         _ppm_cases, _ref_ppm, compare=close(rtol=1e-3, atol=1e-4),
         hint="the input itself comes first in the concatenation, then the branches in bin order"),
]

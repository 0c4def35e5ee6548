"""Exercise 05 (upsampling): FCN's bilinear kernel, pixel shuffle and unshuffle by reshape."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minseg.grading.checks._common import rng
from minseg.grading.tasks import Case, Task
from minseg.upsample import bilinear_kernel

SLUG = "05_upsampling_methods"
TITLE = "Upsampling methods"


def _kernel_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    specs = [(1, 1, 4), (3, 3, 4), (2, 3, 6), (3, 2, 3), (4, 4, 8), (2, 2, 5)]
    order = torch.randperm(len(specs), generator=g).tolist()
    return [Case({"in_ch": specs[i][0], "out_ch": specs[i][1], "k": specs[i][2]},
                 f"in_ch={specs[i][0]}, out_ch={specs[i][1]}, k={specs[i][2]}"
                 + (", odd k" if specs[i][2] % 2 else "")
                 + (", in_ch != out_ch" if specs[i][0] != specs[i][1] else "")) for i in order]


def _shuffle_cases(seed: int, unshuffle: bool) -> list[Case]:
    g = rng(seed, f"ex05.shuffle{unshuffle}")
    out = []
    for n, c, h, w, r in [(1, 1, 2, 3, 2), (2, 3, 3, 2, 3), (1, 2, 1, 1, 2), (2, 2, 2, 4, 2)]:
        shape = (n, c, h * r, w * r) if unshuffle else (n, c * r * r, h, w)
        out.append(Case({"x": torch.randn(*shape, generator=g), "r": r},
                        f"x {'x'.join(map(str, shape))}, r={r}"))
    return out


TASKS = [
    Task("ex05.bilinear_kernel", "bilinear_kernel", 2,
         "the in_ch x out_ch x k x k ConvTranspose2d weight that upsamples bilinearly: the tent "
         "filter 1 - |x - c| / f on the diagonal channels i -> i, zero elsewhere",
         _kernel_cases, bilinear_kernel,
         hint="f = ceil(k / 2); the centre c is f - 1 for odd k and f - 0.5 for even k"),
    Task("ex05.pixel_shuffle", "pixel_shuffle", 2,
         "rearrange N, C*r*r, H, W into N, C, H*r, W*r with reshape and permute only",
         lambda seed: _shuffle_cases(seed, False), lambda x, r: F.pixel_shuffle(x, r),
         hint="channel c*r*r + i*r + j goes to the sub-pixel (i, j) of output channel c"),
    Task("ex05.pixel_unshuffle", "pixel_unshuffle", 1,
         "the inverse: N, C, H*r, W*r -> N, C*r*r, H, W with reshape and permute only",
         lambda seed: _shuffle_cases(seed, True), lambda x, r: F.pixel_unshuffle(x, r)),
]

"""Exercise 05 (upsampling): FCN's bilinear kernel, pixel shuffle and unshuffle by reshape, the
overlap counts behind a transposed convolution's checkerboard."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minseg.grading.checks._common import rng
from minseg.grading.tasks import Case, Task, exact
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


def _overlap_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    specs = [(3, 2, 4, "k=3, s=2: uneven overlap, the checkerboard"),
             (4, 2, 3, "k=4, s=2: k divisible by s, even interior"),
             (2, 2, 3, "k=s=2: no overlap at all"),
             (5, 3, 2, "k=5, s=3"), (1, 1, 3, "k=s=1: the identity"), (3, 1, 3, "k=3, s=1: a plain full conv")]
    order = torch.randperm(len(specs), generator=g).tolist()
    return [Case({"kernel_size": specs[i][0], "stride": specs[i][1], "in_size": specs[i][2]},
                 f"{specs[i][3]}, {specs[i][2]}x{specs[i][2]} input") for i in order]


def _ref_overlap(kernel_size: int, stride: int, in_size: int) -> torch.Tensor:
    # a transposed conv of ones with a kernel of ones adds 1 per (input pixel, tap) that lands
    # on an output pixel: exactly the count asked for
    x = torch.ones(1, 1, in_size, in_size, dtype=torch.float64)
    w = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64)
    return F.conv_transpose2d(x, w, stride=stride)[0, 0].round().long()


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
    Task("ex05.overlap_counts", "overlap_counts", 1,
         "the int64 map (side (in_size - 1) * stride + kernel_size) of how many (input pixel, kernel "
         "tap) pairs write to each output pixel of a 2-D transposed convolution without padding",
         _overlap_cases, _ref_overlap, compare=exact(),
         hint="input pixel (i, j) writes to rows i*stride .. i*stride + kernel_size - 1 (and the same "
              "for columns); count with loops or with index arithmetic"),
]

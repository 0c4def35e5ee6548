"""Exercise 16 (CRF): unaries, the normalised Gaussian kernel, one mean-field step."""
from __future__ import annotations

import torch

from minseg.crf import dense_crf_exact, normalized_gaussian_kernel, unary_from_probs
from minseg.grading.checks._common import rng
from minseg.grading.tasks import Case, Task, close

SLUG = "16_crf_postprocessing"
TITLE = "CRF post-processing"


def _probs(g: torch.Generator, c: int, h: int, w: int) -> torch.Tensor:
    return (torch.randn(c, h, w, generator=g, dtype=torch.float64) * 2).softmax(0)


def _unary_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex16.unary")
    out = [Case({"probs": _probs(g, c, h, w)}, f"probs {c}x{h}x{w}") for c, h, w in [(2, 3, 4), (4, 2, 2)]]
    p = _probs(g, 3, 2, 3)
    p[0, 0, 0], p[1, 0, 0], p[2, 0, 0] = 1.0, 0.0, 0.0
    out.append(Case({"probs": p}, "probabilities of exactly 0 and 1"))
    return out


def _kernel_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex16.kernel")
    return [Case({"features": torch.randn(n, d, generator=g, dtype=torch.float64) * s},
                 f"{n} pixels with {d} features (scale {s})")
            for n, d, s in [(5, 2, 1.0), (12, 5, 0.7), (9, 3, 2.0)]]


def _step_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex16.step")
    out = []
    for c, h, w in [(2, 4, 5), (3, 5, 5), (4, 3, 6)]:
        img = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
        img[:, : w // 2] = img[:, : w // 2] // 4  # a dark half: an edge for the bilateral kernel
        out.append(Case({"image": img, "probs": _probs(g, c, h, w)}, f"image {h}x{w}x3, {c} classes"))
    return out


TASKS = [
    Task("ex16.unary_from_probs", "unary_from_probs", 1,
         "unary energies -log(p) with p clipped to [1e-5, 1]", _unary_cases, unary_from_probs),
    Task("ex16.normalized_gaussian_kernel", "normalized_gaussian_kernel", 2,
         "K_ij = exp(-|f_i - f_j|^2 / 2) (diagonal included), normalised as D^-1/2 K D^-1/2 with "
         "D = diag(K 1)", _kernel_cases, normalized_gaussian_kernel),
    Task("ex16.mean_field_step", "mean_field_step", 3,
         "one mean-field iteration of the dense CRF with pydensecrf's default parameters: "
         "Q = softmax(-U + sum_m w_m Kn_m softmax(-U))", _step_cases,
         lambda image, probs: dense_crf_exact(image, probs, iterations=1),
         compare=close(rtol=1e-4, atol=1e-6),
         hint="Gaussian kernel on (x, y) / 3 with weight 3; bilateral on (x, y) / 80 and "
              "rgb / 13 with weight 10; pixels in row-major order"),
]

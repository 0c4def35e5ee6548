"""Exercise 09 (boundaries): boundary pixels, tolerance bands, boundary F1, the deep-supervision
loss, and a boundary training challenge."""
from __future__ import annotations

import torch

from minseg.grading.challenge import Challenge
from minseg.grading.checks._common import blobs, challenge_task, rng
from minseg.grading.tasks import Case, Task, exact
from minseg.metrics import boundary_mask, distance_to_mask

SLUG = "09_boundaries"
TITLE = "Why boundaries are hard"


def _label_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex09.labels")
    cases = [Case({"labels": blobs(g, 7, 9, 4)}, "a 7x9 label map of rectangles"),
             Case({"labels": blobs(g, 6, 6, 5, ignore_border=True)}, "a 6x6 map with 255 pixels"),
             Case({"labels": torch.stack([blobs(g, 5, 8, 3), blobs(g, 5, 8, 3)])}, "a batch 2x5x8"),
             Case({"labels": torch.zeros(4, 5, dtype=torch.long)}, "a single class (no boundary)")]
    return cases


def _mask_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex09.masks")
    out = []
    for h, w, p, r in [(7, 8, 0.06, 1.0), (9, 9, 0.04, 1.5), (8, 10, 0.05, 2.5), (6, 6, 0.1, 0.0),
                       (5, 7, 0.0, 2.0)]:
        m = torch.rand(h, w, generator=g) < p
        out.append(Case({"mask": m, "radius": r}, f"{h}x{w} mask with {int(m.sum())} pixels, radius {r}"))
    return out


def _ref_near(mask: torch.Tensor, radius: float) -> torch.Tensor:
    return torch.isfinite(distance_to_mask(mask, radius))


def _f1_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex09.f1")
    out = []
    for tol, note in [(1.0, "tolerance 1"), (2.0, "tolerance 2"), (0.0, "tolerance 0")]:
        t = blobs(g, 10, 12, 3)
        p = t.clone()
        p[torch.rand(10, 12, generator=g) < 0.15] = 1
        out.append(Case({"pred_boundary": boundary_mask(p), "target_boundary": boundary_mask(t),
                         "tolerance": tol}, f"10x12 boundary maps, {note}"))
    e = torch.zeros(5, 5, dtype=torch.bool)
    out.append(Case({"pred_boundary": e, "target_boundary": e.clone(), "tolerance": 1.0},
                    "both maps empty (F1 = 1)"))
    b = e.clone()
    b[2, 1:4] = True
    out.append(Case({"pred_boundary": e.clone(), "target_boundary": b, "tolerance": 1.0},
                    "empty prediction (F1 = 0)"))
    return out


def _ref_f1(pred_boundary, target_boundary, tolerance):
    n_p, n_t = int(pred_boundary.sum()), int(target_boundary.sum())
    if n_p == 0 and n_t == 0:
        return 1.0
    p = int((pred_boundary & _ref_near(target_boundary, tolerance)).sum()) / n_p if n_p else 1.0
    r = int((target_boundary & _ref_near(pred_boundary, tolerance)).sum()) / n_t if n_t else 1.0
    return 2 * p * r / (p + r) if p + r > 0 else 0.0



def _aux_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex09.aux")
    out = []
    for n, c, h, w, aux_sizes, weight in [(1, 3, 8, 8, [(4, 4)], 0.4), (2, 4, 12, 10, [(6, 5), (3, 3)], 0.5),
                                          (2, 2, 6, 6, [(6, 6)], 0.0)]:
        masks = torch.stack([blobs(g, h, w, c, ignore_border=True) for _ in range(n)])
        out.append(Case({"logits": torch.randn(n, c, h, w, generator=g),
                         "aux_logits": [torch.randn(n, c, a, b, generator=g) for a, b in aux_sizes],
                         "masks": masks, "weight": weight},
                        f"{n}x{c}x{h}x{w} logits, aux at {aux_sizes}, weight {weight}, void borders"))
    return out


def _ref_aux(logits, aux_logits, masks, weight):
    from minseg.losses import cross_entropy
    from minseg.train import batch_loss

    return batch_loss(cross_entropy, {"out": logits, "aux": aux_logits}, masks, weight)


CHALLENGE = Challenge(
    classes=("person", "bicycle", "chair"),
    scene={"classes": ["person", "bicycle", "chair"], "thin": 0.8, "scale": [1.2, 1.6]},
    metric="trimap_iou", bands=((0.32, 1 / 3), (0.35, 2 / 3), (0.38, 1.0)), steps=200)
"""Accuracy within 2 pixels of the true boundaries, on thin-part scenes."""


def _challenge_reference(num_classes: int, data) -> dict:
    from minseg.losses import boundary_weighted_cross_entropy
    from minseg.models import build_model

    return {"model": build_model("unet", num_classes, width=8), "lr": 3e-3,
            "loss": boundary_weighted_cross_entropy}

TASKS = [
    Task("ex09.boundary_mask", "boundary_mask", 2,
         "bool map of pixels whose label differs from one of their 4 neighbours inside the "
         "image (both sides of an edge; works for H,W and N,H,W)",
         _label_cases, boundary_mask, compare=exact(),
         hint="compare each pixel with its right and lower neighbour; mark both pixels"),
    Task("ex09.near", "near", 2,
         "bool map of pixels within Euclidean distance `radius` of a True pixel of `mask`",
         _mask_cases, _ref_near, compare=exact(),
         hint="distance <= radius, e.g. loop over offsets (dy, dx) with dy^2 + dx^2 <= radius^2"),
    Task("ex09.boundary_f1", "boundary_f1", 2,
         "F1 of boundary maps: precision = matched predicted / predicted boundary pixels, "
         "recall = matched target / target pixels, matched within `tolerance`; empty side = 1",
         _f1_cases, _ref_f1, hint="F1 = 2PR / (P + R), 0 when P + R = 0"),
    Task("ex09.deep_supervision_loss", "deep_supervision_loss", 2,
         "deep supervision: CE(logits) + weight * sum over the auxiliary logits of CE(aux "
         "upsampled bilinearly, align_corners=False, to the mask size), CE averaged over the "
         "non-255 pixels", _aux_cases, _ref_aux, hint="F.interpolate(a, size=masks.shape[-2:], "
         "mode='bilinear', align_corners=False); F.cross_entropy(..., ignore_index=255)"),
    challenge_task("ex09", CHALLENGE, _challenge_reference,
                   "a recipe whose trimap IoU (2 px band) on held-out thin-part scenes reaches the "
                   "bands within the challenge's steps",
                   hint="full-resolution detail (skips) and a loss that weights boundary pixels"),
]

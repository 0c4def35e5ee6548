"""Exercise 13 (multi-scale inference): flip and multi-scale test-time augmentation."""
from __future__ import annotations

import torch
import torch.nn as nn

from minseg.grading.checks._common import rng
from minseg.grading.tasks import Case, Task
from minseg.infer import predict

SLUG = "13_multiscale_inference"
TITLE = "Multi-scale inference"


def tiny_model(seed: int, classes: int) -> nn.Module:
    """A small fully convolutional net with fixed random weights (no flip symmetry)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(6, classes, 3, padding=1, dilation=1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)
    return model.eval()


def call_model(fn, inputs: dict):
    inputs = dict(inputs)
    model = tiny_model(inputs.pop("model_seed"), inputs.pop("classes"))
    with torch.no_grad():
        return fn(model, **inputs)


def _cases(seed: int, multiscale: bool) -> list[Case]:
    g = rng(seed, f"ex13.{multiscale}")
    specs = [(1, 3, 8, 8, (1.0,), True), (2, 4, 7, 9, (0.5, 1.0, 1.5), False),
             (1, 2, 10, 6, (0.75, 1.25), True), (1, 3, 5, 5, (1.0, 2.0), True)]
    out = []
    for k, (n, c, h, w, scales, flip) in enumerate(specs if multiscale else specs[:3]):
        inputs = {"model_seed": seed * 100 + k, "classes": c,
                  "images": torch.randn(n, 3, h, w, generator=g)}
        note = f"images {n}x3x{h}x{w}, {c} classes"
        if multiscale:
            inputs.update(scales=list(scales), flip=flip)
            note += f", scales {list(scales)}, flip={flip}"
        out.append(Case(inputs, note))
    return out


TASKS = [
    Task("ex13.flip_tta", "flip_tta", 2,
         "average the softmax probabilities of the image and of its mirror image (mirrored back)",
         lambda seed: _cases(seed, False), lambda model, images: predict(model, images, flip=True),
         call=call_model, hint="flip the *logits* of the mirrored image back with .flip(-1)"),
    Task("ex13.multiscale_tta", "multiscale_tta", 3,
         "average softmax probabilities over scales (resize the images to round(s H) x round(s W), "
         "resize the logits back to H x W, bilinear, align_corners=False) and optional flips",
         lambda seed: _cases(seed, True),
         lambda model, images, scales, flip: predict(model, images, scales=scales, flip=flip),
         call=call_model,
         hint="every (scale, flip) view gets the same weight; scale 1 is not resampled"),
]

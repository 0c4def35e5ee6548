"""Exercise 02 (vs image classification): image labels from masks, pooled logits, CAMs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minseg.classification import cam_from_features
from minseg.data.contents import class_presence
from minseg.grading.checks._common import blobs, rng
from minseg.grading.tasks import Case, Task

SLUG = "02_vs_image_classification"
TITLE = "Segmentation vs image classification"


def _mask_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex02.masks")
    out = []
    for n, c, note in [(2, 4, "2 masks"), (3, 6, "3 masks with void borders"), (1, 3, "background only")]:
        if "only" in note:
            masks = torch.zeros(n, 5, 5, dtype=torch.long)
        else:
            masks = torch.stack([blobs(g, 6, 7, c, count=2, ignore_border="void" in note) for _ in range(n)])
        out.append(Case({"masks": masks, "num_classes": c}, f"{note}, {c} classes"))
    return out


def _feature_cases(seed: int, bias: bool) -> list[Case]:
    g = rng(seed, f"ex02.features{bias}")
    out = []
    for n, k, h, w, c in [(1, 4, 3, 3, 2), (2, 6, 4, 5, 3), (3, 2, 2, 6, 5)]:
        inputs = {"features": torch.randn(n, k, h, w, generator=g), "fc_weight": torch.randn(c, k, generator=g)}
        if bias:
            inputs["fc_bias"] = torch.randn(c, generator=g)
        out.append(Case(inputs, f"features {n}x{k}x{h}x{w}, {c} classes"))
    return out


TASKS = [
    Task("ex02.presence_targets", "presence_targets", 2,
         "multi-hot image labels N x C (float 0/1): 1 when the image has a pixel of that class "
         "(255 counts for none)", _mask_cases,
         lambda masks, num_classes: class_presence(masks, num_classes).float()),
    Task("ex02.pooled_logits", "pooled_logits", 1,
         "a classifier head: global average pool N,K,h,w to N,K, then fc_weight (C x K) and fc_bias",
         lambda seed: _feature_cases(seed, True),
         lambda features, fc_weight, fc_bias: F.linear(features.mean((2, 3)), fc_weight, fc_bias)),
    Task("ex02.class_activation_map", "class_activation_map", 2,
         "the class score at every position before pooling: CAM[n, c] = sum_k w[c, k] f[n, k], "
         "shape N,C,h,w", lambda seed: _feature_cases(seed, False),
         lambda features, fc_weight: cam_from_features(features, fc_weight)),
]

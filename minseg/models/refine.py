"""A full-resolution refinement branch for coarse segmenters (lesson 09).

An output-stride-8 network predicts on a grid 8 times coarser than the image and interpolates;
thin parts and exact outlines are lost before any training (lesson 09, section 3). Networks that
keep a full-resolution stream, such as FRRN (Pohlen et al. 2017, https://arxiv.org/abs/1611.08323)
and HRNet (Wang et al. 2019, https://arxiv.org/abs/1908.07919), or that fuse early high-resolution
features in a decoder (DeepLabv3+, https://arxiv.org/abs/1802.02611), recover that detail. This
module is the smallest version of the idea: a shallow branch at full resolution that reads the
image, sees the coarse logits, and predicts a correction to them.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from minseg.blocks import conv_bn_relu
from minseg.infer import _logits
from minseg.validate import check_num_classes


class HighResolutionRefinement(nn.Module):
    """Wrap ``model`` (any segmenter returning ``N,C,H,W`` logits at the input size) with a
    full-resolution branch:

        features = two 3x3 conv-BN-ReLU on the image, at full resolution (``width`` channels)
        logits   = coarse + fuse([features, coarse])

    ``fuse`` is a 3x3 conv-BN-ReLU and a 1x1 conv to ``num_classes``; that last conv starts at
    zero, so the wrapped model starts exactly as ``model`` and the branch learns only the
    correction the coarse logits need (a residual, as in FRRN's full-resolution stream). The
    branch sees every pixel with a 5-pixel receptive field of the image plus the coarse class
    evidence, which is what placing a boundary needs. A dict output (deep supervision) keeps its
    other entries.
    """

    def __init__(self, model: nn.Module, num_classes: int, width: int = 8, in_channels: int = 3):
        super().__init__()
        check_num_classes(num_classes)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.model, self.num_classes = model, num_classes
        self.branch = nn.Sequential(conv_bn_relu(in_channels, width, 3), conv_bn_relu(width, width, 3))
        self.fuse = nn.Sequential(conv_bn_relu(width + num_classes, width, 3),
                                  nn.Conv2d(width, num_classes, 1))
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    def forward(self, x: torch.Tensor):
        out = self.model(x)
        coarse = _logits(out)
        if coarse.shape[1] != self.num_classes or coarse.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"the wrapped model must return N,{self.num_classes},H,W logits at the "
                             f"input size {tuple(x.shape[-2:])}; got {tuple(coarse.shape)}")
        refined = coarse + self.fuse(torch.cat([self.branch(x), coarse], dim=1))
        if isinstance(out, dict):
            return {**out, "out": refined}
        return refined

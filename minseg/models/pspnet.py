"""Pyramid pooling and PSPNet (Zhao et al., "Pyramid Scene Parsing Network", arXiv:1612.01105)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from minseg.blocks import conv_bn_relu, resize
from minseg.models import base
from minseg.models.base import ContextSegmenter, dilated_encoder
from minseg.validate import check_num_classes


class PyramidPooling(nn.Module):
    """The pyramid pooling module (PSPNet, arXiv:1612.01105, Sec. 3.2).

    For each ``b`` in ``bins`` the features are average-pooled to a ``b x b`` grid (the whole
    image, halves, thirds, sixths), reduced by a 1x1 conv to ``branch_ch`` channels
    (default ``in_ch / len(bins)``), upsampled back bilinearly and concatenated with the input:
    every pixel sees its own features plus summaries of the regions around it at four scales.
    Output channels: ``in_ch + len(bins) * branch_ch`` (``out_channels``).

    The ``b = 1`` branch has no BatchNorm (its conv has a bias instead): a 1x1 pooled map gives
    BatchNorm one value per channel per image, which fails in training with batch size 1;
    the other bins have at least 4 values per channel and keep their BatchNorm.
    """

    def __init__(self, in_ch: int, bins: Sequence[int] = (1, 2, 3, 6), branch_ch: int | None = None):
        super().__init__()
        branch_ch = branch_ch or max(1, in_ch // len(bins))
        self.branches = nn.ModuleList()
        for b in bins:
            if b == 1:
                reduce: nn.Module = nn.Sequential(nn.Conv2d(in_ch, branch_ch, 1), nn.ReLU(inplace=True))
            else:
                reduce = conv_bn_relu(in_ch, branch_ch, 1)
            self.branches.append(nn.Sequential(nn.AdaptiveAvgPool2d(b), reduce))
        self.out_channels = in_ch + len(bins) * branch_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [resize(branch(x), size) for branch in self.branches], dim=1)


class LocalContext(nn.Module):
    """The "no pyramid pooling" ablation for PSPNet (arXiv:1612.01105): concatenate the input
    with a 1x1 ``conv_bn_relu`` of itself. Same output shape and weight count as
    :class:`PyramidPooling` with ``extra_ch = len(bins) * branch_ch``, but no pooling, hence
    no context beyond the encoder's own receptive field."""

    def __init__(self, in_ch: int, extra_ch: int):
        super().__init__()
        self.conv = conv_bn_relu(in_ch, extra_ch, 1)
        self.out_channels = in_ch + extra_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], dim=1)


class PSPNet(ContextSegmenter):
    """PSPNet (arXiv:1612.01105): a dilated encoder (output stride 8), :class:`PyramidPooling`,
    a 3x3 conv, dropout and a 1x1 classifier, upsampled bilinearly to the input size
    (:class:`~minseg.models.base.ContextSegmenter`; this class builds only the context module
    and the head).

    ``use_ppm=False`` replaces the pyramid by :class:`LocalContext` of the same size (lesson
    12). ``head_channels`` defaults to ``4 * width`` from scratch and 256 on a torchvision
    backbone (the paper uses 512 on ResNet-101). ``aux_head=True`` adds the paper's auxiliary
    loss on the second-to-last stage (Sec. 4; its weight 0.4, Sec. 5.1, is
    :func:`minseg.train.fit`'s default).
    ``encoder_blocks`` shapes the from-scratch encoder (see :class:`~minseg.models.DeepLabV3`).
    """

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3,
                 bins: Sequence[int] = (1, 2, 3, 6), use_ppm: bool = True,
                 head_channels: int | None = None, dropout: float = 0.1,
                 backbone: str | None = None, pretrained: bool = False, output_stride: int = 8,
                 encoder_blocks: Sequence[int] = (1, 1, 1, 1), aux_head: bool = False):
        check_num_classes(num_classes)
        encoder = dilated_encoder(backbone, in_channels, width, pretrained, output_stride,
                                  encoder_blocks)
        c = encoder.channels[-1]
        branch_ch = max(1, c // len(bins))
        ctx = PyramidPooling(c, bins, branch_ch) if use_ppm else LocalContext(c, len(bins) * branch_ch)
        h = base.head_channels(width, backbone, head_channels)
        classifier = nn.Sequential(conv_bn_relu(ctx.out_channels, h, 3), nn.Dropout(dropout),
                                   nn.Conv2d(h, num_classes, 1))
        super().__init__(encoder, ctx, classifier, num_classes=num_classes,
                         in_channels=in_channels, aux_head=aux_head, dropout=dropout)


def pspnet(num_classes: int, **kwargs) -> PSPNet:
    """PSPNet (arXiv:1612.01105); keyword arguments as :class:`PSPNet`."""
    return PSPNet(num_classes, **kwargs)

"""Atrous Spatial Pyramid Pooling and DeepLabv3 (Chen et al., arXiv:1706.05587)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from minseg.blocks import conv_bn_relu, resize
from minseg.models.base import ContextSegmenter, dilated_encoder, head_channels
from minseg.validate import check_num_classes

POOL_NORMS = ("none", "group", "batch")


class ImagePooling(nn.Sequential):
    """ASPP's image-level branch: global average pool, 1x1 conv, norm, ReLU, then broadcast
    back to the input's H,W (arXiv:1706.05587, Sec. 3.3). It gives every pixel the same
    summary of the whole image: global context.

    The pooled map is 1x1, so in training BatchNorm sees one value per channel per image and
    *fails with batch size 1* (and is noisy with small batches). ``norm``:

    - ``"none"`` (default here): no normalisation, the conv has a bias. The branch is an
      affine map of the image mean; the projection's BatchNorm after the concatenation
      rescales it with the other branches. Works at any batch size, in train and eval mode.
    - ``"group"``: GroupNorm (arXiv:1803.08494) with up to 32 groups of at least 4 channels.
      Per sample, so batch 1 works, but on a 1x1 map it normalises the channels of a group
      against each other, which removes information when groups are small.
    - ``"batch"``: BatchNorm, torchvision's layout (load its weights; needs batch > 1 to train).
    """

    def __init__(self, in_ch: int, out_ch: int, norm: str = "none"):
        if norm not in POOL_NORMS:
            raise ValueError(f"unknown pool_norm {norm!r}; valid: {', '.join(POOL_NORMS)}")
        if norm == "batch":
            norm_layer: nn.Module = nn.BatchNorm2d(out_ch)
        elif norm == "group":
            # Per sample the map is 1x1, so each group needs several channels to normalise.
            groups = max(g for g in range(1, 33) if out_ch % g == 0 and (out_ch // g >= 4 or g == 1))
            norm_layer = nn.GroupNorm(groups, out_ch)
        else:
            norm_layer = nn.Identity()
        super().__init__(nn.AdaptiveAvgPool2d(1),
                         nn.Conv2d(in_ch, out_ch, 1, bias=norm == "none"),
                         norm_layer,
                         nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        # Bilinear from 1x1 is a broadcast; written as a resize to keep one convention.
        return resize(y, x.shape[-2:])


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabv3, arXiv:1706.05587).

    Parallel branches see the same features at several scales: a 1x1 conv, one 3x3 conv per
    rate in ``rates`` (dilated: a 3x3 kernel with holes spans ``2r + 1`` pixels at the cost of
    9 weights), and :class:`ImagePooling` for the whole image. Their outputs (``out_ch`` each)
    are concatenated and projected back to ``out_ch`` by a 1x1 conv (+ BN, ReLU, dropout).

    Rates are chosen relative to the feature map: the paper's ``(6, 12, 18)`` suit a 33x33
    map (a 513 crop at output stride 16); at a rate close to the map size a 3x3 conv sees
    mostly padding and degenerates to a 1x1. Scale them with the feature size (``(2, 4, 6)``
    for a 12x12 map, i.e. 96 pixels at stride 8).

    The layout (``convs[i]`` children ``0, 1, 2`` = conv, norm, ReLU; ``project.0/1``) matches
    torchvision's ``ASPP``; with ``pool_norm="batch"`` its state dict loads directly.
    """

    def __init__(self, in_ch: int, out_ch: int = 256, rates: Sequence[int] = (6, 12, 18),
                 pool_norm: str = "none", dropout: float = 0.5):
        super().__init__()
        branches: list[nn.Module] = [conv_bn_relu(in_ch, out_ch, 1)]
        branches += [conv_bn_relu(in_ch, out_ch, 3, dilation=r) for r in rates]
        branches.append(ImagePooling(in_ch, out_ch, pool_norm))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*conv_bn_relu(len(branches) * out_ch, out_ch, 1),
                                     nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class PlainContext(nn.Sequential):
    """The "no ASPP" ablation for DeepLabv3 (arXiv:1706.05587): a 3x3 conv to ``mid_ch``, then
    a 1x1 conv to ``out_ch`` (each with BN and ReLU) and dropout; one scale, one receptive
    field. :func:`deeplabv3` picks ``mid_ch`` so that it has about as many weights as the
    ASPP it replaces."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int, dropout: float = 0.1):
        super().__init__(conv_bn_relu(in_ch, mid_ch, 3), conv_bn_relu(mid_ch, out_ch, 1),
                         nn.Dropout(dropout))


class DeepLabV3(ContextSegmenter):
    """DeepLabv3 (arXiv:1706.05587): a dilated encoder (output stride 8 or 16), ASPP, a 3x3
    conv and a 1x1 classifier, then bilinear upsampling to the input size
    (:class:`~minseg.models.base.ContextSegmenter`; this class builds only the context module
    and the head).

    ``use_aspp=False`` swaps ASPP for a :class:`PlainContext` of similar size (lesson 11).
    ``context_channels`` (ASPP's ``out_ch``) defaults to ``4 * width`` from scratch and 256 on
    a torchvision backbone, as in the paper. ``encoder_blocks`` shapes the from-scratch encoder
    (:func:`~minseg.models.backbones.small_resnet`); ``(1, 1)`` gives a shallow one whose
    receptive field is smaller than a 96-pixel image. ``aux_head=True``: deep supervision on
    the second-to-last stage (see :class:`~minseg.models.base.ContextSegmenter`).
    """

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3,
                 rates: Sequence[int] = (2, 4, 6), use_aspp: bool = True,
                 context_channels: int | None = None, pool_norm: str = "none",
                 dropout: float = 0.1, backbone: str | None = None, pretrained: bool = False,
                 output_stride: int = 8, encoder_blocks: Sequence[int] = (1, 1, 1, 1),
                 aux_head: bool = False):
        check_num_classes(num_classes)
        encoder = dilated_encoder(backbone, in_channels, width, pretrained, output_stride,
                                  encoder_blocks)
        c = encoder.channels[-1]
        a = head_channels(width, backbone, context_channels)
        aspp = ASPP(c, a, rates, pool_norm, dropout)
        if use_aspp:
            context: nn.Module = aspp
        else:
            # As many weights as the ASPP it replaces: 9*c*mid + mid*a ~ n.
            n = sum(p.numel() for p in aspp.parameters())
            context = PlainContext(c, a, max(1, round(n / (9 * c + a))), dropout)
        classifier = nn.Sequential(conv_bn_relu(a, a, 3), nn.Conv2d(a, num_classes, 1))
        super().__init__(encoder, context, classifier, num_classes=num_classes,
                         in_channels=in_channels, aux_head=aux_head, dropout=dropout)


def deeplabv3(num_classes: int, **kwargs) -> DeepLabV3:
    """DeepLabv3 (arXiv:1706.05587); keyword arguments as :class:`DeepLabV3`. Default
    ``rates=(2, 4, 6)`` suit ~96-pixel inputs at output stride 8; use ``(6, 12, 18)`` for 513
    crops at stride 16."""
    return DeepLabV3(num_classes, **kwargs)

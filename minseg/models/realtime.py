"""A real-time model: Fast-SCNN (Poudel, Liwicki, Cipolla, arXiv:1902.04502).

Two branches that share their first layers: a shallow "learning to downsample" path keeps a
stride-8 map for detail, a deep but thin path of inverted-residual blocks at stride 32 adds
context, and a cheap fusion adds the two. Depthwise separable convolutions everywhere keep
the cost per pixel low (lesson 20: FPS vs mIoU).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from minseg.blocks import DepthwiseSeparableConv, InvertedResidual, conv_bn_relu, resize
from minseg.models.backbones import check_own_encoder
from minseg.models.pspnet import PyramidPooling
from minseg.validate import check_images, check_num_classes


class LearningToDownsample(nn.Sequential):
    """Fast-SCNN's first module (arXiv:1902.04502): a 3x3 conv and two depthwise separable
    convs, all stride 2 (stride 8 overall), to ``2w, 3w, 4w`` channels (``w = 16`` is the
    paper's 32, 48, 64)."""

    def __init__(self, in_ch: int, width: int):
        super().__init__(conv_bn_relu(in_ch, 2 * width, 3, stride=2),
                         DepthwiseSeparableConv(2 * width, 3 * width, stride=2),
                         DepthwiseSeparableConv(3 * width, 4 * width, stride=2))


class GlobalFeatureExtractor(nn.Module):
    """Three stages of 3 inverted residual blocks (``4w`` stride 2, ``6w`` stride 2, ``8w``)
    take the stride-8 map to stride 32; a :class:`~minseg.models.pspnet.PyramidPooling`
    module and a 1x1 conv then add global context (arXiv:1902.04502, Table 1)."""

    def __init__(self, width: int, expansion: int = 6, blocks: int = 3):
        super().__init__()
        layers, cin = [], 4 * width
        for cout, stride in ((4 * width, 2), (6 * width, 2), (8 * width, 1)):
            for i in range(blocks):
                # only a stage's first block strides and changes the width
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        self.blocks = nn.Sequential(*layers)
        self.ppm = PyramidPooling(cin, (1, 2, 3, 6))  # PSPNet's 1x1, 2x2, 3x3, 6x6 grids
        self.project = conv_bn_relu(self.ppm.out_channels, cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.ppm(self.blocks(x)))


class FeatureFusion(nn.Module):
    """Fast-SCNN's fusion (arXiv:1902.04502): adds the upsampled low-resolution context
    (bilinear, then a depthwise 3x3 conv and a 1x1 conv) to a 1x1 projection of the stride-8
    detail map; BN on both, ReLU after the sum."""

    def __init__(self, high_ch: int, low_ch: int, out_ch: int):
        super().__init__()
        # groups=low_ch: a depthwise 3x3 conv
        self.low = nn.Sequential(conv_bn_relu(low_ch, low_ch, 3, groups=low_ch),
                                 nn.Conv2d(low_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.high = nn.Sequential(nn.Conv2d(high_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.low(resize(low, high.shape[-2:]))
        # a sum, not a concat: both branches already have out_ch channels, and it is cheaper
        return self.relu(self.high(high) + low)


class FastSCNN(nn.Module):
    """Fast-SCNN (arXiv:1902.04502): learning to downsample -> global feature extractor ->
    feature fusion -> classifier (two depthwise separable convs + 1x1), upsampled bilinearly
    from stride 8 to the input size. ``width=16`` is the paper's configuration (~1.1 M
    weights). It has its own encoder, so ``backbone`` must be ``None``.
    """

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3,
                 dropout: float = 0.1, backbone: str | None = None, pretrained: bool = False):
        super().__init__()
        check_num_classes(num_classes)
        check_own_encoder("fastscnn", backbone, pretrained)
        self.in_channels = in_channels
        w = width
        self.downsample = LearningToDownsample(in_channels, w)
        self.context = GlobalFeatureExtractor(w)
        self.fusion = FeatureFusion(4 * w, 8 * w, 8 * w)
        self.classifier = nn.Sequential(DepthwiseSeparableConv(8 * w, 8 * w),
                                        DepthwiseSeparableConv(8 * w, 8 * w),
                                        nn.Dropout(dropout), nn.Conv2d(8 * w, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, channels=self.in_channels)
        high = self.downsample(x)
        # the deep branch starts from the shared stride-8 map
        y = self.classifier(self.fusion(high, self.context(high)))
        return resize(y, x.shape[-2:])


def fastscnn(num_classes: int, width: int = 16, in_channels: int = 3, dropout: float = 0.1,
             backbone: str | None = None, pretrained: bool = False) -> FastSCNN:
    """Fast-SCNN (arXiv:1902.04502); see :class:`FastSCNN`."""
    return FastSCNN(num_classes, width, in_channels, dropout, backbone, pretrained)

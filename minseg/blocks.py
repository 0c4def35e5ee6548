"""Building blocks shared by every model in :mod:`minseg.models`.

Each block is a few layers with explicit arguments; the models are assembled from them, so a
change here (say, another normalisation) reaches every architecture at once.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_relu(in_ch: int, out_ch: int, k: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """Conv2d (no bias) -> BatchNorm2d -> ReLU, padded so that ``stride=1`` keeps H,W.

    The workhorse of every CNN here (VGG, arXiv:1409.1556; BatchNorm, arXiv:1502.03167). The
    padding ``dilation * (k - 1) // 2`` keeps the size for odd ``k`` at any dilation, which
    is what atrous convolution needs (DeepLab, arXiv:1606.00915). The conv has no bias because
    BatchNorm's shift replaces it. Children are indexed ``0, 1, 2`` (conv, bn, relu), the
    layout torchvision uses, so state dicts can be mapped.
    """
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=dilation * (k - 1) // 2,
                  dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class DoubleConv(nn.Sequential):
    """Two ``conv_bn_relu`` 3x3 layers: U-Net's unit at every level (arXiv:1505.04597).

    ``mid_ch`` defaults to ``out_ch``. The original U-Net used unpadded convs (the output
    shrinks); here they are padded so that H,W are kept and skips need no cropping.
    """

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None, dilation: int = 1):
        mid_ch = mid_ch or out_ch
        super().__init__(conv_bn_relu(in_ch, mid_ch, 3, dilation=dilation),
                         conv_bn_relu(mid_ch, out_ch, 3, dilation=dilation))


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise 3x3 conv + pointwise 1x1 conv, each with BatchNorm and ReLU (MobileNet,
    arXiv:1704.04861).

    A 3x3 conv from C to C' costs ``9*C*C'`` weights and MACs per pixel; split into a
    per-channel 3x3 (``9*C``) and a 1x1 mix (``C*C'``) it costs about ``1/C' + 1/9`` of that,
    which is what makes real-time models (Fast-SCNN, BiSeNet) fast on a CPU.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1):
        super().__init__(conv_bn_relu(in_ch, in_ch, 3, stride=stride, dilation=dilation, groups=in_ch),
                         conv_bn_relu(in_ch, out_ch, 1))


class ResidualBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs plus a shortcut, then ReLU (arXiv:1512.03385).

    The shortcut is the identity when shape is kept, else a strided 1x1 conv + BatchNorm.
    ``dilation > 1`` enlarges the receptive field without striding (the dilated ResNets of
    DeepLab and PSPNet, arXiv:1706.05587).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(in_ch, out_ch, 3, stride=stride, dilation=dilation)
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch))
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class InvertedResidual(nn.Module):
    """MobileNetV2's bottleneck: 1x1 expand, depthwise 3x3, linear 1x1 project (arXiv:1801.04381).

    The residual is added when the shape is kept. Used by Fast-SCNN's global feature extractor.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expansion: int = 6):
        super().__init__()
        hidden = in_ch * expansion
        self.block = nn.Sequential(
            conv_bn_relu(in_ch, hidden, 1),
            conv_bn_relu(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),  # linear bottleneck: no ReLU here
            nn.BatchNorm2d(out_ch))
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize to ``size`` with ``align_corners=False`` (the convention of every model
    here; see docs/DESIGN.md), as DeepLabv3 (arXiv:1706.05587) upsamples its logits. A no-op when
    the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def fit_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Make ``x`` spatially ``size`` after an exact upsampling, for a skip connection.

    Pooling and strided convs round odd sizes up (``ceil(h / 2)``), so an upsampled map can be
    a little larger than the skip it meets; the excess is on the bottom/right, so cropping it
    keeps pixel centres aligned (FCN's "crop" layer, arXiv:1411.4038). A smaller map is resized.
    """
    h, w = size
    if x.shape[-2] >= h and x.shape[-1] >= w:
        return x[..., :h, :w]
    return resize(x, size)

"""Fully convolutional networks: FCN-32s/16s/8s (Long, Shelhamer, Darrell, arXiv:1411.4038).

Also the lesson-2/3 contrast: the same VGG-style encoder as an image *classifier* (global
pool + Linear), and the conversion of its Linear head into the equivalent convolution, which
turns the classifier into a network that scores every location of an image of any size.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from minseg.blocks import conv_bn_relu, fit_to, resize
from minseg.models.backbones import FeatureEncoder, make_encoder
from minseg.models.classifier import GAPClassifier
from minseg.upsample import UPSAMPLERS, make_upsampler
from minseg.validate import check_images, check_num_classes

VGG_BLOCKS = (2, 2, 3, 3, 3)  # convs per stage in VGG-16 (arXiv:1409.1556)


def vgg_encoder(in_channels: int = 3, width: int = 16,
                blocks: Sequence[int] = VGG_BLOCKS) -> FeatureEncoder:
    """A from-scratch VGG-style encoder (Simonyan & Zisserman, arXiv:1409.1556).

    Five stages of ``blocks[i]`` 3x3 ``conv_bn_relu`` layers, each followed by a 2x2 max pool;
    channels ``w, 2w, 4w, 8w, 8w`` (VGG-16 is ``w = 64`` without BatchNorm). Outputs are
    pool1..pool5 at strides 2..32. ``ceil_mode`` pooling keeps the last row/column of odd
    sizes, so every stride-``s`` map is ``ceil(H / s)`` pixels high.
    """
    chans = [width * m for m in (1, 2, 4, 8, 8)][:len(blocks)]
    stages, cin = [], in_channels
    for n, c in zip(blocks, chans):
        layers = [conv_bn_relu(cin if i == 0 else c, c, 3) for i in range(n)]
        stages.append(nn.Sequential(*layers, nn.MaxPool2d(2, ceil_mode=True)))
        cin = c
    # every stage ends in a 2x2 pool: strides 2, 4, ..., 32
    return FeatureEncoder(stages, chans, [2 ** (i + 1) for i in range(len(chans))])


class FCN(nn.Module):
    """FCN-32s, -16s or -8s (arXiv:1411.4038) on a VGG-style encoder (or a torchvision one).

    The classifier head is "convolutionalised": fc6/fc7 are 1x1 convs (``8 * width``
    channels) and the class scorer is a 1x1 conv, so any input size works. FCN-32s upsamples
    its stride-32 scores straight to the input; FCN-16s first adds scores from pool4 (after a
    learned x2 upsampling), FCN-8s also from pool3. As in the paper the x2 upsamplers start as
    bilinear interpolation (``up="transposed"``) and the pool scorers start at zero, so at
    init FCN-16s/8s output smoothly upsampled stride-32 scores, like FCN-32s, and training
    teaches the skips to add the detail. The last upsampling is fixed bilinear
    (``align_corners=False``).
    """

    def __init__(self, num_classes: int, stride: int = 8, width: int = 16, in_channels: int = 3,
                 up: str = "transposed", backbone: str | None = None, pretrained: bool = False):
        super().__init__()
        check_num_classes(num_classes)
        if stride not in (8, 16, 32):
            raise ValueError(f"stride must be 8, 16 or 32, got {stride}")
        if up not in UPSAMPLERS:  # checked here too: FCN-32s builds no upsampler
            raise ValueError(f"unknown upsampler {up!r}; valid kinds are {', '.join(UPSAMPLERS)}")
        self.stride, self.in_channels = stride, in_channels
        self.encoder = make_encoder(backbone, in_channels, width, pretrained, output_stride=None,
                                    scratch=lambda: vgg_encoder(in_channels, width))
        hidden = 8 * width
        self.head = nn.Sequential(conv_bn_relu(self.encoder.channels[-1], hidden, 1),  # fc6
                                  conv_bn_relu(hidden, hidden, 1),                      # fc7
                                  nn.Conv2d(hidden, num_classes, 1))                    # score
        up_kw = {"bilinear_init": True} if up == "transposed" else {}
        # encoder stages feeding skips: pool4 (stride 16) for FCN-16s, also pool3 (8) for FCN-8s
        self.taps = [self.encoder.strides.index(s) for s in (16, 8) if s >= stride]
        self.skip_scores = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in self.taps:
            score = nn.Conv2d(self.encoder.channels[i], num_classes, 1)
            # zero skip scores: at init FCN-16s/8s output what FCN-32s does
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
            self.skip_scores.append(score)
            self.ups.append(make_upsampler(up, num_classes, num_classes, 2, **up_kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, channels=self.in_channels)
        feats = self.encoder(x)
        score = self.head(feats[-1])
        for i, up, skip in zip(self.taps, self.ups, self.skip_scores):
            f = feats[i]
            # x2 up, crop to the skip's size (ceil-mode pools round up), add the skip's scores
            score = fit_to(up(score), f.shape[-2:]) + skip(f)
        return resize(score, x.shape[-2:])


def fcn32s(num_classes: int, width: int = 16, in_channels: int = 3, up: str = "transposed",
           backbone: str | None = None, pretrained: bool = False) -> FCN:
    """FCN-32s (arXiv:1411.4038): stride-32 scores upsampled in one step. See :class:`FCN`."""
    return FCN(num_classes, 32, width, in_channels, up, backbone, pretrained)


def fcn16s(num_classes: int, width: int = 16, in_channels: int = 3, up: str = "transposed",
           backbone: str | None = None, pretrained: bool = False) -> FCN:
    """FCN-16s (arXiv:1411.4038): adds a pool4 (stride-16) skip. See :class:`FCN`."""
    return FCN(num_classes, 16, width, in_channels, up, backbone, pretrained)


def fcn8s(num_classes: int, width: int = 16, in_channels: int = 3, up: str = "transposed",
          backbone: str | None = None, pretrained: bool = False) -> FCN:
    """FCN-8s (arXiv:1411.4038): pool4 and pool3 skips. See :class:`FCN`."""
    return FCN(num_classes, 8, width, in_channels, up, backbone, pretrained)


class VGGClassifier(GAPClassifier):
    """The same VGG-style encoder as :class:`FCN`, as an image classifier: global average
    pool + Linear (:class:`~minseg.models.classifier.GAPClassifier`; VGG itself is
    arXiv:1409.1556).

    Returns ``N, num_classes`` logits: one answer per image. Pooling throws away *where*
    things are, which is what segmentation needs; :func:`fully_convolutional` puts it back.
    """

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3):
        super().__init__(vgg_encoder(in_channels, width), num_classes, in_channels)


def linear_to_conv1x1(linear: nn.Linear, in_ch: int, h: int = 1, w: int = 1) -> nn.Conv2d:
    """The convolution equivalent to ``linear`` applied to a flattened ``in_ch x h x w`` map.

    FCN's key step (arXiv:1411.4038, Sec. 3.1): a fully connected layer on a flattened
    feature map *is* a convolution whose kernel covers the whole map; reshaping the weight
    ``(out, in_ch*h*w) -> (out, in_ch, h, w)`` gives identical outputs on that map, and on a
    larger map the conv slides, giving a grid of outputs instead of one. With ``h = w = 1``
    (a pooled feature vector) it is a 1x1 conv. The weights are copied, not shared.
    """
    if linear.in_features != in_ch * h * w:
        raise ValueError(f"linear has {linear.in_features} inputs, but in_ch*h*w = {in_ch * h * w}")
    conv = nn.Conv2d(in_ch, linear.out_features, (h, w), bias=linear.bias is not None)
    with torch.no_grad():
        # Flattening N,C,H,W orders features channel-major, then row, then column: the same
        # order as a conv weight's in_ch, kh, kw.
        conv.weight.copy_(linear.weight.reshape(linear.out_features, in_ch, h, w))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


class DenseClassifier(nn.Module):
    """A :class:`VGGClassifier` made fully convolutional (arXiv:1411.4038, Sec. 3.1).

    The global pool is dropped and the Linear head becomes a 1x1 conv
    (:func:`linear_to_conv1x1`), so the network scores every stride-32 cell instead of the
    whole image. Because pooling and the head are both linear, the mean of
    :meth:`score_map` over positions equals the classifier's logits exactly. ``forward``
    upsamples the scores to the input size: a (coarse) segmenter that was only ever trained
    as a classifier. The encoder is shared with the classifier, not copied.
    """

    def __init__(self, classifier: GAPClassifier):
        super().__init__()
        self.in_channels = classifier.in_channels
        self.encoder = classifier.encoder
        self.score = linear_to_conv1x1(classifier.fc, self.encoder.channels[-1])

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores at stride 32: ``N, num_classes, ceil(H/32), ceil(W/32)``."""
        check_images(x, channels=self.in_channels)
        return self.score(self.encoder(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(self.score_map(x), x.shape[-2:])


def fully_convolutional(classifier: GAPClassifier) -> DenseClassifier:
    """Turn a trained :class:`VGGClassifier` (or any
    :class:`~minseg.models.classifier.GAPClassifier`) into a :class:`DenseClassifier` (FCN's
    "convolutionalisation", arXiv:1411.4038)."""
    return DenseClassifier(classifier)

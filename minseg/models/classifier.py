"""Image classifiers: an encoder, global average pooling and one Linear layer.

A classifier answers *what* is in an image, not *where*; the course uses it twice. Lesson 3
turns :class:`~minseg.models.VGGClassifier` (defined with FCN, which is built from it) into a
segmenter by making it fully convolutional; lessons 2 and 14 read *where* a class is from its
class activation map (:func:`minseg.classification.class_activation_maps`), which needs exactly
this head: pooling, then a Linear layer (Zhou et al. 2016, https://arxiv.org/abs/1512.04150).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from minseg.models.backbones import FeatureEncoder, small_resnet
from minseg.validate import check_images, check_num_classes


class GAPClassifier(nn.Module):
    """``encoder -> global average pool -> Linear``: ``N, in_channels, H, W -> N, num_classes``
    logits (the ResNet-style head, arXiv:1512.03385).

    ``encoder`` returns a list of feature maps (a :class:`~minseg.models.backbones.FeatureEncoder`);
    the last one is pooled. :meth:`features` gives that map before pooling, the input of a class
    activation map.
    """

    def __init__(self, encoder: FeatureEncoder, num_classes: int, in_channels: int = 3):
        super().__init__()
        check_num_classes(num_classes)
        self.in_channels = in_channels
        self.encoder = encoder
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(encoder.channels[-1], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, ``N, K, h, w``: what the Linear layer sees after pooling."""
        check_images(x, channels=self.in_channels)
        return self.encoder(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class CAMClassifier(GAPClassifier):
    """A multi-label classifier made for class activation maps (lesson 14): the from-scratch
    :func:`~minseg.models.backbones.small_resnet` with ``output_stride`` 8 by default (dilated
    last stages), so that the map is ``H/8 x W/8`` instead of the ``H/32`` of a plain
    classifier: on small images a stride-32 map is a handful of cells.
    """

    def __init__(self, num_classes: int, width: int = 16, output_stride: int | None = 8,
                 in_channels: int = 3):
        super().__init__(small_resnet(in_channels, width, output_stride), num_classes, in_channels)


def cam_classifier(num_classes: int, **kwargs) -> CAMClassifier:
    """Build a :class:`CAMClassifier` (keyword arguments as its constructor)."""
    return CAMClassifier(num_classes, **kwargs)

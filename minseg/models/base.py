"""The shape DeepLabv3 and PSPNet share: encoder -> context module -> classifier -> upsample.

Both papers take a dilated encoder (output stride 8 or 16), put one *context module* on its
last feature map (ASPP in DeepLabv3, arXiv:1706.05587; pyramid pooling in PSPNet,
arXiv:1612.01105), classify every cell with a small head and upsample the logits bilinearly to
the input size. Only the context module differs, so only it lives in the model's own file;
:class:`ContextSegmenter` holds the rest, as torchvision's ``_SimpleSegmentationModel`` does for
its DeepLabV3 and FCN.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from minseg.blocks import conv_bn_relu, resize
from minseg.models.backbones import FeatureEncoder, make_encoder, small_resnet
from minseg.validate import check_images, check_num_classes


def dilated_encoder(backbone: str | None, in_channels: int, width: int, pretrained: bool,
                    output_stride: int, encoder_blocks: Sequence[int]) -> FeatureEncoder:
    """The encoder of a context model: a torchvision ResNet by name, or the from-scratch
    :func:`~minseg.models.backbones.small_resnet` shaped by ``width`` and ``encoder_blocks``,
    dilated to ``output_stride``."""
    return make_encoder(backbone, in_channels, width, pretrained, output_stride,
                        scratch=lambda: small_resnet(in_channels, width, output_stride, encoder_blocks))


def head_channels(width: int, backbone: str | None, given: int | None = None) -> int:
    """Channels of the context module and head: ``given``, else ``4 * width`` from scratch and
    256 on a torchvision backbone (torchvision's and the papers' heads are 256 or 512 wide)."""
    return given or (4 * width if backbone is None else 256)


class ContextSegmenter(nn.Module):
    """``encoder -> context -> classifier -> bilinear upsample to the input size``.

    ``context`` maps the encoder's last feature map to the classifier's input; ``classifier``
    maps that to ``num_classes`` logits per cell. ``aux_head=True`` adds deep supervision as
    PSPNet's auxiliary loss (arXiv:1612.01105, Sec. 4) and torchvision's ``aux_loss`` do: a
    small classifier on the second-to-last encoder stage whose logits, in training mode only,
    come back as ``{"out": logits, "aux": [aux_logits]}`` for :func:`minseg.train.batch_loss`
    to add with its own weight. In eval mode the model returns the logits alone, and the
    auxiliary head costs nothing at inference.
    """

    def __init__(self, encoder: FeatureEncoder, context: nn.Module, classifier: nn.Module, *,
                 num_classes: int, in_channels: int = 3, aux_head: bool = False,
                 dropout: float = 0.1):
        super().__init__()
        check_num_classes(num_classes)
        self.in_channels = in_channels
        self.encoder = encoder
        self.context = context
        self.classifier = classifier
        self.aux = None
        if aux_head:
            if len(encoder.channels) < 3:
                raise ValueError("aux_head needs an encoder with at least two stages after the stem")
            ca = encoder.channels[-2]
            self.aux = nn.Sequential(conv_bn_relu(ca, max(1, ca // 4), 3), nn.Dropout(dropout),
                                     nn.Conv2d(max(1, ca // 4), num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor | list[torch.Tensor]]:
        check_images(x, channels=self.in_channels)
        feats = self.encoder(x)
        y = resize(self.classifier(self.context(feats[-1])), x.shape[-2:])
        if self.aux is not None and self.training:
            return {"out": y, "aux": [resize(self.aux(feats[-2]), x.shape[-2:])]}
        return y

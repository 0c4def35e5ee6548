"""U-Net (Ronneberger, Fischer, Brox, arXiv:1505.04597), with the switches the lessons ablate:
skip connections on/off, depth, width, and the upsampling method."""
from __future__ import annotations

import torch
import torch.nn as nn

from minseg.blocks import DoubleConv, fit_to, resize
from minseg.models.backbones import FeatureEncoder, make_encoder
from minseg.upsample import make_upsampler
from minseg.validate import check_images, check_num_classes


def unet_encoder(in_channels: int = 3, width: int = 16, depth: int = 4) -> FeatureEncoder:
    """U-Net's contracting path: a :class:`~minseg.blocks.DoubleConv` at full resolution, then
    ``depth`` times (2x2 max pool, DoubleConv doubling the channels); strides 1, 2, .., 2^depth.
    Pools use ``ceil_mode`` so odd sizes keep their last row/column."""
    stages: list[nn.Module] = [DoubleConv(in_channels, width)]
    for i in range(1, depth + 1):
        stages.append(nn.Sequential(nn.MaxPool2d(2, ceil_mode=True),
                                    DoubleConv(width * 2 ** (i - 1), width * 2 ** i)))
    return FeatureEncoder(stages, [width * 2 ** i for i in range(depth + 1)],
                          [2 ** i for i in range(depth + 1)])


class UNet(nn.Module):
    """U-Net (arXiv:1505.04597): an encoder, and a decoder that upsamples x2 per level and
    (with ``skips=True``) concatenates the encoder features of the same resolution before a
    :class:`~minseg.blocks.DoubleConv`.

    The skips carry the fine, local detail that the deep, coarse features lost to pooling;
    ``skips=False`` keeps everything else (the decoder's DoubleConvs then take only the
    upsampled features, so they are slightly smaller) for the lesson-4 ablation. ``up`` picks
    the upsampler (:func:`minseg.upsample.make_upsampler`; ``up_kwargs`` go to it): the
    default ``"transposed"`` is the paper's learned 2x2 "up-convolution" (stride 2, no
    overlap between the patches that neighbouring pixels paint). Decoder level ``i`` has
    ``width * 2**i`` channels. With a torchvision ``backbone`` its stages (strides 2..32) are
    the encoder, ``depth <= 4``, and the stride-2 output is upsampled bilinearly at the end.
    Convs are padded (the paper's were not), so no cropping of skips is needed.
    """

    def __init__(self, num_classes: int, width: int = 16, depth: int = 4, in_channels: int = 3,
                 skips: bool = True, up: str = "transposed", up_kwargs: dict | None = None,
                 backbone: str | None = None, pretrained: bool = False):
        super().__init__()
        check_num_classes(num_classes)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.in_channels, self.skips = in_channels, skips
        if backbone is not None and depth > 4:
            raise ValueError(f"a torchvision backbone has 5 stages, so depth must be <= 4, "
                             f"got {depth}")
        enc = make_encoder(backbone, in_channels, width, pretrained, output_stride=None,
                           scratch=lambda: unet_encoder(in_channels, width, depth))
        # Keep only the stages the decoder uses, so every parameter gets a gradient.
        enc = FeatureEncoder(list(enc.stages)[:depth + 1], enc.channels[:depth + 1],
                             enc.strides[:depth + 1])
        self.encoder = enc
        self.ups, self.convs = nn.ModuleList(), nn.ModuleList()
        # The paper's "2x2 up-convolution"; up_kwargs={"kernel_size": 4, "bilinear_init": True}
        # gives FCN's bilinear-initialised version instead.
        up_kw = {"kernel_size": 2} if up == "transposed" else {}
        up_kw.update(up_kwargs or {})
        cin = enc.channels[depth]
        for i in reversed(range(depth)):  # decoder level depth-1 first, level 0 (full size) last
            c = width * 2 ** i
            self.ups.append(make_upsampler(up, cin, c, 2, **up_kw))
            self.convs.append(DoubleConv(c + (enc.channels[i] if skips else 0), c))
            cin = c
        self.head = nn.Conv2d(cin, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, channels=self.in_channels)
        feats = self.encoder(x)
        y = feats[-1]
        # deepest first: each upsampler meets the skip of the resolution it produces
        for up, conv, skip in zip(self.ups, self.convs, reversed(feats[:-1])):
            # ceil-mode pooling can leave the upsampled map a pixel larger than the skip: crop it
            y = fit_to(up(y), skip.shape[-2:])
            y = conv(torch.cat([skip, y], dim=1) if self.skips else y)
        # the last level is stride 1 from scratch (a no-op), stride 2 on a torchvision backbone
        return resize(self.head(y), x.shape[-2:])


def unet(num_classes: int, width: int = 16, depth: int = 4, in_channels: int = 3,
         skips: bool = True, up: str = "transposed", up_kwargs: dict | None = None,
         backbone: str | None = None, pretrained: bool = False) -> UNet:
    """U-Net (arXiv:1505.04597); see :class:`UNet` for the arguments."""
    return UNet(num_classes, width, depth, in_channels, skips, up, up_kwargs, backbone, pretrained)

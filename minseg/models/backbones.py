"""Encoders: a small from-scratch dilated ResNet and the optional torchvision backbones.

Every encoder is a :class:`FeatureEncoder`: a list of stages whose outputs (shallow to deep)
are returned together, with their channel counts and strides, so a decoder can pick the
levels it needs (the last one for DeepLab/PSPNet, several for FCN-8s and U-Net).

torchvision backbones (``resnet18/34/50``, ``mobilenet_v3_large``) are built with random
weights unless ``pretrained=True``; only then are torchvision's ImageNet weights loaded, from
torchvision's cache and checked first (:mod:`minseg.models.weights`). Nothing downloads
implicitly: ``python -m minseg data weights`` fetches them once.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from minseg.blocks import ResidualBlock, conv_bn_relu

BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large")


class FeatureEncoder(nn.Module):
    """Runs ``stages`` in order and returns every stage's output, shallow to deep.

    ``channels[i]`` and ``strides[i]`` describe output ``i`` (stride = input size / feature
    size, rounded up for odd sizes). This is the "backbone with taps" that FCN-8s
    (arXiv:1411.4038) and U-Net (arXiv:1505.04597) decoders consume.
    """

    def __init__(self, stages: Sequence[nn.Module], channels: Sequence[int], strides: Sequence[int]):
        super().__init__()
        if not len(stages) == len(channels) == len(strides):
            raise ValueError("stages, channels and strides must have the same length")
        self.stages = nn.ModuleList(stages)
        self.channels = list(channels)
        self.strides = list(strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def dilate_(stage: nn.Module, rate: int, first_block_rate: int | None = None) -> nn.Module:
    """Turn a strided stage into a dilated one, in place: stride 2 -> 1, and every k x k conv
    (k > 1) gets dilation ``rate`` with matching padding, so the stage keeps its weights and
    receptive field but not its downsampling (DeepLab's atrous trick, arXiv:1606.00915).

    ``first_block_rate``: the rate of the stage's *first* residual block (``stage[0]``), the
    one that used to stride. torchvision's ``replace_stride_with_dilation`` gives it the
    previous stage's rate and only the later blocks the new one; DeepLab's and PSPNet's
    pretrained ResNets are built that way, so :func:`torchvision_backbone` passes it. ``None``
    (the from-scratch encoder, one block per stage) dilates every block by ``rate``.
    """
    blocks = list(stage.children()) if first_block_rate is not None else [stage]
    for i, block in enumerate(blocks):
        r = first_block_rate if (first_block_rate is not None and i == 0) else rate
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                if m.stride != (1, 1):
                    m.stride = (1, 1)
                k = m.kernel_size[0]
                if k > 1:
                    m.dilation = (r, r)
                    m.padding = (r * (k - 1) // 2, r * (k - 1) // 2)
    return stage


def _apply_output_stride(stages: list[nn.Module], strides: list[int],
                         output_stride: int | None, torchvision_rule: bool = False) -> list[int]:
    """Dilate every stage whose stride would exceed ``output_stride``; return the new strides.
    ``torchvision_rule``: each dilated stage's first block keeps the previous stage's rate
    (see :func:`dilate_`)."""
    if output_stride is None:
        return strides
    if output_stride not in strides:
        raise ValueError(f"output_stride must be one of {sorted(set(strides))}, got {output_stride}")
    new, previous = [], 1
    for stage, s in zip(stages, strides):
        if s > output_stride:
            rate = s // output_stride
            dilate_(stage, rate, previous if torchvision_rule else None)
            previous = rate
        new.append(min(s, output_stride))
    return new


def small_resnet(in_channels: int = 3, width: int = 16, output_stride: int | None = 8,
                 blocks: Sequence[int] = (1, 1, 1, 1)) -> FeatureEncoder:
    """A from-scratch ResNet-style encoder (arXiv:1512.03385) small enough for a CPU.

    Stages: stem (two 3x3 convs, stride 2, ``width``), then four stages of
    :class:`~minseg.blocks.ResidualBlock` with ``2w, 4w, 8w, 8w`` channels at strides
    4, 8, 16, 32. ``output_stride=8`` (default) or 16 replaces the last strides by dilation,
    as DeepLabv3 (arXiv:1706.05587) and PSPNet (arXiv:1612.01105) do, keeping a dense map.
    ``blocks`` gives the residual blocks per stage; a shorter list builds fewer stages, e.g.
    ``(1, 1)`` ends at stride 8 with a receptive field of 43 pixels (lessons 11 and 12 use it
    to make an encoder that cannot see a whole 96-pixel image).
    """
    if not 1 <= len(blocks) <= 4 or any(int(n) < 1 for n in blocks):
        raise ValueError(f"blocks must list 1 to 4 stages of at least one block each, got {blocks}")
    w = width
    chans = [w, 2 * w, 4 * w, 8 * w, 8 * w][:len(blocks) + 1]
    stages: list[nn.Module] = [nn.Sequential(conv_bn_relu(in_channels, w, 3, stride=2),
                                             conv_bn_relu(w, w, 3))]
    for i, n in enumerate(blocks):
        cin, cout = chans[i], chans[i + 1]
        layers = [ResidualBlock(cin, cout, stride=2)]
        layers += [ResidualBlock(cout, cout) for _ in range(n - 1)]
        stages.append(nn.Sequential(*layers))
    strides = _apply_output_stride(stages, [2, 4, 8, 16, 32][:len(stages)], output_stride)
    return FeatureEncoder(stages, chans, strides)


def _replace_first_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs; pretrained RGB filters are averaged
    over colour and repeated, so e.g. a grey-scale input still gets a sensible start."""
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None)
    if pretrained:
        with torch.no_grad():
            mean = conv.weight.mean(dim=1, keepdim=True)
            new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * 3 / in_channels)
    return new


def _torchvision_model(name: str, pretrained: bool) -> nn.Module:
    import torchvision

    from minseg.models.weights import load_checked

    net = getattr(torchvision.models, name)(weights=None)
    if pretrained:   # from torchvision's cache, checked; never a download
        load_checked(name, net)
    return net


def torchvision_backbone(name: str, pretrained: bool = False, in_channels: int = 3,
                         output_stride: int | None = None) -> FeatureEncoder:
    """A torchvision classifier cut into stages at strides 2, 4, 8, 16, 32 (its head dropped).

    ``name``: ``resnet18``, ``resnet34``, ``resnet50`` (arXiv:1512.03385) or
    ``mobilenet_v3_large`` (arXiv:1905.02244). ``output_stride`` 8 or 16 dilates the deeper
    stages instead of striding (torchvision's segmentation models use 8 for ResNets and 16
    for MobileNetV3). ``pretrained=True`` loads torchvision's ImageNet weights.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones are {', '.join(BACKBONES)}")
    net = _torchvision_model(name, pretrained)
    if name.startswith("resnet"):
        if in_channels != 3:
            net.conv1 = _replace_first_conv(net.conv1, in_channels, pretrained)
        stages = [nn.Sequential(net.conv1, net.bn1, net.relu),
                  nn.Sequential(net.maxpool, net.layer1), net.layer2, net.layer3, net.layer4]
        expansion = 4 if name == "resnet50" else 1
        chans = [64] + [c * expansion for c in (64, 128, 256, 512)]
    else:
        feats = net.features
        if in_channels != 3:
            feats[0][0] = _replace_first_conv(feats[0][0], in_channels, pretrained)
        # Cut before every block that halves the resolution (has a stride-2 conv).
        starts = [i for i, block in enumerate(feats) if i > 0 and any(
            isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in block.modules())]
        bounds = [0] + starts + [len(feats)]
        stages = [nn.Sequential(*feats[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        # A stage's channels are those of its last conv (the projection of its last block).
        chans = [[m for m in st.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
                 for st in stages]
    # ResNets dilate as torchvision's replace_stride_with_dilation does (the first block of a
    # dilated layer keeps the previous rate), so pretrained weights see the network they were
    # trained in, as DeepLab and PSPNet use it; MobileNetV3's blocks are not residual layers.
    strides = _apply_output_stride(stages, [2, 4, 8, 16, 32], output_stride,
                                   torchvision_rule=name.startswith("resnet"))
    return FeatureEncoder(stages, chans, strides)


def check_own_encoder(model: str, backbone: str | None, pretrained: bool) -> None:
    """A model that builds its own encoder (Fast-SCNN, SegFormer) takes ``backbone`` and
    ``pretrained`` only so that every builder accepts the same keywords; anything else is an
    error, never a silently ignored request."""
    if backbone is not None or pretrained:
        raise ValueError(f"{model} has its own encoder; backbone must be None and pretrained False")


def make_encoder(backbone: str | None, in_channels: int = 3, width: int = 16,
                 pretrained: bool = False, output_stride: int | None = 8,
                 scratch: Callable[[], FeatureEncoder] | None = None) -> FeatureEncoder:
    """The encoder a model asked for: ``backbone=None`` builds the from-scratch one
    (``scratch()``, by default :func:`small_resnet` with ``width``), otherwise a
    :func:`torchvision_backbone` by name. ``pretrained`` needs a torchvision backbone.
    ``output_stride`` 8 or 16 dilates the deep stages (DeepLab, arXiv:1606.00915)."""
    if backbone is None:
        if pretrained:
            raise ValueError("pretrained=True needs a torchvision backbone, e.g. backbone='resnet18'")
        return scratch() if scratch is not None else small_resnet(in_channels, width, output_stride)
    return torchvision_backbone(backbone, pretrained, in_channels, output_stride)

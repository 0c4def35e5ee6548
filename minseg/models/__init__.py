"""Segmentation models, one file per family, and a registry.

>>> import torch
>>> from minseg.models import build_model, count_parameters
>>> model = build_model("unet", num_classes=21, width=8)
>>> model(torch.randn(1, 3, 97, 131)).shape
torch.Size([1, 21, 97, 131])

Every builder takes ``num_classes`` and keyword arguments with small defaults (``width``,
``in_channels=3``; ``backbone``/``pretrained`` where meaningful) and returns an ``nn.Module``
mapping ``N,in_channels,H,W`` images to ``N,num_classes,H,W`` logits for any H,W.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from minseg.models.backbones import (BACKBONES, FeatureEncoder, make_encoder, small_resnet,
                                     torchvision_backbone)
from minseg.models.classifier import CAMClassifier, GAPClassifier, cam_classifier
from minseg.models.deeplab import ASPP, DeepLabV3, ImagePooling, deeplabv3
from minseg.models.fcn import (FCN, DenseClassifier, VGGClassifier, fcn8s, fcn16s, fcn32s,
                               fully_convolutional, linear_to_conv1x1, vgg_encoder)
from minseg.models.pspnet import PSPNet, PyramidPooling, pspnet
from minseg.models.realtime import FastSCNN, fastscnn
from minseg.models.transformer import SegFormer, segformer
from minseg.models.unet import UNet, unet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fcn32s": fcn32s,
    "fcn16s": fcn16s,
    "fcn8s": fcn8s,
    "unet": unet,
    "deeplabv3": deeplabv3,
    "pspnet": pspnet,
    "fastscnn": fastscnn,
    "segformer": segformer,
}


def build_model(name: str, num_classes: int, **kw) -> nn.Module:
    """Build the registered model ``name`` (see :data:`MODELS`) for ``num_classes`` classes;
    keyword arguments go to its builder (e.g. ``width=8``, ``skips=False``).

    The model records ``minseg_name`` and ``minseg_kwargs`` (without ``pretrained``: a
    checkpoint holds the weights), which :mod:`minseg.train` saves so that a checkpoint can
    rebuild it."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models are {', '.join(MODELS)}")
    model = MODELS[name](num_classes, **kw)
    model.minseg_name = name
    model.minseg_kwargs = {k: v for k, v in kw.items() if k != "pretrained"}
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of weights in ``model`` (only those with ``requires_grad`` if ``trainable_only``).

    The "params" column of every model table (e.g. Fast-SCNN, arXiv:1902.04502, ~1.1 M)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "MODELS", "build_model", "count_parameters", "BACKBONES", "FeatureEncoder", "make_encoder",
    "small_resnet", "torchvision_backbone", "ASPP", "ImagePooling", "DeepLabV3", "deeplabv3",
    "FCN", "VGGClassifier", "DenseClassifier", "fcn32s", "fcn16s", "fcn8s", "fully_convolutional",
    "linear_to_conv1x1", "vgg_encoder", "PSPNet", "PyramidPooling", "pspnet", "FastSCNN",
    "fastscnn", "SegFormer", "segformer", "UNet", "unet", "GAPClassifier", "CAMClassifier",
    "cam_classifier",
]

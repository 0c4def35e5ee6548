"""Joint image/mask transforms, built on ``torchvision.transforms.v2``.

The image is a ``tv_tensors.Image`` and the mask a ``tv_tensors.Mask``; torchvision then applies
each geometric transform to both (nearest-neighbour for the mask, so class ids are never blended)
and each photometric one to the image only. Padding fills the mask with ``IGNORE_INDEX`` so that
pixels that did not exist in the photo are excluded from loss and metrics.
Reference: https://pytorch.org/vision/stable/transforms.html
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from minseg.validate import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}


def _to_float_normalized() -> list:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transforms(size: int, scale: tuple[float, float] = (0.5, 2.0), hflip: float = 0.5,
                     jitter: float = 0.2, hue: float = 0.0) -> v2.Compose:
    """Training augmentation: random rescale, ``size x size`` crop (mask padded with 255),
    horizontal flip, colour jitter on the image only (brightness, contrast, saturation; hue
    only when ``hue > 0``, since the RGB-HSV round trip costs more than the rest of the
    pipeline on a CPU), then float conversion and ImageNet normalisation."""
    lo, hi = max(1, int(size * scale[0])), max(2, int(size * scale[1]))
    steps = [v2.RandomResize(lo, hi + 1),
             v2.RandomCrop(size, pad_if_needed=True, fill=_FILL),
             v2.RandomHorizontalFlip(hflip)]
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter,
                                    hue=min(0.5, hue) if hue > 0 else None))
    return v2.Compose(steps + _to_float_normalized())


def eval_transforms(size: int | None = None) -> v2.Compose:
    """Evaluation: optionally resize the shorter side to ``size`` and centre-crop ``size x size``
    (so images of different shapes can be batched), then float conversion and normalisation.
    With ``size=None`` the image keeps its resolution (batch size 1 for real VOC)."""
    steps = [v2.Resize(size), v2.CenterCrop(size)] if size else []
    return v2.Compose(steps + _to_float_normalized())


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation: ``N,3,H,W`` or ``3,H,W`` float in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    return (images * std + mean).clamp(0, 1)

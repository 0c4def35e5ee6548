"""Inference with test-time augmentation: multi-scale inputs and horizontal flips.

The model sees each image at several scales (and mirrored), every prediction is resized back
to the input size, and the softmax probabilities are averaged. DeepLab (Chen et al. 2017,
https://arxiv.org/abs/1606.00915) and PSPNet (Zhao et al. 2017,
https://arxiv.org/abs/1612.01105) report about +1 mIoU from scales (0.5, 0.75, 1, 1.25, 1.5,
1.75) with flips, at the cost of one forward pass per (scale, flip).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from minseg.validate import check_images


def _logits(output) -> torch.Tensor:
    """Models return logits; torchvision's return ``{"out": logits, "aux": ...}``."""
    if isinstance(output, Mapping):
        return output["out"]
    if isinstance(output, (list, tuple)):
        return output[0]
    return output


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return fallback


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in scales)
    except TypeError:
        raise ValueError(f"scales must be a sequence of numbers, got {scales!r}") from None
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales}")
    return scales


def default_stride(window: int) -> int:
    """The step between sliding-window crops when none is given: two thirds of the window."""
    return max(1, (2 * window) // 3)


def sliding_logits(model: nn.Module, x: torch.Tensor, window: int, stride: int | None = None
                   ) -> torch.Tensor:
    """Logits ``N,C,H,W`` of ``model`` run on ``window x window`` crops of ``x`` every
    ``stride`` pixels (default two thirds of the window), averaged where crops overlap.

    Sliding-window inference evaluates an image of any size at full resolution with the crop
    size the model was trained on (MMSegmentation's ``mode="slide"``). An image smaller than
    the window is zero-padded at the bottom and right (zero is the mean colour after ImageNet
    normalisation); the padding never reaches the result, which is cropped back to ``H x W``.
    The last row and column of crops are aligned to the border, so every pixel is covered.
    """
    if window < 1 or (stride is not None and not 1 <= stride <= window):
        raise ValueError(f"need window >= 1 and 1 <= stride <= window, got {window}, {stride}")
    stride = stride or default_stride(window)
    H, W = x.shape[-2:]
    xp = F.pad(x, (0, max(0, window - W), 0, max(0, window - H)))   # left, right, top, bottom
    Hp, Wp = xp.shape[-2:]

    def starts(size: int) -> list[int]:
        # stride steps, plus one crop flush with the far border
        return sorted({*range(0, size - window + 1, stride), size - window})

    total, count = None, torch.zeros(1, 1, Hp, Wp, device=x.device)
    for y in starts(Hp):
        for x0 in starts(Wp):
            logits = _logits(model(xp[..., y:y + window, x0:x0 + window])).float()
            if logits.shape[-2:] != (window, window):
                logits = F.interpolate(logits, size=(window, window), mode="bilinear",
                                       align_corners=False)
            if total is None:
                total = torch.zeros(x.shape[0], logits.shape[1], Hp, Wp, device=x.device)
            total[..., y:y + window, x0:x0 + window] += logits
            count[..., y:y + window, x0:x0 + window] += 1
    return (total / count)[..., :H, :W]


def _probs_one_batch(model: nn.Module, x: torch.Tensor, scales: tuple[float, ...],
                     flip: bool, window: int | None = None, stride: int | None = None
                     ) -> torch.Tensor:
    H, W = x.shape[-2:]
    total, views = None, 0
    for s in scales:
        size = (max(1, round(H * s)), max(1, round(W * s)))  # a tiny scale still gives >= 1 pixel
        # scale 1 is not resampled, so scales=(1,) gives exactly softmax(model(x))
        xs = x if size == (H, W) else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        for mirrored in ((False, True) if flip else (False,)):
            view = xs.flip(-1) if mirrored else xs
            logits = (sliding_logits(model, view, window, stride) if window
                      else _logits(model(view)))
            if logits.ndim != 4 or logits.shape[0] != x.shape[0]:
                raise ValueError(f"the model must return N,C,H,W logits; got shape "
                                 f"{tuple(logits.shape)} for input {tuple(xs.shape)}")
            logits = logits.float()  # average in float32 even for a half-precision model
            if mirrored:
                logits = logits.flip(-1)  # mirror back before it meets the other views
            if logits.shape[-2:] != (H, W):
                logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
            # average probabilities, not logits: every view gets an equal, bounded vote
            p = torch.softmax(logits, 1)
            total = p if total is None else total + p
            views += 1
    return total / views


def predict(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,),
            flip: bool = False, batch_size: int | None = None, window: int | None = None,
            stride: int | None = None) -> torch.Tensor:
    """Class probabilities ``N,C,H,W`` (float32) averaged over scales and horizontal flips.

    Test-time augmentation as in DeepLab (https://arxiv.org/abs/1606.00915): for each scale
    ``s`` the images are resized to ``round(s H) x round(s W)`` (bilinear,
    ``align_corners=False``; scale 1 is not resampled), the logits are resized back to
    ``H x W`` the same way, and ``softmax`` probabilities are averaged with equal weights
    over every (scale, flip) view; with ``flip`` each view is also run on the mirrored image
    and its logits mirrored back. ``scales=(1.0,)`` and ``flip=False`` give exactly
    ``softmax(model(images), 1)``. ``window``: run every view by :func:`sliding_logits`
    (crops of ``window`` pixels every ``stride``) instead of whole.

    ``images``: a floating ``N,C,H,W`` tensor (normalised as for training). The model runs in
    eval mode under ``torch.no_grad()`` on its own device (the images are moved there), and
    is put back in training mode afterwards if it was; ``batch_size`` splits the images into
    chunks (default: all at once). Models that return torchvision's ``{"out": ...}`` dict
    work too. The probabilities come back on the images' device.
    """
    check_images(images, "images", channels=None)
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN/inf values")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (N = 0)")
    scales = _check_scales(scales)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    device = _model_device(model, images.device)
    chunk = batch_size or max(1, images.shape[0])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [_probs_one_batch(model, x.to(device), scales, flip, window, stride)
                   .to(images.device)
                   for x in images.split(chunk)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def predict_mask(model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,),
                 flip: bool = False, batch_size: int | None = None) -> torch.Tensor:
    """The predicted label map ``N,H,W`` (int64): the argmax over classes of :func:`predict`.

    Test-time augmentation as in DeepLab, https://arxiv.org/abs/1606.00915.
    """
    return predict(model, images, scales=scales, flip=flip, batch_size=batch_size).argmax(1)

"""Receptive fields: the theoretical one (arithmetic on kernels, strides and dilations) and the
effective one (where the gradient of one output pixel actually lands in the input).

Theoretical receptive field of a chain of layers (Araujo et al. 2019, "Computing Receptive
Fields of Convolutional Neural Networks", https://distill.pub/2019/computing-receptive-fields/):
a layer with kernel ``k``, stride ``s`` and dilation ``d`` spans ``k_eff = d (k - 1) + 1`` input
positions of its own input; with ``jump_{l-1}`` the distance in input pixels between two
neighbouring positions of that input,

    r_l = r_{l-1} + (k_eff - 1) * jump_{l-1},      jump_l = jump_{l-1} * s,      r_0 = 1, jump_0 = 1.

Effective receptive field (Luo et al. 2016, "Understanding the Effective Receptive Field in
Deep Convolutional Neural Networks", https://arxiv.org/abs/1701.04128): back-propagate a
gradient of 1 from the centre output pixel (all channels) and look at ``|d out / d input|``;
its mass concentrates in a roughly Gaussian blob far smaller than the theoretical field.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn

@dataclass(frozen=True)
class ReceptiveField:
    """``size``: side of the square input window one output pixel depends on (pixels);
    ``jump``: distance in input pixels between two neighbouring output pixels (the output
    stride); ``sizes``/``jumps``: the same after each layer."""

    size: int
    jump: int
    sizes: tuple[int, ...]
    jumps: tuple[int, ...]


def _pair_first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def _spec(layer) -> tuple[int, int, int]:
    """``(kernel, stride, dilation)`` of a layer spec or of a conv / pooling module."""
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        if isinstance(layer, nn.ConvTranspose2d):
            raise ValueError("transposed convolutions upsample; receptive_field covers "
                             "downsampling chains (convs and pools) only")
        return _pair_first(layer.kernel_size), _pair_first(layer.stride), _pair_first(layer.dilation)
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        d = _pair_first(getattr(layer, "dilation", 1))  # AvgPool2d has no dilation: 1
        return _pair_first(layer.kernel_size), _pair_first(layer.stride), d
    if isinstance(layer, (tuple, list)) and len(layer) in (2, 3):
        k, s, *rest = layer
        d = rest[0] if rest else 1
        return int(k), int(s), int(d)
    raise ValueError(f"a layer must be (kernel, stride[, dilation]) or an nn.Conv2d / "
                     f"nn.MaxPool2d / nn.AvgPool2d, got {layer!r}")


def receptive_field(layers: Iterable) -> ReceptiveField:
    """Theoretical receptive field of a chain of layers applied one after the other.

    ``layers``: ``(kernel, stride)`` or ``(kernel, stride, dilation)`` tuples, or
    ``nn.Conv2d`` / ``nn.MaxPool2d`` / ``nn.AvgPool2d`` modules (square kernels; the first
    component is used). Formula in the module docstring (Araujo et al. 2019,
    https://distill.pub/2019/computing-receptive-fields/). An empty chain gives ``size=1``.

    >>> receptive_field([(3, 1)] * 3).size           # three 3x3 convs
    7
    >>> receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4)]).size   # dilations 1, 2, 4
    15
    """
    size, jump = 1, 1
    sizes, jumps = [], []
    for layer in layers:
        k, s, d = _spec(layer)
        if k < 1 or s < 1 or d < 1:
            raise ValueError(f"kernel, stride and dilation must be >= 1, got {(k, s, d)}")
        # r_l = r_{l-1} + (k_eff - 1) * jump_{l-1}, with k_eff - 1 = d (k - 1)
        size += (d * (k - 1)) * jump
        jump *= s  # jump_l = jump_{l-1} * s: the stride so far, in input pixels
        sizes.append(size)
        jumps.append(jump)
    return ReceptiveField(size, jump, tuple(sizes), tuple(jumps))


def chain_layers(module: nn.Module) -> list[nn.Module]:
    """The convs and pools of ``module`` in registration order, skipping 1x1 convs and
    adaptive pooling: the main path of a plain or residual encoder.

    In a ResNet block the 1x1 shortcut runs *in parallel* with the 3x3 convs and never
    enlarges the field, so leaving out every 1x1 conv gives the chain along the longest
    path (a strided 1x1 shortcut always sits next to a strided 3x3 conv that is counted).
    Networks with parallel k x k branches (ASPP, Inception) are not chains: compute each
    branch separately.
    """
    out = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and _pair_first(m.kernel_size) > 1:
            out.append(m)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            out.append(m)
        elif isinstance(m, nn.ConvTranspose2d):
            raise ValueError("module contains a transposed conv; chain_layers covers encoders only")
    return out


def effective_receptive_field(model: Callable[[torch.Tensor], torch.Tensor],
                              image_size: int | tuple[int, int], *, samples: int = 4,
                              in_channels: int = 3, seed: int = 0,
                              images: torch.Tensor | None = None,
                              device: str | torch.device | None = None) -> torch.Tensor:
    """``|d out(centre) / d input|`` summed over input channels and averaged over inputs: an
    ``H,W`` map (float32, on the CPU) normalised to sum to 1.

    Luo et al. 2016, https://arxiv.org/abs/1701.04128: a gradient of 1 is sent back from
    every channel of the output pixel at the centre (``out[:, :, h // 2, w // 2]``) and 0
    from everywhere else. ``model`` maps ``N,C,H,W`` inputs to ``N,K,h,w`` outputs (logits
    or features, any ``h,w``); it runs in eval mode (restored afterwards if it is an
    ``nn.Module``). The inputs are ``images`` if given, else ``samples`` standard-normal
    images from ``seed``.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if images is None:
        g = torch.Generator().manual_seed(seed)
        images = torch.randn(samples, in_channels, h, w, generator=g)
    if images.ndim != 4:
        raise ValueError(f"images must be N,C,H,W; got shape {tuple(images.shape)}")
    if device is None and isinstance(model, nn.Module):
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else "cpu"
    # a fresh leaf that records the input gradient; the caller's tensor is left alone
    x = images.detach().to(device or "cpu").clone().requires_grad_(True)
    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    try:
        out = model(x)
        if isinstance(out, dict):
            out = out["out"]
        if out.ndim != 4:
            raise ValueError(f"model must return N,K,h,w; got shape {tuple(out.shape)}")
        oh, ow = out.shape[-2:]
        # d(sum over the centre pixel's channels) / d input: a gradient of 1 from each of them
        out[:, :, oh // 2, ow // 2].sum().backward()
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
    # |grad| summed over input channels, averaged over the inputs: N,C,H,W -> H,W
    erf = x.grad.detach().abs().sum(1).mean(0).float().cpu()
    total = erf.sum()
    return erf / total if total > 0 else erf  # an all-zero map stays zero, not 0/0


def mass_radius(erf: torch.Tensor, fraction: float = 0.9) -> int:
    """Smallest ``r`` such that the square of side ``2r + 1`` centred on the map's centre
    (``h // 2, w // 2``) holds at least ``fraction`` of the map's total mass.

    A single number for the size of an effective receptive field (its "side" is
    ``2r + 1``); ``fraction=1`` finds the support of the gradient.
    """
    if erf.ndim != 2:
        raise ValueError(f"erf must be an H,W map; got shape {tuple(erf.shape)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    m = erf.double().abs()
    total = float(m.sum())
    if total == 0:
        return 0
    H, W = m.shape
    cy, cx = H // 2, W // 2
    for r in range(max(H, W)):
        # the square is clipped at the border: max(0, .) keeps a negative start from wrapping
        inside = float(m[max(0, cy - r):cy + r + 1, max(0, cx - r):cx + r + 1].sum())
        # slack: a sub-block's sum may round a hair below the total
        if inside >= fraction * total * (1 - 1e-9):
            return r
    return max(H, W)


def support(erf: torch.Tensor) -> int:
    """Number of input pixels with a nonzero gradient: the pixels the output can see at all
    (with holes, e.g. the "gridding" of stacked dilations with one rate)."""
    return int((erf != 0).sum())


__all__ = ["ReceptiveField", "receptive_field", "chain_layers", "effective_receptive_field",
           "mass_radius", "support"]

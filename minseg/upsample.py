"""The three common ways a segmentation network upsamples, and their trade-offs.

==============  ==========================  ===================  ===========================
module          weights (in -> out, x s)    artifacts            cost
==============  ==========================  ===================  ===========================
TransposedUp    ``in*out*k*k``, k = 2s      checkerboard when    one op; MACs ``in*out*k*k``
                (64*in*out/4 for s=2)       learned kernels      per *input* pixel
                                            overlap unevenly
BilinearUp      ``in*out*k*k`` (k=3 or 1)   none from the        fixed resize + a conv at the
                                            resize itself        *output* resolution
PixelShuffleUp  ``in*out*s*s*k*k``          none at init with    a conv at the *input*
                                            ICNR; can learn      resolution + a free reshuffle
                                            them later
==============  ==========================  ===================  ===========================

Every module maps ``N,in,H,W`` to exactly ``N,out,s*H,s*W``, and a pixel's centre maps to the
same place as in ``F.interpolate(..., align_corners=False)``, so the three are drop-in
replacements for each other (:func:`make_upsampler`). None of them includes a normalisation
or activation: they are linear maps, and the models put their conv blocks after them.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def bilinear_kernel(in_ch: int, out_ch: int, k: int) -> torch.Tensor:
    """A ``ConvTranspose2d`` weight (``in_ch, out_ch, k, k``) that performs bilinear upsampling.

    FCN initialises its learnable upsampling this way (arXiv:1411.4038, Sec. 3.3). Channel
    ``i`` is mapped to channel ``i`` (for ``i < min(in_ch, out_ch)``) by the separable tent
    filter ``1 - |x - c| / f`` with ``f = ceil(k / 2)``; the rest is zero. With ``k = 2s``
    (``2s - 1`` for odd ``s``), stride ``s`` and the padding of :class:`TransposedUp`, the
    result equals ``F.interpolate(mode="bilinear", align_corners=False)`` away from the border.
    """
    factor = (k + 1) // 2  # f = ceil(k / 2), the tent's half-width (FCN's upsample_filt)
    # the middle tap for odd k, halfway between the two middle taps for even k
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]  # separable: the outer product of two tents
    weight = torch.zeros(in_ch, out_ch, k, k)
    idx = torch.arange(min(in_ch, out_ch))
    weight[idx, idx] = filt  # channel i -> channel i only: no mixing across channels
    return weight


def default_transposed_kernel(scale: int) -> int:
    """FCN's kernel size (arXiv:1411.4038) for a stride-``scale`` transposed conv: ``2s``
    (``2s - 1`` if ``s`` is odd), the size :func:`bilinear_kernel` needs."""
    return 2 * scale - scale % 2


class TransposedUp(nn.Module):
    """Learned upsampling with a transposed ("fractionally strided", "de-") convolution.

    FCN (arXiv:1411.4038) and U-Net (arXiv:1505.04597) upsample this way. Each input pixel
    paints a ``k x k`` patch of the output, ``s`` pixels apart; where the patches overlap
    unevenly (``k`` not a multiple of ``s``), and in practice even when they overlap evenly
    but the learned kernel is not smooth, the output shows a periodic *checkerboard*
    (Odena et al., https://distill.pub/2016/deconv-checkerboard/). ``bilinear_init=True``
    starts from exact bilinear interpolation (:func:`bilinear_kernel`), which has no
    artifacts until training moves it. Most parameters of the three (``in*out*k*k`` with
    ``k = 2s``), one fused op.

    ``kernel_size`` defaults to ``2s`` (``2s - 1`` for odd ``s``); padding and output padding
    are chosen so that the output is exactly ``s*H x s*W``.
    """

    def __init__(self, in_ch: int, out_ch: int, scale: int = 2, bilinear_init: bool = False,
                 kernel_size: int | None = None):
        super().__init__()
        k = kernel_size or default_transposed_kernel(scale)
        if k < scale:
            raise ValueError(f"kernel_size must be >= scale ({scale}), got {k}")
        # output = (H - 1) * s - 2p + k + op; choose p, op so that it is exactly s * H.
        pad = math.ceil((k - scale) / 2)
        # ceil makes out_pad 0 or 1 (PyTorch needs output_padding < stride)
        out_pad = scale - k + 2 * pad
        self.scale = scale
        self.up = nn.ConvTranspose2d(in_ch, out_ch, k, stride=scale, padding=pad,
                                     output_padding=out_pad)
        if bilinear_init:
            with torch.no_grad():
                self.up.weight.copy_(bilinear_kernel(in_ch, out_ch, k))
                self.up.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class BilinearUp(nn.Module):
    """Fixed bilinear resize (``align_corners=False``) followed by a learned conv.

    "Resize-convolution" (Odena et al., https://distill.pub/2016/deconv-checkerboard/; used by
    DeepLab, arXiv:1706.05587, and most U-Net variants): the resize has no parameters and
    cannot produce a checkerboard, the conv (``in*out*k*k`` weights, ``k = 3`` by default)
    learns the rest. Slower than a transposed conv of the same ``k`` because the conv runs at
    the *output* resolution (``s*s`` times more pixels). With ``kernel_size=1`` the conv is
    applied *before* the resize: a 1x1 conv and a bilinear resize commute exactly, so this
    gives the same function at ``1/(s*s)`` of the cost.
    """

    def __init__(self, in_ch: int, out_ch: int, scale: int = 2, kernel_size: int = 3):
        super().__init__()
        self.scale = scale
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        if self.kernel_size == 1:
            return F.interpolate(self.conv(x), size=size, mode="bilinear", align_corners=False)
        return self.conv(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


def icnr_(weight: torch.Tensor, scale: int,
          init: Callable[[torch.Tensor], torch.Tensor] = nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR initialisation, in place, of a conv weight that feeds ``nn.PixelShuffle(scale)``.

    Aitken et al., "Checkerboard artifact free sub-pixel convolution" (arXiv:1707.02937): draw
    a kernel for ``out / s^2`` channels with ``init`` and repeat each one ``s^2`` times, so that
    the ``s x s`` sub-pixels that PixelShuffle gathers from channels ``c*s^2 .. c*s^2+s^2-1``
    start identical. At init, conv + PixelShuffle is then exactly nearest-neighbour upsampling
    of a conv output: no checkerboard. Returns ``weight``.
    """
    out_ch = weight.shape[0]
    if out_ch % (scale * scale):
        raise ValueError(f"weight has {out_ch} output channels, not a multiple of scale^2={scale**2}")
    sub = torch.empty((out_ch // scale**2,) + tuple(weight.shape[1:]), dtype=weight.dtype)
    init(sub)
    with torch.no_grad():
        # kernel c is copied to channels c*s^2 .. c*s^2+s^2-1: one s x s block after the shuffle
        weight.copy_(sub.repeat_interleave(scale * scale, dim=0))
    return weight


class PixelShuffleUp(nn.Module):
    """Sub-pixel convolution: a conv to ``out*s*s`` channels, then ``nn.PixelShuffle(s)``.

    ESPCN (Shi et al., arXiv:1609.05158). The conv runs at the *input* resolution, so it is as
    cheap per weight as a transposed conv, but it has ``s*s`` times the weights of a
    resize-conv with the same kernel. Random init gives each of the ``s x s`` sub-pixel
    positions its own kernel, i.e. a checkerboard from step 0; ICNR init (``icnr=True``,
    :func:`icnr_`) removes it. Bias starts at zero.
    """

    def __init__(self, in_ch: int, out_ch: int, scale: int = 2, icnr: bool = True,
                 kernel_size: int = 3):
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(in_ch, out_ch * scale * scale, kernel_size, padding=kernel_size // 2)
        self.shuffle = nn.PixelShuffle(scale)
        if icnr:
            icnr_(self.conv.weight, scale)
            with torch.no_grad():
                self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


UPSAMPLERS: dict[str, type[nn.Module]] = {
    "transposed": TransposedUp,
    "bilinear": BilinearUp,
    "pixelshuffle": PixelShuffleUp,
}


def make_upsampler(kind: str, in_ch: int, out_ch: int, scale: int = 2, **kw) -> nn.Module:
    """Build one of :data:`UPSAMPLERS` by name: ``"transposed"``, ``"bilinear"`` or
    ``"pixelshuffle"``; extra keywords go to its constructor. See the module docstring for
    the trade-offs (FCN arXiv:1411.4038, ESPCN arXiv:1609.05158, ICNR arXiv:1707.02937)."""
    if kind not in UPSAMPLERS:
        raise ValueError(f"unknown upsampler {kind!r}; valid kinds are {', '.join(UPSAMPLERS)}")
    return UPSAMPLERS[kind](in_ch, out_ch, scale, **kw)


def checkerboard_index(y: torch.Tensor, period: int = 2, border: int = 2,
                       eps: float = 1e-6) -> float:
    """How much of a map's variation repeats with the pixel position modulo ``period``: the
    signature of checkerboard artifacts (Odena et al., https://distill.pub/2016/deconv-checkerboard/).

    ``y`` is ``N,C,H,W`` (or ``H,W``). Each map ``y[n, c]`` loses ``border`` pixels on every side
    (zero padding makes the border differ), is cut to a multiple of ``period``, and its pixels are
    grouped by phase ``(row % period, col % period)``. The index of the map is the variance of the
    ``period**2`` group means divided by the map's variance: the share of the variance explained
    by the phase, in [0, 1]. A pure periodic pattern (e.g. a random transposed convolution applied
    to a constant input) scores 1; a smooth map scores close to 0 (noise gives about
    ``period**2 / pixels``); a map whose variance is below ``eps`` times its mean square (constant
    up to rounding) scores 0. Returns the mean over all maps.
    """
    if y.ndim == 2:
        y = y[None, None]
    if y.ndim != 4:
        raise ValueError(f"y must have shape N,C,H,W or H,W; got {tuple(y.shape)}")
    if period < 2:
        raise ValueError(f"period must be >= 2, got {period}")
    y = y.detach().double()  # float64: near-constant maps need the precision
    if border:
        y = y[..., border:-border, border:-border]
    # a multiple of period: every phase gets the same number of pixels
    h, w = (y.shape[-2] // period) * period, (y.shape[-1] // period) * period
    if h == 0 or w == 0:
        raise ValueError(f"the map is too small for period {period} after cropping {border} px")
    y = y[..., :h, :w]
    total = y.flatten(2).var(2, unbiased=False)                              # N,C
    # N,C,h/p,p,w/p,p: dims 3 and 5 are the phase (row % p, col % p)
    phases = y.reshape(*y.shape[:2], h // period, period, w // period, period)
    means = phases.mean(dim=(2, 4)).flatten(2)                               # N,C,period^2
    between = means.var(2, unbiased=False)
    # constant up to rounding: index 0 rather than noise / noise
    flat = total <= eps * y.flatten(2).pow(2).mean(2)
    index = torch.where(flat, torch.zeros_like(total), between / total.clamp_min(1e-300))
    return float(index.mean())

"""Blocks and the three upsamplers: shapes, parameter counts, and parity with interpolation."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minseg.blocks import (DepthwiseSeparableConv, DoubleConv, InvertedResidual, ResidualBlock,
                           conv_bn_relu, fit_to, resize)
from minseg.upsample import (UPSAMPLERS, BilinearUp, PixelShuffleUp, TransposedUp, bilinear_kernel,
                             icnr_, make_upsampler)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("k,dilation", [(1, 1), (3, 1), (3, 2), (3, 6), (5, 3)])
def test_conv_bn_relu_keeps_size(k, dilation):
    x = torch.randn(2, 3, 13, 17)
    assert conv_bn_relu(3, 5, k, dilation=dilation)(x).shape == (2, 5, 13, 17)


def test_conv_bn_relu_stride_rounds_up():
    x = torch.randn(1, 3, 13, 17)
    assert conv_bn_relu(3, 4, 3, stride=2)(x).shape == (1, 4, 7, 9)


def test_blocks_shapes():
    x = torch.randn(2, 8, 11, 15)
    assert DoubleConv(8, 6)(x).shape == (2, 6, 11, 15)
    assert DepthwiseSeparableConv(8, 16, stride=2)(x).shape == (2, 16, 6, 8)
    assert ResidualBlock(8, 8)(x).shape == (2, 8, 11, 15)
    assert ResidualBlock(8, 12, stride=2)(x).shape == (2, 12, 6, 8)
    assert ResidualBlock(8, 8, dilation=2)(x).shape == (2, 8, 11, 15)
    assert InvertedResidual(8, 8)(x).shape == (2, 8, 11, 15)
    assert InvertedResidual(8, 16, stride=2)(x).shape == (2, 16, 6, 8)


def test_depthwise_separable_is_cheaper():
    dense, separable = conv_bn_relu(64, 64, 3), DepthwiseSeparableConv(64, 64)
    assert n_params(separable) < n_params(dense) / 6


def test_residual_block_identity_shortcut():
    assert isinstance(ResidualBlock(8, 8).shortcut, nn.Identity)
    assert not isinstance(ResidualBlock(8, 16).shortcut, nn.Identity)


def test_fit_to_crops_and_resizes():
    x = torch.randn(1, 2, 8, 10)
    assert torch.equal(fit_to(x, (7, 9)), x[..., :7, :9])
    assert fit_to(x, (9, 12)).shape[-2:] == (9, 12)
    assert resize(x, (8, 10)) is x


def test_bilinear_kernel_layout():
    w = bilinear_kernel(3, 5, 4)
    assert w.shape == (3, 5, 4, 4)
    assert w[0, 1].abs().sum() == 0 and w[2, 2].sum() > 0
    assert torch.allclose(w[1, 1], w[1, 1].T)  # separable and symmetric
    # Each output pixel of a stride-2 transposed conv gets weights summing to 1.
    assert torch.isclose(w[0, 0][::2, ::2].sum(), torch.tensor(1.0))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_transposed_bilinear_init_equals_interpolate(scale):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, 14)
    up = TransposedUp(3, 3, scale, bilinear_init=True)
    y = up(x)
    ref = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    assert y.shape == ref.shape == (2, 3, 11 * scale, 14 * scale)
    b = scale  # the border, where the transposed conv sees zero padding instead of clamping
    torch.testing.assert_close(y[..., b:-b, b:-b], ref[..., b:-b, b:-b], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(y, ref, atol=1e-3)  # the border does differ


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_transposed_exact_size_for_any_kernel(k):
    assert TransposedUp(4, 2, 2, kernel_size=k)(torch.randn(1, 4, 7, 9)).shape == (1, 2, 14, 18)


def test_transposed_rejects_small_kernel():
    with pytest.raises(ValueError, match="kernel_size"):
        TransposedUp(4, 4, 4, kernel_size=3)


@pytest.mark.parametrize("k", [1, 3])
def test_bilinear_up_is_resize_then_conv(k):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 9)
    up = BilinearUp(4, 3, 2, kernel_size=k)
    ref = up.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
    # k=1 runs the conv first: the same function, because a 1x1 conv and a resize commute.
    torch.testing.assert_close(up(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", [2, 3])
def test_icnr_pixelshuffle_equals_nearest_upsampling(scale):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 9)
    up = PixelShuffleUp(4, 3, scale, icnr=True)
    s2 = scale * scale
    coarse = F.conv2d(x, up.conv.weight[::s2], up.conv.bias[::s2], padding=1)
    ref = F.interpolate(coarse, scale_factor=scale, mode="nearest")
    torch.testing.assert_close(up(x), ref)


def test_pixelshuffle_without_icnr_has_checkerboard():
    torch.manual_seed(0)
    y = PixelShuffleUp(4, 3, 2, icnr=False)(torch.randn(1, 4, 7, 9))
    # Sub-pixels of one 2x2 cell come from different kernels, so they differ.
    assert not torch.allclose(y[..., 0::2, 0::2], y[..., 1::2, 1::2])


def test_icnr_rejects_bad_shape():
    with pytest.raises(ValueError, match="multiple"):
        icnr_(torch.empty(6, 3, 3, 3), 2)


@pytest.mark.parametrize("kind", list(UPSAMPLERS))
def test_make_upsampler(kind):
    up = make_upsampler(kind, 6, 4, 2)
    assert isinstance(up, UPSAMPLERS[kind])
    assert up(torch.randn(2, 6, 5, 7)).shape == (2, 4, 10, 14)


def test_make_upsampler_unknown_lists_kinds():
    with pytest.raises(ValueError, match="transposed, bilinear, pixelshuffle"):
        make_upsampler("nearest", 4, 4)


def test_upsampler_parameter_counts():
    # The trade-off table of minseg.upsample, as numbers (weights, biases excluded).
    c = 16
    count = {k: sum(v.numel() for n, v in make_upsampler(k, c, c, 2).state_dict().items()
                    if n.endswith("weight")) for k in UPSAMPLERS}
    assert count == {"transposed": c * c * 16, "bilinear": c * c * 9, "pixelshuffle": c * c * 4 * 9}

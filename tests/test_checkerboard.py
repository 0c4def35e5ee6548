"""minseg.upsample.checkerboard_index: the artifact measure of lesson 05."""
import pytest
import torch

from minseg.upsample import BilinearUp, PixelShuffleUp, TransposedUp, checkerboard_index


def test_pure_checkerboard_scores_one_and_constant_scores_zero():
    tile = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(8, 8)
    assert checkerboard_index(tile) == pytest.approx(1.0)
    assert checkerboard_index(torch.full((16, 16), 3.0)) == 0.0
    assert checkerboard_index(torch.zeros(1, 2, 16, 16)) == 0.0


def test_smooth_and_noisy_maps_score_low():
    ramp = torch.arange(64.0).repeat(64, 1)
    assert checkerboard_index(ramp) < 0.01
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(4, 3, 64, 64, generator=g)
    assert checkerboard_index(noise) < 0.01
    # noise plus a weak checkerboard: in between
    tile = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 32)
    mixed = checkerboard_index(noise + 0.5 * tile)
    assert 0.1 < mixed < 0.4


def test_period_three_and_border():
    tile = torch.tensor([[0.0, 1.0, 2.0]] * 3).repeat(5, 5)   # 15x15, varies with col % 3
    assert checkerboard_index(tile, period=3, border=0) == pytest.approx(1.0)
    assert checkerboard_index(tile, period=2, border=0) < 0.5


def test_upsamplers_on_a_constant_input():
    torch.manual_seed(0)
    x = torch.ones(1, 4, 12, 12)
    with torch.no_grad():
        assert checkerboard_index(TransposedUp(4, 2, 2)(x)) > 0.99
        assert checkerboard_index(TransposedUp(4, 2, 2, kernel_size=3)(x)) > 0.99
        assert checkerboard_index(TransposedUp(2, 2, 2, bilinear_init=True)(x[:, :2])) == 0.0
        assert checkerboard_index(BilinearUp(4, 2, 2)(x)) == 0.0
        assert checkerboard_index(PixelShuffleUp(4, 2, 2, icnr=False)(x)) > 0.99
        assert checkerboard_index(PixelShuffleUp(4, 2, 2, icnr=True)(x)) == 0.0


def test_bad_input():
    with pytest.raises(ValueError):
        checkerboard_index(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError):
        checkerboard_index(torch.zeros(8, 8), period=1)
    with pytest.raises(ValueError):
        checkerboard_index(torch.zeros(5, 5), border=2)

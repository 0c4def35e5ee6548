"""minseg.receptive: theoretical receptive fields and gradient-based effective ones."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from minseg.receptive import (chain_layers, effective_receptive_field, mass_radius,
                              receptive_field, support)


def _ones_stack(rates, k=3):
    net = nn.Sequential(*[nn.Conv2d(1, 1, k, padding=r * (k - 1) // 2, dilation=r, bias=False)
                          for r in rates])
    for conv in net:
        nn.init.ones_(conv.weight)
    return net


def test_textbook_values():
    assert receptive_field([]).size == 1
    assert receptive_field([(3, 1)] * 3).size == 7
    # dilations 1, 2, 4, 8: 1 + 2 (1 + 2 + 4 + 8)
    assert receptive_field([(3, 1, d) for d in (1, 2, 4, 8)]).size == 31
    # VGG-16's first block: two 3x3 convs and a 2x2/2 max pool, then a 3x3 conv: 5 + 1 + 2*2
    rf = receptive_field([(3, 1), (3, 1), (2, 2), (3, 1)])
    assert (rf.size, rf.jump) == (10, 2)
    assert rf.sizes == (3, 5, 6, 10) and rf.jumps == (1, 1, 2, 2)
    # AlexNet conv1-pool1-conv2: 11/4, 3/2, 5/1 -> 11, 19, 51
    assert receptive_field([(11, 4), (3, 2), (5, 1)]).sizes == (11, 19, 51)


def test_modules_match_tuples():
    layers = [nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.MaxPool2d(2),
              nn.Conv2d(8, 8, 3, padding=2, dilation=2)]
    assert receptive_field(layers) == receptive_field([(3, 2), (2, 2), (3, 1, 2)])


def test_chain_skips_parallel_1x1_shortcuts():
    from minseg.blocks import ResidualBlock

    block = ResidualBlock(8, 16, stride=2)  # 3x3/2, 3x3, and a 1x1/2 shortcut
    rf = receptive_field(chain_layers(block))
    assert (rf.size, rf.jump) == (7, 2)
    with pytest.raises(ValueError):
        chain_layers(nn.ConvTranspose2d(4, 4, 2, stride=2))


@pytest.mark.parametrize("rates", [(1, 1, 1), (1, 2, 5), (2, 2, 2)])
def test_support_of_ones_stack_is_the_sampling_pattern(rates):
    net = _ones_stack(rates)
    erf = effective_receptive_field(net, 41, in_channels=1, samples=1)
    size = receptive_field([(3, 1, r) for r in rates]).size
    assert mass_radius(erf, 1.0) == (size - 1) // 2
    # (2, 2, 2) only ever reads even offsets: a 7x7 lattice with holes ("gridding")
    expected = {(1, 1, 1): 49, (1, 2, 5): 17 * 17, (2, 2, 2): 49}[rates]
    assert support(erf) == expected
    assert torch.isclose(erf.sum(), torch.tensor(1.0))


def test_erf_of_a_model_is_centred_and_normalised():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    net.train()
    erf = effective_receptive_field(net, (15, 17), samples=3)
    assert erf.shape == (15, 17)
    assert net.training  # mode restored
    assert support(erf) <= 25 and erf[7, 8] > 0 and erf[0, 0] == 0
    assert mass_radius(erf, 1.0) == 2


def test_bad_input():
    with pytest.raises(ValueError):
        receptive_field([(3,)])
    with pytest.raises(ValueError):
        receptive_field([(0, 1)])
    with pytest.raises(ValueError):
        mass_radius(torch.ones(3), 0.5)
    with pytest.raises(ValueError):
        mass_radius(torch.ones(3, 3), 1.5)

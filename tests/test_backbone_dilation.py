"""Dilated torchvision ResNets are the networks DeepLab and PSPNet describe: our
``torchvision_backbone(..., output_stride=8/16)`` equals torchvision's own
``replace_stride_with_dilation`` layer by layer (strides, dilations, paddings), has the same
receptive field, and computes the same features with the same weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from minseg.models.backbones import small_resnet, torchvision_backbone
from minseg.receptive import chain_layers, receptive_field

torchvision = pytest.importorskip("torchvision")

# torchvision ResNet attribute -> our stage prefix (see torchvision_backbone)
_PREFIX = {"conv1.": "stages.0.0.", "bn1.": "stages.0.1.", "layer1.": "stages.1.1.",
           "layer2.": "stages.2.", "layer3.": "stages.3.", "layer4.": "stages.4."}


def _ours_from(tv_state: dict) -> dict:
    out = {}
    for k, v in tv_state.items():
        for a, b in _PREFIX.items():
            if k.startswith(a):
                out[b + k[len(a):]] = v
    return out


def _tv_features(tv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))


def _geometry(module: nn.Module) -> list[tuple]:
    return [(m.kernel_size, m.stride, m.dilation, m.padding)
            for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("output_stride,replace", [(8, [False, True, True]), (16, [False, False, True])])
def test_dilated_resnet50_is_torchvisions(output_stride, replace):
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=replace).eval()
    ours = torchvision_backbone("resnet50", output_stride=output_stride).eval()
    tv_body = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool, tv.layer1, tv.layer2, tv.layer3,
                            tv.layer4)
    assert _geometry(ours) == _geometry(tv_body)
    assert receptive_field(chain_layers(ours)).size == receptive_field(chain_layers(tv_body)).size
    missing, unexpected = ours.load_state_dict(_ours_from(tv.state_dict()), strict=False)
    assert not unexpected and not missing
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[-1], _tv_features(tv, x), rtol=1e-4, atol=1e-5)
    assert ours.strides[-1] == output_stride


def test_first_block_of_a_dilated_stage_keeps_the_previous_rate():
    enc = torchvision_backbone("resnet18", output_stride=8)
    layer3, layer4 = enc.stages[3], enc.stages[4]
    d = lambda block: {m.dilation[0] for m in block.modules()                  # noqa: E731
                       if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1}
    assert (d(layer3[0]), d(layer3[1]), d(layer4[0]), d(layer4[1])) == ({1}, {2}, {2}, {4})
    # the from-scratch encoder (one block per stage) keeps dilating its whole stage
    scratch = small_resnet(3, 4, output_stride=8)
    assert {m.dilation[0] for m in scratch.stages[-1].modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1} == {4}

"""minseg.models.transformer.attention_weights / attention_maps: the explicit attention
probabilities agree with what the model computes."""
from __future__ import annotations

import pytest
import torch

from minseg.models import build_model
from minseg.models.transformer import _to_map, attention_maps, attention_weights


@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_weights_reproduce_the_block_output(size, stage):
    torch.manual_seed(0)
    model = build_model("segformer", 5, width=8).eval()
    attn = model.stages[stage].blocks[0].attn
    got = {}
    attn.register_forward_hook(lambda m, a, o: got.update(args=a, out=o))
    model(torch.randn(2, 3, *size))
    x, h, w = got["args"]
    p, (hk, wk) = attention_weights(attn, x, h, w)
    n, t, c = x.shape
    assert p.shape == (n, attn.heads, h * w, hk * wk)
    assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5)
    # P V, then the output projection, is what forward returned
    kv_in = x
    if attn.sr > 1:
        m = torch.nn.functional.pad(_to_map(x, h, w), (0, -w % attn.sr, 0, -h % attn.sr))
        kv_in = attn.norm(attn.reduce(m).flatten(2).transpose(1, 2))
    _, v = attn.kv(kv_in).chunk(2, dim=-1)
    v = v.reshape(n, -1, attn.heads, c // attn.heads).transpose(1, 2)
    y = attn.proj((p @ v).transpose(1, 2).reshape(n, t, c))
    assert torch.allclose(y, got["out"], atol=1e-5)


def test_attention_maps_shapes_and_mode():
    model = build_model("segformer", 5, width=8).train()
    r = attention_maps(model, torch.randn(1, 3, 96, 64), stage=0)
    assert r["grid"] == (24, 16) and r["stride"] == 4
    assert r["key_grid"] == (3, 2)  # sr = 8
    assert r["weights"].shape == (1, 1, 24 * 16, 6)
    assert model.training
    r = attention_maps(model, torch.randn(1, 3, 96, 64), stage=3, block=0)
    assert r["grid"] == r["key_grid"] == (3, 2)  # sr = 1: global attention at stride 32
    with pytest.raises(ValueError, match="SegFormer"):
        attention_maps(build_model("fastscnn", 5, width=4), torch.randn(1, 3, 32, 32))

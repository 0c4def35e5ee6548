"""Exercise 19 (transformers): patch embedding, attention, multi-head self-attention and
SegFormer's spatial-reduction attention."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minseg.grading.checks._common import rng
from minseg.grading.tasks import Case, Task, close
from minseg.models.transformer import EfficientSelfAttention

SLUG = "19_transformers"
TITLE = "Transformers for segmentation"


def _patch_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex19.patch")
    return [Case({"x": torch.randn(n, c, h, w, generator=g), "weight": torch.randn(d, c, p, p, generator=g),
                  "bias": torch.randn(d, generator=g), "patch": p},
                 f"x {n}x{c}x{h}x{w}, patch {p}, dim {d}")
            for n, c, h, w, p, d in [(1, 3, 4, 4, 2, 5), (2, 2, 6, 9, 3, 4), (1, 1, 8, 4, 4, 3)]]


def _attn_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex19.attn")
    out = []
    for shape, note in [((1, 4, 3), "1 x 4 tokens x dim 3"), ((2, 3, 5, 4), "2 x 3 heads x 5 tokens x dim 4"),
                        ((1, 1, 2, 8), "2 tokens, dim 8")]:
        out.append(Case({"q": torch.randn(*shape, generator=g) * 2, "k": torch.randn(*shape, generator=g),
                         "v": torch.randn(*shape, generator=g)}, note))
    return out


def _mha_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex19.mha")
    out = []
    for n, t, d, heads in [(1, 4, 4, 1), (2, 6, 8, 2), (1, 5, 6, 3)]:
        s = 1 / math.sqrt(d)
        out.append(Case({"x": torch.randn(n, t, d, generator=g),
                         "wq": torch.randn(d, d, generator=g) * s, "bq": torch.randn(d, generator=g) * 0.1,
                         "wkv": torch.randn(2 * d, d, generator=g) * s, "bkv": torch.randn(2 * d, generator=g) * 0.1,
                         "wproj": torch.randn(d, d, generator=g) * s, "bproj": torch.randn(d, generator=g) * 0.1,
                         "heads": heads}, f"x {n}x{t}x{d}, {heads} heads"))
    return out


def _sra_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex19.sra")
    out = []
    for n, h, w, d, heads, sr in [(1, 4, 4, 4, 1, 2), (2, 4, 6, 8, 2, 2), (1, 8, 4, 6, 3, 4)]:
        s = 1 / math.sqrt(d)
        out.append(Case({"x": torch.randn(n, h * w, d, generator=g), "h": h, "w": w,
                         "wq": torch.randn(d, d, generator=g) * s, "bq": torch.randn(d, generator=g) * 0.1,
                         "wkv": torch.randn(2 * d, d, generator=g) * s, "bkv": torch.randn(2 * d, generator=g) * 0.1,
                         "wproj": torch.randn(d, d, generator=g) * s, "bproj": torch.randn(d, generator=g) * 0.1,
                         "heads": heads, "wsr": torch.randn(d, d, sr, sr, generator=g) * s / sr,
                         "bsr": torch.randn(d, generator=g) * 0.1,
                         "ln_w": 1 + 0.1 * torch.randn(d, generator=g), "ln_b": 0.1 * torch.randn(d, generator=g),
                         "sr": sr},
                        f"x {n}x{h * w}x{d} ({h}x{w} map), {heads} heads, reduction {sr}"))
    return out


@torch.no_grad()
def _loaded_attention(x, h, w, heads, sr, weights) -> torch.Tensor:
    """EfficientSelfAttention with the case's weights, applied to ``x`` (an ``h x w`` map)."""
    attn = EfficientSelfAttention(x.shape[-1], heads, sr=sr).eval()
    for mod, (wt, b) in weights.items():
        getattr(attn, mod).weight.copy_(wt)
        getattr(attn, mod).bias.copy_(b)
    return attn(x, h, w)


def _ref_sra(x, h, w, wq, bq, wkv, bkv, wproj, bproj, heads, wsr, bsr, ln_w, ln_b, sr):
    return _loaded_attention(x, h, w, heads, sr, {"q": (wq, bq), "kv": (wkv, bkv), "proj": (wproj, bproj),
                                                  "reduce": (wsr, bsr), "norm": (ln_w, ln_b)})


def _ref_mha(x, wq, bq, wkv, bkv, wproj, bproj, heads):
    return _loaded_attention(x, 1, x.shape[1], heads, 1, {"q": (wq, bq), "kv": (wkv, bkv), "proj": (wproj, bproj)})


TASKS = [
    Task("ex19.patch_embed", "patch_embed", 2,
         "split N,C,H,W into non-overlapping p x p patches and project each with weight (D, C, p, "
         "p) and bias: tokens N, (H/p)(W/p), D in raster order", _patch_cases,
         lambda x, weight, bias, patch: F.conv2d(x, weight, bias, stride=patch).flatten(2).transpose(1, 2),
         compare=close(rtol=1e-4, atol=1e-4)),
    Task("ex19.attention", "attention", 2,
         "scaled dot-product attention softmax(q k^T / sqrt(d)) v over the last two dimensions",
         _attn_cases, lambda q, k, v: F.scaled_dot_product_attention(q, k, v)),
    Task("ex19.multi_head_attention", "multi_head_attention", 3,
         "multi-head self-attention: q = x wq^T + bq, (k, v) = split(x wkv^T + bkv), per head "
         "attention, concatenate heads, project with wproj, bproj", _mha_cases, _ref_mha,
         compare=close(rtol=1e-4, atol=1e-5),
         hint="head h uses channels h*d/heads .. (h+1)*d/heads of q, k and v; k is the first half of kv"),
    Task("ex19.spatial_reduction_attention", "spatial_reduction_attention", 3,
         "SegFormer's efficient self-attention: queries from every token, keys and values from the "
         "h x w token map shrunk sr times per side by a sr x sr stride-sr conv (wsr, bsr) and a "
         "LayerNorm (ln_w, ln_b, eps 1e-5), then multi-head attention and the projection",
         _sra_cases, _ref_sra, compare=close(rtol=1e-4, atol=1e-5),
         hint="tokens -> map: x.transpose(1, 2).reshape(n, d, h, w); the reduction is patch_embed "
              "with patch sr; LayerNorm normalises each token's d channels (biased variance)"),
]

"""A small SegFormer (Xie et al., "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers", arXiv:2105.15203).

A hierarchical transformer encoder ("Mix Transformer") produces features at strides 4, 8,
16, 32 from overlapping patch embeddings, efficient self-attention (keys and values taken
from a spatially reduced map) and Mix-FFNs (an MLP with a depthwise 3x3 conv, which also
gives the position information, so there is no positional embedding and any input size
works). A light all-MLP decoder fuses the four levels at stride 4.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from minseg.blocks import conv_bn_relu, resize
from minseg.models.backbones import check_own_encoder
from minseg.validate import check_images, check_num_classes


def _to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``N, H*W, C`` tokens -> ``N, C, H, W`` map."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


class OverlapPatchEmbed(nn.Module):
    """A strided conv whose kernel is larger than its stride (7/4 for the first stage, 3/2
    after), so neighbouring patches overlap, then LayerNorm; returns tokens and the grid size
    (SegFormer, arXiv:2105.15203, Sec. 3.1; ViT's patches do not overlap, arXiv:2010.11929)."""

    def __init__(self, in_ch: int, dim: int, kernel: int, stride: int):
        super().__init__()
        # padding k // 2 with these odd kernels gives ceil(H / stride) rows
        self.proj = nn.Conv2d(in_ch, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        # N, C, h, w -> N, h*w, C: token i*w + j is cell (i, j)
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from the map shrunk ``sr`` times per
    side by a strided conv (SegFormer Sec. 3.1; PVT, arXiv:2102.12122): cost
    ``O(N^2 / sr^2)`` instead of ``O(N^2)`` for ``N`` tokens. The map is zero-padded to a
    multiple of ``sr`` so that small inputs work."""

    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.sr = heads, sr
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.reduce = nn.Conv2d(dim, dim, sr, stride=sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n, t, c = x.shape
        q = self.q(x)
        if self.sr > 1:
            m = _to_map(x, h, w)
            # pad right/bottom to a multiple of sr (-w % sr columns): the strided conv drops no cell
            m = F.pad(m, (0, -w % self.sr, 0, -h % self.sr))
            # each sr x sr patch -> one key/value token: N, ceil(h/sr)*ceil(w/sr), C
            x = self.norm(self.reduce(m).flatten(2).transpose(1, 2))
        k, v = self.kv(x).chunk(2, dim=-1)
        # N, tokens, C -> N, heads, tokens, C/heads
        q, k, v = (z.reshape(n, -1, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        # softmax(Q K^T / sqrt(C/heads)) V, fused: the attention matrix is never stored
        y = F.scaled_dot_product_attention(q, k, v)
        # N, heads, t, C/heads -> N, t, heads, C/heads -> N, t, C: concatenate the heads
        return self.proj(y.transpose(1, 2).reshape(n, t, c))


class MixFFN(nn.Module):
    """Linear -> depthwise 3x3 conv -> GELU -> Linear (SegFormer, arXiv:2105.15203, Sec. 3.1).
    The 3x3 conv leaks position through zero padding, replacing positional embeddings."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        # tokens -> map for the depthwise 3x3 conv -> tokens again
        x = self.dw(_to_map(self.fc1(x), h, w)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(x))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (arXiv:1706.03762, as in SegFormer arXiv:2105.15203):
    ``x + attn(norm(x))``, then ``x + ffn(norm(x))``."""

    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = MixFFN(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.ffn(self.norm2(x), h, w)


class MixTransformerStage(nn.Module):
    """One Mix Transformer stage (arXiv:2105.15203): patch embedding, ``depth`` transformer
    blocks, LayerNorm; returns an ``N,C,H,W`` map."""

    def __init__(self, in_ch: int, dim: int, depth: int, heads: int, sr: int, kernel: int,
                 stride: int, mlp_ratio: int = 4):
        super().__init__()
        self.embed = OverlapPatchEmbed(in_ch, dim, kernel, stride)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, sr, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self.embed(x)
        for block in self.blocks:
            x = block(x, h, w)
        return _to_map(self.norm(x), h, w)


class SegFormer(nn.Module):
    """A small SegFormer (arXiv:2105.15203): a 4-stage Mix Transformer encoder and the all-MLP
    decoder (each level linearly projected to ``decoder_dim``, upsampled to stride 4,
    concatenated, fused by a 1x1 conv + BN + ReLU, classified by a 1x1 conv), then bilinear
    upsampling to the input size.

    Stage widths ``w, 2w, 5w, 8w`` with ``1, 2, 5, 8`` heads (so every head has ``w``
    channels), spatial reductions ``8, 4, 2, 1``, ``depths`` blocks per stage; ``w = 32``,
    ``depths=(2, 2, 2, 2)`` and ``decoder_dim=256`` is SegFormer-B0 (3.7 M weights). Default
    ``w = 16`` and ``decoder_dim = 8w``. It has its own encoder, so ``backbone`` must be None.
    """

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3,
                 depths: Sequence[int] = (2, 2, 2, 2), decoder_dim: int | None = None,
                 mlp_ratio: int = 4, dropout: float = 0.1, backbone: str | None = None,
                 pretrained: bool = False):
        super().__init__()
        check_num_classes(num_classes)
        check_own_encoder("segformer", backbone, pretrained)
        self.in_channels = in_channels
        dims = [width * m for m in (1, 2, 5, 8)]
        # keys/values shrink most in the early stages, whose maps have the most tokens
        heads, srs = (1, 2, 5, 8), (8, 4, 2, 1)
        self.stages = nn.ModuleList()
        cin = in_channels
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            # stage 1 goes to stride 4; each later stage halves the map
            kernel, stride = (7, 4) if i == 0 else (3, 2)
            self.stages.append(MixTransformerStage(cin, dim, depth, heads[i], srs[i], kernel,
                                                   stride, mlp_ratio))
            cin = dim
        d = decoder_dim or 8 * width
        # A per-pixel Linear is a 1x1 conv; written as one to stay in N,C,H,W.
        self.linears = nn.ModuleList(nn.Conv2d(dim, d, 1) for dim in dims)
        self.fuse = conv_bn_relu(len(dims) * d, d, 1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(d, num_classes, 1))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            # ViT / SegFormer's init for Linear layers
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's last stage (stride 32) and the all-MLP decoder's fused features
        (stride 4): everything before the classifier. A mask-classification head
        (:class:`~minseg.models.maskformer.MaskFormer`) reads both."""
        feats, y = [], x
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        # every level is projected to d channels and upsampled to stage 1's stride-4 grid
        size = feats[0].shape[-2:]
        y = torch.cat([resize(lin(f), size) for lin, f in zip(self.linears, feats)], dim=1)
        return feats[-1], self.fuse(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, channels=self.in_channels)
        return resize(self.classifier(self.features(x)[1]), x.shape[-2:])


def segformer(num_classes: int, width: int = 16, in_channels: int = 3,
              depths: Sequence[int] = (2, 2, 2, 2), decoder_dim: int | None = None,
              mlp_ratio: int = 4, dropout: float = 0.1, backbone: str | None = None,
              pretrained: bool = False) -> SegFormer:
    """A small SegFormer (arXiv:2105.15203); see :class:`SegFormer`."""
    return SegFormer(num_classes, width, in_channels, depths, decoder_dim, mlp_ratio, dropout,
                     backbone, pretrained)


def attention_weights(attn: EfficientSelfAttention, x: torch.Tensor, h: int, w: int
                      ) -> tuple[torch.Tensor, tuple[int, int]]:
    """The attention probabilities an :class:`EfficientSelfAttention` computes on tokens ``x``
    (``N, h*w, C``, as its ``forward`` receives them): ``softmax(Q K^T / sqrt(d))`` of shape
    ``N, heads, h*w, hk*wk``, and the key grid ``(hk, wk)`` (the map shrunk ``sr`` times per
    side, so each key stands for an ``sr x sr`` patch of query cells). ``forward`` multiplies
    these by the values (through ``F.scaled_dot_product_attention``, which never materialises
    them); this function recomputes them explicitly, for pictures (lesson 19)."""
    n, t, c = x.shape
    q = attn.q(x)
    hk, wk = h, w
    if attn.sr > 1:
        # the same padding and reduction as EfficientSelfAttention.forward
        m = F.pad(_to_map(x, h, w), (0, -w % attn.sr, 0, -h % attn.sr))
        m = attn.reduce(m)
        hk, wk = m.shape[-2:]
        x = attn.norm(m.flatten(2).transpose(1, 2))
    k, _ = attn.kv(x).chunk(2, dim=-1)
    d = c // attn.heads
    q = q.reshape(n, t, attn.heads, d).transpose(1, 2)  # N, tokens, C -> N, heads, tokens, d
    k = k.reshape(n, -1, attn.heads, d).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-2, -1) / d ** 0.5, dim=-1), (int(hk), int(wk))


@torch.no_grad()
def attention_maps(model: SegFormer, images: torch.Tensor, stage: int = 0, block: int = -1
                   ) -> dict:
    """Attention probabilities of one block of a :class:`SegFormer` on ``images``.

    Runs the model once (eval mode) with a hook on block ``block`` of stage ``stage`` and
    returns ``{"weights": N x heads x (h*w) x (hk*wk), "grid": (h, w), "key_grid": (hk, wk),
    "stride": the stage's stride in input pixels}``: row ``i*w + j`` is where the query token
    at cell ``(i, j)`` looks, over the spatially reduced key grid (see
    :func:`attention_weights`).
    """
    if not isinstance(model, SegFormer):
        raise ValueError(f"attention_maps needs a SegFormer, got {type(model).__name__}")
    st = model.stages[stage]
    attn = st.blocks[block].attn
    found: dict = {}

    def hook(module, args, output):
        x, h, w = args  # a forward hook sees the positional arguments of attn.forward
        found["weights"], found["key_grid"] = attention_weights(module, x, h, w)
        found["grid"] = (int(h), int(w))

    was_training = model.training
    model.eval()
    handle = attn.register_forward_hook(hook)
    try:
        model(images)
    finally:
        handle.remove()
        model.train(was_training)
    found["stride"] = images.shape[-2] / found["grid"][0]
    return found

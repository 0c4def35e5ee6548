"""Mask classification: a small MaskFormer head on SegFormer's encoder and light decoder.

Per-pixel classification (FCN ... SegFormer) gives every pixel a distribution over ``C``
classes. Mask classification (MaskFormer, Cheng et al. 2021, https://arxiv.org/abs/2107.06278)
predicts a *set* of ``Q`` (mask, class) pairs instead: ``Q`` learned queries attend to the image
features in a small transformer decoder; each query then gives ``C + 1`` class logits (the
extra one is "no object") and a mask embedding whose dot product with every pixel embedding is
that query's mask logit. Training matches queries to ground-truth segments one-to-one
(Hungarian matching, as DETR, https://arxiv.org/abs/2005.12872); semantic inference sums the
masks weighted by their class probabilities.

:class:`MaskFormer` shares everything up to the per-pixel features with
:class:`~minseg.models.transformer.SegFormer` (same encoder, same all-MLP decoder, the same
initial weights under the same seed), so comparing the two compares only the heads (lesson 19).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from minseg.blocks import resize
from minseg.models.transformer import SegFormer
from minseg.validate import IGNORE_INDEX, check_images, check_mask, check_num_classes

# "out" holds log(scores); the floor keeps log finite where every query's mask is ~0.
_LOG_FLOOR = 1e-8


def semantic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """MaskFormer's semantic inference (arXiv:2107.06278, Sec. 3.4): ``N, C, H, W`` scores

    ``scores[c, h, w] = sum_q softmax(class_logits[q])[c] * sigmoid(mask_logits[q, h, w])``

    over the ``Q`` queries, with the "no object" probability (the last of the ``C + 1``) dropped.
    ``class_logits`` is ``N, Q, C+1``, ``mask_logits`` ``N, Q, H, W``. The scores are
    non-negative but do not sum to 1 over classes; ``argmax`` over ``C`` is the prediction.
    """
    if class_logits.ndim != 3 or class_logits.shape[-1] < 3:
        raise ValueError(f"class_logits must have shape N,Q,C+1 with C >= 2; got "
                         f"{tuple(class_logits.shape)}")
    if mask_logits.ndim != 4 or mask_logits.shape[:2] != class_logits.shape[:2]:
        raise ValueError(f"mask_logits must have shape N,Q,H,W with the N,Q of class_logits "
                         f"{tuple(class_logits.shape[:2])}; got {tuple(mask_logits.shape)}")
    probs = class_logits.softmax(-1)[..., :-1]                 # drop "no object"
    # scores[n, c] = sum_q p_q(c) * sigmoid(m_q): each query votes for its class with its mask
    return torch.einsum("nqc,nqhw->nchw", probs, mask_logits.sigmoid())


class QueryDecoderLayer(nn.Module):
    """One transformer decoder layer for queries (DETR, arXiv:2005.12872, as in MaskFormer):
    self-attention among the queries (they agree who predicts what), cross-attention from the
    queries to the image tokens (each query gathers the pixels it is about), then an MLP; each
    with a residual connection and post-LayerNorm. Built from :class:`nn.MultiheadAttention`."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """``q``: ``N, Q, D`` queries; ``memory``: ``N, h*w, D`` image tokens."""
        # need_weights=False lets PyTorch take its fused attention path; [0] is the output
        q = self.norm1(q + self.self_attn(q, q, q, need_weights=False)[0])
        # queries ask, image tokens answer: keys = values = memory
        q = self.norm2(q + self.cross_attn(q, memory, memory, need_weights=False)[0])
        return self.norm3(q + self.ffn(q))


class MaskFormerHead(nn.Module):
    """The mask-classification head of MaskFormer (arXiv:2107.06278, Fig. 2).

    ``num_queries`` learned query vectors pass ``num_layers`` :class:`QueryDecoderLayer` s that
    cross-attend to the tokens of a low-resolution feature map (``memory``: the backbone's
    last stage, ``N, memory_dim, h', w'``, projected to ``dim`` as in the paper). Each output
    query gives ``num_classes + 1`` class logits (a linear layer) and a ``dim``-dimensional
    mask embedding (a 3-layer MLP). The high-resolution per-pixel features (``pixels``,
    ``N, dim, h, w``: the pixel decoder's output, the paper's per-pixel embeddings) are dotted
    with it: ``mask_logits[q, y, x] = <mask_embedding_q, pixels[:, y, x]>``. A per-pixel model
    applies a 1x1 conv to the same features, i.e. one *fixed* vector per class; here the
    vectors are computed from the image, one per query.
    Returns ``(class_logits N,Q,C+1, mask_logits N,Q,h,w)``.

    The memory carries no explicit positional encoding: SegFormer's Mix-FFN convolutions already
    put position into its features, and the queries are told apart by their own learned vectors.
    """

    def __init__(self, num_classes: int, dim: int, memory_dim: int | None = None,
                 num_queries: int = 16, num_layers: int = 2, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        check_num_classes(num_classes)
        for name, v in (("num_queries", num_queries), ("num_layers", num_layers),
                        ("heads", heads), ("dim", dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.num_classes, self.num_queries, self.dim = num_classes, num_queries, dim
        self.memory_dim = memory_dim or dim
        self.memory_proj = nn.Linear(self.memory_dim, dim)
        self.queries = nn.Embedding(num_queries, dim)
        self.layers = nn.ModuleList(QueryDecoderLayer(dim, heads, 2 * dim, dropout)
                                    for _ in range(num_layers))
        self.class_head = nn.Linear(dim, num_classes + 1)      # + "no object"
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim),
                                        nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, memory: torch.Tensor, pixels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if memory.ndim != 4 or memory.shape[1] != self.memory_dim:
            raise ValueError(f"memory must have shape N,{self.memory_dim},h,w; got "
                             f"{tuple(memory.shape)}")
        if pixels.ndim != 4 or pixels.shape[1] != self.dim or len(pixels) != len(memory):
            raise ValueError(f"pixels must have shape N,{self.dim},h,w with N = {len(memory)}; "
                             f"got {tuple(pixels.shape)}")
        tokens = self.memory_proj(memory.flatten(2).transpose(1, 2))   # N, h'*w', D
        q = self.queries.weight.unsqueeze(0).expand(len(memory), -1, -1)  # N, Q, D
        for layer in self.layers:
            q = layer(q, tokens)
        class_logits = self.class_head(q)                       # N, Q, C+1
        # each query's mask: its embedding dotted with every pixel's embedding
        mask_logits = torch.einsum("nqd,ndhw->nqhw", self.mask_embed(q), pixels)
        return class_logits, mask_logits


class MaskFormer(nn.Module):
    """SegFormer's encoder and all-MLP decoder (arXiv:2105.15203) with a mask-classification
    head (:class:`MaskFormerHead`, arXiv:2107.06278) in place of the per-pixel 1x1 classifier.

    The backbone is taken from a :class:`~minseg.models.transformer.SegFormer` built with the
    same arguments, so under one seed both models start from identical encoder/decoder weights.
    ``forward`` returns a dict:

    * ``"class_logits"``: ``N, Q, C+1``; ``"mask_logits"``: ``N, Q, H/4, W/4`` (stride 4);
    * ``"out"``: ``N, C, H, W`` at the input size, ``log`` of the semantic scores of
      :func:`semantic_inference` (mask logits upsampled bilinearly first). The log keeps the
      ``argmax`` and makes ``softmax(out)`` the scores normalised over classes, so every
      consumer of logits (``predict``, test-time augmentation, a CRF) works unchanged.

    Train it with :class:`MaskClassificationLoss` (``fit(model, ..., loss=...)``): cross-entropy
    on ``"out"`` would skip the set prediction this model is about.
    """

    def __init__(self, num_classes: int, width: int = 16, in_channels: int = 3,
                 depths: Sequence[int] = (2, 2, 2, 2), decoder_dim: int | None = None,
                 mlp_ratio: int = 4, num_queries: int = 16, num_layers: int = 2,
                 heads: int = 4, backbone: str | None = None, pretrained: bool = False):
        super().__init__()
        seg = SegFormer(num_classes, width, in_channels, depths, decoder_dim, mlp_ratio,
                        backbone=backbone, pretrained=pretrained)
        self.in_channels = in_channels
        # the per-pixel model's parts up to its classifier (which is dropped)
        self.stages, self.linears, self.fuse = seg.stages, seg.linears, seg.fuse
        # dim = the fused decoder width (fuse[0] is its 1x1 conv); memory_dim = the last stage's
        self.head = MaskFormerHead(num_classes, self.fuse[0].out_channels,
                                   self.linears[-1].in_channels, num_queries, num_layers, heads)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's last stage (stride 32; the transformer decoder's memory) and the
        all-MLP decoder's fused features (stride 4), which serve as the per-pixel embeddings:
        :meth:`SegFormer.features <minseg.models.transformer.SegFormer.features>` on the shared
        modules."""
        return SegFormer.features(self, x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_images(x, channels=self.in_channels)
        class_logits, mask_logits = self.head(*self.features(x))
        scores = semantic_inference(class_logits, resize(mask_logits, x.shape[-2:]))
        return {"out": scores.clamp_min(_LOG_FLOOR).log(), "class_logits": class_logits,
                "mask_logits": mask_logits}


def maskformer(num_classes: int, width: int = 16, in_channels: int = 3,
               depths: Sequence[int] = (2, 2, 2, 2), decoder_dim: int | None = None,
               mlp_ratio: int = 4, num_queries: int = 16, num_layers: int = 2, heads: int = 4,
               backbone: str | None = None, pretrained: bool = False) -> MaskFormer:
    """SegFormer backbone + MaskFormer head (arXiv:2107.06278); see :class:`MaskFormer`."""
    return MaskFormer(num_classes, width, in_channels, depths, decoder_dim, mlp_ratio,
                      num_queries, num_layers, heads, backbone, pretrained)


class MaskClassificationLoss(nn.Module):
    """MaskFormer's set-prediction loss for semantic segmentation (arXiv:2107.06278, Sec. 3.2,
    with Mask2Former's BCE + Dice mask loss and weights, arXiv:2112.01527, Sec. 4).

    Targets: one binary mask per class present in the image (in semantic segmentation a class is
    one segment). Each image's queries are matched one-to-one to its targets by the Hungarian
    algorithm (:func:`scipy.optimize.linear_sum_assignment`) on the cost

    ``class_weight * (-p_q(c_k)) + mask_weight * BCE(m_q, t_k) + dice_weight * Dice(m_q, t_k)``;

    then the loss is ``class_weight`` x cross-entropy over the ``C+1`` classes of *all* queries
    (unmatched ones must say "no object", whose weight is ``no_object_weight``; the mean is
    weighted, as ``F.cross_entropy`` with ``weight``) plus ``mask_weight`` x BCE (mean over a
    mask's labelled pixels) + ``dice_weight`` x Dice (``1 - (2|m t| + 1) / (|m| + |t| + 1)``),
    averaged over the matched masks. Pixels equal to ``ignore_index`` are left out of the mask
    costs and losses.

    The masks may be larger than the mask logits (MaskFormer predicts them at stride 4): the
    one-hot targets and the labelled-pixel indicator are then summed over each logit's cell
    (``adaptive_avg_pool2d`` x cell area), which gives exactly the full-resolution loss of a
    mask logit held constant over its cell when the sizes divide, at ``1/16`` of the cost.

    ``wants_outputs = True``: :func:`minseg.train.fit` passes the model's whole output dict
    (``"class_logits"`` ``N,Q,C+1`` and ``"mask_logits"`` ``N,Q,h,w``) and the ``N,H,W`` masks.
    """

    wants_outputs = True

    def __init__(self, num_classes: int, *, no_object_weight: float = 0.1,
                 class_weight: float = 2.0, mask_weight: float = 5.0, dice_weight: float = 5.0,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        check_num_classes(num_classes)
        for name, v in (("no_object_weight", no_object_weight), ("class_weight", class_weight),
                        ("mask_weight", mask_weight), ("dice_weight", dice_weight)):
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_weight, self.mask_weight = class_weight, mask_weight
        self.dice_weight = dice_weight
        w = torch.ones(num_classes + 1, dtype=torch.float64)   # cast to the logits dtype on use
        w[-1] = no_object_weight
        # not in the state_dict: rebuilt from the arguments
        self.register_buffer("empty_weight", w, persistent=False)

    def _inputs(self, outputs: Mapping, masks: torch.Tensor):
        """Check the inputs. Returns the class logits ``N,Q,C+1``, the mask logits ``N,Q,P``
        (``P = h*w``), per cell the number of pixels of each class ``N,C,P`` and of labelled
        pixels ``N,P`` (0/1 at full resolution), in float32 or wider (float64 stays float64)."""
        if not isinstance(outputs, Mapping) or not {"class_logits", "mask_logits"} <= set(outputs):
            raise ValueError("outputs must be a dict with 'class_logits' (N,Q,C+1) and "
                             "'mask_logits' (N,Q,h,w), as MaskFormer returns")
        cl, ml = outputs["class_logits"], outputs["mask_logits"]
        if cl.ndim != 3 or cl.shape[-1] != self.num_classes + 1:
            raise ValueError(f"class_logits must have shape N,Q,{self.num_classes + 1} "
                             f"(num_classes + 'no object'); got {tuple(cl.shape)}")
        if ml.ndim != 4 or ml.shape[:2] != cl.shape[:2]:
            raise ValueError(f"mask_logits must have shape N,Q,h,w with the N,Q of class_logits "
                             f"{tuple(cl.shape[:2])}; got {tuple(ml.shape)}")
        if not isinstance(masks, torch.Tensor) or masks.ndim != 3 or len(masks) != len(cl):
            got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
            raise ValueError(f"masks must be an N,H,W tensor with N = {len(cl)}; got {got}")
        (h, w), (H, W) = ml.shape[-2:], masks.shape[-2:]
        if h > H or w > W:
            raise ValueError(f"mask_logits ({h}x{w}) must not be larger than the masks ({H}x{W})")
        check_mask(masks, self.num_classes, "masks", self.ignore_index)
        # at least float32: pixel counts summed in half precision lose whole pixels
        dt = torch.promote_types(ml.dtype, torch.float32)
        valid = (masks != self.ignore_index).to(dt)[:, None]                # N,1,H,W
        classes = torch.arange(self.num_classes, device=masks.device)
        onehot = (masks[:, None] == classes[None, :, None, None]).to(dt)    # ignored: all 0
        if (h, w) != (H, W):      # pixel counts per logit cell
            area = H * W / (h * w)
            # mean over a cell x the cell's area = the sum over the cell
            valid = F.adaptive_avg_pool2d(valid, (h, w)) * area
            onehot = F.adaptive_avg_pool2d(onehot, (h, w)) * area
        return cl.to(dt), ml.flatten(2).to(dt), onehot.flatten(2), valid.flatten(1)

    def _costs(self, cl, ml, counts, valid) -> torch.Tensor:
        """Matching cost of every query against every class, ``N, Q, C`` (batched)."""
        p = cl.softmax(-1)[..., :-1]                                  # N, Q, C
        # BCE summed over labelled pixels: t * softplus(-x) + (1 - t) * softplus(x)
        # (counts sums t per cell; valid - counts sums 1 - t over the labelled pixels)
        bce = (torch.einsum("nqp,ncp->nqc", F.softplus(-ml), counts)
               + torch.einsum("nqp,ncp->nqc", F.softplus(ml), valid[:, None] - counts))
        # mean over the image's labelled pixels
        bce = bce / valid.sum(-1).clamp_min(1)[:, None, None]
        s = ml.sigmoid()
        inter = torch.einsum("nqp,ncp->nqc", s, counts)
        # the predicted mask's size counts labelled pixels only
        size_m = (s * valid[:, None]).sum(-1)                         # N, Q
        size_t = counts.sum(-1)                                       # N, C
        dice = 1 - (2 * inter + 1) / (size_m[:, :, None] + size_t[:, None, :] + 1)
        # -p: the likelier the query finds class c, the cheaper the pair
        return -self.class_weight * p + self.mask_weight * bce + self.dice_weight * dice

    def cost(self, outputs: Mapping, masks: torch.Tensor) -> torch.Tensor:
        """The matching cost of every query against every class, ``N, Q, C`` (the columns of
        classes absent from an image are not used)."""
        with torch.no_grad():
            return self._costs(*self._inputs(outputs, masks))

    def match(self, outputs: Mapping, masks: torch.Tensor
              ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per image, ``(query indices, class ids)`` of the optimal one-to-one assignment of
        queries to the classes present (each class once; only ``Q`` of them if ``Q`` is
        smaller than the number of classes present)."""
        with torch.no_grad():
            return self._match(*self._inputs(outputs, masks))

    @torch.no_grad()
    def _match(self, cl, ml, counts, valid):
        # scipy's solver runs on CPU float64
        cost = self._costs(cl, ml, counts, valid).cpu().double()
        present = (counts.sum(-1) > 0).cpu()
        out = []
        for b in range(len(cost)):
            cls = torch.nonzero(present[b]).flatten()
            # Q x K over the classes present; rectangular: with K > Q only Q classes get a query
            qi, kj = linear_sum_assignment(cost[b][:, cls].numpy())
            out.append((torch.as_tensor(qi, dtype=torch.long),
                        cls[torch.as_tensor(kj, dtype=torch.long)]))
        return out

    def forward(self, outputs: Mapping, masks: torch.Tensor) -> torch.Tensor:
        cl, ml, counts, valid = self._inputs(outputs, masks)
        pairs = self._match(cl, ml, counts, valid)
        dev = cl.device
        # all matched pairs of the batch: image, query and class indices, M each
        b_idx = torch.cat([torch.full_like(qi, b) for b, (qi, _) in enumerate(pairs)]).to(dev)
        q_idx = torch.cat([qi for qi, _ in pairs]).to(dev)
        c_idx = torch.cat([c for _, c in pairs]).to(dev)
        # class targets: "no object" (index C) except for matched queries
        target = torch.full(cl.shape[:2], self.num_classes, dtype=torch.long, device=dev)
        target[b_idx, q_idx] = c_idx
        # N*Q classifications; empty_weight down-weights the many 'no object' targets
        loss = self.class_weight * F.cross_entropy(cl.flatten(0, 1), target.flatten(),
                                                   weight=self.empty_weight.to(cl))
        if len(b_idx) == 0:                 # nothing labelled in the batch: no mask loss
            # 0 * sum keeps the mask branch in the graph, with zero gradients
            return loss + 0.0 * ml.sum()
        x, t, v = ml[b_idx, q_idx], counts[b_idx, c_idx], valid[b_idx]    # M, P each
        # BCE from logits: -log sigmoid(x) = softplus(-x), -log(1 - sigmoid(x)) = softplus(x)
        bce = (t * F.softplus(-x) + (v - t) * F.softplus(x)).sum(-1) / v.sum(-1).clamp_min(1)
        s = x.sigmoid()
        dice = 1 - (2 * (s * t).sum(-1) + 1) / ((s * v).sum(-1) + t.sum(-1) + 1)
        return loss + self.mask_weight * bce.mean() + self.dice_weight * dice.mean()

"""Multiple-instance learning: a segmenter trained on image-level tags alone (lesson 14)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minseg.data.contents import class_presence
from minseg.validate import IGNORE_INDEX


# ---------------------------------------------------------------------------------------------
# image tags: multiple-instance learning (the segmenter trained on the tags directly)
# ---------------------------------------------------------------------------------------------
MIL_POOLS = ("max", "lse", "mean", "topk")


def mil_pool(scores: torch.Tensor, valid: torch.Tensor | None = None, pool: str = "lse", *,
             r: float = 5.0, k: float = 0.1) -> torch.Tensor:
    """Image-level scores from per-pixel scores: the pooling of multiple-instance learning.

    ``scores``: float ``N, C, H, W``; ``valid``: bool ``N, H, W``, the pixels in each image's bag
    (``None``: all). Returns ``N, C``; an image with an empty bag gets NaN. With the bag
    ``B`` of an image and the scores ``u_i`` of one class:

    * ``"max"``: ``max_i u_i``, the strict MIL assumption (a class is present iff at least one
      pixel is it; Pathak et al. 2015, https://arxiv.org/abs/1412.7144);
    * ``"lse"``: ``(1/r) log(mean_i exp(r u_i))``, log-sum-exp, a smooth max whose sharpness ``r``
      goes from the mean (``r -> 0``) to the max (``r -> inf``; Pinheiro & Collobert 2015,
      https://arxiv.org/abs/1411.6228);
    * ``"mean"``: ``mean_i u_i``, global average pooling, what a CAM classifier does;
    * ``"topk"``: the mean of the ``ceil(k |B|)`` largest scores (``0 < k <= 1``).

    The gradient of the pooled score reaches one pixel under ``max``, every pixel equally under
    ``mean``, the pixels weighted by ``softmax(r u)`` under ``lse`` and the top ``k`` share
    under ``topk``.
    """
    if pool not in MIL_POOLS:
        raise ValueError(f"unknown pool {pool!r}; valid pools are {', '.join(MIL_POOLS)}")
    if not isinstance(scores, torch.Tensor) or scores.ndim != 4 or not scores.is_floating_point():
        raise ValueError(f"scores must be a float N,C,H,W tensor, got "
                         f"{tuple(getattr(scores, 'shape', ()))} {getattr(scores, 'dtype', type(scores))}")
    n, C, H, W = scores.shape
    if valid is None:
        valid = torch.ones(n, H, W, dtype=torch.bool, device=scores.device)
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool or valid.shape != (n, H, W):
        raise ValueError(f"valid must be a bool N,H,W tensor of shape {(n, H, W)}, got "
                         f"{tuple(getattr(valid, 'shape', ()))} {getattr(valid, 'dtype', type(valid))}")
    if pool == "lse" and not (math.isfinite(r) and r > 0):
        raise ValueError(f"r (the sharpness of log-sum-exp) must be a positive number, got {r!r}")
    if pool == "topk" and not 0 < k <= 1:
        raise ValueError(f"k (the share of the bag that is averaged) must be in (0, 1], got {k!r}")
    empty = ~valid.flatten(1).any(1)                        # N: images with an empty bag
    # pool an empty bag over all its pixels (finite values and gradients), then NaN it below
    bag = valid.flatten(1) | empty[:, None]                 # N, P
    u = scores.flatten(2)                                   # N, C, P
    v = bag[:, None, :].expand_as(u)                        # N, C, P
    count = bag.sum(1).to(u.dtype)[:, None]                 # N, 1: |B|
    if pool == "mean":
        out = torch.where(v, u, torch.zeros((), dtype=u.dtype, device=u.device)).sum(2) / count
    elif pool == "max":
        out = u.masked_fill(~v, -math.inf).amax(2)
    elif pool == "lse":
        # (1/r) log((1/|B|) sum exp(r u)): logsumexp is the stable form; -inf outside the bag
        out = (torch.logsumexp(r * u.masked_fill(~v, -math.inf), 2) - count.log()) / r
    else:  # topk: sort each bag high to low (pixels outside it last) and average its first k|B|
        top, _ = u.masked_fill(~v, -math.inf).sort(2, descending=True)
        kn = (k * count).ceil().clamp_min(1)                # N, 1
        take = torch.arange(u.shape[2], device=u.device)[None, None, :] < kn[:, :, None]
        out = torch.where(take, top, torch.zeros((), dtype=u.dtype, device=u.device)).sum(2) / kn
    return out.masked_fill(empty[:, None], math.nan)


def mil_loss(logits: torch.Tensor, target: torch.Tensor, pool: str = "lse", *, r: float = 5.0,
             k: float = 0.1, background: int | None = 0,
             ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Multiple-instance learning loss: train a segmenter from image tags alone.

    The image is a *bag*, its pixels the *instances*; a class is in the image iff at least one
    pixel is that class. Each class gets an image-level score by pooling its per-pixel scores
    over the bag (:func:`mil_pool`: ``"max"``, ``"lse"`` with sharpness ``r``, ``"mean"``,
    ``"topk"`` with share ``k``), and the loss is the multi-label binary cross entropy of those
    scores against the tags, averaged over images and classes (Pathak et al. 2015,
    https://arxiv.org/abs/1412.7144; Pinheiro & Collobert 2015, https://arxiv.org/abs/1411.6228).

    **Background** is in almost every image, so its tag carries no information (and
    image tags never include it). It is the *reference* class instead: the per-pixel
    score of a foreground class ``c`` is its margin over background, ``z_c - z_bg``, the
    log-odds of ``c`` against background. A pixel is predicted ``c`` (by the usual argmax)
    only where that margin is positive, so "some pixel is ``c``" is exactly "the max of the
    margin is > 0", and an image without ``c`` pushes the margin down at its pixels, which is
    what teaches the network background. ``background=None``: no reference class; the raw
    logits are pooled and every class, 0 included, is a tag.

    ``target``: either the tags, bool ``N, C`` (every pixel is in the bag), or an ``int64
    N, H, W`` mask as :func:`minseg.train.fit` passes it. A mask is read *only* through which
    classes occur in it (the tags, :func:`~minseg.data.contents.class_presence`) and which pixels are
    ``ignore_index`` (left out of the bag: padding). Its pixel positions never reach the loss,
    so the network learns from the tags alone, as long as the mask's presence *is* the image's
    tags: train without random crops (a crop can cut an object out), and replace void borders
    by background if they would otherwise outline the objects. Images whose bag is empty are
    skipped; 0 (with a graph) when all are.
    """
    from minseg.validate import check_logits

    check_logits(logits)
    n, C, H, W = logits.shape
    if background is not None and not 0 <= background < C:
        raise ValueError(f"background must be a class id in 0..{C - 1} or None, got {background!r}")
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.dtype == torch.bool:                          # the tags themselves
        if target.shape != (n, C):
            raise ValueError(f"bool tags must have shape N,C = {(n, C)}, got {tuple(target.shape)}")
        tags, valid = target.to(logits.device), None
    else:
        if target.shape != (n, H, W):
            raise ValueError(f"logits have shape {tuple(logits.shape)} so target must be a bool "
                             f"N,C tag tensor or an N,H,W mask of shape {(n, H, W)}; got "
                             f"{tuple(target.shape)}")
        tags = class_presence(target, C, ignore_index=ignore_index).to(logits.device)
        valid = (target != ignore_index).to(logits.device)
    scores = logits
    if background is not None:
        fg = [c for c in range(C) if c != background]
        scores = logits[:, fg] - logits[:, background:background + 1]   # margin over background
        tags = tags[:, fg]
    pooled = mil_pool(scores, valid, pool, r=r, k=k)        # N, C' (NaN rows: empty bags)
    keep = ~pooled[:, 0].isnan()                            # images with a non-empty bag
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(pooled[keep], tags[keep].to(pooled.dtype))

"""Segmentation losses, written out so that every convention is visible.

Every loss takes logits ``N,C,H,W`` and an ``int64`` mask ``N,H,W`` with class ids ``0..C-1``
and ``ignore_index`` (255, VOC's void). Ignored pixels are excluded from the numerator *and*
the denominator of every mean. When a batch has no valid pixel at all the loss is ``0`` with
finite, all-zero gradients (``F.cross_entropy`` returns NaN there: 0/0); this is the only
place where the losses below intentionally differ from their references.

Bad input (shapes that do not match, labels outside ``0..C-1`` other than ``ignore_index``,
float masks, NaN/inf logits) raises ``ValueError`` naming the problem.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from minseg.metrics import boundary_mask, distance_to_mask
from minseg.validate import IGNORE_INDEX, check_logits, check_mask, check_num_classes

__all__ = [
    "cross_entropy", "focal_loss", "sigmoid_focal_loss", "dice_loss", "ce_dice_loss",
    "boundary_weights", "boundary_weighted_cross_entropy", "partial_cross_entropy",
    "class_frequencies", "class_weights", "LOSSES", "get_loss",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _check_inputs(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None,
                  target_name: str = "target") -> None:
    check_logits(logits)
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"{target_name} must be a torch.Tensor, got {type(target).__name__}")
    expected = logits.shape[:1] + logits.shape[2:]
    if target.shape != expected:
        raise ValueError(f"logits have shape {tuple(logits.shape)} so {target_name} must have "
                         f"shape {tuple(expected)} (N,H,W); got {tuple(target.shape)}")
    check_mask(target, logits.shape[1], target_name, ignore_index=ignore_index)


def _class_vector(w, num_classes: int, like: torch.Tensor, name: str) -> torch.Tensor | None:
    """``None`` or a length-C, finite, non-negative float vector on ``like``'s device."""
    if w is None:
        return None
    w = torch.as_tensor(w, dtype=like.dtype, device=like.device)
    if w.shape != (num_classes,):
        raise ValueError(f"{name} must have one value per class ({num_classes}); got shape "
                         f"{tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative; got {w.tolist()}")
    return w


def _valid_and_safe(target: torch.Tensor, ignore_index: int | None):
    """Boolean mask of counted pixels and a copy of ``target`` where ignored pixels read 0
    (so that it can index/gather; those pixels are multiplied by 0 afterwards)."""
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool), target
    valid = target != ignore_index
    return valid, target.masked_fill(~valid, 0)


def _prepare(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None, weight):
    """What every pixel loss starts with: check the inputs, then the class weights (``None`` or
    a checked vector), the counted pixels and a gather-safe copy of ``target``."""
    _check_inputs(logits, target, ignore_index)
    w = _class_vector(weight, logits.shape[1], logits, "weight")
    return (w, *_valid_and_safe(target, ignore_index))


def _nonzero(denom: torch.Tensor) -> torch.Tensor:
    # 0 -> 1: wherever denom is 0 the numerator is an exact 0 too
    return torch.where(denom > 0, denom, torch.ones_like(denom))


def _safe_mean(total: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    # all-ignored batch: total is an exact 0 built from the graph, so 0 / 1 keeps zero gradients
    return total / _nonzero(denom)


def _pixel_nll(logits: torch.Tensor, safe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # log_softmax, not log(softmax(.)): no log(0) = -inf when a logit dominates
    logp = F.log_softmax(logits, dim=1)
    # -log p_i[y_i]: gather along C with index N,1,H,W, then drop that dim -> N,H,W
    return logp, -logp.gather(1, safe.unsqueeze(1)).squeeze(1)


# --------------------------------------------------------------------------------------------
# cross entropy and friends
# --------------------------------------------------------------------------------------------
def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight=None,
                  ignore_index: int | None = IGNORE_INDEX,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-pixel softmax cross entropy, the standard segmentation loss (Long et al. 2015,
    https://arxiv.org/abs/1411.4038), with PyTorch's exact conventions:

    ``loss = sum_i w[y_i] * l_i / sum_i w[y_i]`` over the non-ignored pixels ``i`` of the whole
    batch (a weighted mean; ``w = 1`` without ``weight``), where
    ``l_i = -(1 - eps) log p_i[y_i] - (eps / C) sum_c (w_c / w[y_i]) log p_i[c]`` with
    ``eps = label_smoothing`` (Szegedy et al. 2016, https://arxiv.org/abs/1512.00567).
    Equals ``F.cross_entropy(logits, target, weight, ignore_index=..., label_smoothing=...)``,
    except that an all-ignored batch gives 0 instead of NaN.
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    w, valid, safe = _prepare(logits, target, ignore_index, weight)
    C = logits.shape[1]
    logp, nll = _pixel_nll(logits, safe)
    # w[y_i] per pixel (1 without weights); ignored pixels weigh 0 in both sums
    w_pix = valid.to(logits.dtype) if w is None else w[safe] * valid
    total = (w_pix * nll).sum()
    if label_smoothing > 0:
        wl = logp if w is None else logp * w.view(1, C, 1, 1)
        # sum_i sum_c w_c (-log p_ic) over valid pixels: the mean's w[y_i] cancels l_i's 1 / w[y_i]
        smooth = -(wl.sum(1) * valid).sum()
        total = (1 - label_smoothing) * total + (label_smoothing / C) * smooth
    # the denominator stays sum_i w[y_i] with label smoothing too, as in F.cross_entropy
    return _safe_mean(total, w_pix.sum())


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha=None,
               ignore_index: int | None = IGNORE_INDEX, weight=None) -> torch.Tensor:
    """Softmax (multi-class) focal loss, Lin et al. 2017, https://arxiv.org/abs/1708.02002:
    ``FL_i = -alpha[y_i] (1 - p_i)^gamma log p_i`` with ``p_i`` the softmax probability of the
    true class.

    ``alpha``: ``None`` (1), a float (one factor for every class) or one value per class.
    ``weight``: class weights as in :func:`cross_entropy`. Reduction: a weighted mean over the
    non-ignored pixels of the batch, ``sum_i w[y_i] FL_i / sum_i w[y_i]`` (alpha scales the
    numerator only, as in the paper), so ``gamma=0, alpha=None`` equals :func:`cross_entropy`
    (with the same ``weight``). Unlike smp (a sum of one-vs-rest sigmoid terms) or kornia
    (which also divides by C), this is the softmax form.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    w, valid, safe = _prepare(logits, target, ignore_index, weight)
    C = logits.shape[1]
    logp, nll = _pixel_nll(logits, safe)
    loss = nll
    if gamma > 0:
        # 1 - p computed as -expm1(log p): accurate when p is close to 1
        one_minus_p = (-torch.expm1(-nll)).clamp_min(0)
        if gamma < 1:  # d/dx x^gamma is infinite at 0
            one_minus_p = one_minus_p.clamp_min(torch.finfo(logits.dtype).eps)
        loss = one_minus_p.pow(gamma) * nll
    if alpha is not None:
        if isinstance(alpha, (int, float)) or (torch.is_tensor(alpha) and alpha.ndim == 0):
            loss = float(alpha) * loss
        else:
            # alpha[y_i] per pixel; ignored pixels read class 0 here and are zeroed by w_pix below
            loss = _class_vector(alpha, C, logits, "alpha")[safe] * loss
    w_pix = valid.to(logits.dtype) if w is None else w[safe] * valid
    return _safe_mean((w_pix * loss).sum(), w_pix.sum())


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """Binary (sigmoid) focal loss of RetinaNet, Lin et al. 2017,
    https://arxiv.org/abs/1708.02002: ``-alpha_t (1 - p_t)^gamma log p_t`` element-wise, with
    ``p_t = p`` where the target is 1 and ``1 - p`` where it is 0, ``alpha_t`` likewise
    ``alpha`` / ``1 - alpha`` (``alpha < 0`` disables it).

    ``logits`` and ``targets`` (0/1 or soft labels in [0, 1], any dtype) have the same shape, e.g.
    ``N,1,H,W`` for one foreground class. ``reduction``: ``"mean"`` over all elements,
    ``"sum"`` or ``"none"``. Equals ``torchvision.ops.sigmoid_focal_loss``.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise ValueError("logits must be a floating torch.Tensor")
    if not isinstance(targets, torch.Tensor) or targets.shape != logits.shape:
        shape = (tuple(targets.shape) if isinstance(targets, torch.Tensor)
                 else type(targets).__name__)
        raise ValueError(f"targets must be a tensor of the logits' shape {tuple(logits.shape)}; "
                         f"got {shape}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN/inf values")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    t = targets.to(logits.dtype)
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError("targets must lie in [0, 1]")
    p = torch.sigmoid(logits)
    # from the logits, not from p: finite even where sigmoid rounds to exactly 0 or 1
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def partial_cross_entropy(logits: torch.Tensor, sparse_target: torch.Tensor,
                          ignore_index: int | None = IGNORE_INDEX, weight=None) -> torch.Tensor:
    """Partial cross entropy for scribble / point supervision (Tang et al. 2018, "On
    regularized losses for weakly-supervised CNN segmentation",
    https://arxiv.org/abs/1803.09001; Bearman et al. 2016, https://arxiv.org/abs/1506.02106):
    only labelled pixels count, every unlabelled pixel carries ``ignore_index``.

    Reduction: mean over the labelled pixels of the whole batch (weighted as in
    :func:`cross_entropy`), so images with more clicks weigh more; 0 when nothing is labelled.
    """
    return cross_entropy(logits, sparse_target, weight=weight, ignore_index=ignore_index)


# --------------------------------------------------------------------------------------------
# soft Dice
# --------------------------------------------------------------------------------------------
def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = IGNORE_INDEX,
              smooth: float = 1.0, weight=None, per_image: bool = False) -> torch.Tensor:
    """Soft multi-class Dice loss (Milletari et al. 2016, V-Net, https://arxiv.org/abs/1606.04797;
    Sudre et al. 2017, https://arxiv.org/abs/1707.03237), ignore-aware.

    With ``p = softmax(logits)``, one-hot target ``y`` and ``V`` the non-ignored pixels:

    ``I_c = sum_{i in V} p_ic y_ic``,  ``S_c = sum_{i in V} (p_ic + y_ic)``,
    ``dice_c = (2 I_c + smooth) / (S_c + smooth)``,
    ``loss = sum_{c in P} w_c (1 - dice_c) / sum_{c in P} w_c``  (``w_c = 1`` without ``weight``).

    * Pooling: the sums run over all pixels of the whole batch (one soft confusion count per
      class, like the dataset confusion matrix of the metric); ``per_image=True`` instead
      forms ``dice`` per (image, class) and averages over the present pairs.
    * Absent classes: ``P`` = classes with at least one valid target pixel (in the batch, or in
      the image when ``per_image``). Soft predictions give every class some mass, so the
      metric's "present in target or prediction" rule becomes "present in the target"; mass put
      on an absent class is still penalised, through the present classes' ``I_c`` (the
      probabilities sum to one).
    * A batch without valid pixels gives 0 with zero gradients.
    """
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    w, valid, safe = _prepare(logits, target, ignore_index, weight)
    C = logits.shape[1]
    v = valid.unsqueeze(1).to(logits.dtype)  # N,1,H,W: broadcasts over the classes
    prob = F.softmax(logits, dim=1) * v  # ignored pixels carry no probability mass
    # one_hot appends the class dim: N,H,W -> N,H,W,C -> N,C,H,W
    onehot = F.one_hot(safe, C).permute(0, 3, 1, 2).to(logits.dtype) * v
    # sums of shape N,C (per image) or C (pooled over the batch)
    dims = (2, 3) if per_image else (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    size = prob.sum(dims) + onehot.sum(dims)
    present = (onehot.sum(dims) > 0).to(logits.dtype)
    # smooth = 0 and an empty class would be 0/0; such a class is absent and weighs 0 below
    dice = (2 * inter + smooth) / _nonzero(size + smooth)
    wc = present if w is None else present * w
    return _safe_mean((wc * (1 - dice)).sum(), wc.sum())


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                 ignore_index: int | None = IGNORE_INDEX, weight=None, smooth: float = 1.0,
                 ce_weight: float = 1.0, dice_weight: float = 1.0) -> torch.Tensor:
    """``ce_weight * cross_entropy + dice_weight * dice_loss`` (the common combination, e.g.
    nnU-Net, Isensee et al. 2018, https://arxiv.org/abs/1809.10486): CE gives a well-behaved
    per-pixel gradient, Dice counters class imbalance. Each term uses its own reduction (see
    :func:`cross_entropy`, :func:`dice_loss`); ``weight`` goes to both.
    """
    return (ce_weight * cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)
            + dice_weight * dice_loss(logits, target, ignore_index=ignore_index, smooth=smooth,
                                      weight=weight))


# --------------------------------------------------------------------------------------------
# boundary-aware weighting
# --------------------------------------------------------------------------------------------
def boundary_weights(target: torch.Tensor, sigma: float = 3.0, amplitude: float = 5.0,
                     ignore_index: int | None = IGNORE_INDEX, num_classes: int | None = None,
                     ) -> torch.Tensor:
    """A per-pixel weight map that is larger near the target's boundaries:
    ``w_i = 1 + amplitude * exp(-d_i^2 / (2 sigma^2))`` where ``d_i`` is the Euclidean distance
    to the nearest target boundary pixel (:func:`minseg.metrics.boundary_mask`, transitions to
    void included), cut off beyond ``3 sigma`` (weight 1 there); ignored pixels get weight 0.

    A simplified form of U-Net's weight map (Ronneberger et al. 2015,
    https://arxiv.org/abs/1505.04597, eq. 2, which uses the distances to the two nearest cells
    and w0 = 10, sigma ~ 5 px). ``target``: ``N,H,W`` (or ``H,W``) integer mask; when
    ``num_classes`` is given its ids are checked. Returns float32 of the target's shape.
    """
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or \
            target.dtype == torch.bool or target.is_complex():
        raise ValueError("target must be an integer class-id tensor")
    if target.ndim < 2:
        raise ValueError(f"target must be H,W or N,H,W; got shape {tuple(target.shape)}")
    if num_classes is not None:
        check_mask(target, num_classes, "target", ignore_index=ignore_index)
    if sigma <= 0 or amplitude < 0:
        raise ValueError(f"need sigma > 0 and amplitude >= 0; got {sigma}, {amplitude}")
    valid, _ = _valid_and_safe(target, ignore_index)
    # distances to valid boundary pixels only (a void transition marks its valid side),
    # computed up to 3 sigma and inf beyond
    d = distance_to_mask(boundary_mask(target) & valid, 3 * sigma)
    w = 1 + amplitude * torch.exp(-d * d / (2 * sigma * sigma))  # exp(-inf) = 0 beyond the cut
    return w * valid


def boundary_weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                                    sigma: float = 3.0, amplitude: float = 5.0, weight=None,
                                    ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """Cross entropy with :func:`boundary_weights` per pixel (times class weights, if given):
    ``sum_i b_i w[y_i] l_i / sum_i b_i w[y_i]`` over the non-ignored pixels of the batch, a
    weighted mean like :func:`cross_entropy` (so ``amplitude=0`` gives plain CE). Pixels near
    boundaries, where segmentation errors concentrate, weigh up to ``1 + amplitude`` times more.
    """
    w, valid, safe = _prepare(logits, target, ignore_index, weight)
    _, nll = _pixel_nll(logits, safe)
    # ignored pixels get weight 0 here, so they drop out of both sums
    w_pix = boundary_weights(target, sigma, amplitude, ignore_index).to(logits.dtype)
    if w is not None:
        w_pix = w_pix * w[safe]
    return _safe_mean((w_pix * nll).sum(), w_pix.sum())


# --------------------------------------------------------------------------------------------
# class statistics
# --------------------------------------------------------------------------------------------
def class_frequencies(masks_or_iterable, num_classes: int,
                      ignore_index: int | None = IGNORE_INDEX, per_image_totals: bool = False):
    """Pixel count per class over a mask tensor (any shape; ``N,H,W`` = N images) or an
    iterable of masks (or of ``(image, mask)`` pairs: the last element is taken, so a dataset
    or a DataLoader works). Ignored pixels are not counted; other bad ids raise ``ValueError``.

    Returns ``counts`` (int64 [C]); divide by ``counts.sum()`` for frequencies. With
    ``per_image_totals=True`` returns ``(counts, image_pixels)`` where ``image_pixels[c]`` is
    the number of valid pixels of the images in which class ``c`` appears: the denominator of
    Eigen & Fergus's median frequency balancing (see :func:`class_weights`).
    """
    check_num_classes(num_classes)
    counts = torch.zeros(num_classes, dtype=torch.int64)
    totals = torch.zeros(num_classes, dtype=torch.int64)

    def add(mask: torch.Tensor) -> None:
        check_mask(mask, num_classes, "mask", ignore_index=ignore_index)
        # leading dims are images: ...,H,W -> N,H,W; a 1-D mask is one image
        m = mask.reshape(-1, *mask.shape[-2:]) if mask.ndim >= 2 else mask.reshape(1, -1)
        for image in m:  # per image, for the presence-based totals
            ids = image.reshape(-1)
            if ignore_index is not None:
                ids = ids[ids != ignore_index]
            c = torch.bincount(ids.long(), minlength=num_classes).cpu()
            counts.add_(c)
            # this image's valid pixels count for every class it contains
            totals.add_((c > 0) * ids.numel())

    if isinstance(masks_or_iterable, torch.Tensor):
        add(masks_or_iterable)
    else:
        for item in masks_or_iterable:
            if isinstance(item, (tuple, list)):
                item = item[-1]
            add(torch.as_tensor(item))
    return (counts, totals) if per_image_totals else counts


def class_weights(counts, method: str = "inverse", image_pixels=None) -> torch.Tensor:
    """Class weights from pixel counts (float32 [C]); classes with count 0 get weight 0.

    * ``"inverse"``: ``w_c = total / (K * n_c)`` over the K classes that occur (inverse
      frequency, normalised so that a balanced dataset gives all ones; scikit-learn's
      "balanced").
    * ``"median"``: median frequency balancing (Eigen & Fergus 2015,
      https://arxiv.org/abs/1411.4734, sec. 4.1): ``w_c = median(freq) / freq_c`` with
      ``freq_c = n_c / image_pixels_c``, the pixels of class c divided by the pixels of the
      images where c is present (``class_frequencies(..., per_image_totals=True)``); without
      ``image_pixels``, ``freq_c = n_c / total`` (the common simplification). The median is
      over the classes that occur, interpolated for an even number (``torch.quantile``).
    """
    n = torch.as_tensor(counts, dtype=torch.float64)
    if n.ndim != 1 or n.numel() < 2:
        raise ValueError(f"counts must be a 1-D vector with one count per class; got shape "
                         f"{tuple(n.shape)}")
    if not bool(torch.isfinite(n).all()) or bool((n < 0).any()):
        raise ValueError("counts must be finite and non-negative")
    present = n > 0
    if not bool(present.any()):
        raise ValueError("every class count is 0: no weights can be derived")
    w = torch.zeros_like(n)
    if method == "inverse":
        # total / (K n_c): 1 for every class when the K classes are equally frequent
        w[present] = n.sum() / (int(present.sum()) * n[present])
    elif method == "median":
        if image_pixels is None:
            freq = n / n.sum()
        else:
            tot = torch.as_tensor(image_pixels, dtype=torch.float64)
            if tot.shape != n.shape or bool((tot[present] <= 0).any()):
                raise ValueError("image_pixels must match counts and be > 0 where counts are")
            # clamp: tot may be 0 for an absent class; its weight stays 0 anyway
            freq = torch.where(present, n / tot.clamp_min(1), torch.zeros_like(n))
        w[present] = torch.quantile(freq[present], 0.5) / freq[present]
    else:
        raise ValueError(f"method must be 'inverse' or 'median', got {method!r}")
    return w.float()


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": cross_entropy,
    "focal": focal_loss,
    "dice": dice_loss,
    "ce+dice": ce_dice_loss,
    "boundary_ce": boundary_weighted_cross_entropy,
    "partial_ce": partial_cross_entropy,
}


def get_loss(name: str, **kwargs) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A loss from :data:`LOSSES` by name, with keyword arguments bound:
    ``get_loss("focal", gamma=2.0)(logits, target)``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return functools.partial(LOSSES[name], **kwargs)

"""Image-level classification ("which classes are present?") and what it can say about *where*.

A segmenter answers *what is where*; a multi-label classifier answers only *what*. Lessons 2 and
14 both train one on the same data as a segmenter: the targets are the classes present in each
mask (:func:`minseg.data.contents.class_presence`), the loss is binary cross-entropy per class
(:func:`fit_classifier`, the multi-label setting of Pascal VOC classification), and the score is
mean average precision and tag F1 (:func:`evaluate_classifier`; the VOC classification metric,
Everingham et al. 2010, http://host.robots.ox.ac.uk/pascal/VOC/pubs/everingham10.pdf).

*Where* comes from the class activation map (Zhou et al. 2016, https://arxiv.org/abs/1512.04150):
for a classifier ending in global average pooling and a Linear layer
(:class:`minseg.models.GAPClassifier`), the class score *before* pooling
(:func:`class_activation_maps`). Thresholded with the image's tags it gives pseudo-labels
(:func:`cam_to_pseudo_labels`, lesson 14); with the classifier's own predicted classes it gives
a coarse segmentation (:func:`cam_masks`, lesson 2).
"""
from __future__ import annotations

import math
import time
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from minseg import config
from minseg.data.contents import class_presence
from minseg.schedule import SCHEDULES, lr_factor
from minseg.validate import IGNORE_INDEX, check_images, check_num_classes

__all__ = ["average_precision", "fit_classifier", "evaluate_classifier", "cam_from_features",
           "class_activation_maps", "cam_to_pseudo_labels", "cam_masks", "CAM_NORMALIZATIONS"]

CAM_NORMALIZATIONS = ("max", "minmax", "none")


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision of one class: the mean, over the positives, of the precision at the
    rank of each positive when images are sorted by decreasing score (the area under the
    precision-recall curve without interpolation). Ties are broken by input order. NaN when
    there is no positive."""
    scores, labels = scores.flatten().float(), labels.flatten().bool()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels must have the same length, got "
                         f"{scores.numel()} and {labels.numel()}")
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = torch.sort(scores, descending=True, stable=True).indices
    hits = labels[order].float()
    precision_at_k = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    return float((precision_at_k * hits).sum() / n_pos)


def fit_classifier(model: nn.Module, train_loader: Iterable, *, num_classes: int,
                   epochs: int | None = None, max_steps: int | None = None,
                   time_budget_s: float | None = None, lr: float = 1e-3,
                   weight_decay: float = 1e-4, schedule: str = "poly",
                   background: int | None = None, seed: int = 0,
                   device: str | torch.device | None = None) -> list[dict]:
    """Train an image classifier (``N,3,H,W -> N,num_classes`` logits) on the classes present
    in the masks of a segmentation loader, with per-class binary cross-entropy (multi-label)
    and AdamW.

    ``schedule``: the learning-rate schedule of :func:`minseg.schedule.lr_factor` (``"poly"``
    as :func:`minseg.train.fit`, ``"constant"``, ``"cosine"``). ``background``: a class left
    out of the loss, as image-level *tags* do (lesson 14; its logit is never trained); ``None``
    trains every class, background included (lesson 2). The targets come from each batch's
    masks, so a loader with random crops trains on the classes left in the crop; pass one
    without (``build_loaders(cfg, augment=False)``) to train on the image's labels exactly.

    Stops after ``epochs`` epochs or ``max_steps`` steps; ``time_budget_s`` is a safety cap
    checked after each step. At least one limit is required. Returns one dict per (possibly
    partial) epoch: ``epoch``, ``step``, ``loss`` (mean over its steps), ``lr``,
    ``images_per_s``, ``time_s``.
    """
    check_num_classes(num_classes)
    if epochs is None and max_steps is None and time_budget_s is None:
        raise ValueError("say how long to train: epochs, max_steps or time_budget_s")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid schedules are {', '.join(SCHEDULES)}")
    if background is not None and not 0 <= background < num_classes:
        raise ValueError(f"background must be a class id in 0..{num_classes - 1}, got {background}")
    scored = [c for c in range(num_classes) if c != background]
    dev = config.device(str(device)) if device is not None else config.device()
    config.seed_everything(seed)
    model.to(dev).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=weight_decay)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    total = min(max_steps or math.inf, (epochs or math.inf) * steps_per_epoch)
    if math.isinf(total):  # only a time cap: decay over a nominal 100 epochs
        total = 100 * steps_per_epoch
    history, step, t_start, stop = [], 0, time.perf_counter(), False
    epoch = 0
    while not stop:
        loss_sum, n_steps, n_images, t0 = 0.0, 0, 0, time.perf_counter()
        for images, masks in train_loader:
            images, masks = images.to(dev), masks.to(dev)
            lr_now = lr * lr_factor(step, int(total), schedule)
            for g in opt.param_groups:
                g["lr"] = lr_now
            logits = model(images)
            if logits.ndim != 2 or logits.shape[1] != num_classes:
                raise ValueError(f"the classifier must return N,{num_classes} logits; got shape "
                                 f"{tuple(logits.shape)}")
            targets = class_presence(masks, num_classes).float()
            if background is not None:
                logits, targets = logits[:, scored], targets[:, scored]
            loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step, n_steps, n_images = step + 1, n_steps + 1, n_images + images.shape[0]
            loss_sum += float(loss.detach())
            if step >= total or (time_budget_s is not None and
                                 time.perf_counter() - t_start >= time_budget_s):
                stop = True
                break
        epoch += 1
        if epochs is not None and epoch >= epochs:
            stop = True
        history.append({"epoch": epoch, "step": step, "loss": loss_sum / max(1, n_steps),
                        "lr": lr_now, "images_per_s": n_images / max(1e-9, time.perf_counter() - t0),
                        "time_s": time.perf_counter() - t_start})
    return history


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: Iterable, num_classes: int, *,
                        skip_background: bool = True, threshold: float = 0.5,
                        device: str | torch.device | None = None) -> dict:
    """Score a multi-label classifier on a segmentation loader's presence labels.

    Returns ``map`` (mean average precision over the classes with at least one positive
    image; background excluded when ``skip_background``), ``ap`` (per class, NaN without
    positives), ``f1`` (micro-averaged F1 of the predicted tags, sigmoid > ``threshold``,
    over the scored classes: how well the classifier knows *what* is in each image),
    ``exact_match`` (share of images whose predicted set of classes equals the true set over
    the scored classes) and ``scores`` / ``labels`` (``N,C`` sigmoid outputs and targets).
    """
    dev = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores, labels = [], []
    for images, masks in loader:
        scores.append(torch.sigmoid(model(images.to(dev)).float()).cpu())
        labels.append(class_presence(masks, num_classes).float().cpu())
    model.train(was_training)
    s, y = torch.cat(scores), torch.cat(labels)
    first = 1 if skip_background else 0
    ap = [float("nan")] * first + [average_precision(s[:, c], y[:, c])
                                   for c in range(first, num_classes)]
    scored = [a for a in ap[first:] if not math.isnan(a)]
    pred, true = s[:, first:] > threshold, y[:, first:].bool()
    exact = (pred == true).all(1).float().mean()
    tp, fp, fn = int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())
    return {"map": sum(scored) / len(scored) if scored else float("nan"), "ap": ap,
            "f1": 2 * tp / max(2 * tp + fp + fn, 1), "exact_match": float(exact),
            "scores": s, "labels": y}


def cam_from_features(features: torch.Tensor, fc_weight: torch.Tensor) -> torch.Tensor:
    """The class activation map formula: ``CAM[n, c] = sum_k fc_weight[c, k] features[n, k]``,
    ``N, K, h, w`` features and a ``C x K`` Linear weight -> ``N, C, h, w`` (no bias, no
    normalisation; :func:`class_activation_maps` adds those)."""
    if features.ndim != 4 or fc_weight.ndim != 2 or fc_weight.shape[1] != features.shape[1]:
        raise ValueError(f"need N,K,h,w features and a C x K weight; got {tuple(features.shape)} "
                         f"and {tuple(fc_weight.shape)}")
    return torch.einsum("ck,nkhw->nchw", fc_weight.to(features.dtype), features)


@torch.no_grad()
def class_activation_maps(classifier: nn.Module, images: torch.Tensor, *, upsample: bool = True,
                          normalize: bool | str = "max") -> torch.Tensor:
    """Class activation maps (Zhou et al. 2016, https://arxiv.org/abs/1512.04150).

    For a classifier ending in global average pooling and a Linear layer ``fc`` (weights
    ``w[c, k]``), ``CAM_c(x, y) = sum_k w[c, k] f_k(x, y)`` where ``f`` is the last feature map
    (``classifier.features(x)``, as :class:`minseg.models.GAPClassifier` has): the class score
    *before* pooling, so the spatial mean of ``CAM_c`` plus the bias is exactly the logit of
    class ``c``. (It is also :meth:`minseg.models.DenseClassifier.score_map` minus the bias.)

    ``normalize`` prepares the maps for thresholding:

    * ``"max"`` (or ``True``): ReLU, then divide each map by its maximum (maps in ``[0, 1]``, an
      all-zero map stays 0), the usual recipe of weakly supervised segmentation;
    * ``"minmax"``: after upsampling, map each map's minimum to 0 and maximum to 1;
    * ``"none"`` (or ``False``): the raw scores.

    ``upsample``: resize to the images' ``H, W`` (bilinear, ``align_corners=False``);
    otherwise the feature resolution. Returns ``N, C, H, W`` float; runs in eval mode without
    gradients.
    """
    mode = {True: "max", False: "none"}[normalize] if isinstance(normalize, bool) else normalize
    if mode not in CAM_NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; valid: {', '.join(CAM_NORMALIZATIONS)}")
    check_images(images, "images", channels=None)
    fc = getattr(classifier, "fc", None)
    if not isinstance(fc, nn.Linear) or not callable(getattr(classifier, "features", None)):
        raise ValueError("the classifier needs .features(x) (the map before global average "
                         "pooling) and a Linear head named .fc, as minseg.models.GAPClassifier has")
    was = classifier.training
    classifier.eval()
    try:
        feats = classifier.features(images)
    finally:
        classifier.train(was)
    cams = cam_from_features(feats, fc.weight)
    if mode == "max":
        cams = cams.relu()
        cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    if upsample:
        cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if mode == "max":
            cams = cams.clamp(0, 1)  # bilinear interpolation stays in range up to rounding
    if mode == "minmax":
        lo = cams.amin(dim=(2, 3), keepdim=True)
        hi = cams.amax(dim=(2, 3), keepdim=True)
        cams = (cams - lo) / (hi - lo).clamp_min(1e-12)
    return cams


def _tag_matrix(tags, n: int, num_classes: int) -> torch.Tensor:
    """Tags as a bool ``N, C`` matrix, from such a matrix or from lists of class ids."""
    if isinstance(tags, torch.Tensor) and tags.dtype == torch.bool:
        t = tags if tags.ndim == 2 else tags[None]
        if t.shape != (n, num_classes):
            raise ValueError(f"tags must be a bool N,C tensor with N={n}, C={num_classes}; got "
                             f"{tuple(tags.shape)}")
        return t.clone()
    out = torch.zeros(n, num_classes, dtype=torch.bool)
    rows = list(tags)
    if len(rows) != n:
        raise ValueError(f"need one list of class ids per image ({n}), got {len(rows)}")
    for i, row in enumerate(rows):
        for c in row:
            if not 0 <= int(c) < num_classes:
                raise ValueError(f"tag {c} is outside 0..{num_classes - 1}")
            out[i, int(c)] = True
    return out


def cam_to_pseudo_labels(cams: torch.Tensor, tags, threshold: float = 0.3, *,
                         ignore_below: float | None = None, background: int = 0,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pseudo-labels from normalised class activation maps and the image tags.

    Each pixel takes the tagged class with the highest CAM (classes not in the tags are never
    used: the tags are known to be right), or ``background`` where no tagged class reaches
    ``threshold`` (the background score is the constant ``threshold``, the usual recipe since
    a classifier has no background map). With ``ignore_below < threshold``, pixels whose best
    score lies in ``[ignore_below, threshold)`` are uncertain and get ``ignore_index``.

    ``cams``: ``N, C, H, W`` in ``[0, 1]`` (:func:`class_activation_maps`); ``tags``: bool
    ``N, C`` (:func:`minseg.data.contents.class_presence` with ``background=0``) or one
    iterable of class ids per image. Returns ``int64
    N, H, W``.
    """
    if cams.ndim != 4 or not cams.is_floating_point():
        raise ValueError(f"cams must be a float N,C,H,W tensor, got {tuple(cams.shape)} {cams.dtype}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if ignore_below is not None and not 0 <= ignore_below < threshold:
        raise ValueError(f"ignore_below must be in [0, threshold), got {ignore_below!r}")
    n, C = cams.shape[:2]
    t = _tag_matrix(tags, n, C).to(cams.device)
    t[:, background] = False
    scores = cams.masked_fill(~t[:, :, None, None], -1.0)
    best, cls = scores.max(1)
    labels = torch.where(best >= threshold, cls, torch.full_like(cls, background))
    if ignore_below is not None:
        labels = torch.where((best >= ignore_below) & (best < threshold),
                             torch.full_like(cls, ignore_index), labels)
    return labels.long()


def cam_masks(classifier: nn.Module, images: torch.Tensor, threshold: float = 0.5,
              present_threshold: float = 0.5) -> torch.Tensor:
    """A coarse segmentation from a classifier alone (lesson 2): each image's class activation
    maps, min-max normalised (:func:`class_activation_maps` with ``normalize="minmax"``), read
    with the classes the classifier itself calls present (sigmoid of the logit >
    ``present_threshold``; background never) by :func:`cam_to_pseudo_labels`: a pixel takes the
    present class with the highest map if it reaches ``threshold``, else background (0).
    Returns ``N,H,W`` int64 masks.
    """
    cams = class_activation_maps(classifier, images, normalize="minmax")
    was = classifier.training
    classifier.eval()
    with torch.no_grad():
        present = torch.sigmoid(classifier(images).float()) > present_threshold
    classifier.train(was)
    return cam_to_pseudo_labels(cams, present, threshold)

"""Image-level ("which classes are present?") training and scoring, for the lesson-2 contrast.

A segmenter answers *what is where*; a multi-label classifier answers only *what*. To compare
the two on the same data, the classifier's targets are derived from the segmentation masks
(:func:`presence_targets`: a class is present if at least one of its pixels is labelled), it is
trained with binary cross-entropy per class (:func:`fit_classifier`, the multi-label setting of
Pascal VOC classification), and scored by mean average precision (:func:`evaluate_classifier`,
the VOC classification metric, Everingham et al. 2010,
http://host.robots.ox.ac.uk/pascal/VOC/pubs/everingham10.pdf).

:func:`cam_masks` turns a classifier made fully convolutional
(:func:`minseg.models.fully_convolutional`) into a coarse segmentation, class activation map
style (Zhou et al., "Learning Deep Features for Discriminative Localization",
https://arxiv.org/abs/1512.04150): the answer to "how well does a classifier localise?".
"""
from __future__ import annotations

import math
import time
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from minseg import config
from minseg.validate import IGNORE_INDEX, check_mask, check_num_classes

__all__ = ["presence_targets", "average_precision", "fit_classifier", "evaluate_classifier",
           "cam_masks"]


def presence_targets(masks: torch.Tensor, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """Multi-hot image labels from masks: ``N,H,W`` int ids -> ``N,num_classes`` float 0/1.

    ``out[n, c] = 1`` when image ``n`` has at least one pixel labelled ``c``; ``ignore_index``
    pixels count for no class. Background (id 0) is a class like any other here.
    """
    check_num_classes(num_classes)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape N,H,W; got {tuple(masks.shape)}")
    check_mask(masks, num_classes, "masks", ignore_index=ignore_index)
    flat = masks.reshape(masks.shape[0], -1).long()
    if ignore_index is not None:
        flat = torch.where(flat == ignore_index, num_classes, flat)  # a spill-over column
    onehot = torch.zeros(masks.shape[0], num_classes + 1, device=masks.device)
    onehot.scatter_(1, flat, 1.0)
    return onehot[:, :num_classes]


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
                   weight_decay: float = 1e-4, budget_schedule: bool = False, seed: int = 0,
                   device: str | torch.device | None = None) -> list[dict]:
    """Train an image classifier (``N,3,H,W -> N,num_classes`` logits) on the *presence* of
    each class in the masks of a segmentation loader, with per-class binary cross-entropy
    (multi-label), AdamW and the poly schedule of :func:`minseg.train.fit`.

    Stops after ``epochs`` epochs, ``max_steps`` steps or once the wall-clock time reaches
    ``time_budget_s`` (checked after each step, as :func:`minseg.train.fit` does), whichever
    comes first; at least one limit is required. ``budget_schedule=True`` runs the learning-rate
    schedule on the larger of the step fraction and the fraction of the time budget used, as
    :func:`minseg.train.fit` does, so that a budget-limited run still ends with a decayed learning
    rate. Returns one dict per (possibly partial) epoch: ``epoch``, ``step``, ``loss``, ``lr``,
    ``images_per_s``, ``time_s``.
    """
    from minseg.train import lr_factor

    check_num_classes(num_classes)
    if epochs is None and max_steps is None and time_budget_s is None:
        raise ValueError("give at least one of epochs, max_steps, time_budget_s")
    dev = config.device(str(device)) if device is not None else config.device()
    config.seed_everything(seed)
    model.to(dev).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=weight_decay)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    total = min(max_steps or math.inf, (epochs or math.inf) * steps_per_epoch)
    if math.isinf(total):  # only a time budget: decay over a nominal 100 epochs
        total = 100 * steps_per_epoch
    history, step, t_start, stop = [], 0, time.perf_counter(), False
    epoch = 0
    while not stop:
        loss_sum, n_steps, n_images, t0 = 0.0, 0, 0, time.perf_counter()
        for images, masks in train_loader:
            images, masks = images.to(dev), masks.to(dev)
            progress = None
            if budget_schedule and time_budget_s:
                progress = max(step / total, (time.perf_counter() - t_start) / time_budget_s)
            lr_now = lr * lr_factor(step, int(total), progress=progress)
            for g in opt.param_groups:
                g["lr"] = lr_now
            logits = model(images)
            if logits.ndim != 2 or logits.shape[1] != num_classes:
                raise ValueError(f"the classifier must return N,{num_classes} logits; got shape "
                                 f"{tuple(logits.shape)}")
            loss = F.binary_cross_entropy_with_logits(
                logits.float(), presence_targets(masks, num_classes))
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
    positives), ``exact_match`` (share of images whose predicted set of classes, sigmoid >
    ``threshold``, equals the true set over the scored classes) and ``scores`` /
    ``labels`` (``N,C`` sigmoid outputs and targets).
    """
    dev = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores, labels = [], []
    for images, masks in loader:
        scores.append(torch.sigmoid(model(images.to(dev)).float()).cpu())
        labels.append(presence_targets(masks, num_classes).cpu())
    model.train(was_training)
    s, y = torch.cat(scores), torch.cat(labels)
    first = 1 if skip_background else 0
    ap = [float("nan")] * first + [average_precision(s[:, c], y[:, c])
                                   for c in range(first, num_classes)]
    scored = [a for a in ap[first:] if not math.isnan(a)]
    exact = ((s[:, first:] > threshold) == y[:, first:].bool()).all(1).float().mean()
    return {"map": sum(scored) / len(scored) if scored else float("nan"), "ap": ap,
            "exact_match": float(exact), "scores": s, "labels": y}


@torch.no_grad()
def cam_masks(dense_model: nn.Module, images: torch.Tensor, threshold: float = 0.5,
              present_threshold: float = 0.5) -> torch.Tensor:
    """Coarse masks from a classifier made fully convolutional (CAM, arXiv:1512.04150).

    ``dense_model`` is a :class:`minseg.models.DenseClassifier`: ``score_map(x)`` gives class
    scores on the stride-32 grid, and their spatial mean equals the classifier's logits. For
    each image: the object classes (ids ``1..C-1``) the classifier calls present (sigmoid of
    the logit > ``present_threshold``) each get a map, the score map upsampled bilinearly to the
    image size and min-max normalised to [0, 1]; a pixel takes the present class with the
    highest normalised score if that score exceeds ``threshold``, else background (0).
    Returns ``N,H,W`` int64 masks.
    """
    was_training = dense_model.training
    dense_model.eval()
    sm = dense_model.score_map(images).float()                      # N,C,h,w
    logits = sm.mean(dim=(2, 3))                                    # = the classifier's logits
    up = F.interpolate(sm, size=images.shape[-2:], mode="bilinear", align_corners=False)
    lo = up.amin(dim=(2, 3), keepdim=True)
    hi = up.amax(dim=(2, 3), keepdim=True)
    norm = (up - lo) / (hi - lo).clamp_min(1e-12)
    present = torch.sigmoid(logits) > present_threshold             # N,C
    present[:, 0] = False                                           # background is the fallback
    norm = torch.where(present[:, :, None, None], norm, torch.full_like(norm, -1.0))
    best, cls = norm.max(dim=1)
    dense_model.train(was_training)
    return torch.where(best > threshold, cls, torch.zeros_like(cls))

"""Weak supervision: cheaper labels than full masks, and how to train a segmenter on them.

A full mask labels every pixel; it is the most expensive label there is. Weaker labels tell
the network less, and cost a small fraction of the time:

* **points** and **scribbles** label a few pixels exactly (everything else is unknown, 255);
  the network is trained with a *partial* cross entropy over the labelled pixels only
  (:func:`minseg.losses.partial_cross_entropy`; Bearman et al. 2016,
  https://arxiv.org/abs/1506.02106; Lin et al. 2016, ScribbleSup,
  https://arxiv.org/abs/1604.05144);
* **boxes** say where each object is, not its shape; filling them gives a dense but noisy
  *pseudo-label* (:func:`boxes_to_masks`; the "box as mask" baseline of Dai et al. 2015,
  BoxSup, https://arxiv.org/abs/1503.01640, and Khoreva et al. 2017, "Simple does it",
  https://arxiv.org/abs/1603.07485, who also leave the uncertain rim of each box unlabelled);
* **image tags** say only which classes occur; a classifier trained on them localises each
  class through its *class activation map* (Zhou et al. 2016,
  https://arxiv.org/abs/1512.04150), which is thresholded into pseudo-labels
  (:func:`class_activation_maps`, :func:`cam_to_pseudo_labels`); or the segmenter itself is
  trained on the tags by *multiple-instance learning*, the image a bag of pixels whose pooled
  per-pixel scores must match the tags (:func:`mil_pool`, :func:`mil_loss`; Pathak et al. 2015,
  https://arxiv.org/abs/1412.7144; Pinheiro & Collobert 2015, https://arxiv.org/abs/1411.6228).

Here every weak label is *derived from a full mask*, deterministically from a seed, so a lesson
can compare label types on the same images with the same budget and score them against the
truth. :class:`WeakLabelDataset` wraps a :class:`minseg.data.VOCSegmentationDataset` so its
loader yields weak masks (at the image's own resolution, before the joint transforms) instead
of full ones. What each label type costs to make is priced in :mod:`minseg.cost`
(:data:`~minseg.cost.LABEL_COSTS`, :func:`~minseg.cost.annotation_seconds`).

Masks follow the package convention: ``int64`` ``H,W`` class ids, ``255`` (``IGNORE_INDEX``)
for unlabelled or void pixels.
"""
from __future__ import annotations

import math
import time
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from minseg.validate import IGNORE_INDEX, check_images, check_mask, check_num_classes

__all__ = [
    "points_from_mask", "scribbles_from_mask", "boxes_from_instances", "boxes_to_masks",
    "tags_from_mask", "TagClassifier", "tag_classifier", "fit_classifier", "tag_f1",
    "class_activation_maps", "cam_to_pseudo_labels", "cam_pseudo_labels_for",
    "MIL_POOLS", "mil_pool", "mil_loss", "WeakLabelDataset", "label_quality", "WEAK_KINDS",
]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _check_mask2d(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer class-id mask, got dtype {mask.dtype}")
    if mask.ndim != 2:
        raise ValueError(f"{name} must have shape H,W; got {tuple(mask.shape)}")
    if bool((mask < 0).any()):
        raise ValueError(f"{name} contains negative class ids")
    return mask.long()


def _check_instances(instances, mask: torch.Tensor):
    """``None``, or an instance-id map of the same shape as ``mask``."""
    if instances is None:
        return None
    instances = _check_mask2d(instances, "instances")
    if instances.shape != mask.shape:
        raise ValueError(f"instances has shape {tuple(instances.shape)} but mask has "
                         f"{tuple(mask.shape)}")
    return instances


def _rng(seed) -> np.random.Generator:
    """One NumPy generator from an int or a sequence of ints (e.g. ``[seed, image_index]``)."""
    return np.random.default_rng(seed)


def _classes(mask: torch.Tensor, ignore_index: int, include_background: bool,
             background: int) -> list[int]:
    cls = [c for c in torch.unique(mask).tolist() if c != ignore_index]
    return [c for c in cls if include_background or c != background]


def _erode(region: torch.Tensor, steps: int) -> torch.Tensor:
    """Shrink a bool ``H,W`` region by ``steps`` pixels (8-neighbourhood; the image border does
    not erode, it is not a label boundary)."""
    out = region
    for _ in range(steps):
        out = out & ~(F.max_pool2d((~out).float()[None, None], 3, 1, 1)[0, 0] > 0)
    return out


def _disk(radius: float) -> list[tuple[int, int]]:
    r = int(math.floor(radius))
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if dy * dy + dx * dx <= radius * radius + 1e-9]


def _paint(out: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, radius: float, value: int,
           allowed: torch.Tensor) -> None:
    """Set ``out`` to ``value`` on disks of ``radius`` around ``(ys, xs)``, only where
    ``allowed`` (so a weak label never crosses into another class)."""
    H, W = out.shape
    for dy, dx in _disk(radius):
        y, x = ys + dy, xs + dx
        ok = (y >= 0) & (y < H) & (x >= 0) & (x < W)
        y, x = y[ok], x[ok]
        keep = allowed[y, x]
        out[y[keep], x[keep]] = value


# ---------------------------------------------------------------------------------------------
# points and scribbles: sparse masks for partial cross entropy
# ---------------------------------------------------------------------------------------------
def points_from_mask(mask: torch.Tensor, points_per_class: int = 1, *, seed=0,
                     instances: torch.Tensor | None = None, radius: float = 0,
                     include_background: bool = True, background: int = 0,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Simulated point clicks: a sparse mask where a few pixels keep their class.

    For each class present in ``mask`` (``include_background``: the background too, since a
    partial cross entropy with no background pixel would never predict background), pick
    ``points_per_class`` pixels of that class uniformly at random; with ``instances`` (an
    ``H,W`` map of object ids ``> 0``), pick ``points_per_class`` per *object* instead, and per
    class for background. Bearman et al. 2016 (https://arxiv.org/abs/1506.02106) click one
    point per class; their "random points" variant samples them from the ground truth, as
    here. ``radius > 0`` paints a disk around each point, clipped to the point's class, so
    that it survives downscaling augmentation (a single pixel often vanishes under
    nearest-neighbour resizing).

    Returns ``int64 H,W``: the class at labelled pixels, ``ignore_index`` elsewhere (void
    pixels of ``mask`` are never labelled). Deterministic in ``seed`` (an int or a sequence
    of ints, e.g. ``[seed, image_index]``).
    """
    mask = _check_mask2d(mask)
    if not isinstance(points_per_class, int) or points_per_class < 1:
        raise ValueError(f"points_per_class must be a positive int, got {points_per_class!r}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    instances = _check_instances(instances, mask)
    rng = _rng(seed)
    out = torch.full_like(mask, ignore_index)
    regions = _object_regions(mask, instances, ignore_index, include_background, background)
    for c, region in regions:
        ys, xs = torch.nonzero(region, as_tuple=True)
        k = min(points_per_class, len(ys))
        pick = torch.from_numpy(rng.choice(len(ys), size=k, replace=False)).long()
        _paint(out, ys[pick], xs[pick], radius, c, mask == c)
    return out


def _segment(y0: int, x0: int, y1: int, x1: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(abs(y1 - y0), abs(x1 - x0)) + 1
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    return (y0 + t * (y1 - y0)).round().long(), (x0 + t * (x1 - x0)).round().long()


def _object_regions(mask: torch.Tensor, instances: torch.Tensor | None, ignore_index: int,
                    include_background: bool, background: int) -> list[tuple[int, torch.Tensor]]:
    """(class, bool region) pairs: one per class, or with ``instances`` one per object of a
    thing class (and one per class for background and for pixels without an instance id)."""
    regions = []
    for c in _classes(mask, ignore_index, include_background, background):
        cls = mask == c
        if instances is None or c == background:
            regions.append((c, cls))
            continue
        ids = [i for i in torch.unique(instances[cls]).tolist() if i not in (0, ignore_index)]
        for i in ids:
            regions.append((c, cls & (instances == i)))
        rest = cls & ((instances == 0) | (instances == ignore_index))
        if not ids or bool(rest.any()):  # class pixels that belong to no instance
            regions.append((c, rest if ids else cls))
    return regions


def scribbles_from_mask(mask: torch.Tensor, *, seed=0, instances: torch.Tensor | None = None,
                        vertices: int = 4, width: int = 1, margin: int = 2, min_area: int = 10,
                        include_background: bool = True, background: int = 0,
                        ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Simulated scribbles: one stroke through every class region (or, with ``instances``,
    through every object), the rest unlabelled.

    For each region of at least ``min_area`` pixels (``include_background``: the background
    too), pick ``vertices`` random points well inside it (at least ``margin`` pixels from its
    edge, less when the region is too thin), order them along the region's main axis, and join
    them with straight strokes ``width`` pixels wide. Stroke pixels that leave the region are
    dropped, so a scribble never labels a pixel with the wrong class (and a region made of
    several pieces gets a stroke with gaps). In the spirit of ScribbleSup (Lin et al. 2016,
    https://arxiv.org/abs/1604.05144).

    Returns ``int64 H,W`` with the class on stroke pixels and ``ignore_index`` elsewhere;
    deterministic in ``seed`` (an int or a sequence of ints).
    """
    mask = _check_mask2d(mask)
    if vertices < 1 or width < 1 or margin < 0 or min_area < 1:
        raise ValueError(f"need vertices >= 1, width >= 1, margin >= 0, min_area >= 1; got "
                         f"{vertices}, {width}, {margin}, {min_area}")
    instances = _check_instances(instances, mask)
    rng = _rng(seed)
    out = torch.full_like(mask, ignore_index)
    for c, region in _object_regions(mask, instances, ignore_index, include_background, background):
        if int(region.sum()) < min_area:
            continue
        inner = region
        for m in range(margin, 0, -1):  # the deepest interior that is not empty
            eroded = _erode(region, m)
            if bool(eroded.any()):
                inner = eroded
                break
        ys, xs = torch.nonzero(inner, as_tuple=True)
        pick = torch.from_numpy(rng.choice(len(ys), size=min(vertices, len(ys)),
                                           replace=False)).long()
        py, px = ys[pick].double(), xs[pick].double()
        # order the vertices along the region's principal axis: a stroke, not a zigzag
        ry, rx = torch.nonzero(region, as_tuple=True)
        coords = torch.stack([ry.double(), rx.double()], 1)
        coords = coords - coords.mean(0)
        axis = torch.linalg.eigh(coords.T @ coords)[1][:, -1]
        order = torch.argsort(py * axis[0] + px * axis[1], stable=True)
        py, px = py[order].long().tolist(), px[order].long().tolist()
        sy, sx = [torch.tensor([py[0]])], [torch.tensor([px[0]])]
        for i in range(len(py) - 1):
            a, b = _segment(py[i], px[i], py[i + 1], px[i + 1])
            sy.append(a), sx.append(b)
        _paint(out, torch.cat(sy), torch.cat(sx), (width - 1) / 2, c, region)
    return out


# ---------------------------------------------------------------------------------------------
# boxes: box-to-mask pseudo-labels
# ---------------------------------------------------------------------------------------------
def boxes_from_instances(mask: torch.Tensor, instances: torch.Tensor, background: int = 0,
                         ignore_index: int = IGNORE_INDEX) -> list[tuple[int, int, int, int, int]]:
    """The tight box of every object: ``[(class_id, x0, y0, x1, y1)]`` with 0-based inclusive
    pixel coordinates, in instance-id order.

    ``instances`` holds an id ``> 0`` per object (VOC's ``SegmentationObject`` PNG; 0 and
    ``ignore_index`` elsewhere). An object's class is the most frequent non-void,
    non-background class of ``mask`` under it; objects with none (e.g. a class remapped to
    background) are skipped. VOC's XML boxes are 1-based: subtract 1 to compare.
    """
    mask, instances = _check_mask2d(mask), _check_mask2d(instances, "instances")
    if mask.shape != instances.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and instances {tuple(instances.shape)} "
                         f"must have the same shape")
    boxes = []
    for i in torch.unique(instances).tolist():
        if i in (0, ignore_index):
            continue
        obj = instances == i
        cls = mask[obj]
        cls = cls[(cls != background) & (cls != ignore_index)]
        if cls.numel() == 0:
            continue
        c = int(torch.mode(cls).values)
        ys, xs = torch.nonzero(obj, as_tuple=True)
        boxes.append((c, int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
    return boxes


def boxes_to_masks(boxes: Iterable[Sequence[int]], shape: tuple[int, int], *,
                   inner: float | None = None, background: int = 0,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Box-to-mask pseudo-label: every box filled with its class, background elsewhere.

    ``boxes``: ``(class_id, x0, y0, x1, y1)`` with 0-based inclusive pixel coordinates (as
    :func:`boxes_from_instances` returns). Boxes are drawn from the largest to the smallest
    area, so where boxes overlap the smaller one wins (a small object in front of a large one
    usually covers it; the large box would erase it otherwise). With ``inner`` in ``(0, 1)``
    only the central part of each box (``inner`` times its width and height, centred) is
    labelled with the class, and the rim between it and the box edge becomes
    ``ignore_index``: the rim is where a box is most often wrong (corners lie outside most
    objects), so it is better left unlabelled than labelled wrongly (Khoreva et al. 2017,
    https://arxiv.org/abs/1603.07485). ``shape`` is ``(H, W)``; returns ``int64 H,W``.
    """
    H, W = shape
    if inner is not None and not 0 < inner <= 1:
        raise ValueError(f"inner must be in (0, 1] or None, got {inner!r}")
    out = torch.full((H, W), background, dtype=torch.long)
    checked = []
    for b in boxes:
        if len(b) != 5:
            raise ValueError(f"a box is (class_id, x0, y0, x1, y1); got {tuple(b)!r}")
        c, x0, y0, x1, y1 = (int(v) for v in b)
        if not (0 <= x0 <= x1 < W and 0 <= y0 <= y1 < H):
            raise ValueError(f"box {tuple(b)} is not inside a {H}x{W} image with x0 <= x1, "
                             f"y0 <= y1 (0-based inclusive coordinates)")
        checked.append((c, x0, y0, x1, y1))
    # largest first; ties keep the given order (stable sort)
    order = sorted(range(len(checked)), key=lambda k: -(checked[k][3] - checked[k][1] + 1)
                   * (checked[k][4] - checked[k][2] + 1))
    for k in order:
        c, x0, y0, x1, y1 = checked[k]
        if inner is None or inner >= 1:
            out[y0:y1 + 1, x0:x1 + 1] = c
            continue
        out[y0:y1 + 1, x0:x1 + 1] = ignore_index
        w, h = x1 - x0 + 1, y1 - y0 + 1
        iw, ih = max(1, round(w * inner)), max(1, round(h * inner))
        ix0, iy0 = x0 + (w - iw) // 2, y0 + (h - ih) // 2
        out[iy0:iy0 + ih, ix0:ix0 + iw] = c
    return out


# ---------------------------------------------------------------------------------------------
# image tags: a classifier, its class activation maps, pseudo-labels
# ---------------------------------------------------------------------------------------------
def tags_from_mask(mask: torch.Tensor, num_classes: int, background: int = 0,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Image-level tags: a bool vector ``num_classes`` (or ``N, num_classes`` for ``N,H,W``
    masks), True for each foreground class that occurs. Background is never tagged (every
    image has some)."""
    check_num_classes(num_classes)
    m = mask if mask.ndim == 3 else mask[None]
    if m.ndim != 3 or m.is_floating_point():
        raise ValueError(f"mask must be an integer H,W or N,H,W tensor, got {tuple(mask.shape)} "
                         f"{mask.dtype}")
    valid = m != ignore_index
    if bool((m[valid] < 0).any()) or bool((m[valid] >= num_classes).any()):
        raise ValueError(f"mask contains ids outside 0..{num_classes - 1} and {ignore_index}")
    flat = torch.where(valid, m.long(), num_classes).flatten(1)
    hits = torch.zeros(m.shape[0], num_classes + 1, dtype=torch.long, device=m.device)
    hits.scatter_(1, flat, 1)
    tags = hits[:, :num_classes].bool()
    tags[:, background] = False
    return tags if mask.ndim == 3 else tags[0]


class TagClassifier(nn.Module):
    """A multi-label image classifier made for class activation maps: an encoder, global
    average pooling, one Linear layer (the architecture CAM needs; Zhou et al. 2016,
    https://arxiv.org/abs/1512.04150).

    The encoder is :func:`minseg.models.backbones.small_resnet` with ``output_stride`` 8 by
    default (dilated last stages), so the CAM is ``H/8 x W/8`` instead of the ``H/32`` of a
    plain classifier: on small images a stride-32 map is a handful of cells. ``forward``
    returns ``N, num_classes`` logits (the background logit exists for index alignment with
    masks and is never trained by :func:`fit_classifier`).
    """

    def __init__(self, num_classes: int, width: int = 16, output_stride: int | None = 8,
                 in_channels: int = 3):
        super().__init__()
        from minseg.models.backbones import small_resnet

        check_num_classes(num_classes)
        self.in_channels = in_channels
        self.encoder = small_resnet(in_channels, width, output_stride)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.encoder.channels[-1], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, ``N, K, h, w``: what the Linear layer sees after pooling."""
        check_images(x, channels=self.in_channels)
        return self.encoder(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def tag_classifier(num_classes: int, width: int = 16, output_stride: int | None = 8) -> TagClassifier:
    """Build a :class:`TagClassifier`."""
    return TagClassifier(num_classes, width, output_stride)


def _features(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    if hasattr(classifier, "features") and callable(classifier.features):
        return classifier.features(images)
    if hasattr(classifier, "encoder"):
        return classifier.encoder(images)[-1]
    raise ValueError("the classifier needs a .features(x) method or an .encoder returning a list "
                     "of feature maps, followed by global average pooling and a Linear .fc")


def _tag_loss(logits: torch.Tensor, tags: torch.Tensor, background: int) -> torch.Tensor:
    keep = [c for c in range(logits.shape[1]) if c != background]
    return F.binary_cross_entropy_with_logits(logits[:, keep], tags[:, keep].float())


def fit_classifier(model: nn.Module, loader, num_classes: int, *, epochs: int | None = None,
                   max_steps: int | None = None, time_budget_s: float | None = None,
                   lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0, device=None,
                   background: int = 0) -> list[dict]:
    """Train ``model`` (images -> ``N, num_classes`` logits) as a multi-label tag classifier.

    The tags of each image come from its mask in the batch (:func:`tags_from_mask`), so pass a
    loader without random crops (e.g. ``build_loaders(cfg, augment=False)``) to train on the
    image-level tags exactly. Loss: binary cross entropy per foreground class (the background
    logit is left out). AdamW, constant learning rate; stops at ``epochs``, ``max_steps`` or
    ``time_budget_s`` (checked after every step), whichever comes first. Returns one record per
    epoch: ``epoch``, ``step``, ``loss`` (mean over the epoch), ``time_s``.
    """
    from minseg.config import device as pick_device, seed_everything

    check_num_classes(num_classes)
    if epochs is None and max_steps is None and time_budget_s is None:
        raise ValueError("say how long to train: epochs, max_steps or time_budget_s")
    seed_everything(seed)
    dev = pick_device(str(device)) if device is not None else pick_device()
    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history, step, t0 = [], 0, time.perf_counter()
    epoch, stop = 0, False
    while not stop and (epochs is None or epoch < epochs):
        epoch += 1
        total, n = 0.0, 0
        for images, masks in loader:
            images = images.to(dev)
            tags = tags_from_mask(masks, num_classes, background).to(dev)
            loss = _tag_loss(model(images), tags, background)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total, n = total + float(loss.detach()) * len(images), n + len(images)
            if (max_steps is not None and step >= max_steps) or \
                    (time_budget_s is not None and time.perf_counter() - t0 >= time_budget_s):
                stop = True
                break
        history.append({"epoch": epoch, "step": step, "loss": total / max(n, 1),
                        "time_s": time.perf_counter() - t0})
    model.eval()
    return history


@torch.no_grad()
def tag_f1(model: nn.Module, loader, num_classes: int, background: int = 0) -> float:
    """Micro-averaged F1 of the predicted tags (logit > 0) against the masks' tags, over a
    loader: how well the classifier knows *what* is in each image."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    tp = fp = fn = 0
    keep = [c for c in range(num_classes) if c != background]
    for images, masks in loader:
        pred = (model(images.to(dev)) > 0).cpu()[:, keep]
        true = tags_from_mask(masks, num_classes, background)[:, keep]
        tp += int((pred & true).sum())
        fp += int((pred & ~true).sum())
        fn += int((~pred & true).sum())
    model.train(was)
    return 2 * tp / max(2 * tp + fp + fn, 1)


@torch.no_grad()
def class_activation_maps(classifier: nn.Module, images: torch.Tensor, *, upsample: bool = True,
                          normalize: bool = True) -> torch.Tensor:
    """Class activation maps (Zhou et al. 2016, https://arxiv.org/abs/1512.04150).

    For a classifier ending in global average pooling and a Linear layer ``fc`` (weights
    ``w[c, k]``), ``CAM_c(x, y) = sum_k w[c, k] f_k(x, y)`` where ``f`` is the last feature map:
    the class score *before* pooling, so the spatial mean of ``CAM_c`` plus the bias is exactly
    the logit of class ``c``. The classifier must expose ``features(x)`` (or an ``encoder``
    returning a list of maps) and ``fc``.

    ``normalize``: ReLU, then divide each map by its maximum (maps in ``[0, 1]``; an all-zero
    map stays 0), the usual preparation for thresholding. ``upsample``: resize to the images'
    ``H, W`` (bilinear, ``align_corners=False``); otherwise the feature resolution. Returns
    ``N, C, H, W`` float; runs in eval mode without gradients.
    """
    check_images(images, "images", channels=None)
    fc = getattr(classifier, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise ValueError("the classifier needs a Linear head named .fc after global average pooling")
    was = classifier.training
    classifier.eval()
    try:
        feats = _features(classifier, images)
    finally:
        classifier.train(was)
    cams = torch.einsum("ck,nkhw->nchw", fc.weight.to(feats.dtype), feats)
    if normalize:
        cams = cams.relu()
        cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    if upsample:
        cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if normalize:
            cams = cams.clamp(0, 1)
    return cams


def _tag_matrix(tags, n: int, num_classes: int) -> torch.Tensor:
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
    ``N, C`` (:func:`tags_from_mask`) or one iterable of class ids per image. Returns ``int64
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


def cam_pseudo_labels_for(dataset, classifier: nn.Module, threshold: float = 0.3, *,
                          ignore_below: float | None = None, batch_size: int = 16) -> list[torch.Tensor]:
    """CAM pseudo-labels for every image of a :class:`~minseg.data.VOCSegmentationDataset`, at
    each image's own resolution (ready for ``WeakLabelDataset(..., kind="pseudo", masks=...)``).

    Images are read with :meth:`~minseg.data.VOCSegmentationDataset.raw` and normalised as for
    evaluation; tags come from the full masks (the image-level label). Images of the same size
    are batched together.
    """
    from minseg.data.transforms import eval_transforms
    from torchvision import tv_tensors

    tf = eval_transforms(None)
    dev = next(classifier.parameters()).device
    items = []
    for i in range(len(dataset)):
        img, mask = dataset.raw(i)
        x = tf(tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).contiguous()))
        items.append((x.as_subclass(torch.Tensor), mask))
    out: list[torch.Tensor | None] = [None] * len(items)
    by_size: dict[tuple, list[int]] = {}
    for i, (x, _) in enumerate(items):
        by_size.setdefault(tuple(x.shape), []).append(i)
    for idx in by_size.values():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            x = torch.stack([items[i][0] for i in chunk]).to(dev)
            cams = class_activation_maps(classifier, x).cpu()
            tags = torch.stack([tags_from_mask(items[i][1], cams.shape[1]) for i in chunk])
            labels = cam_to_pseudo_labels(cams, tags, threshold, ignore_below=ignore_below)
            for i, lab in zip(chunk, labels):
                out[i] = lab
    return out  # type: ignore[return-value]


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
    :func:`tags_from_mask` never sets it). It is the *reference* class instead: the per-pixel
    score of a foreground class ``c`` is its margin over background, ``z_c - z_bg``, the
    log-odds of ``c`` against background. A pixel is predicted ``c`` (by the usual argmax)
    only where that margin is positive, so "some pixel is ``c``" is exactly "the max of the
    margin is > 0", and an image without ``c`` pushes the margin down at its pixels, which is
    what teaches the network background. ``background=None``: no reference class; the raw
    logits are pooled and every class, 0 included, is a tag.

    ``target``: either the tags, bool ``N, C`` (every pixel is in the bag), or an ``int64
    N, H, W`` mask as :func:`minseg.train.fit` passes it. A mask is read *only* through which
    classes occur in it (the tags, as :func:`tags_from_mask`) and which pixels are
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
        check_mask(target, C, "target", ignore_index=ignore_index)
        valid = target != ignore_index
        # class presence per image: scatter a 1 at each pixel's class (ignored -> an extra slot C)
        hits = torch.zeros(n, C + 1, dtype=torch.bool, device=target.device)
        hits.scatter_(1, torch.where(valid, target.long(), C).flatten(1), True)
        tags = hits[:, :C].to(logits.device)
        valid = valid.to(logits.device)
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


# ---------------------------------------------------------------------------------------------
# a dataset whose loader yields weak masks
# ---------------------------------------------------------------------------------------------
WEAK_KINDS = ("full", "points", "scribbles", "boxes", "pseudo")


class WeakLabelDataset(Dataset):
    """A :class:`~minseg.data.VOCSegmentationDataset` whose masks are replaced by weak labels.

    ``kind``:

    * ``"full"``: the full mask (the baseline, through the same code path);
    * ``"points"``: :func:`points_from_mask` (``options``: ``points_per_class``, ``radius``,
      ``per_object=True`` to click every object, using the instance PNG);
    * ``"scribbles"``: :func:`scribbles_from_mask` (``vertices``, ``width``, ``margin``,
      ``min_area``; one stroke per object from the instance PNG unless ``per_object=False``);
    * ``"boxes"``: :func:`boxes_to_masks` of the tight boxes of the objects
      (:func:`boxes_from_instances` on the instance PNG; ``inner`` for a void rim);
    * ``"pseudo"``: the given ``masks`` (one ``H,W`` tensor per image at the image's
      resolution, e.g. from :func:`cam_pseudo_labels_for`).

    The weak mask is made at the image's own resolution, deterministically from
    ``[seed, index]`` (the same image always gets the same clicks, as a real annotation
    would), cached, and then goes through the base dataset's joint transforms with the image,
    so augmentation moves the labels with the pixels. ``raw(i)`` gives the untransformed image
    and weak mask; ``full_mask(i)`` the full one for comparison.
    """

    def __init__(self, base, kind: str = "points", *, seed: int = 0,
                 masks: Sequence[torch.Tensor] | None = None, **options):
        if kind not in WEAK_KINDS:
            raise ValueError(f"unknown kind {kind!r}; valid kinds are {', '.join(WEAK_KINDS)}")
        if kind == "pseudo":
            if masks is None or len(masks) != len(base):
                raise ValueError("kind='pseudo' needs masks=[one H,W tensor per image] "
                                 f"({len(base)} images)")
        elif masks is not None:
            raise ValueError(f"masks= is only for kind='pseudo', not {kind!r}")
        allowed = {"full": set(), "pseudo": set(),
                   "points": {"points_per_class", "radius", "per_object", "include_background"},
                   "scribbles": {"vertices", "width", "margin", "min_area", "include_background",
                                 "per_object"},
                   "boxes": {"inner"}}[kind]
        unknown = set(options) - allowed
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)} for kind={kind!r}; valid: "
                             f"{sorted(allowed) or 'none'}")
        self.base, self.kind, self.seed, self.options = base, kind, seed, dict(options)
        self._masks = list(masks) if masks is not None else None
        self._cache: dict[int, torch.Tensor] = {}

    # the base dataset's description
    @property
    def classes(self):
        return self.base.classes

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def names(self):
        return self.base.names

    def __len__(self) -> int:
        return len(self.base)

    def full_mask(self, i: int) -> torch.Tensor:
        """The full (remapped) mask of image ``i`` at its own resolution."""
        from minseg.data.voc import read_mask

        return self.base.lut[read_mask(self.base.mask_path(i))]

    def instances(self, i: int) -> torch.Tensor:
        """Object ids of image ``i`` (its ``SegmentationObject`` PNG): ``> 0`` per object,
        0 background, 255 void."""
        from PIL import Image

        with Image.open(self.base.instance_path(i)) as im:
            return torch.from_numpy(np.array(im)).long()

    def weak_mask(self, i: int) -> torch.Tensor:
        """The weak mask of image ``i`` at its own resolution (``int64 H,W``, 255 unlabelled)."""
        if i < 0:
            i += len(self)
        if i in self._cache:
            return self._cache[i]
        if self.kind == "pseudo":
            m = self._masks[i].long()
            full = self.full_mask(i)
            if m.shape != full.shape:
                raise ValueError(f"pseudo mask {i} has shape {tuple(m.shape)}, image is "
                                 f"{tuple(full.shape)}")
            self._cache[i] = m
            return m
        full = self.full_mask(i)
        seed = [self.seed, i]
        opt = dict(self.options)
        if self.kind == "full":
            m = full
        elif self.kind == "points":
            per_object = opt.pop("per_object", False)
            m = points_from_mask(full, seed=seed, instances=self.instances(i) if per_object else None,
                                 **opt)
        elif self.kind == "scribbles":
            per_object = opt.pop("per_object", True)
            m = scribbles_from_mask(full, seed=seed, instances=self.instances(i) if per_object else None,
                                    **opt)
        else:  # boxes
            boxes = boxes_from_instances(full, self.instances(i))
            m = boxes_to_masks(boxes, tuple(full.shape), **opt)
        self._cache[i] = m
        return m

    def raw(self, i: int) -> tuple[np.ndarray, torch.Tensor]:
        """The untransformed ``uint8 H,W,3`` image and its weak mask."""
        img, _ = self.base.raw(i)
        return img, self.weak_mask(i)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF

        with Image.open(self.base.image_path(i)) as im:
            image = tv_tensors.Image(TF.pil_to_tensor(im.convert("RGB")))
        mask = tv_tensors.Mask(self.weak_mask(i))
        image, mask = self.base.transforms(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def label_quality(dataset: WeakLabelDataset, limit: int | None = None) -> dict:
    """How good the weak labels of ``dataset`` are, against its full masks (void excluded):
    ``labelled`` (fraction of non-void pixels that carry a label), ``accuracy`` (fraction of
    labelled pixels whose label is right) and ``miou`` (of the labelled pixels, from one
    confusion matrix over the images). Points and scribbles: few pixels, all right; boxes and
    CAM pseudo-labels: every pixel, some wrong."""
    from minseg.metrics import ConfusionMatrix

    n = len(dataset) if limit is None else min(limit, len(dataset))
    cm = ConfusionMatrix(dataset.num_classes)
    labelled = valid = 0
    for i in range(n):
        full, weak = dataset.full_mask(i), dataset.weak_mask(i)
        ok = full != IGNORE_INDEX
        lab = ok & (weak != IGNORE_INDEX)
        valid += int(ok.sum())
        labelled += int(lab.sum())
        cm.update(weak[lab][None], full[lab][None])
    res = cm.compute() if labelled else {"pixel_acc": float("nan"), "miou": float("nan")}
    return {"labelled": labelled / max(valid, 1), "accuracy": res["pixel_acc"], "miou": res["miou"]}

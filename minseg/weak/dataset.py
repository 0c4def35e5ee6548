"""A dataset whose loader yields weak masks, CAM pseudo-labels for it, and their quality."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from minseg.classification import cam_to_pseudo_labels, class_activation_maps
from minseg.data.contents import class_presence
from minseg.validate import IGNORE_INDEX
from minseg.weak.labels import (boxes_from_instances, boxes_to_masks, points_from_mask,
                                scribbles_from_mask)


# ---------------------------------------------------------------------------------------------
# image tags: a classifier, its class activation maps, pseudo-labels
# ---------------------------------------------------------------------------------------------
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
            tags = torch.stack([class_presence(items[i][1], cams.shape[1], background=0)
                                for i in chunk])
            labels = cam_to_pseudo_labels(cams, tags, threshold, ignore_below=ignore_below)
            for i, lab in zip(chunk, labels):
                out[i] = lab
    return out  # type: ignore[return-value]


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

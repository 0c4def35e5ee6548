"""What a label map contains: which classes occur in an image, and how many objects.

Three ideas of the course rest on the same question, "which classes does this image show?":
an image classifier's multi-hot targets (lesson 2), the image-level *tags* of weak
supervision (lesson 14) and class-balanced sampling of rare classes (lesson 10). They all call
:func:`class_presence` (one mask or a batch) or :func:`image_class_presence` (a whole dataset).
Counting objects for a labelling budget (lessons 14 and 18) calls :func:`count_instances`.

Masks follow the package convention: integer class ids ``0..C-1`` and ``255`` (void) for
pixels that belong to no class. Instance maps are VOC's ``SegmentationObject`` PNGs: ids
``1..K`` per object, ``0`` background, ``255`` void.
"""
from __future__ import annotations

from typing import Iterable

import torch

from minseg.validate import IGNORE_INDEX, check_mask, check_num_classes

__all__ = ["class_presence", "image_class_presence", "count_instances"]


def class_presence(masks: torch.Tensor, num_classes: int, *,
                   ignore_index: int | None = IGNORE_INDEX,
                   background: int | None = None) -> torch.Tensor:
    """Which classes occur in each mask: ``H,W -> [C]`` or ``N,H,W -> [N, C]``, bool.

    ``out[n, c]`` is True when mask ``n`` has at least one pixel labelled ``c``; pixels equal
    to ``ignore_index`` count for no class. ``background``: a class id that is never reported
    present (image-level *tags* leave out the background, which nearly every image has).
    Ids outside ``0..C-1`` (other than ``ignore_index``) raise ``ValueError``.
    """
    check_num_classes(num_classes)
    if masks.ndim not in (2, 3):
        raise ValueError(f"masks must have shape H,W or N,H,W; got {tuple(masks.shape)}")
    check_mask(masks, num_classes, "masks", ignore_index=ignore_index)
    m = masks if masks.ndim == 3 else masks[None]
    flat = m.reshape(m.shape[0], -1).long()
    if ignore_index is not None:
        # Void pixels go to a spill-over column C that is dropped below.
        flat = torch.where(flat == ignore_index, num_classes, flat)
    hits = torch.zeros(m.shape[0], num_classes + 1, dtype=torch.bool, device=m.device)
    hits.scatter_(1, flat, True)
    present = hits[:, :num_classes]
    if background is not None:
        if not 0 <= background < num_classes:
            raise ValueError(f"background must be a class id in 0..{num_classes - 1}, got {background}")
        present[:, background] = False
    return present if masks.ndim == 3 else present[0]


def _masks(dataset) -> Iterable[torch.Tensor]:
    """The masks of a dataset, read cheaply when possible.

    A :class:`minseg.data.TensorSegmentationData` gives its stored (un-augmented) masks; a
    :class:`minseg.data.VOCSegmentationDataset` is read from its PNGs with its class remapping
    and *without* its transforms (a random crop could drop a class); any other dataset is
    indexed and the last element of each item is taken as the mask.
    """
    masks = getattr(dataset, "masks", None)
    if isinstance(masks, torch.Tensor) and masks.ndim == 3:  # decoded tensors, un-augmented
        yield from masks.long()
        return
    if hasattr(dataset, "mask_path") and hasattr(dataset, "lut"):
        from minseg.data.voc import read_mask

        for i in range(len(dataset)):
            yield dataset.lut[read_mask(dataset.mask_path(i))]
        return
    for i in range(len(dataset)):
        item = dataset[i]
        yield torch.as_tensor(item[-1] if isinstance(item, (tuple, list)) else item)


def image_class_presence(dataset, num_classes: int,
                         ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """:func:`class_presence` of every image of a dataset: bool ``[N, C]``.

    ``dataset`` is indexable and sized; its masks are read as :func:`_masks` says (decoded
    tensors, VOC PNGs without transforms, or the last element of each item). Images may differ
    in size. An empty dataset raises ``ValueError``.
    """
    check_num_classes(num_classes)
    rows = [class_presence(mask, num_classes, ignore_index=ignore_index) for mask in _masks(dataset)]
    if not rows:
        raise ValueError("the dataset is empty")
    return torch.stack(rows)


def count_instances(instances: torch.Tensor, mask: torch.Tensor | None = None, *,
                    ignore_index: int = IGNORE_INDEX, background: int = 0) -> int:
    """Number of labelled objects in one instance map: its distinct ids other than 0 and
    ``ignore_index``. With the class ``mask`` of the same image, ids found only on background
    or void pixels of the mask are not counted (an instance must cover an object pixel)."""
    if mask is not None and mask.shape != instances.shape:
        raise ValueError(f"instances {tuple(instances.shape)} and mask {tuple(mask.shape)} must "
                         "have the same shape")
    keep = (instances != 0) & (instances != ignore_index)
    if mask is not None:
        keep &= (mask != background) & (mask != ignore_index)
    return int(torch.unique(instances[keep]).numel())

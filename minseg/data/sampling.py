"""Class-balanced image sampling: show images that contain rare classes more often.

Re-weighting the *loss* (``minseg.losses.class_weights``) changes how much each pixel counts;
re-weighting the *data* changes which images the model sees. For segmentation an image holds
several classes, so an image cannot be drawn "for" one class alone; the usual rule, repeat factor
sampling (Gupta et al. 2019, LVIS, https://arxiv.org/abs/1908.03195, section 3), gives every
class a factor from how many images contain it and gives an image the largest factor of the
classes it contains:

* ``f_c`` = fraction of the images that contain class ``c`` (at least one valid pixel);
* class factor ``r_c = (1 / f_c) ** power``, or with a ``threshold`` t,
  ``r_c = max(1, (t / f_c) ** power)`` (LVIS: ``power = 0.5``; classes in more than a fraction t
  of the images are not over-sampled);
* image weight ``w_i = max_{c in image i} r_c`` over the classes that are not in
  ``ignore_classes`` (default: background, present in almost every image); an image with no
  such class gets the smallest class factor.

:func:`class_balanced_sampler` wraps the weights in a ``torch.utils.data.WeightedRandomSampler``
(with replacement), to pass as ``DataLoader(dataset, sampler=...)``;
:func:`minseg.train.fit` keeps such a custom sampler as it is.

Import it from this module: ``from minseg.data.sampling import class_balanced_sampler``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from minseg.validate import IGNORE_INDEX, check_mask, check_num_classes

__all__ = ["image_class_presence", "balanced_image_weights", "class_balanced_sampler"]


def _masks(dataset) -> Iterable[torch.Tensor]:
    """The masks of a dataset, read cheaply when possible.

    A :class:`minseg.data.VOCSegmentationDataset` is read from its PNGs with its class remapping
    and *without* its transforms (a random crop could drop a class); any other dataset is
    indexed and the last element of each item is taken as the mask.
    """
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
    """Boolean ``N x C`` tensor: ``[i, c]`` is True when image ``i`` has a pixel of class ``c``
    (pixels equal to ``ignore_index`` do not count). ``dataset`` is indexable and sized; see
    :func:`_masks` for how its masks are read. Ids outside ``0..C-1`` raise ``ValueError``."""
    check_num_classes(num_classes)
    rows = []
    for mask in _masks(dataset):
        check_mask(mask, num_classes, "mask", ignore_index=ignore_index)
        ids = mask.reshape(-1).long()
        if ignore_index is not None:
            ids = ids[ids != ignore_index]
        rows.append(torch.bincount(ids, minlength=num_classes) > 0)
    if not rows:
        raise ValueError("the dataset is empty")
    return torch.stack(rows)


def balanced_image_weights(presence: torch.Tensor, power: float = 0.5,
                           threshold: float | None = None,
                           ignore_classes: Sequence[int] = (0,)) -> torch.Tensor:
    """Per-image sampling weights (float64 ``[N]``) from an ``N x C`` presence matrix; see the
    module docstring for the rule. ``power=0`` gives uniform weights. Classes that occur in no
    image, and those in ``ignore_classes``, play no part."""
    p = torch.as_tensor(presence).bool()
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"presence must be a non-empty N x C matrix; got shape {tuple(p.shape)}")
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    N, C = p.shape
    bad = [c for c in ignore_classes if not 0 <= c < C]
    if bad:
        raise ValueError(f"ignore_classes {bad} are not class ids 0..{C - 1}")
    counted = p.clone()
    counted[:, list(ignore_classes)] = False
    freq = counted.sum(0).double() / N  # fraction of images containing each class
    occurs = freq > 0
    if not bool(occurs.any()):
        return torch.ones(N, dtype=torch.float64)
    factor = torch.zeros(C, dtype=torch.float64)
    base = (threshold / freq[occurs]) if threshold is not None else (1.0 / freq[occurs])
    factor[occurs] = base.pow(power)
    if threshold is not None:
        factor[occurs] = factor[occurs].clamp_min(1.0)
    per_image = torch.where(counted, factor.expand(N, C), torch.zeros(()).double()).amax(1)
    floor = float(factor[occurs].min())
    return torch.where(per_image > 0, per_image, torch.full_like(per_image, floor))


def class_balanced_sampler(dataset, num_classes: int, *, power: float = 0.5,
                           threshold: float | None = None, ignore_classes: Sequence[int] = (0,),
                           num_samples: int | None = None,
                           ignore_index: int | None = IGNORE_INDEX,
                           generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` that draws images containing rare classes more often.

    Weights come from :func:`balanced_image_weights` of :func:`image_class_presence`
    (``power=0.5``: the square-root rule of repeat factor sampling, LVIS,
    https://arxiv.org/abs/1908.03195; ``power=1``: full inverse image frequency). Draws
    ``num_samples`` indices per epoch (default ``len(dataset)``) with replacement; pass a seeded
    ``generator`` for a reproducible order. The weights are kept on the sampler as
    ``sampler.weights`` (normalised by torch) and the presence matrix as ``sampler.presence``.

    >>> sampler = class_balanced_sampler(train_ds, train_ds.num_classes)    # doctest: +SKIP
    >>> loader = DataLoader(train_ds, batch_size=16, sampler=sampler)        # doctest: +SKIP
    """
    presence = image_class_presence(dataset, num_classes, ignore_index)
    weights = balanced_image_weights(presence, power, threshold, ignore_classes)
    n = len(dataset) if num_samples is None else int(num_samples)
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    sampler = WeightedRandomSampler(weights, n, replacement=True, generator=generator)
    sampler.presence = presence
    return sampler

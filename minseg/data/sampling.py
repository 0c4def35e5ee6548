"""Which images a training run sees, in which order, on which process.

Two jobs live here, and only here:

* **Data order.** :class:`EpochSampler` gives epoch ``e`` the permutation
  ``torch.randperm(n, generator=Generator().manual_seed(seed + e))`` (a ``DistributedSampler``,
  also with one process), shards it over ``world`` processes and can start part-way through an
  epoch. :func:`seeded_loader` puts it under any training data :func:`minseg.train.fit` accepts
  (a :class:`minseg.data.TensorLoader`, a ``DataLoader`` or a list of batches) and returns an
  object with ``set_epoch(epoch, start_batch)``, so the order of any step can be rebuilt from
  ``(seed, epoch)`` alone: that is what makes resume exact. :func:`eval_shard` gives each
  process its share of a validation set, every sample exactly once.
* **Class-balanced sampling**: show images that contain rare classes more often.

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

from typing import Sequence

import torch
from torch.utils.data import (DataLoader, Dataset, DistributedSampler, IterableDataset,
                              RandomSampler, Sampler, SequentialSampler, WeightedRandomSampler)

from minseg.data.contents import image_class_presence
from minseg.validate import IGNORE_INDEX

__all__ = ["EpochSampler", "ShardSampler", "seeded_loader", "eval_shard",
           "balanced_image_weights", "class_balanced_sampler"]


# --------------------------------------------------------------------------- data order
class EpochSampler(DistributedSampler):
    """A ``DistributedSampler`` (one replica when not distributed) that can start mid-epoch.

    Epoch ``e``'s order is a function of ``(seed, e)`` only; ``start`` skips the first indices of
    this rank's share (set by :meth:`_Seeded.set_epoch` when a run resumes inside an epoch).
    Under DDP the share of each rank is padded with repeats to equal length, as torch does.
    """

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world: int = 1):
        super().__init__(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(Sampler):
    """Rank ``r`` of ``w`` gets indices ``r, r + w, r + 2w, ...``: every sample exactly once over
    all ranks (a ``DistributedSampler`` pads with repeats, which would count pixels twice)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        self.indices = range(rank, n, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _Seeded:
    """A ``DataLoader`` rebuilt around an :class:`EpochSampler`; ``set_epoch`` picks the epoch,
    the first batch and the seed of the worker processes."""

    def __init__(self, loader: DataLoader, seed: int, rank: int, world: int):
        shuffle = not isinstance(loader.sampler, SequentialSampler)
        if isinstance(loader.sampler, DistributedSampler):
            shuffle = loader.sampler.shuffle
        self.sampler = EpochSampler(len(loader.dataset), shuffle=shuffle, seed=seed, rank=rank,
                                    world=world)
        self.generator, self.seed, self.rank = torch.Generator(), seed, rank
        self.loader = _rebuild(loader, self.sampler, self.generator)
        self.dataset, self.batch_size = loader.dataset, loader.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.sampler.start = start_batch * self.batch_size
        self.generator.manual_seed(self.seed + 1_000_003 * epoch + 7919 * self.rank)  # workers

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


class _AsGiven:
    """Training data whose own order is kept (a custom sampler, a list of batches)."""

    def __init__(self, data):
        self.data, self.start = data, 0
        self.dataset = getattr(data, "dataset", None)
        self.batch_size = getattr(data, "batch_size", None)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.start = start_batch

    def __iter__(self):
        if self.start and isinstance(self.data, (list, tuple)):
            return iter(self.data[self.start:])
        return iter(self.data)  # a custom sampler: its own order (not resumable mid-epoch)

    def __len__(self) -> int:
        return len(self.data)


def _rebuild(loader: DataLoader, sampler: Sampler, generator: torch.Generator | None) -> DataLoader:
    """The same loader (batch size, collate, workers, pinning, drop_last) with another sampler."""
    kw = dict(batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
              collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
              drop_last=loader.drop_last, timeout=loader.timeout,
              worker_init_fn=loader.worker_init_fn, generator=generator,
              multiprocessing_context=loader.multiprocessing_context,
              persistent_workers=loader.persistent_workers)
    if loader.num_workers > 0:
        kw["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(loader.dataset, **kw)


def _reseedable(loader: DataLoader) -> bool:
    return (loader.batch_size is not None and not isinstance(loader.dataset, IterableDataset)
            and isinstance(loader.sampler, (RandomSampler, SequentialSampler, DistributedSampler)))


def seeded_loader(data, seed: int, rank: int = 0, world: int = 1, batch_size: int | None = None):
    """``data`` with its order owned by ``(seed, epoch, rank)``; has ``set_epoch(epoch, start)``.

    * a :class:`minseg.data.TensorLoader`: a copy with an :class:`EpochSampler` for this seed and
      rank (its augmentation is seeded from the same numbers);
    * a ``DataLoader`` that shuffles or not: rebuilt around an :class:`EpochSampler` (batch size,
      collate function, workers kept), worker seeds set per epoch;
    * a map-style ``Dataset``: batched with ``batch_size`` and shuffled;
    * a ``DataLoader`` with a custom sampler (e.g. ``WeightedRandomSampler``) or a list of
      batches: used as it is (one process only).
    """
    from minseg.data.loader import TensorLoader

    if isinstance(data, TensorLoader):
        return data.reseeded(seed, rank, world)
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        from minseg.config import profile

        data = DataLoader(data, batch_size=batch_size or profile().batch_size, shuffle=True)
    if isinstance(data, DataLoader) and _reseedable(data):
        return _Seeded(data, seed, rank, world)
    if world > 1:
        raise ValueError(f"under DDP fit shards the data with a DistributedSampler, but this data "
                         f"({type(data).__name__}) has a custom sampler or no dataset to sample "
                         f"from; pass a TensorLoader, or a DataLoader with shuffle=True/False over "
                         f"a map-style Dataset")
    return _AsGiven(data)


def eval_shard(data, rank: int = 0, world: int = 1, batch_size: int | None = None):
    """``data`` restricted to this rank's share of the samples (everything when not distributed)."""
    from minseg.data.loader import TensorLoader

    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        from minseg.config import profile

        data = DataLoader(data, batch_size=batch_size or profile().batch_size)
    if world == 1:
        return data
    if isinstance(data, TensorLoader):
        return data.sharded(rank, world)
    if isinstance(data, DataLoader) and data.batch_size is not None and \
            not isinstance(data.dataset, IterableDataset):
        if isinstance(data.sampler, DistributedSampler):
            return data  # already sharded by the caller
        return _rebuild(data, ShardSampler(len(data.dataset), rank, world), None)
    return [b for i, b in enumerate(data) if i % world == rank]  # shard whole batches


# --------------------------------------------------------------------------- class balance


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

    Weights come from :func:`balanced_image_weights` of :func:`minseg.data.contents.image_class_presence`
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

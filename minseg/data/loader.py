"""A loader over decoded tensors: batches straight from memory, augmented on the device.

:class:`TensorLoader` is what :func:`minseg.data.build_loaders` returns and what
:func:`minseg.train.fit` trains from fastest. It is not a framework, just an iterable of
``(images, masks)`` batches with a length, like a ``DataLoader``:

>>> train = TensorLoader(decoded_split(root, "train", size=96), batch_size=16,
...                      augment=BatchAugment(), seed=0)                  # doctest: +SKIP
>>> images, masks = next(iter(train))   # float N,3,96,96 (normalised), int64 N,96,96

Each epoch's order comes from :class:`minseg.data.sampling.EpochSampler` and each batch's
augmentation from a generator seeded with ``(seed, epoch, batch, rank)``, so any batch of any
epoch can be rebuilt exactly, which makes resuming a run bit-identical without saving the
loader's state. Iterating it directly moves to the next epoch each time, like a shuffling
``DataLoader``; :func:`minseg.train.fit` picks the epoch itself with :meth:`set_epoch`.
"""
from __future__ import annotations

import numpy as np
import torch

from minseg.data.augment import BatchAugment
from minseg.data.sampling import EpochSampler, ShardSampler
from minseg.data.tensors import TensorSegmentationData, normalize_uint8

__all__ = ["TensorLoader"]


def _batch_seed(*numbers: int) -> int:
    """A 63-bit seed mixed from ``(seed, epoch, batch, rank)`` (NumPy's ``SeedSequence``)."""
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


class TensorLoader:
    """Batches of a :class:`~minseg.data.tensors.TensorSegmentationData`.

    Args:
        data: the decoded split (moved to ``device`` once, when given).
        batch_size: images per batch.
        shuffle: a new random order every epoch (default True); False keeps the stored order.
        drop_last: drop the last, smaller batch (default: ``shuffle``, i.e. for training).
        augment: a :class:`~minseg.data.augment.BatchAugment`, or None for none (validation).
        seed: seeds the order and the augmentation; :func:`minseg.train.fit` replaces it with
            its own ``seed``.
        device: where the tensors live and augmentation runs (e.g. ``"cuda"``).
    """

    def __init__(self, data: TensorSegmentationData, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool | None = None, augment: BatchAugment | None = None,
                 seed: int = 0, device: str | torch.device | None = None):
        if not isinstance(data, TensorSegmentationData):
            raise TypeError(f"TensorLoader needs a TensorSegmentationData (see "
                            f"minseg.data.decoded_split), got {type(data).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        # moved once, so every batch is gathered and augmented on the device
        self.dataset = data.to(device) if device is not None else data
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.drop_last = shuffle if drop_last is None else drop_last
        if self.drop_last and len(data) < batch_size:
            self.drop_last = False  # a split smaller than one batch still gives one batch
        self.seed, self.rank = seed, 0
        self.sampler = EpochSampler(len(data), shuffle=shuffle, seed=seed)
        self._epoch, self._start, self._auto = 0, 0, True

    # --- what fit needs
    def reseeded(self, seed: int, rank: int = 0, world: int = 1) -> "TensorLoader":
        """A copy whose order and augmentation come from ``seed`` (this rank's share of it)."""
        new = object.__new__(TensorLoader)
        new.__dict__.update(self.__dict__)
        new.seed, new.rank = seed, rank
        new.sampler = EpochSampler(len(self.dataset), shuffle=self.shuffle, seed=seed, rank=rank,
                                   world=world)
        new._epoch, new._start, new._auto = 0, 0, True
        return new

    def sharded(self, rank: int, world: int) -> "TensorLoader":
        """A copy that visits every ``world``-th sample from ``rank`` in order (evaluation)."""
        new = self.reseeded(self.seed, rank, 1)
        new.sampler, new.shuffle, new.drop_last = ShardSampler(len(self.dataset), rank, world), False, False
        return new

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, from its batch ``start_batch`` on."""
        self._epoch, self._start, self._auto = epoch, start_batch, False

    # --- iteration
    def __len__(self) -> int:
        n = self.sampler.num_samples if isinstance(self.sampler, EpochSampler) else len(self.sampler)
        # -(-n // b) = ceil(n / b) in integers
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        epoch, start = self._epoch, self._start
        # plain iteration advances the epoch; set_epoch pins it for one pass
        if self._auto:
            self._epoch += 1
        self._start = 0
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int):
        if isinstance(self.sampler, EpochSampler):
            self.sampler.set_epoch(epoch)
            # skipping happens below by batch index, so the sampler yields the whole epoch
            self.sampler.start = 0
        order = torch.as_tensor(list(self.sampler), dtype=torch.long)
        data = self.dataset
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size].to(data.images.device)
            images, masks = data.images[idx], data.masks[idx]
            if self.augment is None:
                yield normalize_uint8(images), masks.long()
            else:
                # a fresh generator per batch: any batch of any epoch can be rebuilt on its own
                g = torch.Generator().manual_seed(_batch_seed(self.seed, epoch, b, self.rank))
                yield self.augment(images, masks, g)

    def __repr__(self) -> str:
        return (f"TensorLoader({self.dataset!r}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, augment={self.augment})")

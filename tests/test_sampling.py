"""Class-balanced image sampling (minseg.data.sampling)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from minseg.data import VOCSegmentationDataset
from minseg.data.contents import image_class_presence
from minseg.data.sampling import balanced_image_weights, class_balanced_sampler


def _mask(*ids, size=4):
    """A size x size mask whose first pixels hold ``ids`` and the rest background."""
    m = torch.zeros(size * size, dtype=torch.int64)
    m[:len(ids)] = torch.tensor(ids)
    return m.reshape(size, size)


def _dataset():
    # 3 classes: 0 background, 1 common (3 of 4 images), 2 rare (1 of 4); one void pixel
    masks = [_mask(1), _mask(1, 255), _mask(1, 2), _mask()]
    return [(torch.zeros(3, 4, 4), m) for m in masks]


def test_presence_ignores_void_and_reads_pairs():
    p = image_class_presence(_dataset(), 3)
    assert p.dtype == torch.bool and p.shape == (4, 3)
    assert p.tolist() == [[True, True, False], [True, True, False], [True, True, True],
                          [True, False, False]]


def test_presence_rejects_bad_ids():
    with pytest.raises(ValueError, match="outside"):
        image_class_presence([(None, _mask(3))], 3)
    with pytest.raises(ValueError, match="empty"):
        image_class_presence([], 3)


def test_weights_follow_the_rule():
    p = image_class_presence(_dataset(), 3)
    # image frequencies (background ignored): f1 = 3/4, f2 = 1/4
    w = balanced_image_weights(p, power=1.0)
    r1, r2 = 4 / 3, 4.0
    assert torch.allclose(w, torch.tensor([r1, r1, r2, r1], dtype=torch.float64))
    # power 0.5: square roots; the background-only image gets the smallest class factor
    w = balanced_image_weights(p, power=0.5)
    assert torch.allclose(w, torch.tensor([r1, r1, r2, r1], dtype=torch.float64).sqrt())
    # uniform with power 0
    assert torch.equal(balanced_image_weights(p, power=0.0), torch.ones(4, dtype=torch.float64))


def test_threshold_is_repeat_factor_sampling():
    p = image_class_presence(_dataset(), 3)
    w = balanced_image_weights(p, power=0.5, threshold=0.5)
    # LVIS: r_c = max(1, sqrt(t / f_c)): class 1 (f = 0.75) -> 1, class 2 (f = 0.25) -> sqrt(2)
    assert torch.allclose(w, torch.tensor([1, 1, math.sqrt(2), 1], dtype=torch.float64))


def test_background_can_be_counted():
    p = image_class_presence(_dataset(), 3)
    w = balanced_image_weights(p, power=1.0, ignore_classes=())
    # background is in every image (factor 1); an image's weight is its rarest class's factor
    assert torch.allclose(w, torch.tensor([4 / 3, 4 / 3, 4.0, 1.0], dtype=torch.float64))


def test_weights_validate_arguments():
    p = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="power"):
        balanced_image_weights(p, power=-1)
    with pytest.raises(ValueError, match="threshold"):
        balanced_image_weights(p, threshold=0)
    with pytest.raises(ValueError, match="ignore_classes"):
        balanced_image_weights(p, ignore_classes=(5,))
    with pytest.raises(ValueError, match="N x C"):
        balanced_image_weights(torch.ones(3, dtype=torch.bool))
    # nothing but ignored classes: uniform
    only_bg = torch.tensor([[True, False], [True, False]])
    assert torch.equal(balanced_image_weights(only_bg), torch.ones(2, dtype=torch.float64))


def test_sampler_draws_rare_images_more_often():
    ds = _dataset()
    g = torch.Generator().manual_seed(0)
    s = class_balanced_sampler(ds, 3, power=1.0, num_samples=20_000, generator=g)
    assert isinstance(s, WeightedRandomSampler) and len(s) == 20_000
    counts = torch.bincount(torch.tensor(list(s)), minlength=4).double() / 20_000
    expected = torch.tensor([4 / 3, 4 / 3, 4.0, 4 / 3]) / 8.0
    assert torch.allclose(counts, expected.double(), atol=0.02)
    assert s.presence.shape == (4, 3)
    # the same generator seed gives the same draws
    a = list(class_balanced_sampler(ds, 3, generator=torch.Generator().manual_seed(1)))
    b = list(class_balanced_sampler(ds, 3, generator=torch.Generator().manual_seed(1)))
    assert a == b and len(a) == len(ds)
    with pytest.raises(ValueError, match="num_samples"):
        class_balanced_sampler(ds, 3, num_samples=0)


def test_sampler_on_a_voc_dataset(voc_root):
    ds = VOCSegmentationDataset(voc_root, "train", classes=["person", "car"])
    s = class_balanced_sampler(ds, ds.num_classes, generator=torch.Generator().manual_seed(0))
    # the fast path reads the PNGs with the class remapping: same as reading the items
    slow = torch.stack([torch.bincount(m[m != 255].reshape(-1), minlength=3) > 0
                        for _, m in (ds[i] for i in range(len(ds)))])
    assert torch.equal(s.presence, slow)
    loader = DataLoader(ds, batch_size=4, sampler=s)
    images, masks = next(iter(loader))
    assert images.shape[0] == 4 and masks.dtype == torch.int64

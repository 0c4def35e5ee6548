"""Decoded-tensor data: the cache, batched augmentation and the TensorLoader."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from minseg.data import (BatchAugment, TensorLoader, VOCSegmentationDataset, decoded_split,
                         eval_transforms)
from minseg.data.tensors import _square, normalize_uint8


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "cache"


def _no_warnings():
    return warnings.catch_warnings(record=True)


# ---------------------------------------------------------------------------------------------
# decoding and the cache
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [None, ["person", "car"]])
def test_the_cache_round_trip_equals_the_reader_exactly(voc_root, cache, classes):
    reader = VOCSegmentationDataset(voc_root, "train", classes=classes)
    data = decoded_split(voc_root, "train", size=64, classes=classes, cache_dir=cache)
    assert len(data) == len(reader) and data.classes == reader.classes
    assert data.images.dtype == torch.uint8 and data.masks.dtype == torch.uint8
    for i in range(len(reader)):
        img, mask = reader.raw(i)
        assert torch.equal(data.images[i], torch.from_numpy(img).permute(2, 0, 1))
        assert torch.equal(data.masks[i].long(), mask)
        x, y = data[i]  # the same tensors as the per-sample pipeline without augmentation
        rx, ry = VOCSegmentationDataset(voc_root, "train", classes=classes,
                                        transforms=eval_transforms())[i]
        torch.testing.assert_close(x, rx, rtol=0, atol=1e-6)
        assert torch.equal(y, ry)
    # the second call reads the file and decodes nothing
    files = list(cache.glob("*.pt"))
    assert len(files) == 1
    again = decoded_split(voc_root, "train", size=64, classes=classes, cache_dir=cache)
    assert torch.equal(again.images, data.images) and torch.equal(again.masks, data.masks)
    assert again.image_path(0) == reader.image_path(0)  # the reader's files, same indices


def test_other_options_get_their_own_cache_file(voc_root, cache):
    a = decoded_split(voc_root, "train", size=64, cache_dir=cache)
    b = decoded_split(voc_root, "train", size=64, classes=["person"], cache_dir=cache)
    c = decoded_split(voc_root, "train", size=48, cache_dir=cache)
    d = decoded_split(voc_root, "train", size=64, limit=5, cache_dir=cache)
    assert len(set(cache.glob("*.pt"))) == 4
    assert b.num_classes == 2 and c.images.shape[-1] == 48 and len(d) == 5 and len(a) == 24


def _corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def _corrupt_shape(path):
    blob = torch.load(path, weights_only=True)
    blob["images"] = blob["images"][:, :, :32]
    torch.save(blob, path)


def _corrupt_dtype(path):
    blob = torch.load(path, weights_only=True)
    blob["masks"] = blob["masks"].long()
    torch.save(blob, path)


def _corrupt_key(path):
    blob = torch.load(path, weights_only=True)
    blob["key"]["classes"] = ["background", "dog"]
    torch.save(blob, path)


def _corrupt_ids(path):
    blob = torch.load(path, weights_only=True)
    blob["masks"][0, 0, 0] = 77
    torch.save(blob, path)


@pytest.mark.parametrize("corrupt, reason", [
    (_corrupt_truncate, "cannot be read"), (_corrupt_shape, "shapes"), (_corrupt_dtype, "dtypes"),
    (_corrupt_key, "other parameters"), (_corrupt_ids, "mask ids"),
])
def test_a_stale_or_corrupt_cache_is_rebuilt_with_one_warning(voc_root, cache, corrupt, reason):
    good = decoded_split(voc_root, "val", size=64, cache_dir=cache)
    (path,) = cache.glob("*.pt")
    corrupt(path)
    with pytest.warns(UserWarning, match=reason) as record:
        again = decoded_split(voc_root, "val", size=64, cache_dir=cache)
    assert len([w for w in record if "cache" in str(w.message)]) == 1
    assert torch.equal(again.images, good.images) and torch.equal(again.masks, good.masks)
    with _no_warnings() as w:  # rebuilt on disk: the next call is silent
        warnings.simplefilter("always")
        decoded_split(voc_root, "val", size=64, cache_dir=cache)
    assert not [x for x in w if "cache" in str(x.message)]


def test_an_unwritable_cache_folder_decodes_in_memory_with_a_warning(voc_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot write the decoded-tensor cache"):
        data = decoded_split(voc_root, "val", size=64, cache_dir=blocker / "cache")
    assert len(data) == 8 and data.images.shape == (8, 3, 64, 64)


def test_non_square_images_are_padded_for_training_and_cropped_for_validation():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = 200  # left half bright
    mask = torch.zeros(40, 80, dtype=torch.int64)
    mask[:, 40:] = 3
    pi, pm = _square(img, mask, 32, "pad")  # 80 -> 32 wide, 40 -> 16 tall, padded below
    assert pi.shape == (3, 32, 32) and pm.shape == (32, 32)
    assert (pm[16:] == 255).all() and (pi[:, 16:] == 0).all()
    assert set(pm[:16].unique().tolist()) == {0, 3}
    ci, cm = _square(img, mask, 32, "crop")  # 40 -> 32 tall, 80 -> 64 wide, centre 32 columns
    assert cm.shape == (32, 32) and (cm[:, :16] == 0).all() and (cm[:, 16:] == 3).all()
    with pytest.raises(ValueError, match="fit must be"):
        decoded_split(".", size=32, fit="stretch")
    with pytest.raises(ValueError, match="size must be"):
        decoded_split(".", size=0)


# ---------------------------------------------------------------------------------------------
# batched augmentation
# ---------------------------------------------------------------------------------------------
def _drawn_from_mask(n: int = 6, size: int = 48, seed: int = 0):
    """Masks of big blocks (ids 0..4, some 255) and images whose red channel *is* the mask:
    red = 40 * id + 20 (void: 250), green a left-to-right ramp (so a flip is visible)."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 5, (n, 6, 6), generator=g)
    blocks[:, 0, 0] = 255
    masks = blocks.repeat_interleave(size // 6, 1).repeat_interleave(size // 6, 2).to(torch.uint8)
    red = torch.where(masks == 255, 250, masks.long() * 40 + 20)
    ramp = torch.linspace(0, 255, size).round().expand(n, size, size)
    images = torch.stack([red, ramp, torch.full_like(ramp, 128)], 1).to(torch.uint8)
    return images, masks


def _red(x: torch.Tensor) -> torch.Tensor:
    from minseg.data import denormalize

    return (denormalize(x)[:, 0] * 255).round()


@pytest.mark.parametrize("aug", [BatchAugment(), BatchAugment(scale=(1.5, 2.0), hflip=1.0),
                                 BatchAugment(scale=(0.5, 0.8), jitter=0.0, crop=40)])
def test_augmentation_keeps_image_and_mask_aligned(aug):
    images, masks = _drawn_from_mask()
    x, m = aug(images, masks, torch.Generator().manual_seed(3))
    crop = aug.crop or 48
    assert x.shape == (6, 3, crop, crop) and x.dtype == torch.float32
    assert m.shape == (6, crop, crop) and m.dtype == torch.int64
    red = _red(x)
    valid = m != 255
    # away from block edges (where bilinear blends two blocks) the red channel names the class
    inner = valid.clone()
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        inner &= torch.roll(m, (dy, dx), (1, 2)) == m
    expected = (m * 40 + 20).float()
    assert inner.sum() > 1000
    agree = ((red - expected).abs() <= 3)[inner].float().mean()
    assert agree > 0.99, agree
    # black pixels (outside the image: real content has red >= 20) are void in the mask
    black = red < 5
    if black.any():
        assert (m[black] == 255).float().mean() > 0.99


def test_padding_is_void_and_black_when_the_image_shrinks():
    images, masks = _drawn_from_mask()
    masks[masks == 255] = 0
    x, m = BatchAugment(scale=(0.5, 0.5), hflip=0.0)(images, masks, torch.Generator().manual_seed(0))
    frac = (m == 255).float().mean().item()
    assert frac == pytest.approx(0.75, abs=0.03)  # a half-size image covers a quarter
    assert (_red(x)[m == 255] <= 1).float().mean() > 0.97


def test_flip_mirrors_both_and_augmentation_depends_only_on_the_generator():
    images, masks = _drawn_from_mask()
    aug = BatchAugment(scale=(1.0, 1.0), hflip=1.0)
    x, m = aug(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(m, masks.long().flip(-1))
    assert torch.allclose(x, normalize_uint8(images.flip(-1)), atol=1e-4)
    jit = BatchAugment(jitter=0.3)
    a = jit(images, masks, torch.Generator().manual_seed(5))
    b = jit(images, masks, torch.Generator().manual_seed(5))
    c = jit(images, masks, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    # jitter changes colours only
    plain = BatchAugment()(images, masks, torch.Generator().manual_seed(5))
    assert torch.equal(plain[1], a[1]) and not torch.equal(plain[0], a[0])


def test_bad_augmentation_arguments():
    for kw, match in (({"scale": (2.0, 1.0)}, "scale"), ({"hflip": 1.5}, "hflip"),
                      ({"jitter": 1.0}, "jitter"), ({"crop": 0}, "crop")):
        with pytest.raises(ValueError, match=match):
            BatchAugment(**kw)
    with pytest.raises(ValueError, match="images N,3,H,W and masks N,H,W"):
        BatchAugment()(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 8),
                       torch.Generator())


# ---------------------------------------------------------------------------------------------
# the loader
# ---------------------------------------------------------------------------------------------
def test_loader_order_epochs_and_resuming_mid_epoch(voc_root, cache):
    data = decoded_split(voc_root, "train", size=64, cache_dir=cache)  # 24 images
    dl = TensorLoader(data, 5, augment=BatchAugment(), seed=1)
    assert len(dl) == 4 and dl.drop_last  # 24 // 5, the last partial batch dropped
    e0, e1 = [list(dl) for _ in range(2)]  # iterating moves to the next epoch, like a DataLoader
    assert not torch.equal(e0[0][1], e1[0][1])
    dl.set_epoch(0)
    again = list(dl)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(e0, again))
    dl.set_epoch(0, start_batch=2)  # the tail of epoch 0, batch for batch
    tail = list(dl)
    assert len(tail) == 2 and all(torch.equal(a[1], b[1]) for a, b in zip(e0[2:], tail))
    other = dl.reseeded(2)
    other.set_epoch(0)
    assert not torch.equal(next(iter(other))[1], e0[0][1])
    val = TensorLoader(data, 5, shuffle=False)
    assert len(val) == 5 and sum(len(b[0]) for b in val) == 24  # in order, nothing dropped
    first = next(iter(val))
    assert torch.equal(first[1], data.masks[:5].long())
    with pytest.raises(TypeError, match="TensorSegmentationData"):
        TensorLoader(list(range(4)), 2)
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(data, 0)


def test_fit_with_a_step_budget_is_deterministic_on_tensor_loaders(voc_root, cache):
    from minseg.models import build_model
    from minseg.train import fit

    data = decoded_split(voc_root, "train", size=64, cache_dir=cache)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("fastscnn", 21, width=8)
        dl = TensorLoader(data, 8, augment=BatchAugment(jitter=0.2), seed=99)
        h = fit(model, dl, num_classes=21, max_steps=5, seed=3, device="cpu")
        runs.append((model.state_dict(), h["loss"]))
    (a, la), (b, lb) = runs
    assert la == lb and all(torch.equal(a[k], b[k]) for k in a)


def test_head_takes_the_first_images_without_decoding(voc_root, cache):
    data = decoded_split(voc_root, "train", size=64, cache_dir=cache)
    five = data.head(5)
    assert len(five) == 5 and torch.equal(five.images, data.images[:5])
    assert five.names == data.names[:5] and five.image_path(4) == data.image_path(4)
    assert len(data) == 24  # the original is untouched
    with pytest.raises(ValueError, match="n must be in 1..24"):
        data.head(0)

"""Connected components against scipy.ndimage.label, semantic -> instances -> panoptic and back,
and distance transform + watershed against scikit-image."""
from __future__ import annotations

import pytest
import torch

import numpy as np
from scipy import ndimage

from minseg.instances import (_flood, components_per_class, connected_components, count_error,
                              count_instances, from_panoptic, h_maxima, instances_per_class,
                              semantic_to_instances, to_panoptic, watershed_instances)


def same_partition(a: torch.Tensor, b) -> bool:
    """Two label maps describe the same components up to a renumbering (0 = background)."""
    a, b = torch.as_tensor(a).long(), torch.as_tensor(b).long()
    if not torch.equal(a == 0, b == 0):
        return False
    pairs = torch.unique(torch.stack([a[a > 0], b[b > 0]]), dim=1).shape[1]
    return pairs == torch.unique(a[a > 0]).numel() == torch.unique(b[b > 0]).numel()


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_equal_scipy(connectivity):
    ndimage = pytest.importorskip("scipy.ndimage")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    g = torch.Generator().manual_seed(connectivity)
    for density, (H, W) in ((0.3, (31, 47)), (0.55, (64, 64)), (0.7, (1, 40)), (0.6, (50, 1)),
                            (0.0, (8, 8)), (1.0, (9, 7)), (0.58, (256, 256))):
        mask = torch.rand(H, W, generator=g) < density
        labels, count = connected_components(mask, connectivity)
        ref, ref_count = ndimage.label(mask.numpy(), structure)
        assert count == ref_count
        assert labels.dtype == torch.long and same_partition(labels, ref)
        assert torch.equal(labels, torch.from_numpy(ref).long())  # same numbering, too


def test_components_of_an_integer_mask_and_a_snake():
    # same-valued touching pixels join; different values stay apart
    mask = torch.tensor([[1, 1, 2, 0],
                         [0, 1, 2, 2],
                         [3, 0, 0, 2]])
    labels, count = connected_components(mask, 4)
    assert count == 3 and torch.equal(labels, torch.tensor([[1, 1, 2, 0], [0, 1, 2, 2], [3, 0, 0, 2]]))
    labels, count = connected_components(mask, 4, background=None)
    assert count == 6  # the three zero regions count too
    # a long serpentine: one component
    H = 128
    snake = torch.zeros(H, H, dtype=torch.bool)
    snake[::4] = True
    for i in range(0, H - 4, 8):
        snake[i:i + 5, H - 1] = True
        snake[i + 4:i + 9, 0] = True
    assert connected_components(snake, 4)[1] == 1


def test_touching_same_class_squares_merge():
    sem = torch.zeros(20, 30, dtype=torch.long)
    sem[2:8, 2:8] = 15  # person
    sem[2:8, 8:14] = 15  # a second person touching the first
    sem[12:18, 20:26] = 15  # a third one, apart
    sem[12:14, 2:6] = 7  # car
    gt = torch.zeros_like(sem)
    gt[2:8, 2:8], gt[2:8, 8:14], gt[12:18, 20:26], gt[12:14, 2:6] = 1, 2, 3, 4
    inst = semantic_to_instances(sem, thing_classes=[7, 15])
    assert count_instances(inst) == 3  # the two touching people became one
    assert inst[3, 3] == inst[3, 10] != inst[13, 22]
    assert inst[0, 0] == 0
    assert instances_per_class(sem, gt, [7, 15]) == {7: 1, 15: 3}
    assert components_per_class(sem, [7, 15]) == {7: 1, 15: 2}
    assert count_error(sem, gt, [7, 15]) == {7: 0, 15: -1}
    # corner contact joins with connectivity 8 only
    diag = torch.zeros(6, 6, dtype=torch.long)
    diag[0:3, 0:3] = 15
    diag[3:6, 3:6] = 15
    assert count_instances(semantic_to_instances(diag, [15], connectivity=8)) == 1
    assert count_instances(semantic_to_instances(diag, [15], connectivity=4)) == 2
    batch = semantic_to_instances(torch.stack([sem, diag.new_zeros(20, 30)]), [7, 15])
    assert batch.shape == (2, 20, 30) and count_instances(batch).tolist() == [3, 0]


def test_panoptic_round_trip_and_void():
    g = torch.Generator().manual_seed(0)
    sem = torch.randint(0, 6, (2, 16, 16), generator=g)
    sem[:, :3] = 255  # void band
    things = [2, 3, 5]
    inst = semantic_to_instances(sem, things)
    pan = to_panoptic(sem, inst, things)
    assert pan.dtype == torch.long
    assert bool((pan[:, :3] == -1).all())
    stuff = (sem == 0) | (sem == 1) | (sem == 4)
    assert torch.equal(pan[stuff], sem[stuff] * 1000)
    thing = torch.isin(sem, torch.tensor(things))
    assert bool((pan[thing] % 1000 > 0).all())
    sem2, inst2 = from_panoptic(pan)
    assert torch.equal(sem2, sem) and torch.equal(inst2, inst)
    # stuff instance ids are dropped; a thing pixel without an instance becomes void
    noisy = inst.clone()
    noisy[stuff] = 7
    noisy[0, 10, 10] = 0
    sem[0, 10, 10] = 3
    pan2 = to_panoptic(sem, noisy, things, label_divisor=100)
    assert pan2[0, 10, 10] == -1 and torch.equal(pan2[stuff], sem[stuff] * 100)
    # the panoptic convention of minseg.metrics: a perfect prediction has PQ = 1
    metrics = pytest.importorskip("minseg.metrics")
    assert metrics.panoptic_quality(pan, pan, thing_classes=things)["pq"] == pytest.approx(1.0)


def test_bad_input():
    sem = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(sem, 6)
    with pytest.raises(ValueError, match="integer or bool"):
        connected_components(sem.float())
    with pytest.raises(ValueError, match="H,W"):
        connected_components(sem[None])
    with pytest.raises(ValueError, match="thing_classes"):
        semantic_to_instances(sem, [255])
    with pytest.raises(ValueError, match="label_divisor"):
        to_panoptic(sem, torch.full_like(sem, 1000), [0])
    with pytest.raises(ValueError, match="shape"):
        to_panoptic(sem, sem[:3], [0])
    with pytest.raises(ValueError, match="below -1"):
        from_panoptic(torch.full((2, 2), -5))


# ------------------------------------------------------------------ distance transform + watershed
def disc(H, W, cy, cx, r):
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def random_masks(n=60, seed=0):
    """Blobby and ragged bool masks of assorted sizes (touching blobs, necks, noise)."""
    rng = np.random.default_rng(seed)
    for t in range(n):
        H, W = rng.integers(6, 48, 2)
        if t % 2:
            m = ndimage.binary_opening(rng.random((H, W)) < rng.uniform(0.5, 0.8))
        else:
            m = ndimage.gaussian_filter(rng.random((H, W)), 2) > 0.5
        yield m


def test_h_maxima_equals_skimage():
    morphology = pytest.importorskip("skimage.morphology")
    for m in random_masks():
        d = ndimage.distance_transform_edt(m)
        for h in (0.5, 1, 2.0, 3):
            ours = h_maxima(d, h, m)
            # scikit-image works on the whole image; a very low floor outside the mask keeps its
            # pieces apart, which is what our mask does
            ref = morphology.h_maxima(np.where(m, d, -1e3), h).astype(bool) & m
            assert np.array_equal(ours, ref)
        cross = ndimage.generate_binary_structure(2, 1)
        ref4 = morphology.h_maxima(np.where(m, d, -1e3), 1.0, footprint=cross).astype(bool) & m
        assert np.array_equal(h_maxima(d, 1.0, m, connectivity=4), ref4)
    # without a mask: plain skimage (an image whose range exceeds h)
    g = np.random.default_rng(1).random((20, 30)) * 5
    assert np.array_equal(h_maxima(g, 1.0), morphology.h_maxima(g, 1.0).astype(bool))


@pytest.mark.parametrize("connectivity", [4, 8])
def test_flood_equals_skimage_watershed(connectivity):
    segmentation = pytest.importorskip("skimage.segmentation")
    rng = np.random.default_rng(connectivity)
    for m in random_masks(seed=connectivity):
        d = ndimage.distance_transform_edt(m)
        markers = ndimage.label(h_maxima(d, 1.0, m), structure=np.ones((3, 3)))[0]
        ref_kw = dict(mask=m, connectivity=1 if connectivity == 4 else 2)
        # distinct heights (no ties): exactly scikit-image's labels
        height = -d + rng.random(d.shape) * 1e-6
        assert np.array_equal(_flood(height, markers, m, connectivity),
                              segmentation.watershed(height, markers, **ref_kw))
        # raw distances have plateaus where the order among equal heights decides a few pixels
        ours, ref = _flood(-d, markers, m, connectivity), segmentation.watershed(-d, markers, **ref_kw)
        assert np.array_equal(ours > 0, ref > 0) and set(np.unique(ours)) == set(np.unique(ref))
        assert (ours == ref).mean() > 0.85


def test_watershed_instances_equals_skimage_pipeline():
    segmentation = pytest.importorskip("skimage.segmentation")
    morphology = pytest.importorskip("skimage.morphology")
    g = torch.Generator().manual_seed(3)
    sem = torch.zeros(2, 40, 40, dtype=torch.long)
    for k in range(2):
        for _ in range(6):
            cy, cx = torch.randint(4, 36, (2,), generator=g).tolist()
            r = int(torch.randint(3, 8, (1,), generator=g))
            sem[k][disc(40, 40, cy, cx, r)] = int(torch.randint(1, 4, (1,), generator=g))
    sem[0, 10, :] = 255                                    # a void line: separates, gets id 0
    out = watershed_instances(sem, [1, 2], min_height=1.5)
    assert out.shape == sem.shape and out.dtype == torch.long
    for k in range(2):
        ref = np.zeros((40, 40), np.int64)
        s = sem[k].numpy()
        for c in (1, 2):
            m = s == c
            d = ndimage.distance_transform_edt(m)
            markers = ndimage.label(morphology.h_maxima(np.where(m, d, -1e3), 1.5).astype(bool) & m,
                                    np.ones((3, 3)))[0]
            lab = segmentation.watershed(-d, markers, mask=m, connectivity=2)
            ref[lab > 0] = lab[lab > 0] + ref.max()
        assert count_instances(out[k]) == len(np.unique(ref[ref > 0]))
        assert np.array_equal(out[k].numpy() > 0, ref > 0)
        assert bool((out[k][(sem[k] == 3) | (sem[k] == 255) | (sem[k] == 0)] == 0).all())
        ids = out[k][out[k] > 0]
        assert ids.unique().tolist() == list(range(1, int(ids.max()) + 1))   # 1..K, no gaps
        first = [int((out[k].flatten() == i).nonzero()[0]) for i in range(1, int(ids.max()) + 1)]
        assert first == sorted(first)                                          # raster order
    single = watershed_instances(sem[1], [1, 2], min_height=1.5)
    assert torch.equal(single, out[1])


@pytest.mark.parametrize("connectivity", [4, 8])
def test_watershed_labels_every_thing_pixel(connectivity):
    # every connected piece of a class region has a marker, so no thing pixel is left without an
    # instance (to_panoptic would turn it void), even pieces joined only at a corner
    for k, m in enumerate(random_masks(30, seed=5)):
        sem = torch.from_numpy(m.astype(np.int64)) * (1 + k % 2)
        sem[0, :] = 255
        inst = watershed_instances(sem, [1, 2], connectivity=connectivity)
        thing = (sem == 1) | (sem == 2)
        assert torch.equal(inst > 0, thing)
        pieces = connected_components(thing, connectivity)[1]
        assert count_instances(inst) >= pieces


def test_watershed_separates_touching_discs_but_not_one_disc_or_a_bar():
    two = (disc(30, 50, 15, 15, 9) | disc(30, 50, 15, 32, 9)).long() * 15   # overlap: a 7 px neck
    assert count_instances(semantic_to_instances(two, [15])) == 1          # components merge them
    inst = watershed_instances(two, [15])
    assert count_instances(inst) == 2
    assert inst[15, 12] != inst[15, 35] and inst[15, 12] > 0 and inst[15, 35] > 0
    one = disc(30, 30, 15, 15, 10).long() * 15
    assert count_instances(watershed_instances(one, [15])) == 1
    bar = torch.zeros(12, 60, dtype=torch.long)
    bar[4:8, 3:57] = 7                                  # a thin bar: a long flat ridge, one top
    assert count_instances(watershed_instances(bar, [7])) == 1
    bar[3, 20] = 7                                      # a bump on its outline: a low top, drowned
    assert count_instances(watershed_instances(bar, [7])) == 1
    tiny = torch.zeros(8, 8, dtype=torch.long)
    tiny[2, 2] = tiny[5, 5:7] = 7                       # objects lower than min_height survive
    assert count_instances(watershed_instances(tiny, [7], min_height=3)) == 2
    # a dumbbell (one object) is over-split: the method's known failure
    bell = (disc(30, 60, 15, 12, 9) | disc(30, 60, 15, 47, 9))
    bell[14:17, 12:47] = True
    assert count_instances(watershed_instances(bell.long(), [1])) == 2
    # different classes never share an instance; stuff stays 0
    mixed = two.clone()
    mixed[:, 25:] = torch.where(mixed[:, 25:] > 0, 3, 0)
    inst = watershed_instances(mixed, [3, 15])
    assert inst[15, 12] != inst[15, 35] and count_instances(inst) == 2
    assert count_instances(watershed_instances(mixed, [3])) == 1


def test_watershed_bad_input():
    sem = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="min_height"):
        watershed_instances(sem, [1], min_height=0)
    with pytest.raises(ValueError, match="connectivity"):
        watershed_instances(sem, [1], connectivity=6)
    with pytest.raises(ValueError, match="integer or bool"):
        watershed_instances(sem.float(), [1])
    with pytest.raises(ValueError, match="N,H,W"):
        watershed_instances(sem[None, None], [1])
    with pytest.raises(ValueError, match="thing_classes"):
        watershed_instances(sem, [255])
    with pytest.raises(ValueError, match="negative"):
        watershed_instances(sem - 1, [1])
    with pytest.raises(ValueError, match="h "):
        h_maxima(np.zeros((3, 3)), -1)
    with pytest.raises(ValueError, match="connectivity"):
        h_maxima(np.zeros((3, 3)), 1, connectivity=6)
    with pytest.raises(ValueError, match="2-D"):
        h_maxima(np.zeros(3), 1)
    empty = watershed_instances(torch.zeros(0, 5, 5, dtype=torch.long), [1])
    assert empty.shape == (0, 5, 5)

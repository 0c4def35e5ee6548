"""Connected components against scipy.ndimage.label, semantic -> instances -> panoptic and back."""
from __future__ import annotations

import pytest
import torch

from minseg.instances import (components_per_class, connected_components, count_error,
                              count_instances, from_panoptic, instances_per_class,
                              semantic_to_instances, to_panoptic)


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

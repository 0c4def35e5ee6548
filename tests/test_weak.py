"""Weak labels derived from full masks: points, scribbles, boxes and CAM pseudo-labels."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from minseg.classification import evaluate_classifier, fit_classifier
from minseg.data import class_presence
from minseg.models import CAMClassifier
from minseg.weak import (WeakLabelDataset, boxes_from_instances, boxes_to_masks,
                         cam_pseudo_labels_for, label_quality, points_from_mask,
                         scribbles_from_mask)

IGN = 255


def toy_mask() -> torch.Tensor:
    """Background 0 with a void band, a 6x8 block of class 3 and a 5x5 block of class 7."""
    m = torch.zeros(20, 24, dtype=torch.long)
    m[2:8, 3:11] = 3
    m[12:17, 14:19] = 7
    m[1, 3:11] = IGN
    return m


def test_points_keep_their_class_and_are_deterministic():
    m = toy_mask()
    p = points_from_mask(m, points_per_class=2, seed=5)
    labelled = p != IGN
    assert p.dtype == torch.long and p.shape == m.shape
    assert torch.equal(p[labelled], m[labelled])              # every label is right
    assert not bool((m[labelled] == IGN).any())               # void is never labelled
    for c in (0, 3, 7):
        assert int((p == c).sum()) == 2                       # 2 points per class
    assert torch.equal(p, points_from_mask(m, points_per_class=2, seed=5))
    assert not torch.equal(p, points_from_mask(m, points_per_class=2, seed=6))
    # no background points when asked; more points than pixels: every pixel
    q = points_from_mask(m, 1, seed=0, include_background=False)
    assert set(torch.unique(q).tolist()) == {3, 7, IGN}
    tiny = torch.tensor([[0, 0], [0, 1]])
    assert int((points_from_mask(tiny, 3, seed=0) == 1).sum()) == 1


def test_points_radius_stays_inside_the_class_and_per_object():
    m = toy_mask()
    p = points_from_mask(m, 1, seed=1, radius=2)
    labelled = p != IGN
    assert torch.equal(p[labelled], m[labelled])
    assert 1 < int((p == 7).sum()) <= 13                      # a disk of radius 2 has 13 px
    # two objects of class 3 (instances 1 and 2): one point each
    m2 = torch.zeros(10, 10, dtype=torch.long)
    m2[1:4, 1:4] = 3
    m2[6:9, 6:9] = 3
    inst = torch.zeros_like(m2)
    inst[1:4, 1:4] = 1
    inst[6:9, 6:9] = 2
    q = points_from_mask(m2, 1, seed=0, instances=inst)
    assert int((q == 3).sum()) == 2 and int((q == 0).sum()) == 1
    assert int(((q == 3) & (inst == 1)).sum()) == 1 and int(((q == 3) & (inst == 2)).sum()) == 1


def test_points_reject_bad_input():
    with pytest.raises(ValueError):
        points_from_mask(torch.zeros(4, 4), 1)                # float mask
    with pytest.raises(ValueError):
        points_from_mask(toy_mask(), 0)
    with pytest.raises(ValueError):
        points_from_mask(toy_mask(), 1, instances=torch.zeros(3, 3, dtype=torch.long))


def test_scribbles_are_sparse_correct_and_cover_every_region():
    m = toy_mask()
    s = scribbles_from_mask(m, seed=3, vertices=3, width=1, margin=1)
    labelled = s != IGN
    assert torch.equal(s[labelled], m[labelled])
    assert set(torch.unique(s[labelled]).tolist()) == {0, 3, 7}
    assert 0 < int(labelled.sum()) < 0.25 * m.numel()
    assert torch.equal(s, scribbles_from_mask(m, seed=3, vertices=3, width=1, margin=1))
    wide = scribbles_from_mask(m, seed=3, vertices=3, width=3, margin=1)
    assert int((wide != IGN).sum()) > int(labelled.sum())
    assert torch.equal(wide[wide != IGN], m[wide != IGN])
    # regions smaller than min_area get no scribble
    assert not bool((scribbles_from_mask(m, seed=0, min_area=40) == 7).any())


def test_boxes_from_instances_and_boxes_to_masks():
    m = toy_mask()
    inst = torch.zeros_like(m)
    inst[m == 3], inst[m == 7], inst[1, 3:11] = 1, 2, IGN
    boxes = boxes_from_instances(m, inst)
    assert boxes == [(3, 3, 2, 10, 7), (7, 14, 12, 18, 16)]
    filled = boxes_to_masks(boxes, (20, 24))
    assert torch.equal(filled == 3, m == 3) and torch.equal(filled == 7, m == 7)  # boxes = blocks
    assert set(torch.unique(filled).tolist()) == {0, 3, 7}
    # a small box inside a large one is drawn last, whatever the order given
    nested = [(2, 4, 4, 5, 5), (1, 0, 0, 9, 9)]
    out = boxes_to_masks(nested, (10, 10))
    assert int((out == 2).sum()) == 4 and int((out == 1).sum()) == 96
    assert torch.equal(out, boxes_to_masks(nested[::-1], (10, 10)))
    # inner region with a void rim: 10x10 box, inner 0.6 -> 6x6 centred
    rim = boxes_to_masks([(5, 0, 0, 9, 9)], (12, 12), inner=0.6)
    assert int((rim == 5).sum()) == 36 and bool((rim[2:8, 2:8] == 5).all())
    assert int((rim == IGN).sum()) == 64 and int((rim == 0).sum()) == 44
    with pytest.raises(ValueError):
        boxes_to_masks([(1, 5, 0, 4, 3)], (10, 10))            # x0 > x1
    with pytest.raises(ValueError):
        boxes_to_masks([(1, 0, 0, 10, 3)], (10, 10))           # outside


def test_weak_label_dataset_yields_weak_masks(voc_root):
    from minseg.data import VOCSegmentationDataset, train_transforms

    base = VOCSegmentationDataset(voc_root, "train", limit=6, transforms=train_transforms(48))
    full = WeakLabelDataset(base, "full")
    pts = WeakLabelDataset(base, "points", seed=1, radius=1)
    scr = WeakLabelDataset(base, "scribbles", seed=1)
    box = WeakLabelDataset(base, "boxes", inner=0.8)
    for ds in (full, pts, scr, box):
        x, y = ds[0]
        assert x.shape == (3, 48, 48) and y.shape == (48, 48) and y.dtype == torch.long
        assert len(ds) == 6 and ds.num_classes == base.num_classes
    assert torch.equal(full.weak_mask(2), base.raw(2)[1])
    for i in range(6):
        w, f = pts.weak_mask(i), pts.full_mask(i)
        lab = w != IGN
        assert bool(lab.any()) and torch.equal(w[lab], f[lab])
        assert torch.equal(w, WeakLabelDataset(base, "points", seed=1, radius=1).weak_mask(i))
    q = label_quality(pts)
    assert q["accuracy"] == 1.0 and 0 < q["labelled"] < 0.2
    qb = label_quality(box)
    assert qb["labelled"] > 0.5 and 0.5 < qb["accuracy"] < 1.0
    pseudo = WeakLabelDataset(base, "pseudo", masks=[base.raw(i)[1] for i in range(6)])
    assert label_quality(pseudo)["accuracy"] == 1.0
    with pytest.raises(ValueError):
        WeakLabelDataset(base, "pseudo")
    with pytest.raises(ValueError):
        WeakLabelDataset(base, "points", inner=0.5)
    with pytest.raises(ValueError):
        WeakLabelDataset(base, "polygons")


def test_tag_classifier_trains_and_gives_pseudo_labels(voc_root):
    from torch.utils.data import DataLoader

    from minseg.data import VOCSegmentationDataset, eval_transforms

    base = VOCSegmentationDataset(voc_root, "train", limit=8, transforms=eval_transforms(None))
    loader = DataLoader(base, batch_size=4)
    clf = CAMClassifier(base.num_classes, width=4)
    hist = fit_classifier(clf, loader, num_classes=base.num_classes, max_steps=3, background=0,
                          schedule="constant", device="cpu")
    assert hist[-1]["step"] == 3 and all(h["loss"] > 0 for h in hist)
    assert 0.0 <= evaluate_classifier(clf, loader, base.num_classes)["f1"] <= 1.0
    labels = cam_pseudo_labels_for(base, clf, threshold=0.3)
    assert len(labels) == 8
    for i, lab in enumerate(labels):
        full = base.raw(i)[1]
        assert lab.shape == full.shape
        tags = set(class_presence(full, base.num_classes, background=0).nonzero().flatten().tolist())
        assert set(torch.unique(lab).tolist()) <= tags | {0}   # only tagged classes
    ds = WeakLabelDataset(base, "pseudo", masks=labels)
    assert torch.equal(ds.weak_mask(3), labels[3])



def test_scribbles_per_object_reach_every_object():
    m = torch.zeros(12, 20, dtype=torch.long)
    m[2:10, 1:8] = 8
    m[2:10, 12:19] = 8                      # two cats far apart, one class
    inst = torch.zeros_like(m)
    inst[2:10, 1:8], inst[2:10, 12:19] = 1, 2
    s = scribbles_from_mask(m, seed=0, instances=inst, vertices=2, margin=1)
    lab = s != IGN
    assert torch.equal(s[lab], m[lab])
    assert bool(((s == 8) & (inst == 1)).any()) and bool(((s == 8) & (inst == 2)).any())


@pytest.mark.parametrize("make", [points_from_mask, scribbles_from_mask])
def test_instances_must_match_the_mask(make):
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[2:6, 2:6] = 3
    with pytest.raises(ValueError, match=r"instances has shape \(8, 7\) but mask has \(8, 8\)"):
        make(mask, instances=torch.zeros(8, 7, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# multiple-instance learning from tags
# ---------------------------------------------------------------------------------------------
from minseg.weak import MIL_POOLS, mil_loss, mil_pool  # noqa: E402


def _pool_reference(values: list[float], pool: str, r: float, k: float) -> float:
    """One bag's pooled score, in float64 from Python floats."""
    import math

    if pool == "max":
        return max(values)
    if pool == "mean":
        return sum(values) / len(values)
    if pool == "lse":
        m = max(values)   # shifted for stability, written out independently of torch.logsumexp
        return m + math.log(sum(math.exp(r * (v - m)) for v in values) / len(values)) / r
    top = sorted(values, reverse=True)[:max(1, math.ceil(k * len(values)))]
    return sum(top) / len(top)


def _mil_reference(logits: torch.Tensor, target: torch.Tensor, pool: str, r: float, k: float,
                   background: int | None = 0) -> float:
    """Loops over images, classes and pixels: tags by presence, margins over background,
    pooled, binary cross entropy averaged over the kept images and the foreground classes."""
    import math

    n, C, H, W = logits.shape
    terms = []
    for i in range(n):
        pix = [(y, x) for y in range(H) for x in range(W) if int(target[i, y, x]) != IGN]
        if not pix:
            continue
        present = {int(target[i, y, x]) for y, x in pix}
        for c in range(C):
            if c == background:
                continue
            ref = (lambda y, x: float(logits[i, background, y, x])) if background is not None \
                else (lambda y, x: 0.0)
            s = _pool_reference([float(logits[i, c, y, x]) - ref(y, x) for y, x in pix], pool, r, k)
            t = 1.0 if c in present else 0.0
            p = 1 / (1 + math.exp(-s))
            terms.append(-(t * math.log(p) + (1 - t) * math.log(1 - p)))
    return sum(terms) / len(terms)


def _mil_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, 4, (3, 5, 6), generator=g)
    target[0] = torch.where(target[0] == 2, 0, target[0])      # image 0: class 2 absent
    target[1, :, :2] = IGN                                     # ignored pixels (padding, void)
    target[2] = 0                                              # image 2: background only
    target[2, 4, 5] = 3                                        # ... and a single pixel of class 3
    return logits, target


@pytest.mark.parametrize("pool", MIL_POOLS)
def test_mil_pool_matches_a_float64_brute_force(pool):
    logits, target = _mil_batch()
    valid = target != IGN
    got = mil_pool(logits, valid, pool, r=3.0, k=0.25)
    assert got.shape == (3, 4) and got.dtype == torch.float64
    for i in range(3):
        for c in range(4):
            vals = logits[i, c][valid[i]].tolist()
            assert got[i, c].item() == pytest.approx(_pool_reference(vals, pool, 3.0, 0.25), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("pool", MIL_POOLS)
@pytest.mark.parametrize("background", [0, 2, None])
def test_mil_loss_matches_a_float64_brute_force(pool, background):
    logits, target = _mil_batch(1)
    got = mil_loss(logits, target, pool, r=2.5, k=0.3, background=background)
    ref = _mil_reference(logits, target, pool, 2.5, 0.3, background)
    assert got.item() == pytest.approx(ref, rel=1e-10)


def test_mil_loss_reads_a_mask_only_through_its_tags():
    logits, target = _mil_batch(2)
    valid = target != IGN
    # the same classes in each image at other pixels: the same loss
    shuffled = target.clone()
    for i in range(3):
        vals = target[i][valid[i]]
        shuffled[i][valid[i]] = vals[torch.randperm(len(vals), generator=torch.Generator().manual_seed(i))]
    for pool in MIL_POOLS:
        torch.testing.assert_close(mil_loss(logits, target, pool), mil_loss(logits, shuffled, pool))
    # bool tags give the same loss as a mask with those classes when every pixel is in the bag
    full = target.clone()
    full[1, :, :2] = 0
    tags = torch.zeros(3, 4, dtype=torch.bool)
    for i in range(3):
        tags[i, torch.unique(full[i])] = True
    for pool in MIL_POOLS:
        torch.testing.assert_close(mil_loss(logits, tags, pool), mil_loss(logits, full, pool))
    # ignored pixels are outside the bag: changing their logits changes nothing
    bumped = logits.clone()
    bumped[1, :, :, :2] += 100.0
    for pool in MIL_POOLS:
        torch.testing.assert_close(mil_loss(bumped, target, pool), mil_loss(logits, target, pool))


def test_mil_absent_classes_and_empty_bags():
    logits, target = _mil_batch(3)
    # an image whose pixels are all ignored is skipped: same loss as without it
    t = target.clone()
    t[0] = IGN
    for pool in MIL_POOLS:
        ref = _mil_reference(logits[1:], target[1:], pool, 5.0, 0.1)
        assert mil_loss(logits, t, pool).item() == pytest.approx(ref, rel=1e-10)
    # nothing in any bag: 0 with a graph, finite gradient
    x = logits.clone().requires_grad_(True)
    loss = mil_loss(x, torch.full_like(target, IGN), "lse")
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    # an empty bag pools to NaN and its gradient stays finite when the row is not used
    x = logits.clone().requires_grad_(True)
    valid = torch.ones(3, 5, 6, dtype=torch.bool)
    valid[0] = False
    for pool in MIL_POOLS:
        p = mil_pool(x, valid, pool)
        assert p[0].isnan().all() and not p[1:].isnan().any()
        x.grad = None
        p[1:].sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum() == 0
    # a background-only image: every foreground tag is 0, so its loss falls as margins fall
    only_bg = torch.zeros(1, 3, 4, dtype=torch.long)
    z = torch.zeros(1, 3, 3, 4, dtype=torch.float64)
    lower = z.clone()
    lower[:, 1:] -= 2.0
    for pool in MIL_POOLS:
        assert mil_loss(lower, only_bg, pool) < mil_loss(z, only_bg, pool)


def test_lse_goes_from_mean_to_max():
    logits, target = _mil_batch(4)
    valid = target != IGN
    mx, mean = mil_pool(logits, valid, "max"), mil_pool(logits, valid, "mean")
    gaps = [(mil_pool(logits, valid, "lse", r=r) - mx).abs().max().item() for r in (1, 10, 100, 1e4)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-3   # r -> inf: the max
    torch.testing.assert_close(mil_pool(logits, valid, "lse", r=1e-7), mean, rtol=0, atol=1e-5)
    lse = mil_pool(logits, valid, "lse", r=2.0)
    assert bool((lse >= mean - 1e-12).all()) and bool((lse <= mx + 1e-12).all())
    # topk: k -> 1 is the mean; a k below one pixel's share is the max
    torch.testing.assert_close(mil_pool(logits, valid, "topk", k=1.0), mean)
    torch.testing.assert_close(mil_pool(logits, valid, "topk", k=1e-6), mx)


def test_mil_gradients_match_finite_differences_and_reach_the_expected_pixels():
    logits, target = _mil_batch(5)
    for pool in MIL_POOLS:
        x = logits.clone().requires_grad_(True)
        mil_loss(x, target, pool, r=2.0, k=0.2).backward()
        # central differences on a few entries
        for idx in [(0, 1, 2, 3), (1, 0, 4, 5), (2, 3, 4, 5), (2, 2, 0, 0)]:
            e = torch.zeros_like(logits)
            e[idx] = 1e-6
            num = (mil_loss(logits + e, target, pool, r=2.0, k=0.2)
                   - mil_loss(logits - e, target, pool, r=2.0, k=0.2)) / 2e-6
            assert x.grad[idx].item() == pytest.approx(num.item(), rel=1e-5, abs=1e-9)
        assert bool((x.grad[1, :, :, :2] == 0).all())          # ignored pixels: no gradient
    # which pixels of one class map get gradient: one under max, all under mean
    z = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    t = torch.ones(1, 4, 4, dtype=torch.long)
    for pool, expect in (("max", 1), ("mean", 16), ("lse", 16), ("topk", 4)):
        x = z.clone().requires_grad_(True)
        mil_loss(x, t, pool, k=0.25).backward()
        assert int((x.grad[0, 1] != 0).sum()) == expect, pool
        torch.testing.assert_close(x.grad[0, 0], -x.grad[0, 1])  # the margin moves background too


def test_mil_loss_trains_through_fit():
    from functools import partial

    from minseg.train import fit

    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 16, 16, generator=g)
    masks = torch.zeros(8, 16, 16, dtype=torch.long)
    masks[:4, 4:8, 4:8] = 1
    model = nn.Conv2d(3, 2, 3, padding=1)
    loss = partial(mil_loss, pool="lse", r=4.0)
    with torch.no_grad():
        before = float(loss(model(images), masks))
    hist = fit(model, [(images, masks)] * 2, num_classes=2, loss=loss, epochs=3, lr=1e-2,
               device="cpu", progress=False)
    assert hist[-1]["step"] == 6
    with torch.no_grad():
        assert float(loss(model(images), masks)) < before


def test_mil_rejects_bad_input():
    logits, target = _mil_batch()
    with pytest.raises(ValueError, match="unknown pool"):
        mil_loss(logits, target, "median")
    with pytest.raises(ValueError, match="r .* positive"):
        mil_loss(logits, target, "lse", r=0.0)
    with pytest.raises(ValueError, match="r .* positive"):
        mil_pool(logits, None, "lse", r=float("inf"))
    with pytest.raises(ValueError, match=r"k .* \(0, 1\]"):
        mil_loss(logits, target, "topk", k=1.5)
    with pytest.raises(ValueError, match="background"):
        mil_loss(logits, target, background=4)
    with pytest.raises(ValueError, match="N,H,W mask"):
        mil_loss(logits, target[:, :4])
    with pytest.raises(ValueError, match="bool tags"):
        mil_loss(logits, torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="outside"):
        mil_loss(logits, torch.full_like(target, 7))
    with pytest.raises(ValueError, match="integer"):
        mil_loss(logits, target.float())
    with pytest.raises(ValueError, match="valid must be a bool"):
        mil_pool(logits, torch.ones(3, 5, 6), "max")
    with pytest.raises(ValueError, match="scores must be"):
        mil_pool(logits[0], None, "max")

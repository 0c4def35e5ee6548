"""Mask classification (MaskFormer head, set-prediction loss, semantic inference) against
float64 brute force: explicit loops over queries, classes and pixels, and every assignment."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from minseg.blocks import resize
from minseg.models import build_model
from minseg.models.maskformer import (MaskClassificationLoss, MaskFormer, MaskFormerHead,
                                      maskformer, semantic_inference)
from minseg.train import fit


def tiny(num_classes=3, **kw):
    torch.manual_seed(0)
    return maskformer(num_classes, width=4, **{"num_queries": 5, "num_layers": 1, **kw})


def random_case(n=2, q=4, c=3, h=5, w=6, seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    cl = torch.randn(n, q, c + 1, generator=g, dtype=torch.float64)
    ml = 2 * torch.randn(n, q, h, w, generator=g, dtype=torch.float64)
    masks = torch.randint(0, c, (n, h, w), generator=g)
    if ignore:
        masks[torch.rand(n, h, w, generator=g) < 0.2] = 255
    return cl, ml, masks


# ----------------------------------------------------------------- brute-force references
def bf_cost(cl, ml, mask, c, weights=(2.0, 5.0, 5.0)):
    """Cost of query q against class c for one image, by explicit loops in float64."""
    wc, wm, wd = weights
    p = torch.softmax(cl[:, :], -1)
    valid = [(y, x) for y in range(mask.shape[0]) for x in range(mask.shape[1])
             if int(mask[y, x]) != 255]
    out = torch.zeros(cl.shape[0], c, dtype=torch.float64)
    for q in range(cl.shape[0]):
        for k in range(c):
            bce = inter = sm = st = 0.0
            for y, x in valid:
                s = 1 / (1 + math.exp(-float(ml[q, y, x])))
                t = float(int(mask[y, x]) == k)
                bce -= t * math.log(s) + (1 - t) * math.log(1 - s)
                inter, sm, st = inter + s * t, sm + s, st + t
            bce /= max(len(valid), 1)
            dice = 1 - (2 * inter + 1) / (sm + st + 1)
            out[q, k] = -wc * float(p[q, k]) + wm * bce + wd * dice
    return out


def bf_match_total(cost, present):
    """Smallest total cost over every one-to-one assignment of present classes to queries."""
    q, k = cost.shape[0], len(present)
    best = math.inf
    if k <= q:
        for qs in itertools.permutations(range(q), k):
            best = min(best, sum(float(cost[qq, cc]) for qq, cc in zip(qs, present)))
    else:                               # more classes than queries: every query gets one
        for cs in itertools.permutations(present, q):
            best = min(best, sum(float(cost[qq, cc]) for qq, cc in enumerate(cs)))
    return best


def bf_loss(cl, ml, masks, pairs, c, weights=(2.0, 5.0, 5.0), no_object=0.1):
    """The loss for given matches, by explicit loops in float64."""
    wc, wm, wd = weights
    num = den = 0.0
    for b in range(cl.shape[0]):
        tgt = {int(qq): int(cc) for qq, cc in zip(*pairs[b])}
        for qq in range(cl.shape[1]):
            t = tgt.get(qq, c)
            wt = no_object if t == c else 1.0
            num += -wt * float(torch.log_softmax(cl[b, qq], -1)[t])
            den += wt
    mask_terms = []
    for b in range(cl.shape[0]):
        for qq, cc in zip(*pairs[b]):
            bce = inter = sm = st = 0.0
            nv = 0
            for y in range(masks.shape[1]):
                for x in range(masks.shape[2]):
                    if int(masks[b, y, x]) == 255:
                        continue
                    nv += 1
                    s = 1 / (1 + math.exp(-float(ml[b, qq, y, x])))
                    t = float(int(masks[b, y, x]) == int(cc))
                    bce -= t * math.log(s) + (1 - t) * math.log(1 - s)
                    inter, sm, st = inter + s * t, sm + s, st + t
            mask_terms.append((bce / nv, 1 - (2 * inter + 1) / (sm + st + 1)))
    total = wc * num / den
    if mask_terms:
        total += wm * sum(m[0] for m in mask_terms) / len(mask_terms)
        total += wd * sum(m[1] for m in mask_terms) / len(mask_terms)
    return total


# ----------------------------------------------------------------- model
def test_output_shapes_any_input_size_and_eval_batch_one():
    model = tiny(4)
    for h, w in [(64, 64), (37, 45)]:
        out = model(torch.randn(2, 3, h, w))
        assert out["out"].shape == (2, 4, h, w)
        assert out["class_logits"].shape == (2, 5, 5)
        assert out["mask_logits"].shape[:2] == (2, 5)
        assert torch.isfinite(out["out"]).all()
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 47))["out"].shape == (1, 4, 33, 47)


def test_semantic_inference_equals_brute_force():
    cl, ml, _ = random_case(n=2, q=3, c=4, h=3, w=2)
    got = semantic_inference(cl, ml)
    ref = torch.zeros(2, 4, 3, 2, dtype=torch.float64)
    for b, c, y, x in itertools.product(range(2), range(4), range(3), range(2)):
        for q in range(3):
            p = math.exp(cl[b, q, c]) / sum(math.exp(v) for v in cl[b, q].tolist())
            ref[b, c, y, x] += p / (1 + math.exp(-float(ml[b, q, y, x])))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_out_is_the_log_of_the_semantic_scores_of_the_upsampled_masks():
    model = tiny(3).eval()
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        out = model(x)
        scores = semantic_inference(out["class_logits"], resize(out["mask_logits"], (40, 48)))
    torch.testing.assert_close(out["out"].exp(), scores.clamp_min(1e-8))
    assert torch.equal(out["out"].argmax(1), scores.argmax(1))


def test_backbone_equals_segformer_under_the_same_seed():
    torch.manual_seed(3)
    mf = maskformer(3, width=4)
    torch.manual_seed(3)
    sf = build_model("segformer", 3, width=4)
    for part in ("stages", "linears", "fuse"):
        mine, theirs = getattr(mf, part).state_dict(), getattr(sf, part).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_every_parameter_gets_a_finite_gradient_from_the_loss():
    model = tiny(3)
    masks = torch.randint(0, 3, (2, 32, 32))
    masks[:, :4] = 255
    MaskClassificationLoss(3)(model(torch.randn(2, 3, 32, 32)), masks).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


# ----------------------------------------------------------------- matching and loss
@pytest.mark.parametrize("q,c,seed", [(4, 3, 0), (3, 3, 1), (5, 2, 2), (2, 3, 3)])
def test_cost_and_matching_equal_brute_force_over_all_assignments(q, c, seed):
    cl, ml, masks = random_case(n=2, q=q, c=c, seed=seed)
    loss = MaskClassificationLoss(c)
    out = {"class_logits": cl, "mask_logits": ml}
    cost = loss.cost(out, masks)
    pairs = loss.match(out, masks)
    for b in range(2):
        ref = bf_cost(cl[b], ml[b], masks[b], c)
        torch.testing.assert_close(cost[b], ref, rtol=1e-10, atol=1e-10)
        present = sorted(set(masks[b].unique().tolist()) - {255})
        qi, ci = pairs[b]
        assert len(qi) == min(q, len(present)) and len(set(qi.tolist())) == len(qi)
        assert set(ci.tolist()) <= set(present) and len(set(ci.tolist())) == len(ci)
        got = sum(float(ref[a, k]) for a, k in zip(qi.tolist(), ci.tolist()))
        assert got == pytest.approx(bf_match_total(ref, present), abs=1e-6)


def test_loss_equals_brute_force_with_ignored_pixels():
    cl, ml, masks = random_case(n=2, q=4, c=3, seed=5)
    loss = MaskClassificationLoss(3)
    out = {"class_logits": cl, "mask_logits": ml}
    ref = bf_loss(cl, ml, masks, loss.match(out, masks), 3)
    assert float(loss(out, masks)) == pytest.approx(ref, rel=1e-10)


def test_weights_and_no_object_weight_enter_as_documented():
    cl, ml, masks = random_case(n=2, q=4, c=3, seed=6)
    kw = dict(no_object_weight=0.3, class_weight=1.5, mask_weight=0.5, dice_weight=2.0)
    loss = MaskClassificationLoss(3, **kw)
    out = {"class_logits": cl, "mask_logits": ml}
    ref = bf_loss(cl, ml, masks, loss.match(out, masks), 3, weights=(1.5, 0.5, 2.0),
                  no_object=0.3)
    assert float(loss(out, masks)) == pytest.approx(ref, rel=1e-10)


def test_ignored_pixels_change_nothing_and_get_no_gradient():
    cl, ml, masks = random_case(n=2, q=4, c=3, seed=7)
    loss = MaskClassificationLoss(3)
    ml = ml.clone().requires_grad_()
    value = loss({"class_logits": cl, "mask_logits": ml}, masks)
    value.backward()
    ignored = (masks == 255)[:, None].expand_as(ml)
    assert ignored.any() and (ml.grad[ignored] == 0).all()
    other = ml.detach().clone()
    other[ignored] = 50.0 * torch.randn(int(ignored.sum()), dtype=other.dtype)
    again = loss({"class_logits": cl, "mask_logits": other}, masks)
    assert float(again) == pytest.approx(float(value.detach()), rel=1e-12)


def test_low_resolution_mask_logits_equal_the_full_loss_of_block_constant_logits():
    cl, ml, masks = random_case(n=2, q=4, c=3, h=4, w=3, seed=8)
    masks = torch.randint(0, 3, (2, 8, 6), generator=torch.Generator().manual_seed(1))
    masks[:, 0, :3] = 255
    loss = MaskClassificationLoss(3)
    big = ml.repeat_interleave(2, -2).repeat_interleave(2, -1)      # nearest upsampling
    low, full = ({"class_logits": cl, "mask_logits": m} for m in (ml, big))
    torch.testing.assert_close(loss.cost(low, masks), loss.cost(full, masks))
    assert float(loss(low, masks)) == pytest.approx(float(loss(full, masks)), rel=1e-10)


def test_absent_classes_and_fully_ignored_images():
    cl, ml, masks = random_case(n=2, q=4, c=5, seed=9)
    masks[0] = 0                                       # one class present
    masks[0, :2] = 255
    masks[1] = 255                                     # nothing labelled
    loss = MaskClassificationLoss(5)
    out = {"class_logits": cl, "mask_logits": ml}
    pairs = loss.match(out, masks)
    assert pairs[0][1].tolist() == [0] and len(pairs[1][0]) == 0
    assert float(loss(out, masks)) == pytest.approx(bf_loss(cl, ml, masks, pairs, 5), rel=1e-10)
    masks[0] = 255                                     # nothing labelled in the batch
    ml = ml.clone().requires_grad_()
    value = loss({"class_logits": cl, "mask_logits": ml}, masks)
    value.backward()
    ref = -2.0 * torch.log_softmax(cl, -1)[..., -1].mean()   # every query says "no object"
    assert float(value.detach()) == pytest.approx(float(ref), rel=1e-10)
    assert (ml.grad == 0).all()


def test_fit_trains_with_the_mask_classification_loss():
    model = tiny(3)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        m = torch.randint(0, 3, (2, 32, 32), generator=g)
        m[:, :2] = 255
        batches.append((torch.randn(2, 3, 32, 32, generator=g), m))
    loss = MaskClassificationLoss(3)
    before = model.head.class_head.weight.detach().clone()
    hist = fit(model, batches, batches, num_classes=3, max_steps=3, loss=loss, progress=False)
    assert hist.steps == 3 and not torch.equal(before, model.head.class_head.weight)
    assert math.isfinite(hist.last["loss"]) and math.isfinite(hist.last["val_loss"])


# ----------------------------------------------------------------- errors
def test_bad_model_arguments_are_errors():
    with pytest.raises(ValueError, match="num_queries"):
        maskformer(3, width=4, num_queries=0)
    with pytest.raises(ValueError, match="num_layers"):
        maskformer(3, width=4, num_layers=0)
    with pytest.raises(ValueError, match="divisible"):
        MaskFormerHead(3, dim=10, heads=4)
    with pytest.raises(ValueError, match="num_classes"):
        maskformer(1, width=4)
    with pytest.raises(ValueError, match="channels"):
        tiny(3)(torch.randn(1, 1, 32, 32))
    head = MaskFormerHead(3, dim=8, memory_dim=16, heads=2)
    with pytest.raises(ValueError, match="memory"):
        head(torch.randn(1, 8, 2, 2), torch.randn(1, 8, 8, 8))
    with pytest.raises(ValueError, match="pixels"):
        head(torch.randn(1, 16, 2, 2), torch.randn(1, 4, 8, 8))


def test_bad_loss_inputs_are_errors():
    cl, ml, masks = random_case(n=2, q=4, c=3)
    loss = MaskClassificationLoss(3)
    with pytest.raises(ValueError, match="dict"):
        loss(ml, masks)
    with pytest.raises(ValueError, match="class_logits"):
        loss({"class_logits": cl[..., :3], "mask_logits": ml}, masks)
    with pytest.raises(ValueError, match="mask_logits"):
        loss({"class_logits": cl, "mask_logits": ml[:, :3]}, masks)
    with pytest.raises(ValueError, match="masks"):
        loss({"class_logits": cl, "mask_logits": ml}, masks[0])
    with pytest.raises(ValueError, match="larger"):
        loss({"class_logits": cl, "mask_logits": ml}, masks[:, :2, :2])
    bad = masks.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match="masks"):
        loss({"class_logits": cl, "mask_logits": ml}, bad)
    with pytest.raises(ValueError, match="no_object_weight"):
        MaskClassificationLoss(3, no_object_weight=-1)
    with pytest.raises(ValueError, match="class_logits"):
        semantic_inference(cl[0], ml)
    with pytest.raises(ValueError, match="mask_logits"):
        semantic_inference(cl, ml[:, :2])


def test_the_loss_asks_fit_for_the_whole_output():
    assert MaskClassificationLoss.wants_outputs is True
    assert isinstance(tiny(3), MaskFormer)

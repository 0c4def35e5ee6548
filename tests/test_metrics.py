"""minseg.metrics: parity with torchmetrics and float64 brute force, hand-made boundary and
panoptic cases with known answers, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from minseg.metrics import (ConfusionMatrix, boundary_f1, boundary_mask, confusion_matrix,
                            distance_to_mask, expected_calibration_error, panoptic_quality,
                            reliability_bins, scores_from_confusion, trimap_iou)

tm_cls = pytest.importorskip("torchmetrics.classification")

C = 7  # classes 5 and 6 never occur in target or prediction below


def random_batches(n_batches=4, shape=(3, 13, 17), seed=0, present=5, void=0.1):
    """Targets and predictions with void pixels; classes >= `present` absent from both, and
    class 4 only ever predicted (absent from the target)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        target = torch.randint(0, present - 1, shape, generator=g)
        target[torch.rand(shape, generator=g) < void] = 255
        pred = torch.randint(0, present, shape, generator=g)
        keep = torch.rand(shape, generator=g) < 0.5  # correlated with the target, so IoU > 0
        pred = torch.where(keep & (target != 255), target, pred)
        out.append((pred, target))
    return out


def brute_confusion(pairs, num_classes):
    m = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for pred, target in pairs:
        for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
            if t != 255:
                m[t, p] += 1
    return m


# ------------------------------------------------------------------------------------------
# confusion matrix and scores
# ------------------------------------------------------------------------------------------
def test_confusion_matrix_matches_brute_force_and_torchmetrics():
    pairs = random_batches()
    ref = tm_cls.MulticlassConfusionMatrix(C, ignore_index=255)
    ours = ConfusionMatrix(C)
    for pred, target in pairs:
        ref.update(pred, target)
        ours.update(pred, target)
    assert torch.equal(ours.mat, brute_confusion(pairs, C))
    assert torch.equal(ours.mat, ref.compute().long())  # the exact integer counts
    assert torch.equal(confusion_matrix(*pairs[0], C), brute_confusion(pairs[:1], C))


def test_miou_iou_dice_equal_torchmetrics_over_accumulated_batches():
    pairs = random_batches()
    jac = tm_cls.MulticlassJaccardIndex(C, average="macro", ignore_index=255)
    jac_none = tm_cls.MulticlassJaccardIndex(C, average="none", ignore_index=255)
    f1 = tm_cls.MulticlassF1Score(C, average="macro", ignore_index=255)
    f1_none = tm_cls.MulticlassF1Score(C, average="none", ignore_index=255)
    cm = ConfusionMatrix(C)
    for pred, target in pairs:
        for m in (jac, jac_none, f1, f1_none):
            m.update(pred, target)
        cm.update(pred, target)
    r = cm.compute()
    # torchmetrics works in float32; we work in float64 on the same integer counts
    assert r["miou"] == pytest.approx(float(jac.compute()), abs=1e-6)
    assert r["mdice"] == pytest.approx(float(f1.compute()), abs=1e-6)
    # classes absent from target and prediction: NaN here, 0.0 in torchmetrics' "none"
    absent = torch.tensor([False] * 5 + [True] * 2)
    assert torch.isnan(r["iou"][absent]).all() and torch.isnan(r["dice"][absent]).all()
    assert (jac_none.compute()[absent] == 0).all()
    torch.testing.assert_close(r["iou"][~absent], jac_none.compute()[~absent].double(),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(r["dice"][~absent], f1_none.compute()[~absent].double(),
                               atol=1e-6, rtol=0)
    assert r["iou"][4] == 0 and torch.isnan(r["class_acc"][4])  # predicted only: IoU 0


def test_logits_input_equals_argmax_and_torchmetrics_logits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, C, 9, 11, generator=g)
    target = torch.randint(0, 4, (2, 9, 11), generator=g)
    target[0, :3] = 255
    a, b = ConfusionMatrix(C), ConfusionMatrix(C)
    a.update(logits, target)
    b.update(logits.argmax(1), target)
    assert torch.equal(a.mat, b.mat)
    jac = tm_cls.MulticlassJaccardIndex(C, average="macro", ignore_index=255)
    assert a.compute()["miou"] == pytest.approx(float(jac(logits, target)), abs=1e-6)


def test_pixel_and_mean_accuracy_fwiou_equal_float64_brute_force():
    pairs = random_batches(seed=3)
    cm = ConfusionMatrix(C)
    for p, t in pairs:
        cm.update(p, t)
    r = cm.compute()
    pred = torch.cat([p.flatten() for p, _ in pairs]).double()
    target = torch.cat([t.flatten() for _, t in pairs]).double()
    valid = target != 255
    assert r["pixel_acc"] == pytest.approx(float((pred[valid] == target[valid]).double().mean()),
                                           abs=1e-12)
    accs, fw = [], 0.0
    for c in range(C):
        in_t, in_p = (target == c) & valid, (pred == c) & valid
        tp, n_t, n_u = int((in_t & in_p).sum()), int(in_t.sum()), int((in_t | in_p).sum())
        if n_t:
            accs.append(tp / n_t)
            fw += n_t / int(valid.sum()) * tp / n_u
    assert r["mean_acc"] == pytest.approx(sum(accs) / len(accs), abs=1e-12)
    assert r["fwiou"] == pytest.approx(fw, abs=1e-12)


def test_result_does_not_depend_on_batch_split():
    pairs = random_batches(n_batches=3, shape=(4, 8, 8), seed=5)
    pred = torch.cat([p for p, _ in pairs])
    target = torch.cat([t for _, t in pairs])
    whole = ConfusionMatrix(C)
    whole.update(pred, target)
    for sizes in [(1,) * 12, (5, 7), (2, 3, 7)]:
        parts = ConfusionMatrix(C)
        for p, t in zip(pred.split(list(sizes)), target.split(list(sizes))):
            parts.update(p, t)
        assert torch.equal(parts.mat, whole.mat)
        r1, r2 = parts.compute(), whole.compute()
        assert r1["miou"] == r2["miou"] and r1["pixel_acc"] == r2["pixel_acc"]
    a, b = ConfusionMatrix(C), ConfusionMatrix(C)
    a.update(pred[:5], target[:5])
    b.update(pred[5:], target[5:])
    assert torch.equal((a + b).mat, whole.mat)
    assert torch.equal(a.merge(b).mat, whole.mat)


def test_reset_all_reduce_noop_and_empty():
    cm = ConfusionMatrix(3)
    r = cm.compute()
    assert math.isnan(r["miou"]) and math.isnan(r["pixel_acc"])
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 255]]))
    assert cm.all_reduce() is cm and int(cm.mat.sum()) == 1  # no process group: no-op
    assert cm.compute()["miou"] == 1.0 and cm.compute()["pixel_acc"] == 1.0
    cm.reset()
    assert int(cm.mat.sum()) == 0


def test_perfect_prediction_and_other_ignore_index_values():
    t = torch.tensor([[0, 1, 2, 255]])
    r = scores_from_confusion(confusion_matrix(t.clamp_max(2), t, 3))
    assert r["miou"] == r["mdice"] == r["pixel_acc"] == r["fwiou"] == 1.0
    m = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, -100, 1]), 2, ignore_index=-100)
    assert m.tolist() == [[1, 0], [0, 1]]
    m = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 65535, 1]), 2,
                         ignore_index=65535)
    assert m.tolist() == [[1, 0], [0, 1]]
    m = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]), 2, ignore_index=None)
    assert m.tolist() == [[1, 0], [0, 2]]
    m = confusion_matrix(torch.tensor([0, 1], dtype=torch.uint8),
                         torch.tensor([1, 255], dtype=torch.uint8), 2)
    assert m.tolist() == [[0, 0], [1, 0]]


@pytest.mark.parametrize("pred,target,match", [
    ([0, 1], [0, 7], r"target contains label ids \[7\]"),
    ([0, 1], [0, 254], r"\[254\]"),
    ([0, 1], [0, 256], r"\[256\]"),
    ([0, 1], [-1, 0], r"\[-1\]"),
    ([0, 3], [0, 1], r"pred contains label ids \[3\]"),
    ([-2, 0], [0, 1], r"pred contains label ids \[-2\]"),
    ([0, 255], [0, 1], r"pred contains label ids \[255\]"),
])
def test_confusion_matrix_rejects_out_of_range_ids(pred, target, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(torch.tensor(pred), torch.tensor(target), 3)


def test_confusion_matrix_bad_input():
    p = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(p, torch.zeros(3, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="dtype"):
        confusion_matrix(p, torch.zeros(2, 3), 3)
    with pytest.raises(ValueError, match="dtype"):
        confusion_matrix(p.float(), p, 3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(p, p, 1)
    with pytest.raises(ValueError, match="is a class id"):
        confusion_matrix(p, p, 3, ignore_index=1)
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="NaN"):
        cm.update(torch.full((1, 3, 2, 2), float("nan")), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        cm.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="target must have shape"):
        cm.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 3, dtype=torch.long))


# ------------------------------------------------------------------------------------------
# boundaries
# ------------------------------------------------------------------------------------------
def halves(col=4, size=8):
    t = torch.zeros(size, size, dtype=torch.long)
    t[:, col:] = 1
    return t


def test_boundary_mask_and_distance():
    b = boundary_mask(halves())
    assert b[:, 3].all() and b[:, 4].all() and int(b.sum()) == 16  # both sides, no image border
    m = torch.zeros(1, 9, 9, dtype=torch.bool)
    m[0, 4, 4] = True
    d = distance_to_mask(m, 3)
    yy, xx = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    ref = ((yy - 4) ** 2 + (xx - 4) ** 2).sqrt()
    ref[ref > 3] = float("inf")
    assert torch.equal(d[0], ref)


def test_boundary_f1_known_answers():
    t = halves()
    tt = t[None].repeat(2, 1, 1)
    assert boundary_f1(t, t, 0) == 1.0 and boundary_f1(tt, tt) == 1.0
    flat = torch.zeros(5, 5, dtype=torch.long)
    assert boundary_f1(flat, flat) == 1.0  # no boundary anywhere: nothing to find
    shifted = halves(col=5)  # every boundary 1 px off
    assert boundary_f1(shifted, t, tolerance_px=0) == 0.0
    assert boundary_f1(shifted, t, tolerance_px=1) == 1.0
    # prediction misses the edge in the top half (rows 0-3 all class 0):
    # class 0: pred boundary (4..7, 3) + (3, 4..7), target (0..7, 3); class 1: pred
    # (4..7, 4) + (4, 5..7), target (0..7, 4).
    p = t.clone()
    p[:4] = 0
    # tol 0: F0 = F(4/8, 4/8) = 1/2, F1 = F(4/7, 4/8) = 8/15
    assert boundary_f1(p, t, 0) == pytest.approx((1 / 2 + 8 / 15) / 2)
    # tol 1: F0 = F(5/8, 5/8) = 5/8, F1 = F(5/7, 5/8) = 2/3
    assert boundary_f1(p, t, 1) == pytest.approx((5 / 8 + 2 / 3) / 2)
    # nothing predicted where the target has an edge: precision 1 (empty), recall 0 -> F = 0
    assert boundary_f1(torch.zeros_like(t), t, 2) == 0.0


def test_boundary_f1_void_pixels():
    t = halves()
    t[:, 4] = 255  # a void column between class 0 (cols 0-3) and class 1 (cols 5-7)
    p = halves(col=5)  # prediction's class-0 boundary lies on the void column
    # class 0: the predicted boundary is on void -> not scored (P = 1); it still serves as a
    # match for the target boundary at col 3 when the tolerance reaches it.
    assert boundary_f1(p, t, 0) == pytest.approx(0.5)  # F0 = 0 (R = 0), F1 = 1
    assert boundary_f1(p, t, 1) == 1.0


def test_trimap_iou_known_answers():
    t = halves()
    assert trimap_iou(t, t, 2, band_px=1) == 1.0
    p = halves(col=5)
    # band_px=1 -> columns 2..5; class 0: target {2,3}, pred {2,3,4}: 2/3; class 1: 1/2
    assert trimap_iou(p, t, 2, band_px=1) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # band_px=0 -> only the boundary columns 3 and 4: class 0 1/2, class 1 0/1
    assert trimap_iou(p, t, 2, band_px=0) == pytest.approx(0.25)
    assert math.isnan(trimap_iou(t * 0, t * 0, 2, band_px=2))  # no boundary, empty band


def test_boundary_metrics_bad_input():
    t = halves()
    with pytest.raises(ValueError, match="shape"):
        boundary_f1(t, t[:4])
    with pytest.raises(ValueError, match="dtype"):
        boundary_f1(t.float(), t)
    with pytest.raises(ValueError, match=r"\[9\]"):
        trimap_iou(t, t * 9, 2, 1)
    with pytest.raises(ValueError, match="outside"):
        boundary_f1(t + 2, t, num_classes=2)


# ------------------------------------------------------------------------------------------
# panoptic quality
# ------------------------------------------------------------------------------------------
D = 1000


def test_panoptic_quality_known_answer():
    target = torch.zeros(6, 6, dtype=torch.long)  # stuff class 0 everywhere else
    target[0:2, 0:2] = 1 * D + 1
    target[4:6, 4:6] = 1 * D + 2
    target[0, 5] = -1
    pred = torch.zeros(6, 6, dtype=torch.long)
    pred[0:2, 0:3] = 1 * D + 5  # matches instance 1 with IoU 4/6
    pred[3, 0:2] = 1 * D + 6  # a false positive; instance 2 is missed (false negative)
    r = panoptic_quality(pred, target)
    # stuff: target area 27, pred area 28, intersection 23, 1 pred pixel on void -> 23/31
    assert r["per_class"][0] == pytest.approx(
        {"pq": 23 / 31, "sq": 23 / 31, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0, "iou_sum": 23 / 31})
    assert r["per_class"][1] == pytest.approx(
        {"pq": 1 / 3, "sq": 2 / 3, "rq": 0.5, "tp": 1, "fp": 1, "fn": 1, "iou_sum": 2 / 3})
    assert r["pq"] == pytest.approx((23 / 31 + 1 / 3) / 2)
    assert r["sq"] == pytest.approx((23 / 31 + 2 / 3) / 2)
    assert r["rq"] == pytest.approx(0.75)
    assert r["things"]["pq"] == pytest.approx(1 / 3) and r["stuff"]["pq"] == pytest.approx(23 / 31)
    # the same image twice in a batch: counts double, ratios unchanged
    r2 = panoptic_quality(torch.stack([pred, pred]), torch.stack([target, target]))
    assert r2["pq"] == pytest.approx(r["pq"]) and r2["per_class"][1]["fp"] == 2


def test_panoptic_quality_perfect_threshold_and_void_rule():
    target = torch.zeros(4, 4, dtype=torch.long)
    target[:2, :2] = D + 1
    r = panoptic_quality(target, target)
    assert r["pq"] == r["sq"] == r["rq"] == 1.0
    # IoU exactly 0.5 is not a match (strictly greater is required)
    pred = torch.zeros(4, 4, dtype=torch.long)
    pred[:2, :] = D + 1  # instance 4 px, prediction 8 px (4 of them stuff in the target)
    r = panoptic_quality(pred, target, thing_classes=[1])
    assert r["per_class"][1] == pytest.approx(
        {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1, "iou_sum": 0.0})
    # a predicted segment lying mostly (3 of 4 px) on target void is not a false positive;
    # at exactly half on void it is
    target2 = torch.zeros(4, 4, dtype=torch.long)
    target2[0, :3] = -1
    pred2 = torch.zeros(4, 4, dtype=torch.long)
    pred2[0, :4] = 2 * D + 1
    r = panoptic_quality(pred2, target2, num_classes=3)
    assert 2 not in r["per_class"]
    # stuff: target 13 px, pred 12 px, all shared -> IoU 12/13, no void overlap
    assert r["per_class"][0]["sq"] == pytest.approx(12 / 13) and r["n"] == 1
    target2[0, 2] = 0
    r = panoptic_quality(pred2, target2, num_classes=3)
    assert r["per_class"][2]["fp"] == 1


def test_panoptic_quality_bad_input():
    t = torch.zeros(3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="shape"):
        panoptic_quality(t, t[:2])
    with pytest.raises(ValueError, match="dtype"):
        panoptic_quality(t.float(), t)
    with pytest.raises(ValueError, match=r"\[-5\]"):
        panoptic_quality(t - 5, t)
    with pytest.raises(ValueError, match=r"\[3001\]"):
        panoptic_quality(t, t + 3001, num_classes=3)


# ------------------------------------------------------------------------------- calibration
def calibration_case(seed=0, scale=3.0, shape=(3, 5, 9, 7), void_row=2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * scale
    target = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g)
    # make the argmax right on about half the pixels, so accuracy is neither 0 nor chance
    right = torch.rand(target.shape, generator=g) < 0.5
    target = torch.where(right, logits.argmax(1), target)
    target[:, void_row] = 255
    return logits.softmax(1), target


def brute_ece(probs, target, n_bins):
    """float64 loops over pixels; bins [k/M, (k+1)/M), the last one closed."""
    count, conf, acc = [0] * n_bins, [0.0] * n_bins, [0.0] * n_bins
    p = probs.double().permute(0, 2, 3, 1).reshape(-1, probs.shape[1])
    for row, t in zip(p.tolist(), target.flatten().tolist()):
        if t == 255:
            continue
        c = max(row)
        k = min(int(c * n_bins), n_bins - 1)
        count[k] += 1
        conf[k] += c
        acc[k] += float(row.index(c) == t)
    n = sum(count)
    return sum(abs(acc[k] - conf[k]) for k in range(n_bins) if count[k]) / n, count


@pytest.mark.parametrize("n_bins", [1, 10, 15])
@pytest.mark.parametrize("seed,scale", [(0, 3.0), (1, 0.5), (2, 5.0)])
def test_ece_equals_torchmetrics_with_void(n_bins, seed, scale):
    probs, target = calibration_case(seed, scale)
    ref = tm_cls.MulticlassCalibrationError(probs.shape[1], n_bins=n_bins, norm="l1",
                                            ignore_index=255)
    assert (probs.max(1).values < 1).all()  # torchmetrics bins confidence 1.0 on its own
    ours = expected_calibration_error(probs, target, n_bins)
    assert ours == pytest.approx(float(ref(probs, target)), abs=2e-6)
    assert ours == pytest.approx(brute_ece(probs, target, n_bins)[0], abs=1e-12)


def test_reliability_bins_brute_force_void_and_confidence_one():
    probs, target = calibration_case(3, 4.0)
    probs[0, :, 0, 0] = torch.tensor([1.0, 0, 0, 0, 0])  # confidence exactly 1: last bin
    target[0, 0, 0] = 1                                   # ... and wrong
    bins = reliability_bins(probs, target, 10)
    ece, count = brute_ece(probs, target, 10)
    assert bins["count"].tolist() == count
    assert bins["pixels"] == int((target != 255).sum())
    assert expected_calibration_error(probs, target, 10) == pytest.approx(ece, abs=1e-12)
    valid = target != 255
    conf, pred = probs.max(1)
    assert bins["mean_confidence"] == pytest.approx(float(conf[valid].double().mean()))
    assert bins["mean_accuracy"] == pytest.approx(float((pred == target)[valid].double().mean()))
    empty = bins["count"] == 0
    assert bins["confidence"][empty].isnan().all() and bins["accuracy"][empty].isnan().all()
    # the bins are a partition: count-weighted bin means give back the overall means
    full = ~empty
    assert float((bins["count"][full] * bins["confidence"][full]).sum() / bins["pixels"]) == \
        pytest.approx(bins["mean_confidence"])


def test_ece_known_answers_and_all_void():
    # two pixels, confidence 0.9 each, one right: |0.5 - 0.9| = 0.4
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1]]).T.reshape(1, 2, 1, 2)
    assert expected_calibration_error(probs, torch.tensor([[[0, 1]]])) == pytest.approx(0.4)
    # a perfect one-hot prediction is perfectly calibrated
    onehot = torch.nn.functional.one_hot(torch.tensor([[[0, 1, 1]]]), 2).permute(0, 3, 1, 2)
    assert expected_calibration_error(onehot.float(), torch.tensor([[[0, 1, 1]]])) == 0.0
    assert math.isnan(expected_calibration_error(probs, torch.full((1, 1, 2), 255)))
    assert reliability_bins(probs, torch.full((1, 1, 2), 255))["pixels"] == 0


def test_calibration_bad_input():
    probs, target = calibration_case()
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error(probs.log(), target)           # logits, not probabilities
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error(probs * 0.5, target)
    with pytest.raises(ValueError, match="shape"):
        expected_calibration_error(probs, target[:, :-1])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(probs, target, n_bins=0)
    with pytest.raises(ValueError, match="integer"):
        expected_calibration_error(probs, target.float())
    bad = target.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError):
        expected_calibration_error(probs, bad)
    with pytest.raises(ValueError, match="NaN"):
        expected_calibration_error(torch.full_like(probs, float("nan")), target)

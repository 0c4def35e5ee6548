"""minseg.losses: parity with PyTorch / torchvision and float64 brute force of each documented
formula, ignore handling, finite gradients (empty classes, all-ignored batches), bad input."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minseg.losses import (LOSSES, boundary_weighted_cross_entropy, boundary_weights,
                           ce_dice_loss, class_frequencies, class_weights, cross_entropy,
                           dice_loss, focal_loss, get_loss, partial_cross_entropy,
                           sigmoid_focal_loss)

C = 6  # classes 4 and 5 never occur in the target


def batch(seed=0, shape=(2, 7, 9), void=0.2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], C, *shape[1:], generator=g, dtype=dtype) * 2
    target = torch.randint(0, 4, shape, generator=g)
    target[torch.rand(shape, generator=g) < void] = 255
    weight = torch.rand(C, generator=g, dtype=dtype) + 0.1
    return logits, target, weight


# the registry drives the generic tests: a loss added to LOSSES is tested here without a list to edit
ALL_LOSSES = list(LOSSES.values())


# ------------------------------------------------------------------------------------------
# cross entropy
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
def test_cross_entropy_equals_torch(use_weight, smoothing):
    logits, target, weight = batch()
    w = weight if use_weight else None
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    ours = cross_entropy(a, target, weight=w, label_smoothing=smoothing)
    ref = F.cross_entropy(b, target, weight=w, ignore_index=255, label_smoothing=smoothing)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=0)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_gradient_is_p_minus_smoothed_onehot(smoothing):
    """d loss / d z_i = (softmax(z_i) - q_i) / |V| on valid pixels, 0 on void, with
    q_i = (1 - eps) onehot(y_i) + eps / C (torch's label-smoothing target)."""
    logits, target, _ = batch(seed=3)
    z = logits.clone().requires_grad_()
    cross_entropy(z, target, label_smoothing=smoothing).backward()
    valid = target != 255
    onehot = F.one_hot(target.masked_fill(~valid, 0), C).permute(0, 3, 1, 2).double()
    q = (1 - smoothing) * onehot + smoothing / C
    expected = (logits.softmax(1) - q) * valid[:, None] / valid.sum()
    torch.testing.assert_close(z.grad, expected, atol=1e-14, rtol=0)
    b = logits.clone().requires_grad_()
    loss = cross_entropy(b, torch.full_like(target, 255), label_smoothing=smoothing)
    loss.backward()
    assert loss.item() == 0.0 and (b.grad == 0).all()


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_label_smoothing_optimum_logit_gap(eps):
    """The minimiser of smoothed CE has softmax = q, so the true class's logit leads every
    other by log(1 + C (1 - eps) / eps) (finite, unlike plain CE's)."""
    gap = math.log(1 + C * (1 - eps) / eps)
    z = torch.zeros(1, C, 1, 1, dtype=torch.float64)
    z[0, 0] = gap                                  # true class 0 leads every other by `gap`
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    a = z.clone().requires_grad_()
    loss = cross_entropy(a, target, label_smoothing=eps)
    loss.backward()
    assert a.grad.abs().max() < 1e-15             # a stationary point of a convex loss
    for delta in (-0.01, 0.01):                    # moving the gap either way costs
        z2 = z.clone()
        z2[0, 0] += delta
        assert float(cross_entropy(z2, target, label_smoothing=eps)) > loss.item()
    # plain CE has no finite optimum: a larger gap always lowers it
    assert float(cross_entropy(z * 2, target)) < float(cross_entropy(z, target))


def test_partial_cross_entropy_counts_only_labelled_pixels():
    logits, _, _ = batch()
    sparse = torch.full((2, 7, 9), 255)
    sparse[0, 1, 2], sparse[0, 5, 5], sparse[1, 3, 3] = 0, 2, 1  # three clicks
    a = logits.clone().requires_grad_()
    loss = partial_cross_entropy(a, sparse)
    picked = [-torch.log_softmax(logits[n, :, y, x], 0)[c]
              for n, y, x, c in [(0, 1, 2, 0), (0, 5, 5, 2), (1, 3, 3, 1)]]
    assert loss.item() == pytest.approx(float(sum(picked) / 3), abs=1e-12)
    loss.backward()
    labelled = (sparse != 255).unsqueeze(1).expand_as(a)
    assert (a.grad[~labelled] == 0).all() and (a.grad[labelled] != 0).any()


# ------------------------------------------------------------------------------------------
# focal
# ------------------------------------------------------------------------------------------
def test_focal_gamma0_equals_cross_entropy():
    logits, target, weight = batch(seed=1)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0),
                               F.cross_entropy(logits, target, ignore_index=255),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0, weight=weight),
                               F.cross_entropy(logits, target, weight, ignore_index=255),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("alpha", [None, 0.25, "per-class"])
def test_focal_equals_float64_brute_force(alpha):
    logits, target, weight = batch(seed=2)
    a = torch.linspace(0.2, 1.0, C, dtype=torch.float64) if alpha == "per-class" else alpha
    num = den = 0.0
    for n in range(2):
        for y in range(7):
            for x in range(9):
                t = int(target[n, y, x])
                if t == 255:
                    continue
                p = float(torch.softmax(logits[n, :, y, x], 0)[t])
                at = 1.0 if a is None else (a if isinstance(a, float) else float(a[t]))
                num += float(weight[t]) * at * (1 - p) ** 2 * -math.log(p)
                den += float(weight[t])
    ours = focal_loss(logits, target, gamma=2.0, alpha=a, weight=weight)
    assert float(ours) == pytest.approx(num / den, rel=1e-10)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_sigmoid_focal_equals_torchvision(reduction, alpha):
    ops = pytest.importorskip("torchvision.ops")
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 6, 5, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(2, 1, 6, 5, generator=g) > 0.7).double()
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = sigmoid_focal_loss(a, targets, alpha=alpha, gamma=2.0, reduction=reduction)
    ref = ops.sigmoid_focal_loss(b, targets, alpha=alpha, gamma=2.0, reduction=reduction)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------------
# Dice
# ------------------------------------------------------------------------------------------
def brute_dice(logits, target, smooth, weight, per_image):
    """The documented formula, written with loops in float64."""
    prob = torch.softmax(logits.double(), 1)
    groups = [[n] for n in range(logits.shape[0])] if per_image else [list(range(logits.shape[0]))]
    num = den = 0.0
    for images in groups:
        for c in range(logits.shape[1]):
            inter = size = 0.0
            present = False
            for n in images:
                for y in range(logits.shape[2]):
                    for x in range(logits.shape[3]):
                        t = int(target[n, y, x])
                        if t == 255:
                            continue
                        p = float(prob[n, c, y, x])
                        inter += p * (t == c)
                        size += p + (t == c)
                        present |= t == c
            if present:
                w = 1.0 if weight is None else float(weight[c])
                num += w * (1 - (2 * inter + smooth) / (size + smooth))
                den += w
    return num / den


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("smooth,use_weight", [(1.0, False), (0.0, False), (1.0, True)])
def test_dice_equals_float64_brute_force(per_image, smooth, use_weight):
    logits, target, weight = batch(seed=4)
    target[1][target[1] == 3] = 0  # class 3 present in image 0 only
    w = weight if use_weight else None
    ours = dice_loss(logits, target, smooth=smooth, weight=w, per_image=per_image)
    assert float(ours) == pytest.approx(brute_dice(logits, target, smooth, w, per_image), rel=1e-10)


def test_losses_ignore_void_pixels_completely():
    logits, target, _ = batch(seed=5)
    void = (target == 255).unsqueeze(1).expand_as(logits)
    changed = logits.clone()
    changed[void] = 50.0  # anything at void pixels must not matter
    for f in ALL_LOSSES:
        a = changed.clone().requires_grad_()
        loss = f(a, target)
        assert loss.item() == pytest.approx(float(f(logits, target)), abs=1e-12), f.__name__
        loss.backward()
        assert (a.grad[void] == 0).all(), f.__name__


def test_ce_dice_is_the_sum():
    logits, target, weight = batch(seed=6)
    total = ce_dice_loss(logits, target, weight=weight, ce_weight=0.3, dice_weight=2.0)
    ref = (0.3 * F.cross_entropy(logits, target, weight, ignore_index=255)
           + 2.0 * dice_loss(logits, target, weight=weight))
    assert float(total) == pytest.approx(float(ref), rel=1e-12)


# ------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("f", ALL_LOSSES, ids=lambda f: f.__name__)
def test_gradients_finite_and_all_ignored_batch_is_zero(f):
    logits, target, _ = batch(seed=7, dtype=torch.float32)
    logits[0, :, 0, 0] = torch.tensor([80.0, -80, 0, 0, 0, 0])  # saturated softmax
    a = logits.clone().requires_grad_()
    loss = f(a, target)  # classes 4 and 5 are empty
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all()
    b = logits.clone().requires_grad_()
    loss = f(b, torch.full_like(target, 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(b.grad).all() and (b.grad == 0).all()


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradients_finite_when_saturated(gamma):
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0] = 200.0  # p(class 0) == 1 exactly in float32
    a = logits.requires_grad_()
    focal_loss(a, torch.zeros(1, 1, 2, dtype=torch.long), gamma=gamma).backward()
    assert torch.isfinite(a.grad).all()


# ------------------------------------------------------------------------------------------
# boundary weighting
# ------------------------------------------------------------------------------------------
def test_boundary_weights_known_values():
    t = torch.zeros(1, 8, 12, dtype=torch.long)
    t[..., 6:] = 1  # boundary pixels in columns 5 and 6
    t[0, 0, 0] = 255
    w = boundary_weights(t, sigma=1.0, amplitude=4.0)
    # row 6 is far enough from the void pixel's own boundary
    assert w[0, 6, 5] == pytest.approx(5.0) and w[0, 6, 6] == pytest.approx(5.0)
    assert w[0, 6, 4] == pytest.approx(1 + 4 * math.exp(-0.5))
    assert w[0, 6, 2] == pytest.approx(1 + 4 * math.exp(-4.5))  # distance 3 = 3 sigma
    assert w[0, 6, 1] == 1.0  # beyond 3 sigma
    assert w[0, 0, 0] == 0.0  # void
    # the void pixel's neighbours are boundary pixels too (a transition to void)
    assert w[0, 0, 1] == pytest.approx(5.0)


def test_boundary_weighted_ce():
    logits, target, weight = batch(seed=8)
    torch.testing.assert_close(boundary_weighted_cross_entropy(logits, target, amplitude=0.0),
                               F.cross_entropy(logits, target, ignore_index=255),
                               atol=1e-12, rtol=0)
    b = boundary_weights(target).double() * weight[target.clamp_max(C - 1)]
    nll = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    ref = (b * nll).sum() / b.sum()
    torch.testing.assert_close(boundary_weighted_cross_entropy(logits, target, weight=weight), ref,
                               atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------------
# class statistics and registry
# ------------------------------------------------------------------------------------------
def test_class_frequencies_tensor_and_iterable():
    masks = torch.tensor([[[0, 0, 1, 255]], [[2, 2, 2, 2]]])  # two 1x4 images
    counts = class_frequencies(masks, 4)
    assert counts.tolist() == [2, 1, 4, 0]
    pairs = [(torch.zeros(3, 1, 4), m) for m in masks]  # dataset-style (image, mask) pairs
    counts2, totals = class_frequencies(pairs, 4, per_image_totals=True)
    assert counts2.tolist() == [2, 1, 4, 0] and totals.tolist() == [3, 3, 4, 0]
    with pytest.raises(ValueError, match=r"\[9\]"):
        class_frequencies(masks * 0 + 9, 4)


def test_class_weights_inverse_and_median():
    counts = torch.tensor([60, 30, 10, 0])
    w = class_weights(counts, "inverse")
    torch.testing.assert_close(w, torch.tensor([100 / 180, 100 / 90, 100 / 30, 0.0]))
    # median of frequencies (0.6, 0.3, 0.1) = 0.3
    torch.testing.assert_close(class_weights(counts, "median"), torch.tensor([0.5, 1.0, 3.0, 0.0]))
    # Eigen & Fergus: freq_c = n_c / pixels of the images containing c = (0.6, 0.3, 0.5)
    torch.testing.assert_close(class_weights(counts, "median", image_pixels=[100, 100, 20, 0]),
                               torch.tensor([0.5 / 0.6, 0.5 / 0.3, 1.0, 0.0]))
    with pytest.raises(ValueError, match="method"):
        class_weights(counts, "sqrt")
    with pytest.raises(ValueError, match="non-negative"):
        class_weights(torch.tensor([1, -1]))


def test_get_loss_by_name():
    logits, target, _ = batch(seed=9)
    assert {"ce", "focal", "dice", "ce+dice"} <= set(LOSSES)
    ce = float(cross_entropy(logits, target))
    assert float(get_loss("ce")(logits, target)) == pytest.approx(ce)
    assert float(get_loss("focal", gamma=0.0)(logits, target)) == pytest.approx(ce)
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("hinge")


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("f", ALL_LOSSES, ids=lambda f: f.__name__)
def test_bad_input_raises_value_error(f):
    logits, target, _ = batch(seed=10, dtype=torch.float32)
    with pytest.raises(ValueError, match="shape"):
        f(logits, target[:, :5])
    with pytest.raises(ValueError, match=r"label ids \[7\]"):
        f(logits, target.masked_fill(target == 0, 7))
    with pytest.raises(ValueError, match="dtype"):
        f(logits, target.float())
    for bad in (float("nan"), float("inf")):
        x = logits.clone()
        x[0, 0, 0, 0] = bad
        with pytest.raises(ValueError, match="NaN/inf"):
            f(x, target)
    with pytest.raises(ValueError, match="N,C,H,W"):
        f(logits[0], target[0])


def test_bad_weights_and_sigmoid_inputs():
    logits, target, _ = batch(seed=11)
    with pytest.raises(ValueError, match="one value per class"):
        cross_entropy(logits, target, weight=torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        focal_loss(logits, target, weight=-torch.ones(C))
    x = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="shape"):
        sigmoid_focal_loss(x, torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sigmoid_focal_loss(x, torch.full_like(x, 2.0))
    with pytest.raises(ValueError, match="NaN/inf"):
        sigmoid_focal_loss(x / 0, torch.zeros_like(x))

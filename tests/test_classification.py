"""minseg.classification: presence targets, average precision, classifier training, CAM masks."""
import math

import pytest
import torch
import torch.nn as nn

from minseg.classification import (average_precision, cam_masks, evaluate_classifier,
                                   fit_classifier, presence_targets)
from minseg.models import VGGClassifier, fully_convolutional


def test_presence_targets_ignores_void_and_counts_any_pixel():
    m = torch.tensor([[[0, 0], [2, 255]],
                      [[255, 255], [255, 1]]])
    t = presence_targets(m, 3)
    assert t.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    with pytest.raises(ValueError):
        presence_targets(torch.tensor([[[3]]]), 3)
    with pytest.raises(ValueError):
        presence_targets(torch.zeros(2, 2, dtype=torch.long), 3)


def test_average_precision_matches_hand_computation():
    # ranked: pos, neg, pos, neg -> precisions at the positives 1/1 and 2/3
    s = torch.tensor([0.9, 0.8, 0.7, 0.1])
    y = torch.tensor([1, 0, 1, 0])
    assert average_precision(s, y) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(torch.tensor([0.2, 0.9]), torch.tensor([1, 0])) == pytest.approx(0.5)
    assert average_precision(s, torch.tensor([1, 1, 0, 0])) == pytest.approx(1.0)
    assert math.isnan(average_precision(s, torch.zeros(4)))


def test_average_precision_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.classification")
    g = torch.Generator().manual_seed(0)
    s, y = torch.rand(50, generator=g), (torch.rand(50, generator=g) > 0.6).long()
    ref = tm.binary_average_precision(s, y)
    assert average_precision(s, y) == pytest.approx(float(ref), abs=1e-6)


def _loader(n=8, size=32, seed=0):
    """Images whose mean colour tells whether class 1 is present: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(2):
        x = torch.randn(n, 3, size, size, generator=g) * 0.1
        m = torch.zeros(n, size, size, dtype=torch.long)
        has = torch.arange(n) % 2 == 0
        m[has, 8:20, 8:20] = 1
        x[has, 0, 8:20, 8:20] += 3.0
        batches.append((x, m))
    return batches


def test_fit_classifier_learns_presence_and_respects_limits():
    torch.manual_seed(0)
    model = VGGClassifier(2, width=4)
    loader = _loader()
    hist = fit_classifier(model, loader, num_classes=2, epochs=15, lr=3e-3, device="cpu")
    assert len(hist) == 15 and hist[-1]["step"] == 30
    assert hist[-1]["loss"] < hist[0]["loss"]
    res = evaluate_classifier(model, loader, 2)
    assert res["map"] > 0.9
    assert math.isnan(res["ap"][0]) and res["scores"].shape == (16, 2)
    hist = fit_classifier(VGGClassifier(2, width=4), loader, num_classes=2, max_steps=3,
                          device="cpu")
    assert hist[-1]["step"] == 3
    with pytest.raises(ValueError):
        fit_classifier(model, loader, num_classes=2)


def test_fit_classifier_rejects_a_segmenter_output():
    seg = nn.Conv2d(3, 2, 1)
    with pytest.raises(ValueError, match="N,2 logits"):
        fit_classifier(seg, _loader(), num_classes=2, max_steps=1, device="cpu")


def test_cam_masks_shape_and_background_fallback():
    torch.manual_seed(0)
    clf = VGGClassifier(3, width=4).eval()
    dense = fully_convolutional(clf)
    x = torch.randn(2, 3, 64, 64)
    m = cam_masks(dense, x)
    assert m.shape == (2, 64, 64) and m.dtype == torch.int64
    assert int(m.min()) >= 0 and int(m.max()) <= 2
    # nothing present -> all background
    with torch.no_grad():
        clf.fc.bias.fill_(-1e4)
    dense = fully_convolutional(clf)
    assert int(cam_masks(dense, x).max()) == 0


def test_fit_classifier_budget_schedule_decays_with_the_budget():
    torch.manual_seed(0)
    model = VGGClassifier(2, width=4)
    hist = fit_classifier(model, _loader(), num_classes=2, epochs=5, time_budget_s=1e-9,
                          budget_schedule=True, device="cpu")
    assert hist[-1]["step"] == 1 and hist[-1]["lr"] == 0.0
    hist = fit_classifier(model, _loader(), num_classes=2, epochs=1, device="cpu")
    assert hist[-1]["lr"] > 0

"""minseg.classification: average precision, classifier training, class activation maps."""
import math

import pytest
import torch
import torch.nn as nn

from minseg.classification import (average_precision, cam_masks, cam_to_pseudo_labels,
                                   class_activation_maps, evaluate_classifier, fit_classifier)
from minseg.models import CAMClassifier, VGGClassifier, fully_convolutional

IGN = 255


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
    x = torch.randn(2, 3, 64, 64)
    m = cam_masks(clf, x)
    assert m.shape == (2, 64, 64) and m.dtype == torch.int64
    assert int(m.min()) >= 0 and int(m.max()) <= 2
    # nothing present -> all background
    with torch.no_grad():
        clf.fc.bias.fill_(-1e4)
    assert int(cam_masks(clf, x).max()) == 0


def test_minmax_cam_is_the_normalised_score_map_of_the_fully_convolutional_classifier():
    # An independent route: FCN's convolutionalised head scores every cell (bias included);
    # min-max normalisation removes the per-class bias, so both give the same maps.
    torch.manual_seed(0)
    clf = VGGClassifier(4, width=8)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for _ in range(30):              # BatchNorm statistics of this input, so maps vary in eval
            clf(x)
    clf.eval()
    with torch.no_grad():
        sm = torch.nn.functional.interpolate(fully_convolutional(clf).score_map(x), size=(64, 96),
                                             mode="bilinear", align_corners=False).double()
    lo, hi = sm.amin((2, 3), keepdim=True), sm.amax((2, 3), keepdim=True)
    ref = (sm - lo) / (hi - lo)
    got = class_activation_maps(clf, x, normalize="minmax").double()
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="normalize"):
        class_activation_maps(clf, x, normalize="softmax")


def test_fit_classifier_background_is_left_out_of_the_loss():
    torch.manual_seed(0)
    model = VGGClassifier(2, width=4)
    before = model.fc.weight[0].detach().clone(), model.fc.bias[0].detach().clone()
    hist = fit_classifier(model, _loader(), num_classes=2, max_steps=3, background=0,
                          schedule="constant", lr=1e-2, device="cpu")
    assert hist[-1]["step"] == 3 and hist[-1]["lr"] == 1e-2         # constant schedule
    # the background logit gets no gradient, so only weight decay moves its row
    assert torch.allclose(model.fc.bias[0], before[1])
    with pytest.raises(ValueError, match="background"):
        fit_classifier(model, _loader(), num_classes=2, max_steps=1, background=2, device="cpu")
    with pytest.raises(ValueError, match="schedule"):
        fit_classifier(model, _loader(), num_classes=2, max_steps=1, schedule="step", device="cpu")


def test_evaluate_classifier_f1_matches_a_hand_count():
    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))
            self.logits = logits

        def forward(self, x):
            return self.logits[: len(x)]

    masks = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [0, 255]], [[1, 1], [1, 1]]])
    # predicted: image 0 -> {1} (misses 2), image 1 -> {2} (false), image 2 -> {1, 2} (2 false)
    logits = torch.tensor([[5.0, 3.0, -3.0], [5.0, -3.0, 3.0], [5.0, 3.0, 3.0]])
    res = evaluate_classifier(Fixed(logits), [(torch.zeros(3, 3, 2, 2), masks)], 3)
    tp, fp, fn = 2, 2, 1                     # over classes 1, 2 (background skipped)
    assert res["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert res["exact_match"] == pytest.approx(0.0)


def test_cam_mean_plus_bias_is_the_logit():
    torch.manual_seed(0)
    clf = CAMClassifier(5, width=4).eval()
    x = torch.randn(2, 3, 32, 40)
    raw = class_activation_maps(clf, x, upsample=False, normalize=False)
    assert raw.shape == (2, 5, 4, 5)                            # output stride 8
    torch.testing.assert_close(raw.mean((2, 3)) + clf.fc.bias, clf(x), rtol=1e-4, atol=1e-5)
    cams = class_activation_maps(clf, x)
    assert cams.shape == (2, 5, 32, 40) and cams.min() >= 0 and cams.max() <= 1


def test_cam_works_for_the_vgg_classifier_and_rejects_others():
    from minseg.models import VGGClassifier

    clf = VGGClassifier(4, width=4).eval()
    x = torch.randn(1, 3, 64, 64)
    raw = class_activation_maps(clf, x, upsample=False, normalize=False)
    torch.testing.assert_close(raw.mean((2, 3)) + clf.fc.bias, clf(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        class_activation_maps(nn.Conv2d(3, 4, 1), x)


def test_cam_to_pseudo_labels():
    cams = torch.zeros(1, 4, 2, 3)
    cams[0, 1] = torch.tensor([[0.9, 0.5, 0.1], [0.2, 0.0, 0.0]])
    cams[0, 2] = torch.tensor([[0.1, 0.7, 0.25], [0.0, 0.0, 0.0]])
    cams[0, 3] = 1.0                                            # high, but not tagged
    labels = cam_to_pseudo_labels(cams, [[1, 2]], threshold=0.3)
    assert labels.tolist() == [[[1, 2, 0], [0, 0, 0]]]
    same = cam_to_pseudo_labels(cams, torch.tensor([[False, True, True, False]]), threshold=0.3)
    assert torch.equal(labels, same)
    unsure = cam_to_pseudo_labels(cams, [[1, 2]], threshold=0.3, ignore_below=0.15)
    assert unsure.tolist() == [[[1, 2, IGN], [IGN, 0, 0]]]
    assert cam_to_pseudo_labels(cams, [[]], threshold=0.3).eq(0).all()
    with pytest.raises(ValueError):
        cam_to_pseudo_labels(cams, [[1]], threshold=0.3, ignore_below=0.5)



"""Test-time augmentation: the plain case is a plain forward, flips of a mirror-symmetric model
change nothing, scales follow the documented resizing, the model's mode is restored."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minseg.infer import predict, predict_mask


def small_net(seed: int = 0, classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Dropout2d(0.5), nn.Conv2d(8, classes, 3, padding=1))


class MirrorSymmetric(nn.Module):
    """Convolutions whose kernels equal their left-right mirror: f(flip(x)) = flip(f(x))."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a = nn.Conv2d(3, 6, 5, padding=2)
        self.b = nn.Conv2d(6, 4, 3, padding=1)
        with torch.no_grad():
            for conv in (self.a, self.b):
                conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_plain_predict_is_softmax_of_forward():
    model = small_net()
    x = torch.randn(3, 3, 17, 23)
    model.train()
    out = predict(model, x)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        ref = torch.softmax(model(x), 1)
    assert out.dtype == torch.float32 and out.shape == (3, 5, 17, 23)
    assert torch.equal(out, ref)
    assert torch.allclose(predict(model, x, batch_size=2), ref, atol=1e-6)
    assert not model.training  # stays in eval mode when it was
    assert torch.equal(predict_mask(model, x), ref.argmax(1))


def test_train_mode_restored_and_no_grad_no_stat_update():
    model = small_net()
    model.train()
    bn = model[1]
    before = bn.running_mean.clone()
    out = predict(model, torch.randn(2, 3, 16, 16), scales=(0.5, 1.0), flip=True)
    assert all(m.training for m in model.modules())
    assert torch.equal(bn.running_mean, before)  # eval mode: BatchNorm statistics untouched
    assert not out.requires_grad


def test_flip_of_mirror_symmetric_model_changes_nothing():
    model = MirrorSymmetric()
    for H, W in ((15, 22), (16, 9)):
        x = torch.randn(2, 3, H, W)
        plain = predict(model, x)
        assert torch.allclose(predict(model, x, flip=True), plain, atol=1e-6)
    # a model that is not symmetric: flip TTA is the mean of both views
    model = small_net()
    x = torch.randn(2, 3, 15, 22)
    model.eval()
    with torch.no_grad():
        both = (torch.softmax(model(x), 1) + torch.softmax(model(x.flip(-1)), 1).flip(-1)) / 2
    flipped = predict(model, x, flip=True)
    assert torch.allclose(flipped, both, atol=1e-6)
    assert not torch.allclose(flipped, predict(model, x), atol=1e-3)


def test_multiscale_odd_sizes_match_manual_resizing():
    model = small_net(classes=3).eval()
    x = torch.randn(2, 3, 17, 23)
    scales = (0.5, 0.75, 1.25)
    manual = []
    with torch.no_grad():
        for s in scales:
            size = (round(17 * s), round(23 * s))
            logits = model(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
            logits = F.interpolate(logits, size=(17, 23), mode="bilinear", align_corners=False)
            manual.append(torch.softmax(logits, 1))
    out = predict(model, x, scales=scales)
    assert out.shape == (2, 3, 17, 23)
    assert torch.allclose(out, torch.stack(manual).mean(0), atol=1e-6)
    assert torch.allclose(out.sum(1), torch.ones(2, 17, 23), atol=1e-5)


def test_dict_output_and_bad_input():
    class TorchvisionLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_net()

        def forward(self, x):
            return {"out": self.net(x), "aux": None}

    model = TorchvisionLike().eval()
    x = torch.randn(1, 3, 12, 12)
    assert torch.equal(predict(model, x), predict(model.net, x))
    for bad, match in ((torch.randn(3, 12, 12), "N,C,H,W"), (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating"),
                       (torch.full((1, 3, 8, 8), float("nan")), "NaN")):
        with pytest.raises(ValueError, match=match):
            predict(model, bad)
    with pytest.raises(ValueError, match="scales"):
        predict(model, x, scales=())
    with pytest.raises(ValueError, match="scales"):
        predict(model, x, scales=(1.0, -0.5))
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, x, batch_size=0)

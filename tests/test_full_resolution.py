"""Published-comparable evaluation: sliding-window inference at full resolution, and VOC
masks that do not fit their image."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from minseg.data import VOCSegmentationDataset, eval_transforms
from minseg.evaluation import evaluate
from minseg.infer import predict, sliding_logits


def _pointwise(C=3):
    torch.manual_seed(0)
    return nn.Conv2d(3, C, 1).eval()      # the same answer for a pixel wherever the crop lies


@pytest.mark.parametrize("hw,window,stride", [((37, 53), 16, None), ((20, 20), 32, None),
                                              ((50, 41), 24, 24), ((33, 70), 33, 11)])
def test_sliding_window_of_a_pointwise_model_is_the_whole_image(hw, window, stride):
    m, x = _pointwise(), torch.randn(2, 3, *hw)
    with torch.no_grad():
        torch.testing.assert_close(sliding_logits(m, x, window, stride), m(x), rtol=1e-5, atol=1e-6)
    probs = predict(m, x, window=window, stride=stride, flip=True)
    torch.testing.assert_close(probs, torch.softmax(m(x), 1).detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="stride"):
        sliding_logits(m, x, window, window + 1)


def test_sliding_window_covers_every_pixel_once_per_crop():
    class Ones(nn.Module):               # counts how many crops saw each pixel
        def forward(self, x):
            return torch.ones(x.shape[0], 1, *x.shape[-2:])

    out = sliding_logits(Ones(), torch.zeros(1, 3, 40, 40), 16, 12)
    assert torch.equal(out, torch.ones_like(out))   # averaged over overlaps: exactly 1 everywhere


def test_full_resolution_evaluation_on_a_voc_tree(voc_root):
    ds = VOCSegmentationDataset(voc_root, "val", transforms=eval_transforms(None))
    loader = torch.utils.data.DataLoader(ds, batch_size=1)
    m = _pointwise(ds.num_classes)
    whole = evaluate(m, loader, ds.num_classes, device="cpu", progress=False)
    slide = evaluate(m, loader, ds.num_classes, device="cpu", progress=False, window=24)
    assert torch.equal(whole["confusion_matrix"], slide["confusion_matrix"])
    assert whole["images"] == len(ds)


def test_a_mask_that_does_not_fit_its_image_is_an_error_naming_the_file(voc_root, tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(voc_root, root)
    ds = VOCSegmentationDataset(root, "val", transforms=eval_transforms(None))
    path = ds.mask_path(0)
    with Image.open(path) as im:
        small = im.crop((0, 0, im.width - 3, im.height))
        small.save(path)
    with pytest.raises(ValueError, match=path.name):
        ds[0]
    with pytest.raises(ValueError, match="but its image"):
        ds.raw(0)
    assert np.asarray(ds.raw(1)[0]).ndim == 3      # the other images are fine

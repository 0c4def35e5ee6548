"""minseg.data.contents: class presence and object counts, against a float64 / numpy brute force."""
import numpy as np
import pytest
import torch

from minseg.data import class_presence, count_instances, image_class_presence


def _brute_presence(masks: np.ndarray, num_classes: int, ignore: int, background=None) -> np.ndarray:
    out = np.zeros((len(masks), num_classes), dtype=bool)
    for n, m in enumerate(masks):
        for v in np.unique(m):
            if v != ignore:
                out[n, v] = True
    if background is not None:
        out[:, background] = False
    return out


@pytest.mark.parametrize("seed", range(4))
def test_class_presence_matches_brute_force_with_void_and_absent_classes(seed):
    g = np.random.default_rng(seed)
    C = 7
    masks = g.integers(0, 4, size=(5, 6, 9))                     # classes 4..6 never occur
    masks[g.random(masks.shape) < 0.3] = 255                     # void pixels
    masks[2] = 255                                               # an all-void image
    t = torch.from_numpy(masks)
    for bg in (None, 0, 3):
        got = class_presence(t, C, background=bg)
        assert got.dtype == torch.bool and got.shape == (5, C)
        assert np.array_equal(got.numpy(), _brute_presence(masks, C, 255, bg))
    # one H,W mask gives one row
    assert torch.equal(class_presence(t[0], C), class_presence(t, C)[0])
    # ignore_index=None: 255 is an out-of-range id, an error
    with pytest.raises(ValueError):
        class_presence(t, C, ignore_index=None)


def test_class_presence_bad_input():
    with pytest.raises(ValueError, match="outside|ids|range"):
        class_presence(torch.tensor([[0, 5]]), 3)
    with pytest.raises(ValueError, match="shape"):
        class_presence(torch.zeros(1, 1, 2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="background"):
        class_presence(torch.zeros(2, 2, dtype=torch.long), 3, background=3)


def test_image_class_presence_reads_masks_of_any_size():
    data = [(None, torch.tensor([[0, 2], [255, 2]])), (None, torch.full((3, 5), 1))]
    p = image_class_presence(data, 3)
    assert p.tolist() == [[True, False, True], [False, True, False]]
    with pytest.raises(ValueError, match="empty"):
        image_class_presence([], 3)


def test_count_instances():
    inst = torch.tensor([[0, 1, 1, 255],
                         [2, 2, 0, 3],
                         [0, 0, 0, 3]])
    assert count_instances(inst) == 3                            # ids 1, 2, 3
    mask = torch.tensor([[0, 5, 5, 255],
                         [0, 0, 0, 7],
                         [0, 0, 0, 7]])                          # instance 2 lies on background
    assert count_instances(inst, mask) == 2
    assert count_instances(torch.zeros(4, 4, dtype=torch.long)) == 0
    with pytest.raises(ValueError, match="shape"):
        count_instances(inst, mask[:2])

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from minseg.metrics import confusion_matrix, scores_from_confusion
from minseg.stats import (Difference, Interval, bootstrap_difference, format_pm, mean_interval,
                          paired_difference, per_image_confusion, t_quantile, verdict)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 30, 200])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.025])
def test_t_quantile_matches_scipy(p, df):
    assert t_quantile(p, df) == pytest.approx(sps.t.ppf(p, df), rel=1e-7, abs=1e-9)


def test_t_quantile_rejects_bad_arguments():
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df must be"):
        t_quantile(0.9, 0)


@pytest.mark.parametrize("n", [2, 3, 5, 12])
def test_mean_interval_matches_scipy(n):
    v = np.random.default_rng(n).normal(0.3, 0.05, n)
    iv = mean_interval(v.tolist())
    lo, hi = sps.t.interval(0.95, n - 1, loc=v.mean(), scale=sps.sem(v))
    assert (iv.mean, iv.lo, iv.hi, iv.n, iv.method) == pytest.approx((v.mean(), lo, hi, n, "t"))
    assert iv.half_width == pytest.approx((hi - lo) / 2)


def test_single_value_has_no_interval_and_nan_is_an_error():
    iv = mean_interval([0.4])
    assert iv.method == "single" and math.isnan(iv.lo) and not iv.excludes_zero
    assert format_pm(iv) == "0.400"
    with pytest.raises(ValueError, match="NaN"):
        mean_interval([0.1, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])


def test_paired_difference_is_the_t_interval_of_the_differences():
    a, b = [0.50, 0.55, 0.61], [0.45, 0.52, 0.55]
    iv = paired_difference(a, b)
    d = np.subtract(a, b)
    res = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert iv.mean == pytest.approx(d.mean()) and (iv.lo, iv.hi) == pytest.approx(tuple(res))
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1, 2], [1])


def _labels(n=6, c=4, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, c - 1, (n, size, size), generator=g)   # class c-1 absent from targets
    t[:, :2] = 255
    p = torch.randint(0, c, (n, size, size), generator=g)
    return p, t


def test_per_image_confusion_sums_to_the_dataset_matrix():
    p, t = _labels()
    cms = per_image_confusion(p, t, 4)
    assert cms.shape == (6, 4, 4)
    assert torch.equal(cms.sum(0), confusion_matrix(p, t, 4))
    for i in range(6):
        assert torch.equal(cms[i], confusion_matrix(p[i], t[i], 4))
    with pytest.raises(ValueError, match="outside"):
        per_image_confusion(p + 5, t, 4)
    with pytest.raises(ValueError, match="N,H,W"):
        per_image_confusion(p[0], t[0], 4)


def test_bootstrap_matches_a_brute_force_loop():
    p, t = _labels(n=10)
    q = torch.where(torch.rand(t.shape, generator=torch.Generator().manual_seed(1)) < 0.5,
                    t.clamp(max=3), p)                  # a better prediction
    ca, cb = per_image_confusion(q, t, 4), per_image_confusion(p, t, 4)
    iv = bootstrap_difference(ca, cb, "miou", reps=200, seed=3)
    miou = lambda m: scores_from_confusion(m)["miou"]  # noqa: E731
    assert iv.mean == pytest.approx(miou(ca.sum(0)) - miou(cb.sum(0)))
    idx = torch.randint(0, 10, (200, 10), generator=torch.Generator().manual_seed(3))
    brute = np.array([miou(ca[i].sum(0)) - miou(cb[i].sum(0)) for i in idx])
    assert (iv.lo, iv.hi) == pytest.approx(tuple(np.quantile(brute, [0.025, 0.975])))
    assert iv.excludes_zero and iv.method == "bootstrap" and iv.n == 10
    same = bootstrap_difference(ca, ca, "pixel_acc", reps=50)
    assert (same.mean, same.lo, same.hi) == (0, 0, 0)
    one_class = bootstrap_difference(ca, cb, lambda m: float(scores_from_confusion(m)["iou"][0]),
                                     reps=50)
    assert one_class.lo <= one_class.mean <= one_class.hi
    with pytest.raises(ValueError, match="confusion-matrix score"):
        bootstrap_difference(ca, cb, "iou")


def test_verdicts_follow_the_interval():
    iv = Interval(-0.05, -0.08, -0.02, 3, "t")
    d = Difference("with PPM", "without", "mIoU", iv)
    assert d.separated and d.winner == "without"
    assert verdict(d) == "without beats with PPM on mIoU by 0.050 (95 % CI 0.020 to 0.080, 3 seeds)."
    t = Difference("TTA", "single scale", "seconds", Interval(2.0, 1.5, 2.5, 3, "t"),
                   higher_is_better=False)
    assert t.winner == "single scale" and verdict(t) == (
        "single scale beats TTA on seconds (lower is better) by 2.000 (95 % CI 1.500 to 2.500, "
        "3 seeds).")
    f = Difference("fast", "slow", "seconds", Interval(-2.0, -2.5, -1.5, 3, "t"),
                   higher_is_better=False)
    assert f.winner == "fast" and "by 2.000 (95 % CI 1.500 to 2.500" in verdict(f)
    n = Difference("A", "B", "mIoU", Interval(0.01, -0.02, 0.04, 4, "t"))
    assert n.winner is None and "not distinguishable" in str(n) and "includes 0" in str(n)
    s = Difference("A", "B", "mIoU", Interval(0.01, math.nan, math.nan, 1, "single"))
    assert "no verdict" in verdict(s)
    b = Difference("A", "B", "mIoU", Interval(0.03, 0.01, 0.05, 200, "bootstrap"))
    assert "paired bootstrap over 200 images" in verdict(b)
    # the interval names what its values are: timing rounds are not seeds
    r = Difference("fast", "slow", "log2 FPS", paired_difference([3.0, 3.2, 3.1], [2.0, 2.1, 2.0],
                                                                 unit="timing rounds"))
    assert r.interval.unit == "timing rounds" and verdict(r).endswith(", 3 timing rounds).")
    assert mean_interval([1.0, 2.0]).unit == "seeds"

"""How sure is a comparison? Intervals over seeds and over images, and the verdict sentence.

A lesson compares variants ("U-Net with skips vs without"). One training run per variant says
little: two runs of the *same* model with different seeds differ by a few hundredths of mIoU on
a laptop budget. The course's protocol therefore trains every variant over several seeds,
*paired* (seed ``s`` gives every variant the same batches and augmentation), and reads the
difference through a 95 % confidence interval:

* **over seeds** (:func:`paired_difference`): the per-seed differences
  :math:`d_s = m_A(s) - m_B(s)` have mean :math:`\\bar d` and standard deviation :math:`s_d`;
  the interval is :math:`\\bar d \\pm t_{0.975,\\,n-1}\\, s_d / \\sqrt{n}` (Student's t,
  because :math:`n` is 3-5, far too few for the normal quantile 1.96);
* **over validation images** (:func:`bootstrap_difference`): resample the images with
  replacement, recompute both dataset-level metrics from per-image confusion matrices, and take
  the 2.5 and 97.5 percentiles of the difference. It answers "would another validation set of
  this kind agree?", the only question left when there is one trained model (an inference-time
  trick such as test-time augmentation or a CRF) or one seed (the ``smoke`` profile).

:func:`verdict` turns a :class:`Difference` into the sentence a lesson prints; no lesson writes
its verdict by hand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import torch

from minseg.metrics import scores_from_confusion

LEVEL = 0.95


# --------------------------------------------------------------------------- Student's t
def _t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom (Simpson's rule on the density;
    accurate to ~1e-10 for the |x| < 60 the intervals need)."""
    if x < 0:
        return 1.0 - _t_cdf(-x, df)  # the density is symmetric about 0
    # log of Gamma((df+1)/2) / (Gamma(df/2) sqrt(df pi)); lgamma avoids overflowing Gamma
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    # pdf(t) = c (1 + t^2 / df)^(-(df+1)/2)
    pdf = lambda t: math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))  # noqa: E731
    n = 2000                                  # even number of Simpson intervals
    h = x / n
    # Simpson's weights 1, 4, 2, 4, ..., 2, 4, 1
    s = pdf(0.0) + pdf(x) + sum((4 if k % 2 else 2) * pdf(k * h) for k in range(1, n))
    return 0.5 + s * h / 3  # P(T <= x) = 1/2 + integral_0^x pdf


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom.

    ``t_quantile(0.975, 2)`` is 4.303: with three seeds the 95 % interval is 4.3 standard
    errors wide on each side, not 1.96.
    """
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)  # symmetry again: q(p) = -q(1 - p)
    lo, hi = 0.0, 1.0
    # bracket the quantile: double hi until the CDF passes p
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):                       # bisection to float precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


# --------------------------------------------------------------------------- intervals
@dataclass(frozen=True)
class Interval:
    """A mean with its 95 % confidence interval ``[lo, hi]`` from ``n`` values.

    ``method`` is ``"t"`` (Student's t over seeds), ``"bootstrap"`` (percentiles over resampled
    images) or ``"single"`` (one value: no interval, ``lo`` and ``hi`` are NaN). ``unit`` names
    what the ``n`` values are ("seeds", "images", "timing rounds"), for the sentences that
    report the interval.
    """

    mean: float
    lo: float
    hi: float
    n: int
    method: str
    unit: str = ""       # default: "images" for a bootstrap, else "seeds"

    def __post_init__(self) -> None:
        if not self.unit:
            object.__setattr__(self, "unit", "images" if self.method == "bootstrap" else "seeds")

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (NaN bounds: False)."""
        return bool(self.lo > 0 or self.hi < 0)

    def __str__(self) -> str:
        return format_pm(self)


def mean_interval(values: Sequence[float], level: float = LEVEL, unit: str = "seeds") -> Interval:
    """Mean of ``values`` with its t interval (``method="single"`` for one value); ``unit`` says
    what each value is a measurement of (default: one seed's run)."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_interval needs at least one value")
    if any(math.isnan(x) for x in v):
        raise ValueError(f"mean_interval got NaN among {v}: a run produced no measurement")
    n, mean = len(v), sum(v) / len(v)
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, "single", unit)
    # sample standard deviation (n - 1: Bessel's correction)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    # Student's t half-width: t_{0.975, n-1} * s / sqrt(n) for level 0.95
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, "t", unit)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL,
                      unit: str = "seeds") -> Interval:
    """Mean of the paired differences ``a[i] - b[i]`` (seed ``i`` in both) with its t interval.

    Pairing removes what the two runs of one seed share (the same batches, the same
    augmentation), so the interval is usually much narrower than the two variants' own spreads.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return mean_interval([x - y for x, y in zip(a, b)], level, unit)


def per_image_confusion(preds: torch.Tensor, targets: torch.Tensor, num_classes: int,
                        ignore_index: int = 255) -> torch.Tensor:
    """``N x C x C`` confusion matrices, one per image (rows = target, columns = prediction),
    void pixels dropped. Their sum over images is the dataset matrix."""
    if preds.shape != targets.shape or preds.dim() != 3:
        raise ValueError(f"expected two N,H,W label tensors of one shape, got "
                         f"{tuple(preds.shape)} and {tuple(targets.shape)}")
    n = preds.shape[0]
    t = targets.reshape(n, -1).long()
    p = preds.reshape(n, -1).long()
    valid = t != ignore_index
    # only valid pixels are checked: a void pixel may hold any prediction
    bad = valid & ((t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes))
    if bad.any():
        raise ValueError(f"labels outside 0..{num_classes - 1} (and {ignore_index}) in the "
                         "predictions or targets")
    img = torch.arange(n).unsqueeze(1).expand_as(t)
    # bin (image, target, prediction) in row-major order: one bincount for all images
    idx = (img * num_classes + t) * num_classes + p
    counts = torch.bincount(idx[valid], minlength=n * num_classes * num_classes)
    return counts.reshape(n, num_classes, num_classes)


def _score(metric: str | Callable[[torch.Tensor], float]) -> Callable[[torch.Tensor], float]:
    if callable(metric):
        return metric

    def f(mat: torch.Tensor) -> float:
        res = scores_from_confusion(mat)
        if metric not in res or not isinstance(res[metric], float):
            raise ValueError(f"{metric!r} is not a confusion-matrix score; choose from "
                             f"{sorted(k for k, v in res.items() if isinstance(v, float))} "
                             "or pass a function of the matrix")
        return float(res[metric])
    return f


def bootstrap_difference(cms_a: torch.Tensor, cms_b: torch.Tensor,
                         metric: str | Callable[[torch.Tensor], float] = "miou", *,
                         reps: int = 1000, seed: int = 0, level: float = LEVEL) -> Interval:
    """Paired bootstrap over images of ``metric(A) - metric(B)``.

    ``cms_a`` and ``cms_b`` are per-image confusion matrices (:func:`per_image_confusion`) of
    two predictions of the *same* images; ``metric`` names a score of
    :func:`minseg.metrics.scores_from_confusion` or is a function of a ``C x C`` matrix (for
    example one class's IoU). Each replicate draws N image indices with
    replacement, sums both sets of matrices over them and scores the sums (dataset-level
    metrics, never per-image averages). ``mean`` is the difference on the full set; ``lo`` and
    ``hi`` the percentiles of the replicates.
    """
    if cms_a.shape != cms_b.shape or cms_a.dim() != 3:
        raise ValueError(f"expected two N x C x C stacks of one shape, got {tuple(cms_a.shape)} "
                         f"and {tuple(cms_b.shape)}")
    score = _score(metric)
    n = cms_a.shape[0]
    full = score(cms_a.sum(0)) - score(cms_b.sum(0))
    g = torch.Generator().manual_seed(seed)  # own generator: the same interval on every call
    # reps replicates of n image indices each, drawn with replacement
    idx = torch.randint(0, n, (reps, n), generator=g)
    # sum over the drawn images as a matrix product with counts: reps x N times N x C*C
    # counts[r, i] = how often image i was drawn in replicate r
    counts = torch.zeros(reps, n, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones(reps, n, dtype=torch.float64))
    sums_a = (counts @ cms_a.reshape(n, -1).double()).reshape(reps, *cms_a.shape[1:])
    sums_b = (counts @ cms_b.reshape(n, -1).double()).reshape(reps, *cms_b.shape[1:])
    # A and B are scored on the same resampled images: the pairing that narrows the interval
    diffs = torch.tensor([score(x) - score(y) for x, y in zip(sums_a, sums_b)],
                         dtype=torch.float64)
    # drop undefined replicates (e.g. one class's IoU when no drawn image has the class)
    diffs = diffs[~diffs.isnan()]
    # percentile interval: the 2.5 % and 97.5 % quantiles for level 0.95
    lo, hi = torch.quantile(diffs, torch.tensor([(1 - level) / 2, (1 + level) / 2],
                                                dtype=torch.float64)).tolist()
    return Interval(full, lo, hi, n, "bootstrap")


# --------------------------------------------------------------------------- the verdict
@dataclass(frozen=True)
class Difference:
    """``a`` minus ``b`` on ``metric``, with its interval; ``higher_is_better`` orients it."""

    a: str
    b: str
    metric: str
    interval: Interval
    higher_is_better: bool = True
    steps: int | None = None

    @property
    def separated(self) -> bool:
        """The interval excludes 0: the data tell the two apart."""
        return self.interval.excludes_zero

    @property
    def winner(self) -> str | None:
        """The better of the two when the interval excludes 0, else ``None``."""
        if not self.separated:
            return None
        a_better = (self.interval.mean > 0) == self.higher_is_better
        return self.a if a_better else self.b

    def verdict(self) -> str:
        return verdict(self)

    def __str__(self) -> str:
        return self.verdict()


def _num(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.0f}"


def _evidence(i: Interval) -> str:
    if i.method == "t":
        return f"{i.n} {i.unit}"
    if i.method == "bootstrap":
        return f"paired bootstrap over {i.n} {i.unit}"
    return "1 run"


def verdict(diff: Difference) -> str:
    """The sentence a lesson prints for a comparison, computed from the interval alone.

    >>> d = Difference("ASPP", "plain head", "mIoU", Interval(0.071, 0.048, 0.094, 3, "t"))
    >>> verdict(d)
    'ASPP beats plain head on mIoU by 0.071 (95 % CI 0.048 to 0.094, 3 seeds).'
    >>> verdict(Difference("A", "B", "mIoU", Interval(0.004, -0.01, 0.018, 3, "t")))
    'A and B are not distinguishable on mIoU at this scale (difference 0.004, 95 % CI -0.010 to 0.018 includes 0; 3 seeds).'
    """
    i = diff.interval
    if i.method == "single":
        return (f"{diff.a} minus {diff.b} on {diff.metric}: {_num(i.mean)} from a single run; "
                "one run has no interval, so this is no verdict (the cpu and gpu profiles "
                "train several seeds).")
    ci = f"95 % CI {_num(i.lo)} to {_num(i.hi)}"
    if not diff.separated:
        return (f"{diff.a} and {diff.b} are not distinguishable on {diff.metric} at this scale "
                f"(difference {_num(i.mean)}, {ci} includes 0; {_evidence(i)}).")
    win = diff.winner
    lose = diff.b if win == diff.a else diff.a
    sign = 1 if i.lo > 0 else -1          # report the gap as a positive number
    lo, hi = sorted((sign * i.lo, sign * i.hi))
    lower = "" if diff.higher_is_better else " (lower is better)"
    return (f"{win} beats {lose} on {diff.metric}{lower} by {_num(abs(i.mean))} "
            f"(95 % CI {_num(lo)} to {_num(hi)}, {_evidence(i)}).")


def format_pm(i: Interval, digits: int = 3) -> str:
    """``mean ± half-width`` (just the mean for a single value)."""
    if i.method == "single" or math.isnan(i.half_width):
        return f"{i.mean:.{digits}f}"
    return f"{i.mean:.{digits}f} ± {i.half_width:.{digits}f}"

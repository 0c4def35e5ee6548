"""The learning-rate schedule: :func:`lr_factor`, the multiplier of the base rate per step.

:func:`minseg.train.fit` sets every step's rate by hand as ``lr * lr_factor(step, ...)``; so
does :func:`minseg.classification.fit_classifier`.
"""
from __future__ import annotations

import math

__all__ = ["SCHEDULES", "lr_factor"]

SCHEDULES = ("poly", "cosine", "constant")


def lr_factor(step: int, total_steps: int, schedule: str = "poly", warmup_steps: int = 0,
              power: float = 0.9, progress: float | None = None) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based).

    * linear warm-up over the first ``warmup_steps`` steps (Goyal et al. 2017,
      https://arxiv.org/abs/1706.02677): ``(step + 1) / warmup_steps``;
    * then ``"poly"``: ``(1 - p) ** power``, the DeepLab schedule (Chen et al. 2016,
      https://arxiv.org/abs/1606.00915, section 4.1); ``"cosine"``: ``(1 + cos(pi p)) / 2``
      (SGDR, Loshchilov & Hutter, https://arxiv.org/abs/1608.03983, without restarts);
      ``"constant"``: 1,

    where ``p`` in [0, 1] is the progress after warm-up, ``(step - warmup) / (total - warmup)``,
    or ``progress`` when given (e.g. the fraction of a time budget used).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if progress is None:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    p = min(max(progress, 0.0), 1.0)
    if schedule == "poly":
        return (1.0 - p) ** power
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; valid schedules are {', '.join(SCHEDULES)}")

"""The lessons' experiments: train variants over seeds for one step budget, measure, judge.

Every lesson backs its answer with a comparison ("U-Net with vs without skips", "ASPP vs a plain
head", ...). :func:`compare` runs such a comparison the same way each time: for each of several
seeds, every variant is built from that seed, trained by :func:`minseg.train.fit` on the same
batches for the same number of steps, and measured on the same validation set. The
:class:`Comparison` it returns reads the runs through :mod:`minseg.stats`: means with 95 %
intervals, paired differences, and the verdict sentence. :func:`evidence` records a lesson's
claim and its verdict for the course's evidence table (``EVIDENCE.md``).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from minseg.config import Profile, profile, seed_everything
from minseg.infer import _logits
from minseg.metrics import boundary_f1, scores_from_confusion
from minseg.models import count_parameters
from minseg.stats import (Difference, Interval, bootstrap_difference, format_pm, mean_interval,
                          paired_difference, per_image_confusion)


@torch.no_grad()
def predictions(model: nn.Module, loader: Iterable, device: str | torch.device | None = None,
                limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, targets, predicted masks)`` for a whole loader, on the CPU (for plots and
    per-image metrics). ``limit`` stops after that many images."""
    device = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    xs, ys, ps = [], [], []
    seen = 0
    for x, y in loader:
        # keep label maps, not N,C,H,W logits: a whole validation set fits in memory
        ps.append(_logits(model(x.to(device))).argmax(1).cpu())
        xs.append(x.cpu()), ys.append(y.cpu())
        seen += len(x)
        if limit is not None and seen >= limit:
            break
    model.train(was_training)
    # the last batch may overshoot limit
    cat = lambda t: torch.cat(t)[:limit] if limit else torch.cat(t)  # noqa: E731
    return cat(xs), cat(ys), cat(ps)


@torch.no_grad()
def throughput(model: nn.Module, image_size: int | tuple[int, int] = 256, batch_size: int = 1,
               device: str | torch.device | None = None, warmup: int = 2, reps: int = 5) -> float:
    """Forward images per second in eval mode (median of ``reps`` timed batches)."""
    device = torch.device(device) if device else next(model.parameters()).device
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = torch.randn(batch_size, 3, h, w, device=device)
    was_training = model.training
    model.eval()
    times = []
    for i in range(warmup + reps):
        # CUDA runs asynchronously: synchronise so the timer brackets the whole forward pass
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:  # warm-up passes (allocation, cuDNN autotuning) are not timed
            times.append(time.perf_counter() - t0)
    model.train(was_training)
    return batch_size / sorted(times)[len(times) // 2]  # median: robust to one slow outlier


def measure(model: nn.Module, val_loader: Iterable, num_classes: int,
            tolerance_px: int = 2) -> dict:
    """mIoU, pixel accuracy, mean Dice (dataset confusion matrix), per-class IoU, boundary F1
    and the per-image confusion matrices ``cms`` of a model on a loader."""
    _, targets, preds = predictions(model, val_loader)
    return _scores(preds, targets, num_classes, tolerance_px)


def _scores(preds: torch.Tensor, targets: torch.Tensor, num_classes: int,
            tolerance_px: int) -> dict:
    cms = per_image_confusion(preds, targets, num_classes)
    # dataset-level scores from the summed matrix, never a mean of per-image scores
    res = scores_from_confusion(cms.sum(0))
    return {"miou": res["miou"], "pixel_acc": res["pixel_acc"], "mdice": res["mdice"],
            "boundary_f1": boundary_f1(preds, targets, tolerance_px=tolerance_px,
                                       num_classes=num_classes),
            "iou": res["iou"], "cms": cms}


@dataclass
class Variant:
    """One arm of a comparison: a function that builds a fresh model, and what it trains with
    that the other arms do not (its own ``train_loader``, or :func:`minseg.train.fit` keyword
    arguments such as ``loss``). A plain builder function is a ``Variant`` with nothing of its
    own."""

    build: Callable[[], nn.Module]
    train_loader: Any = None
    fit_kwargs: dict = field(default_factory=dict)


class Comparison:
    """The result of :func:`compare`: every run of every variant, and what they say together.

    ``runs[name]`` holds one row per seed (metrics, steps, train_s, the trained model, the
    per-image confusion matrices ``cms`` and the predictions). ``rows`` gives one summary row
    per variant (means over seeds); :meth:`interval` a metric's mean with its 95 % interval;
    :meth:`difference` the paired difference of two variants with its interval and verdict;
    :meth:`table` a Markdown table of ``mean ± half-width``.
    """

    def __init__(self, runs: dict[str, list[dict]], seeds: list[int], targets: torch.Tensor,
                 num_classes: int):
        self.runs, self.seeds, self.targets, self.num_classes = runs, seeds, targets, num_classes

    @property
    def names(self) -> list[str]:
        return list(self.runs)

    def values(self, name: str, metric: str) -> list[float]:
        """``metric`` of variant ``name``, one value per seed."""
        self._check(name)
        try:
            return [float(r[metric]) for r in self.runs[name]]
        except KeyError:
            raise KeyError(f"no metric {metric!r} in the runs of {name!r}; measured: "
                           f"{', '.join(_scalar_keys(self.runs[name][0]))}") from None

    def interval(self, name: str, metric: str = "miou") -> Interval:
        """Mean of ``metric`` over seeds with its 95 % t interval."""
        return mean_interval(self.values(name, metric))

    def model(self, name: str, seed_index: int = -1) -> nn.Module:
        """The trained model of one run (by default the last seed's)."""
        self._check(name)
        return self.runs[name][seed_index]["model"]

    def difference(self, a: str, b: str, metric: str = "miou", *, label: str | None = None,
                   higher_is_better: bool = True) -> Difference:
        """``a`` minus ``b`` on ``metric``, paired by seed.

        With two or more seeds the interval is Student's t over the per-seed differences. With a
        single seed (the ``smoke`` profile) and a confusion-matrix score (``miou``,
        ``pixel_acc``, ``mdice``...), it is a paired bootstrap over validation images instead;
        other metrics of a single run get no interval. ``label`` names the metric in the
        verdict (default: ``metric``).
        """
        if len(self.seeds) > 1:
            iv = paired_difference(self.values(a, metric), self.values(b, metric))
        elif metric in _CM_SCORES:
            self._check(a), self._check(b)
            iv = bootstrap_difference(self.runs[a][0]["cms"], self.runs[b][0]["cms"], metric,
                                      seed=self.seeds[0])
        else:
            iv = mean_interval([self.values(a, metric)[0] - self.values(b, metric)[0]])
        return Difference(a, b, label or metric, iv, higher_is_better,
                          steps=self.runs[a][0]["steps"])

    @property
    def rows(self) -> list[dict]:
        """One row per variant: name, params, steps, seeds and the mean over seeds of every
        scalar metric."""
        out = []
        for name, runs in self.runs.items():
            row = {"name": name, "params": runs[0]["params"], "steps": runs[0]["steps"],
                   "seeds": len(runs)}
            for k in _scalar_keys(runs[0]):
                if k not in row:
                    row[k] = sum(float(r[k]) for r in runs) / len(runs)
            out.append(row)
        return out

    def table(self, columns: Sequence[str] = ("name", "params", "steps", "miou")) -> str:
        """A Markdown table, one row per variant; measured columns show ``mean ± half-width``
        (95 % t interval over seeds; the mean alone with one seed)."""
        rows = []
        for summary in self.rows:
            row = {}
            for c in columns:
                if c in ("name", "params", "steps", "seeds") or c not in summary:
                    row[c] = summary.get(c, "")
                else:
                    row[c] = format_pm(self.interval(summary["name"], c))
            rows.append(row)
        return format_table(rows, columns)

    def _check(self, name: str) -> None:
        if name not in self.runs:
            raise KeyError(f"no variant {name!r}; the variants are {', '.join(self.runs)}")

    def __repr__(self) -> str:
        return f"Comparison({', '.join(self.runs)}; seeds {self.seeds})"


_CM_SCORES = ("miou", "pixel_acc", "mdice", "mean_acc", "fwiou")


def _scalar_keys(row: Mapping) -> list[str]:
    skip = {"name", "params", "steps", "seed", "cut_short"}
    return [k for k, v in row.items() if k not in skip and isinstance(v, (int, float))
            and not isinstance(v, bool)]


def seeds_for(cfg: Profile, seeds: int | Sequence[int] | None = None) -> list[int]:
    """The seeds a comparison trains: ``seeds`` if a list, else that many (default: the
    profile's ``seeds``) consecutive seeds from the profile's ``seed``."""
    if seeds is None:
        seeds = cfg.seeds
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return [cfg.seed + k for k in range(seeds)]
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    return seeds


def compare(variants: Mapping[str, Callable[[], nn.Module] | Variant], train_loader, val_loader,
            *, num_classes: int, cfg: Profile | None = None, steps: int | None = None,
            seeds: int | Sequence[int] | None = None, budget_s: float | None = None,
            extra: Callable[[nn.Module, dict], Mapping[str, float]] | None = None,
            tolerance_px: int = 2, verbose: bool = True, **fit_kwargs) -> Comparison:
    """Train each variant over several seeds, paired, and measure every run.

    For each seed ``s`` and each variant: ``seed_everything(s)``, build a fresh model, train it
    with :func:`minseg.train.fit` for ``steps`` optimizer steps (default: the profile's
    ``steps``) with ``seed=s``, so that under one seed every variant sees the same batches in
    the same order with the same augmentation, then measure it on ``val_loader`` (mIoU, pixel
    accuracy, mean Dice, boundary F1, per-image confusion matrices). ``seeds`` is a count or a
    list (default: the profile's ``seeds``: 1 on ``smoke``, 3 on ``cpu`` and ``gpu``).

    ``variants`` maps a name to a builder or a :class:`Variant` (its own training loader or fit
    arguments). ``extra(model, row)`` may add measurements of its own to each run's row
    (``row`` already holds ``preds`` and ``targets``). ``budget_s`` is a wall-clock safety cap
    per run (default: the profile's ``time_budget_s``); a run it cuts short is flagged
    (``cut_short``). Other keyword arguments go to :func:`minseg.train.fit` for every variant.
    """
    from minseg.train import fit

    cfg = cfg or profile()
    # an explicit epoch count replaces the step budget
    steps = steps or (None if "epochs" in fit_kwargs else cfg.steps)
    budget = budget_s if budget_s is not None else cfg.time_budget_s
    seed_list = seeds_for(cfg, seeds)
    arms = {k: v if isinstance(v, Variant) else Variant(v) for k, v in variants.items()}
    runs: dict[str, list[dict]] = {k: [] for k in arms}
    targets = None
    t_start = time.perf_counter()
    for s in seed_list:
        for name, arm in arms.items():
            # reseed before every build: under one seed every variant starts from the same RNG state
            seed_everything(s)
            model = arm.build()
            kwargs = {**fit_kwargs, **arm.fit_kwargs}
            t0 = time.perf_counter()
            # no validation inside fit: every run is measured below, the same way
            hist = fit(model, arm.train_loader or train_loader, None, num_classes=num_classes,
                       max_steps=steps, time_budget_s=budget, seed=s, device=cfg.device,
                       **kwargs)
            train_s = time.perf_counter() - t0
            _, tgt, preds = predictions(model, val_loader)
            targets = tgt if targets is None else targets  # the same for every run: keep the first
            # preds kept as uint8 (class ids < 256): 8x less memory than int64
            row = {"name": name, "seed": s, "params": count_parameters(model),
                   "steps": hist.steps, "train_s": train_s, "cut_short": hist.cut_short,
                   **_scores(preds, tgt, num_classes, tolerance_px),
                   "preds": preds.to(torch.uint8), "history": hist, "model": model}
            if extra is not None:
                row.update(extra(model, {**row, "preds": preds, "targets": tgt}))
            runs[name].append(row)
            if verbose:
                print(f"  seed {s} {name}: {hist.steps} steps in {train_s:.0f} s, "
                      f"mIoU {row['miou']:.3f}", flush=True)
    if verbose:
        print(f"{len(arms)} variants x {len(seed_list)} seeds in "
              f"{time.perf_counter() - t_start:.0f} s", flush=True)
    return Comparison(runs, seed_list, targets, num_classes)


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.1f} k"
    return str(v)


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts) for the chosen ``columns`` (default: every scalar
    column of the first row). Floats get three decimals, big integers k/M suffixes."""
    if not rows:
        return "(no rows)"
    columns = list(columns or [k for k, v in rows[0].items()
                               if isinstance(v, (int, float, str)) and not isinstance(v, bool)])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the evidence table
EVIDENCE_ENV = "MINSEG_EVIDENCE_DIR"


def evidence(lesson: str, claim: str, result: Difference | bool, *, expect: str | None = None,
             detail: str = "") -> dict:
    """Record a lesson's claim and what its experiment says about it; print the verdict.

    ``result`` is a :class:`~minseg.stats.Difference` (a comparison: the claim is that
    ``expect``, by default ``result.a``, wins) or a bool (an exact check, such as "our mIoU
    equals torchmetrics'", described by ``detail``). The row's ``status`` is ``confirmed``
    (the interval excludes 0 in the claimed direction), ``reversed`` (it excludes 0 the other
    way), ``not separated`` (it spans 0), ``single run`` (no interval: the smoke profile), or
    ``check passed`` / ``check failed``.

    When ``$MINSEG_EVIDENCE_DIR`` is set (``tools/run_notebooks.py`` sets it), the row is
    appended to ``<dir>/<lesson>.json``, from which the runner writes ``EVIDENCE.md``.
    Returns the row.
    """
    row: dict[str, Any] = {"lesson": lesson, "claim": claim}
    if isinstance(result, Difference):
        iv = result.interval
        expect = expect or result.a
        if expect not in (result.a, result.b):
            raise ValueError(f"expect={expect!r} is neither {result.a!r} nor {result.b!r}")
        if iv.method == "single":
            status = "single run"
        elif not result.separated:
            status = "not separated"
        else:
            status = "confirmed" if result.winner == expect else "reversed"
        sign = 1 if expect == result.a else -1       # report the effect in the claim's direction
        lo, hi = sorted((sign * iv.lo, sign * iv.hi))
        other = result.b if expect == result.a else result.a
        row.update(metric=result.metric, comparison=f"{expect} vs {other}",
                   effect=sign * iv.mean, lo=lo, hi=hi, n=iv.n, method=iv.method, unit=iv.unit,
                   steps=result.steps, verdict=result.verdict(), status=status,
                   higher_is_better=result.higher_is_better)
    elif isinstance(result, bool):
        if not detail:
            raise ValueError("an exact check needs a detail saying what was checked")
        row.update(status="check passed" if result else "check failed", verdict=detail,
                   steps=None)
    else:
        raise TypeError(f"result must be a Difference or a bool, got {type(result).__name__}")
    print(f"claim: {claim}\n  [{row['status']}] {row['verdict']}", flush=True)
    out = os.environ.get(EVIDENCE_ENV, "").strip()
    if out:
        path = Path(out) / f"{lesson}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # append to the lesson's file: a notebook records several claims
        rows = json.loads(path.read_text()) if path.is_file() else []
        rows.append(row)
        path.write_text(json.dumps(rows, indent=1) + "\n")
    return row


def evidence_effect(row: Mapping) -> str:
    """The effect column of the evidence table: ``mIoU +0.071 (+0.048 to +0.094; 3 seeds)`` in
    the claim's direction, with the metric (a lower-is-better metric as its reduction)."""
    if "effect" not in row:
        return "exact check"
    # a lower-is-better metric (time, error rate) is shown as its reduction, so that a positive
    # effect always means "the claim holds"
    sign = 1 if row.get("higher_is_better", True) else -1
    metric = row["metric"] if sign == 1 else f"{row['metric']} reduction"
    if row.get("method") == "single":
        return f"{metric} {sign * row['effect']:+.3f} (1 run)"
    lo, hi = sorted((sign * row["lo"], sign * row["hi"]))
    unit = row.get("unit") or ("seeds" if row.get("method") == "t" else "images")
    how = unit if row.get("method") == "t" else f"{unit}, bootstrap"
    return f"{metric} {sign * row['effect']:+.3f} ({lo:+.3f} to {hi:+.3f}; {row['n']} {how})"

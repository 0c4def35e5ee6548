"""Small helpers for the lessons' experiments: train variants for one step budget, measure, tabulate.

Every lesson backs its answer with a comparison ("U-Net with vs without skips", "ASPP vs a plain
head", ...). :func:`compare` runs such a comparison the same way each time: every variant is
built from the same seed, trained by :func:`minseg.train.fit` on the same batches for the same
number of steps, and measured on the same validation set.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from minseg.config import Profile, profile, seed_everything
from minseg.metrics import ConfusionMatrix, boundary_f1
from minseg.models import count_parameters


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
        ps.append(model(x.to(device)).argmax(1).cpu())
        xs.append(x.cpu()), ys.append(y.cpu())
        seen += len(x)
        if limit is not None and seen >= limit:
            break
    model.train(was_training)
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
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    model.train(was_training)
    return batch_size / sorted(times)[len(times) // 2]


def measure(model: nn.Module, val_loader: Iterable, num_classes: int,
            tolerance_px: int = 2) -> dict:
    """mIoU, pixel accuracy, mean Dice (dataset confusion matrix) and boundary F1 of a model."""
    _, targets, preds = predictions(model, val_loader)
    cm = ConfusionMatrix(num_classes)
    cm.update(preds, targets)
    res = cm.compute()
    return {"miou": res["miou"], "pixel_acc": res["pixel_acc"], "mdice": res["mdice"],
            "iou": res["iou"],
            "boundary_f1": boundary_f1(preds, targets, tolerance_px=tolerance_px,
                                       num_classes=num_classes)}


def compare(variants: Mapping[str, Callable[[], nn.Module]], train_loader, val_loader, *,
            num_classes: int, cfg: Profile | None = None, steps: int | None = None,
            budget_s: float | None = None, seed: int = 0, **fit_kwargs) -> list[dict]:
    """Train each variant on the same data for the same number of steps and measure it.

    ``variants`` maps a name to a function that builds a fresh model (called right after
    ``seed_everything(seed)``, so every variant starts from the same random state). Every variant
    trains for ``steps`` optimizer steps (default: the profile's ``steps``) with the same
    ``seed``, so it sees the same batches in the same order with the same augmentation.
    ``budget_s`` is a wall-clock safety cap per variant (default: the profile's
    ``time_budget_s``); a variant it cuts short is flagged in the row (``cut_short``).
    Other keyword arguments go to :func:`minseg.train.fit` (``loss``, ``lr``, ``epochs``...).
    Returns one row per variant: name, params, steps, train_s, cut_short, miou, pixel_acc,
    mdice, boundary_f1, iou (per class), history and the trained model.
    """
    from minseg.train import fit

    cfg = cfg or profile()
    steps = steps or (None if "epochs" in fit_kwargs else cfg.steps)
    budget = budget_s if budget_s is not None else cfg.time_budget_s
    rows = []
    for name, build in variants.items():
        seed_everything(seed)
        model = build()
        t0 = time.perf_counter()
        hist = fit(model, train_loader, None, num_classes=num_classes, max_steps=steps,
                   time_budget_s=budget, seed=seed, device=cfg.device, **fit_kwargs)
        train_s = time.perf_counter() - t0
        row = {"name": name, "params": count_parameters(model), "steps": hist.steps,
               "train_s": train_s, "cut_short": hist.cut_short}
        row.update(measure(model, val_loader, num_classes))
        row["history"], row["model"] = hist, model
        rows.append(row)
    return rows


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

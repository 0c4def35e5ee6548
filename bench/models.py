"""Benchmark every registered minseg model against torchvision's segmentation models on CPU.

For each model at ``--size`` (256) pixels: parameters, forward GFLOPs per image (counted by
``torch.utils.flop_counter.FlopCounterMode``: convolutions, matmuls and attention; 1 MAC = 2
FLOPs), forward+backward milliseconds for a batch of ``--batch`` (2) in train mode, and
forward images/s in eval mode, all measured in the same run next to torchvision's
``fcn_resnet50``, ``deeplabv3_mobilenet_v3_large`` and ``lraspp_mobilenet_v3_large`` (random
weights). Prints a markdown table with ratios to ``--ref``. Run by hand::

    python bench/models.py [--size 256] [--batch 2] [--reps 3] [--threads N] [--ref NAME]

Timings are the best of ``--reps`` runs after one warm-up (the minimum is the least disturbed
by other processes, as ``timeit`` recommends); on a shared machine they are still noisy, so
compare rows of one run, not across runs or machines.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from minseg.models import MODELS, build_model, count_parameters

NUM_CLASSES = 21


class _OutOnly(nn.Module):
    """torchvision's segmentation models return ``{"out": logits, ...}``; keep the logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def torchvision_peers() -> dict[str, Callable[[], nn.Module]]:
    from torchvision.models import segmentation as seg

    def make(fn):
        return lambda: _OutOnly(fn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES))

    return {"tv fcn_resnet50": make(seg.fcn_resnet50),
            "tv deeplabv3_mobilenet_v3_large": make(seg.deeplabv3_mobilenet_v3_large),
            "tv lraspp_mobilenet_v3_large": make(seg.lraspp_mobilenet_v3_large)}


def gflops(model: nn.Module, x: torch.Tensor) -> float:
    """Forward GFLOPs per image."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9 / x.shape[0]


def best_ms(fn: Callable[[], None], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times)


def measure(name: str, model: nn.Module, size: int, batch: int, reps: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, NUM_CLASSES, (batch, size, size))
    flops = gflops(model, x[:1])

    def train_step():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    model.train()
    train_ms = best_ms(train_step, reps)
    model.eval()
    with torch.inference_mode():
        fwd_ms = best_ms(lambda: model(x), reps)
    return {"model": name, "params": count_parameters(model), "gflops": flops,
            "train_ms": train_ms, "img_s": batch / fwd_ms * 1e3}


def table(rows: list[dict], ref: dict, batch: int, size: int) -> str:
    lines = [f"| model | params (M) | GFLOPs/img @{size} | fwd+bwd ms (batch {batch}) | "
             f"fwd img/s | params x | GFLOPs x | fwd+bwd time x | img/s x |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f} | {r['gflops']:.2f} | {r['train_ms']:.0f} | "
            f"{r['img_s']:.1f} | {r['params'] / ref['params']:.3f} | {r['gflops'] / ref['gflops']:.3f} | "
            f"{r['train_ms'] / ref['train_ms']:.3f} | {r['img_s'] / ref['img_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--width", type=int, default=None,
                    help="width for minseg models (default: each builder's)")
    ap.add_argument("--models", nargs="*", default=None, help="subset of names to run")
    ap.add_argument("--ref", default="tv lraspp_mobilenet_v3_large", help="row the ratios divide by")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    kw = {} if args.width is None else {"width": args.width}
    builders: dict[str, Callable[[], nn.Module]] = {
        name: (lambda name=name: build_model(name, NUM_CLASSES, **kw)) for name in MODELS}
    builders.update(torchvision_peers())
    if args.models:
        builders = {k: v for k, v in builders.items()
                    if k in args.models or k.removeprefix("tv ") in args.models}

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, "
          f"{args.size}x{args.size}, {NUM_CLASSES} classes, best of {args.reps}")
    rows = []
    for name, build in builders.items():
        torch.manual_seed(0)
        rows.append(measure(name, build(), args.size, args.batch, args.reps))
        r = rows[-1]
        print(f"  {name:34s} {r['params'] / 1e6:6.2f} M  {r['gflops']:7.2f} GFLOPs  "
              f"{r['train_ms']:8.0f} ms  {r['img_s']:6.1f} img/s", flush=True)
    ref = next((r for r in rows if r["model"] == args.ref), rows[-1])
    print(f"\nRatios are relative to {ref['model']}.\n")
    print(table(rows, ref, args.batch, args.size))


if __name__ == "__main__":
    main()

"""Benchmark: ``minseg.metrics.ConfusionMatrix`` vs torchmetrics ``MulticlassJaccardIndex``.

Run by hand (not by pytest)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/metrics.py            # CPU
    .venv/bin/python bench/metrics.py --device cuda --threads 16    # GPU

Workload: one batch of 8 x 512 x 512 int64 masks, 21 classes, 5% void (255) target pixels, the
prediction = the target with about 30% of the pixels replaced by random classes. Each line is
the median wall time of ``update`` + ``compute`` on a fresh metric object, all measured in the
same run, interleaved round-robin so that load from other processes hits every line alike.

"The floor" is the time to read both tensors once. Two versions are printed:

* ``floor (sum)``: ``pred.sum()`` and ``target.sum()``: pure memory bandwidth, no work at all;
* ``floor (compare)``: ``(pred == target).sum()``: one fused pass over both tensors that
  computes the simplest metric there is (pixel accuracy without void handling).

The goals (issue 4): at least 4x faster than torchmetrics with ``validate_args=False``, and
within 2x of the floor.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from minseg.metrics import ConfusionMatrix, confusion_matrix


def make_data(n: int, h: int, w: int, num_classes: int, void: float, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < void] = 255
    pred = torch.where(torch.rand(n, h, w, generator=g) < 0.3,
                       torch.randint(0, num_classes, (n, h, w), generator=g),
                       target.clamp_max(num_classes - 1))
    return pred.to(device), target.to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--size", type=int, nargs=3, default=(8, 512, 512), metavar=("N", "H", "W"))
    ap.add_argument("--classes", type=int, default=21)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    C, dev = args.classes, args.device
    pred, target = make_data(*args.size, C, 0.05, dev)
    from torchmetrics.classification import MulticlassJaccardIndex

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    def ours():
        cm = ConfusionMatrix(C, device=dev)
        cm.update(pred, target)
        return cm.compute()["miou"]

    def tm(validate: bool):
        def run():
            m = MulticlassJaccardIndex(C, average="macro", ignore_index=255,
                                       validate_args=validate).to(dev)
            m.update(pred, target)
            return float(m.compute())
        return run

    def floor_sum():
        return pred.sum(), target.sum()

    def floor_cmp():
        return (pred == target).sum()

    cases = {
        "floor (sum)": floor_sum,
        "floor (compare)": floor_cmp,
        "minseg confusion_matrix only": lambda: confusion_matrix(pred, target, C),
        "minseg ConfusionMatrix": ours,
        "torchmetrics default": tm(True),
        "torchmetrics validate_args=False": tm(False),
    }
    a, b, c = ours(), tm(True)(), tm(False)()
    assert abs(a - b) < 1e-6 and abs(a - c) < 1e-6, (a, b, c)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for f in cases.values():  # warm-up
        f()
    for _ in range(args.repeats):
        for name, f in cases.items():
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    best = {k: min(v) * 1e3 for k, v in times.items()}
    print(f"device={dev} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"shape={tuple(pred.shape)} classes={C} repeats={args.repeats}  mIoU={a:.6f} "
          f"(torchmetrics {b:.6f})")
    print(f"{'':36s} {'median ms':>10s} {'min ms':>8s}")
    for k in cases:
        print(f"{k:36s} {med[k]:10.2f} {best[k]:8.2f}")
    print("ratios (from medians | from minima; the minima are less sensitive to other load)")
    rows = [
        ("speed-up vs torchmetrics default", "torchmetrics default", True, ""),
        ("speed-up vs torchmetrics validate_args=False", "torchmetrics validate_args=False",
         True, "goal >= 4x"),
        ("minseg / floor (sum)", "floor (sum)", False, ""),
        ("minseg / floor (compare)", "floor (compare)", False, "goal <= 2x"),
    ]
    for label, ref, speedup, goal in rows:
        ours = "minseg ConfusionMatrix"
        r = [t[ref] / t[ours] if speedup else t[ours] / t[ref] for t in (med, best)]
        print(f"  {label:46s} {r[0]:6.1f}x | {r[1]:6.1f}x   {goal}")

if __name__ == "__main__":
    main()

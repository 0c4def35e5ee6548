"""Training throughput: how much of a step is the model and how much is the data pipeline.

For each model it times, in one run and on the same machine:

* **model only**: forward, backward and an AdamW step on one fixed batch already in memory;
* **per-sample pipeline** (the peer): a ``torch.utils.data.DataLoader`` over
  :class:`minseg.data.VOCSegmentationDataset` with torchvision v2 transforms per image (JPEG and
  PNG decoding, random resize, crop, flip, colour jitter), then the same step: how minseg
  trained before decoded tensors, and how most tutorials load data;
* **decoded tensors**: :func:`minseg.data.build_loaders`' :class:`~minseg.data.TensorLoader`
  (split decoded once, whole batches augmented with one ``grid_sample``), then the same step.

Training images per second for each, and the ratios tensors / per-sample and tensors / model
only (1.0 would mean the data costs nothing). The three are measured in interleaved rounds
(model only, per-sample, tensors, then again), so that a drift in the machine's speed touches
all three alike; the table gives the median over rounds and, for the ratios, the range of the
per-round values. Run it on an idle machine; the load average is printed next to every row.

    python bench/throughput.py                      # U-Net and Fast-SCNN, cpu profile, 96 px
    python bench/throughput.py --models unet --steps 20 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minseg.config import profile, seed_everything  # noqa: E402
from minseg.cost import load_average  # noqa: E402
from minseg.data import (IGNORE_INDEX, VOCSegmentationDataset, build_loaders,  # noqa: E402
                         make_synthetic_voc, train_transforms)
from minseg.models import build_model  # noqa: E402


def _load() -> str:
    return f"{load_average():.2f}"


def images_per_s(model, batches, steps: int, warmup: int = 2) -> float:
    """Train ``steps`` steps on ``batches`` (an iterator), after ``warmup`` untimed ones."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    n, t0 = 0, None
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            n += x.shape[0]
    return n / (time.perf_counter() - t0)


def forever(loader):
    while True:
        yield from loader


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="unet,fastscnn")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per model")
    args = p.parse_args(argv)
    cfg = profile("cpu")
    root = make_synthetic_voc(num_train=cfg.num_train, num_val=cfg.num_val,
                              image_size=cfg.image_size, seed=cfg.seed)
    tensor_train, _ = build_loaders(cfg, root=root)
    per_sample = DataLoader(VOCSegmentationDataset(root, "train", limit=cfg.num_train,
                                                   transforms=train_transforms(cfg.image_size)),
                            batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    fixed = next(iter(tensor_train))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cfg.image_size} px, "
          f"batch {cfg.batch_size}, width {cfg.width}, {args.rounds} rounds of {args.steps} timed "
          f"steps each", flush=True)
    rows = []
    for name in args.models.split(","):
        seed_everything(0)
        model = build_model(name, 21, width=cfg.width)
        sources = {"only": lambda: iter(lambda: fixed, None), "old": lambda: forever(per_sample),
                   "new": lambda: forever(tensor_train)}
        runs = {k: [] for k in sources}
        loads = [_load()]
        for r in range(args.rounds):
            for k, make in sources.items():
                runs[k].append(images_per_s(model, make(), args.steps))
            loads.append(_load())
            print(f"  {name} round {r + 1}: model only {runs['only'][-1]:.1f}, per-sample "
                  f"{runs['old'][-1]:.1f}, tensors {runs['new'][-1]:.1f} img/s (load {loads[-1]})",
                  flush=True)
        vs_old = [n / o for n, o in zip(runs["new"], runs["old"])]
        vs_only = [n / o for n, o in zip(runs["new"], runs["only"])]
        rows.append((name, *(statistics.median(runs[k]) for k in sources), vs_old, vs_only,
                     f"{min(loads)}-{max(loads)}"))

    def ratio(vals):
        return f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})"

    print("\n| model | model only (img/s) | per-sample DataLoader | decoded tensors | "
          "tensors / per-sample | tensors / model only | load (1 min) |\n"
          "|---|---:|---:|---:|---:|---:|---|")
    for name, only, old, new, vs_old, vs_only, load in rows:
        print(f"| {name} | {only:.1f} | {old:.1f} | {new:.1f} | {ratio(vs_old)} | "
              f"{ratio(vs_only)} | {load} |")
    print(f"\nimages/s: median over {args.rounds} rounds; ratios: median (range) of the per-round "
          f"ratios")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The learning benchmark: val mIoU after a fixed training-time budget on this machine.

Every model is trained by the same :func:`minseg.train.fit` loop on the same built-in synthetic
VOC-format set (same images, augmentation, batch size, loss, optimizer, learning-rate schedule
and seed), for the same number of seconds, then evaluated on the same validation images.
Compared: minseg's small models against two well-known peers trained from scratch,

* ``segmentation_models_pytorch.Unet(encoder_name="resnet18", encoder_weights=None)``
  (``pip install segmentation-models-pytorch``, the ``bench`` extra), and
* torchvision's ``deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)``.

It prints a markdown table and the ratio "best minseg mIoU / best peer mIoU" (goal >= 1.1).
A time budget, not a number of epochs, is the fair unit here: a model that is slow on a CPU sees
fewer images, which is exactly the trade-off a CPU user faces.

    python bench/learning.py                    # 120 s per model (about 12 minutes in all)
    python bench/learning.py --budget 30 --models fastscnn,pspnet --peers tv_deeplabv3
    python bench/learning.py --clock cpu --threads 1    # on a machine shared with other jobs

Choices that keep the comparison about the models:

* The learning-rate schedule runs on the budget (``fit(..., budget_schedule=True)``): every
  model's learning rate decays to zero exactly when its time is up, whatever its speed.
* ``--pipeline memory`` (default) decodes the set once and augments whole batches (random
  scale 0.5-2, crop, flip: the lessons' geometry without colour jitter). The lessons' per-image
  pipeline (``--pipeline standard``) costs 20-60 ms per image on 2 cores, more than a small
  model's step, and would mostly measure JPEG decoding and jitter.
* ``--clock wall`` (default) is a wall-clock budget: right on an idle machine, meaningless when
  other jobs come and go. ``--clock cpu`` budgets this process's CPU seconds per thread
  (``time.process_time``), which other processes cannot eat; with ``--threads 1`` no OpenMP
  spinning is counted either. The table records the load average during each run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minseg.config import profile, seed_everything  # noqa: E402
from minseg.data import (IGNORE_INDEX, VOCSegmentationDataset, build_loaders,  # noqa: E402
                         eval_transforms, make_synthetic_voc)
from minseg.train import evaluate, fit  # noqa: E402

NUM_CLASSES = 21


class TorchvisionOut(nn.Module):
    """torchvision segmentation models return ``{"out": logits, ...}``; keep the logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def peer(name: str) -> nn.Module:
    if name == "smp_unet_r18":
        import segmentation_models_pytorch as smp

        return smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=NUM_CLASSES)
    if name == "tv_deeplabv3":
        from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

        return TorchvisionOut(deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES))
    raise ValueError(f"unknown peer {name!r}; choose smp_unet_r18 or tv_deeplabv3")


PEER_LABELS = {"smp_unet_r18": "smp Unet (resnet18, from scratch)",
               "tv_deeplabv3": "torchvision deeplabv3_mobilenet_v3_large (from scratch)"}


def minseg_model(spec: str) -> nn.Module:
    """``name`` or ``name:key=value:key=value`` (values parsed as JSON), e.g. ``unet:width=16``."""
    from minseg.models import build_model

    name, *pairs = spec.split(":")
    kwargs = {k: json.loads(v) for k, v in (p.split("=", 1) for p in pairs)}
    return build_model(name, NUM_CLASSES, **kwargs)


def in_memory_loaders(root: Path, cfg, workers: int = 0) -> tuple[DataLoader, DataLoader]:
    """The synthetic set decoded once into memory (normalised float images, int64 masks), with
    the geometric augmentation done on whole batches (:func:`augment_batch`)."""
    def load(split: str, limit: int) -> TensorDataset:
        ds = VOCSegmentationDataset(root, split, transforms=eval_transforms(None), limit=limit)
        pairs = [ds[i] for i in range(len(ds))]
        return TensorDataset(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))

    train, val = load("train", cfg.num_train), load("val", cfg.num_val)
    return (DataLoader(train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                       collate_fn=augment_batch, num_workers=workers),
            DataLoader(val, batch_size=50))


def augment_batch(samples, scale: tuple[float, float] = (0.5, 2.0), hflip: float = 0.5):
    """Collate and augment a batch at once: one random rescale (bilinear for images, nearest for
    masks), a random crop back to the original size (padding: 0 for images, 255 = ignore for
    masks) and per-image horizontal flips: the standard pipeline's geometry, minus colour
    jitter, in a few milliseconds instead of tens per image."""
    x = torch.stack([s[0] for s in samples])
    y = torch.stack([s[1] for s in samples])
    n, _, h, w = x.shape
    f = float(torch.empty(()).uniform_(*scale))
    sh, sw = max(1, round(h * f)), max(1, round(w * f))
    x = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False)
    y = F.interpolate(y[:, None].float(), size=(sh, sw), mode="nearest")[:, 0].long()
    if sh < h or sw < w:  # pad to at least h x w
        ph, pw = max(0, h - sh), max(0, w - sw)
        top, left = int(torch.randint(ph + 1, ())), int(torch.randint(pw + 1, ()))
        x = F.pad(x, (left, pw - left, top, ph - top), value=0.0)
        y = F.pad(y, (left, pw - left, top, ph - top), value=IGNORE_INDEX)
    top = int(torch.randint(x.shape[-2] - h + 1, ()))
    left = int(torch.randint(x.shape[-1] - w + 1, ()))
    x, y = x[..., top:top + h, left:left + w], y[..., top:top + h, left:left + w]
    flip = torch.rand(n) < hflip
    x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
    return x.contiguous(), y.contiguous()


def run_one(label: str, build, loaders, args) -> dict:
    train, val = loaders
    seed_everything(args.seed)
    model = build()
    params = sum(p.numel() for p in model.parameters())
    threads = torch.get_num_threads()
    clock = time.perf_counter if args.clock == "wall" else (lambda: time.process_time() / threads)
    t0, c0 = time.perf_counter(), time.process_time()
    history = fit(model, train, None, num_classes=NUM_CLASSES, epochs=10**6,
                  time_budget_s=args.budget, budget_schedule=True, clock=clock, loss=args.loss,
                  optimizer="adamw", lr=args.lr, weight_decay=1e-4, schedule="poly",
                  warmup_steps=args.warmup, device="cpu", seed=args.seed, progress=False)
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    res = evaluate(model, val, NUM_CLASSES, device="cpu", progress=False)
    steps = history.last["step"]
    row = {"model": label, "params_M": params / 1e6, "steps": steps,
           "images": steps * train.batch_size, "images_per_s": steps * train.batch_size / train_s,
           "images_per_cpu_s": steps * train.batch_size / max(1e-9, cpu_s),
           "train_s": train_s, "cpu_s": cpu_s, "miou": res["miou"], "pixel_acc": res["pixel_acc"],
           "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")}
    print(f"  {label}: {row['params_M']:.2f} M params, {steps} steps in {train_s:.0f}s wall, "
          f"{cpu_s:.0f}s CPU "
          f"({row['images_per_s']:.1f} img/s), val mIoU {row['miou']:.4f}, load "
          f"{row['load']:.1f}", flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=120.0, help="training seconds per model")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: the budget is wall-clock seconds; cpu: this process's CPU seconds "
                        "per thread (fair when other jobs share the machine; use --threads 1)")
    p.add_argument("--models", default="fastscnn:width=16,pspnet:width=16,deeplabv3:width=16",
                   help="comma-separated minseg models, name[:key=value...] (JSON values)")
    p.add_argument("--peers", default="smp_unet_r18,tv_deeplabv3", help="comma-separated peers")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--num-train", type=int, default=400)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (all models)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up steps (all models)")
    p.add_argument("--loss", default="ce")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pipeline", choices=("memory", "standard"), default="memory",
                   help="memory: decode once, augment whole batches (scale, crop, flip); "
                        "standard: minseg.data.build_loaders as the lessons use it (per-image "
                        "v2 transforms with colour jitter, slow on 2 cores)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = profile("cpu").replace(image_size=args.image_size, num_train=args.num_train,
                                 num_val=args.num_val, batch_size=args.batch_size, num_workers=0,
                                 seed=args.seed)
    root = make_synthetic_voc(num_train=args.num_train, num_val=args.num_val,
                              image_size=args.image_size, seed=args.seed)
    t0 = time.perf_counter()
    if args.pipeline == "standard":
        loaders = build_loaders(cfg, root=root)
    else:
        loaders = in_memory_loaders(root, cfg)
    print(f"data: {args.pipeline} pipeline ready in {time.perf_counter() - t0:.1f}s", flush=True)
    print(f"learning benchmark: {args.num_train} train / {args.num_val} val synthetic images at "
          f"{args.image_size} px, batch {args.batch_size}, {args.budget:.0f} s ({args.clock} clock) per model, AdamW "
          f"lr {args.lr:g}, poly schedule on the budget, loss {args.loss}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
          flush=True)

    rows = []
    for spec in filter(None, args.models.split(",")):
        rows.append({**run_one(f"minseg {spec}", lambda s=spec: minseg_model(s), loaders, args),
                     "kind": "minseg"})
    for name in filter(None, args.peers.split(",")):
        try:
            build = (lambda n=name: peer(n))
            build()
        except ImportError as e:
            print(f"  skipping {name}: {e}", flush=True)
            continue
        rows.append({**run_one(PEER_LABELS.get(name, name), build, loaders, args), "kind": "peer"})

    print("\n| model | params (M) | steps | images/s (wall) | images/CPU-s | val mIoU |\n"
          "|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params_M']:.2f} | {r['steps']} | {r['images_per_s']:.1f} | "
              f"{r['images_per_cpu_s']:.1f} | {r['miou']:.4f} |")
    ours = [r for r in rows if r["kind"] == "minseg"]
    peers = [r for r in rows if r["kind"] == "peer"]
    if ours and peers:
        best, best_peer = max(ours, key=lambda r: r["miou"]), max(peers, key=lambda r: r["miou"])
        ratio = best["miou"] / best_peer["miou"]
        print(f"\nbest minseg: {best['model']} ({best['miou']:.4f}); best peer: "
              f"{best_peer['model']} ({best_peer['miou']:.4f}); ratio {ratio:.2f} "
              f"({'meets' if ratio >= 1.1 else 'below'} the 1.1 goal)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

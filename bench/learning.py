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

Choices that keep the comparison about the models:

* The budget becomes a step count per model: a probe times 5 training steps after 2 warm-up
  steps, and the model trains for ``budget / step time`` steps with the poly schedule over
  exactly those steps, so every model's learning rate decays to zero when its time is up,
  whatever its speed, and the run itself is deterministic.
* The data is the lessons' pipeline, :func:`minseg.data.build_loaders`: decoded once into
  tensors, whole batches augmented (random scale 0.5-2, crop, flip).
* Run it on an idle machine: the table records the load average during each run.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minseg.config import profile, seed_everything  # noqa: E402
from minseg.cost import load_average  # noqa: E402
from minseg.data import IGNORE_INDEX, build_loaders, make_synthetic_voc  # noqa: E402
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


def step_time(model: nn.Module, train) -> float:
    """Seconds per training step of ``model`` on ``train``'s batches (median of 5, after 2)."""
    probe = copy.deepcopy(model)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    times = []
    for i, (x, y) in zip(range(7), train):
        t0 = time.perf_counter()
        loss = F.cross_entropy(probe(x), y, ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run_one(label: str, build, loaders, args) -> dict:
    train, val = loaders
    seed_everything(args.seed)
    model = build()
    params = sum(p.numel() for p in model.parameters())
    steps = max(1, int(args.budget / step_time(model, train)))
    t0, c0 = time.perf_counter(), time.process_time()
    history = fit(model, train, None, num_classes=NUM_CLASSES, max_steps=steps, loss=args.loss,
                  optimizer="adamw", lr=args.lr, weight_decay=1e-4, schedule="poly",
                  warmup_steps=args.warmup, device="cpu", seed=args.seed, progress=False)
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    res = evaluate(model, val, NUM_CLASSES, device="cpu", progress=False)
    steps = history.last["step"]
    row = {"model": label, "params_M": params / 1e6, "steps": steps,
           "images": steps * train.batch_size, "images_per_s": steps * train.batch_size / train_s,
           "images_per_cpu_s": steps * train.batch_size / max(1e-9, cpu_s),
           "train_s": train_s, "cpu_s": cpu_s, "miou": res["miou"], "pixel_acc": res["pixel_acc"],
           "load": load_average()}
    print(f"  {label}: {row['params_M']:.2f} M params, {steps} steps in {train_s:.0f}s wall, "
          f"{cpu_s:.0f}s CPU "
          f"({row['images_per_s']:.1f} img/s), val mIoU {row['miou']:.4f}, load "
          f"{row['load']:.1f}", flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=120.0, help="training seconds per model")
    p.add_argument("--models", default="fastscnn:width=16,pspnet:width=16,deeplabv3:width=16",
                   help="comma-separated minseg models, name[:key=value...] (JSON values)")
    p.add_argument("--peers", default="smp_unet_r18,tv_deeplabv3", help="comma-separated peers")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--num-train", type=int, default=3000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (all models)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up steps (all models)")
    p.add_argument("--loss", default="ce")
    p.add_argument("--seed", type=int, default=0)
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
    loaders = build_loaders(cfg, root=root)
    print(f"data: decoded tensors ready in {time.perf_counter() - t0:.1f}s", flush=True)
    print(f"learning benchmark: {args.num_train} train / {args.num_val} val synthetic images at "
          f"{args.image_size} px, batch {args.batch_size}, {args.budget:.0f} s per model (as steps), AdamW "
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

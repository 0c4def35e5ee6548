"""GPU check: train U-Net and DeepLabV3 on the synthetic set with the ``gpu`` profile's settings.

One command, no network, under 5 minutes on one GPU:

    python bench/gpu_check.py                 # 600 steps per model
    python bench/gpu_check.py --steps 200 --models unet

For each model it reports training images/s, peak GPU memory and val mIoU, with AMP (bf16 where
supported, else fp16 with a GradScaler) and channels_last, as :func:`minseg.train.fit` does by
default on CUDA. The synthetic set is generated once and decoded into tensors that live on the
GPU, where the batches are augmented (:func:`minseg.data.build_loaders`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minseg.config import profile, seed_everything  # noqa: E402
from minseg.data import build_loaders, make_synthetic_voc  # noqa: E402
from minseg.models import build_model, count_parameters  # noqa: E402
from minseg.train import evaluate, fit  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="unet,deeplabv3")
    p.add_argument("--steps", type=int, default=600, help="training steps per model")
    p.add_argument("--budget", type=float, default=240.0, help="safety cap, seconds per model")
    p.add_argument("--num-train", type=int, default=512)
    p.add_argument("--num-val", type=int, default=128)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--device", default=None, help="default: cuda if available (else cpu, slow)")
    args = p.parse_args(argv)

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = profile("gpu").replace(device=str(dev), data="synthetic", num_train=args.num_train,
                                 num_val=args.num_val, image_size=args.image_size,
                                 amp=dev.type == "cuda", channels_last=dev.type == "cuda",
                                 num_workers=4 if dev.type == "cuda" else 0)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (no GPU found)"
    print(f"{name}; torch {torch.__version__}; {cfg}", flush=True)
    t0 = time.perf_counter()
    root = make_synthetic_voc(num_train=cfg.num_train, num_val=cfg.num_val,
                              image_size=cfg.image_size, seed=cfg.seed)
    train, val = build_loaders(cfg, root=root)
    print(f"data ready in {time.perf_counter() - t0:.0f}s", flush=True)

    rows = []
    for model_name in args.models.split(","):
        seed_everything(cfg.seed)
        model = build_model(model_name, 21, width=cfg.width)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        h = fit(model, train, None, num_classes=21, max_steps=args.steps, lr=3e-3, warmup_steps=20,
                time_budget_s=args.budget, device=dev, progress=False)
        res = evaluate(model, val, 21, device=dev)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
        ips = sum(r["images_per_s"] * r["epoch_time_s"] for r in h) / sum(r["epoch_time_s"] for r in h)
        rows.append((model_name, count_parameters(model) / 1e6, h.last["step"], ips, peak, res["miou"]))
        print(f"  {model_name}: {h.last['step']} steps, {ips:.0f} img/s, peak {peak:.2f} GiB, "
              f"val mIoU {res['miou']:.4f}", flush=True)
    print("\n| model | params (M) | steps | train images/s | peak GPU memory (GiB) | val mIoU |\n"
          "|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} | {r[2]} | {r[3]:.0f} | {r[4]:.2f} | {r[5]:.4f} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DeepLabV3-ResNet-50 on the largest VOC data the machine has, for a few minutes: throughput,
memory, MFU and mIoU. The check issue 20 asks of a session that is lent a GPU.

    python bench/voc_gpu.py                       # 5 minutes of training at most, then val
    python bench/voc_gpu.py --minutes 2 --batch-size 16
    python bench/voc_gpu.py --device cpu --minutes 0.2 --image-size 64 --num-val 8   # a dry run

Data, the largest found: VOC ``train_aug`` (10,582 images, after ``python -m minseg data sbd``),
else VOC ``train`` (1,464), else the ``gpu`` profile's synthetic set (said so). The encoder is
torchvision's ResNet-50 at output stride 8 with ImageNet weights when they are in torchvision's
cache (``python -m minseg data weights``), else from random weights (said so: the mIoU is then
not comparable with anything published). Training is AdamW with the fine-tuning learning rate,
AMP (bf16) and channels-last on CUDA, on decoded tensors that live on the device.

Reported: training images/s (training steps only, evaluation excluded), peak GPU memory, an MFU
estimate (3 x forward FLOPs per image x images/s over the device's dense bf16 peak; 3 because a
backward pass costs about twice the forward) and val mIoU at the training size (and, with
``--full-resolution``, over whole VOC val images, the setting of published numbers). After a few
minutes a model is far from converged: the mIoU says the pipeline learns, not what it reaches.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minseg.config import profile, seed_everything  # noqa: E402
from minseg.cost import flops  # noqa: E402
from minseg.data import build_loaders, find_voc, make_synthetic_voc  # noqa: E402
from minseg.models import build_model, count_parameters  # noqa: E402
from minseg.models.weights import FINETUNE_LR, weights_file  # noqa: E402
from minseg.train import evaluate, fit  # noqa: E402

# Dense (not sparse) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device_name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def pick_data(cfg, root: str | None):
    """(root, split, label) of the largest data found."""
    voc = root or find_voc()
    if voc is not None:
        aug = Path(voc) / "VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt"
        return voc, ("train_aug" if aug.is_file() else "train"), "Pascal VOC 2012"
    synth = make_synthetic_voc(num_train=cfg.num_train, num_val=cfg.num_val,
                               image_size=cfg.image_size, seed=cfg.seed)
    return synth, "train", "synthetic (no VOC found: set MINSEG_DATA or pass --root)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="training time cap")
    p.add_argument("--steps", type=int, default=20000, help="step budget (the cap usually ends it)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=None, help="default: the gpu profile's (320)")
    p.add_argument("--num-val", type=int, default=None, help="default: the gpu profile's (500)")
    p.add_argument("--root", default=None, help="folder containing VOCdevkit (default: auto)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense bf16 peak, for MFU (default: known GPUs)")
    p.add_argument("--full-resolution", action="store_true",
                   help="also score whole VOC val images at their own size (slower)")
    args = p.parse_args(argv)

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    cfg = profile("gpu").replace(device=str(dev), amp=cuda, channels_last=cuda,
                                 batch_size=args.batch_size)
    if args.image_size:
        cfg = cfg.replace(image_size=args.image_size)
    if args.num_val:
        cfg = cfg.replace(num_val=args.num_val)
    name = torch.cuda.get_device_name(dev) if cuda else "CPU"
    print(f"{name}; torch {torch.__version__}", flush=True)

    t0 = time.perf_counter()
    root, split, label = pick_data(cfg, args.root)
    train, val = build_loaders(cfg, root=root, split=split)
    print(f"data: {label}, split {split}: {len(train.dataset)} train / {len(val.dataset)} val "
          f"images at {cfg.image_size} px, decoded in {time.perf_counter() - t0:.0f}s", flush=True)

    wf = weights_file("resnet50")
    pretrained = wf.present
    print(f"encoder: ResNet-50, output stride 8, "
          + (f"ImageNet weights from {wf.path}" if pretrained else
             f"RANDOM weights (no {wf.path}; `python -m minseg data weights` fetches them)"),
          flush=True)
    C = train.dataset.num_classes
    seed_everything(cfg.seed)
    model = build_model("deeplabv3", C, backbone="resnet50", pretrained=pretrained)
    gflops = flops(model, cfg.image_size) / 1e9
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    h = fit(model, train, None, num_classes=C, max_steps=args.steps, lr=FINETUNE_LR,
            warmup_steps=50, time_budget_s=60 * args.minutes, device=dev, progress=False)
    train_s = sum(r["epoch_time_s"] for r in h)
    ips = sum(r["images_per_s"] * r["epoch_time_s"] for r in h) / train_s
    peak_gib = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else float("nan")
    peak = peak_tflops(name, args.peak_tflops)
    mfu = 3 * gflops * 1e9 * ips / (peak * 1e12) if peak else float("nan")
    res = evaluate(model, val, C, device=dev, progress=False)
    line = (f"| deeplabv3-resnet50 ({'ImageNet' if pretrained else 'random init'}) | "
            f"{count_parameters(model) / 1e6:.1f} | {h.last['step']} | {train_s:.0f} | {ips:.0f} | "
            f"{peak_gib:.2f} | {gflops:.1f} | {100 * mfu:.1f} % | {res['miou']:.4f} |")
    print("\n| model | params (M) | steps | train s | train images/s | peak GPU memory (GiB) | "
          "GFLOPs / image (fwd) | MFU (bf16 peak) | val mIoU (resized) |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n" + line, flush=True)
    if args.full_resolution and label.startswith("Pascal"):
        from torch.utils.data import DataLoader

        from minseg.data import VOCSegmentationDataset, eval_transforms

        full = DataLoader(VOCSegmentationDataset(root, "val", transforms=eval_transforms()),
                          batch_size=1)
        res_full = evaluate(model, full, C, device=dev, progress=False)
        print(f"val mIoU at full resolution (whole images, single scale): {res_full['miou']:.4f}")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s; peak assumed {peak} TFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m minseg <command>`` (or ``minseg <command>`` once installed).

Commands:
  demo    train a small model on the built-in data, report mIoU, save a figure
  data    generate the synthetic VOC-format set; download Pascal VOC 2012, SBD (train_aug) or
          the backbones' ImageNet weights (opt-in)
  train   train any registered model on synthetic data or VOC, with checkpoints
  eval    evaluate a checkpoint (optionally with multi-scale / flip test-time augmentation)
  quiz    interview drill: multiple choice, numeric and open questions, spaced repetition
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


TRAIN_LR = 3e-3   # `train`'s AdamW learning rate from scratch


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=("smoke", "cpu", "gpu"), default=None,
                   help="sizes and budgets: smoke (seconds, CI), cpu (a laptop, minutes), gpu "
                        "(Pascal VOC on CUDA). Default: $MINSEG_PROFILE, else gpu if CUDA "
                        "is available, else cpu")


def _parse_classes(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _scale_range(text: str) -> tuple[float, float]:
    """``"0.75,1.25"`` -> ``(0.75, 1.25)``: argparse's type for a random-scale range."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LO,HI, got {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"expected 0 < LO <= HI, got {text!r}")
    return lo, hi


def _registry(kind: str) -> list[str]:
    """The names in a registry, for ``choices`` and help: the registry is the one list
    (``minseg.models.MODELS``, ``minseg.losses.LOSSES``), so the CLI cannot forget an entry."""
    if kind == "models":
        from minseg.models import MODELS as reg
    else:
        from minseg.losses import LOSSES as reg
    return list(reg)


def _model_kwargs(text: str) -> dict:
    """argparse's type for ``--model-kwargs``: a JSON object."""
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(kwargs, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return kwargs


def _load_data(cfg, data: str, root: str | None, classes, batch_size=None, augment=True,
               split: str = "train"):
    from minseg.data import build_loaders, data_root, find_voc

    if data == "voc":
        root = root or find_voc()
        if root is None:
            raise SystemExit("Pascal VOC not found. Download it with `python -m minseg data voc "
                             "--root DIR` and set MINSEG_DATA=DIR, or pass --root DIR.")
    elif root is None:
        root = data_root(cfg.replace(data="synthetic"))
    return build_loaders(cfg, root=root, classes=classes, batch_size=batch_size, augment=augment,
                         split=split)


def cmd_data(args) -> int:
    from minseg.config import profile
    from minseg.data import download_voc, make_synthetic_voc

    if args.what == "weights":
        from minseg.models.backbones import BACKBONES
        from minseg.models.weights import fetch_weights

        names = [b.strip() for b in (args.backbones or ",".join(BACKBONES)).split(",") if b.strip()]
        bad = [b for b in names if b not in BACKBONES]
        if bad:
            raise SystemExit(f"unknown backbone(s) {', '.join(bad)}; valid: {', '.join(BACKBONES)}")
        return 1 if fetch_weights(names) else 0
    if args.what == "voc":
        from minseg.config import data_dir

        root = Path(args.root) if args.root else data_dir()
        print(f"downloading Pascal VOC 2012 trainval (about 2 GB) into {root}")
        download_voc(root)
        print(f"done: {root}/VOCdevkit/VOC2012 (set MINSEG_DATA={root} to use it)")
        return 0
    if args.what == "sbd":
        from minseg.config import data_dir
        from minseg.data.download import DownloadError
        from minseg.data.sbd import SBD, check_voc_for_sbd, download_sbd, make_train_aug

        root = Path(args.root) if args.root else data_dir()
        check_voc_for_sbd(root)  # before downloading 1.4 GB that could not be used
        print(f"downloading SBD (about {SBD['size_gb']} GB) into {root / 'benchmark_RELEASE'}")
        try:
            download_sbd(root)
        except DownloadError as e:
            raise SystemExit(f"error: {e}") from None
        voc = make_train_aug(root, root)
        print(f"done: VOCSegmentationDataset({str(root)!r}, 'train_aug') reads "
              f"{voc / 'ImageSets/Segmentation/train_aug.txt'}")
        return 0
    cfg = profile(args.profile)
    t0 = time.perf_counter()
    root = make_synthetic_voc(args.root, num_train=args.num_train or cfg.num_train,
                              num_val=args.num_val or cfg.num_val,
                              image_size=args.image_size or cfg.image_size, seed=args.seed)
    print(f"synthetic VOC tree at {root} ({time.perf_counter() - t0:.1f}s)")
    return 0


# The demo's task and recipe, chosen by measurement on 2 idle CPU cores (bench/demo.py compares
# the candidates): Fast-SCNN (as accurate after a minute as DeepLabV3 or PSPNet with a shallow
# encoder, and the quickest of the three), VOC classes whose silhouettes the 96-px synthetic
# scenes resolve, flips only (random scaling slows learning this short) and a step budget that
# trains in about a minute.
DEMO = {"model": "fastscnn",
        "classes": ("person", "car", "boat", "aeroplane", "train"),
        "steps": 500, "lr": 1e-2, "batch_size": 16, "scale": (1.0, 1.0)}
DEMO_WHY = ("a 5-class subset of VOC, frequent and large enough to resolve at 96 px (dog, cat and "
            "the thin or rare classes need more training than a demo has; the other 15 classes "
            "count as background), so that a 2-core laptop sees a model segment in about a minute; "
            "train all 21 classes with `python -m minseg train`")


def cmd_demo(args) -> int:
    from minseg.config import profile, seed_everything
    from minseg.data import BatchAugment, build_loaders, data_root
    from minseg.models import build_model, count_parameters
    from minseg.train import evaluate, fit
    from minseg.viz import plot_curves, show_grid

    cfg = profile(args.profile)
    print(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    classes = _parse_classes(args.classes) if args.classes else list(DEMO["classes"])
    scale = args.scale or DEMO["scale"]
    train_loader, val_loader = build_loaders(cfg, root=data_root(cfg.replace(data="synthetic")),
                                             classes=classes, batch_size=DEMO["batch_size"],
                                             augment=BatchAugment(scale=scale))
    ds = val_loader.dataset
    print(f"data: {len(train_loader.dataset)} train / {len(ds)} val images of the built-in "
          f"synthetic VOC set at {ds.root}, decoded to tensors ({time.perf_counter() - t0:.1f}s)")
    print(f"task: {', '.join(ds.classes[1:])} vs background" +
          (f": {DEMO_WHY}" if not args.classes else ""))
    seed_everything(cfg.seed)
    kwargs = args.model_kwargs or {}
    model = build_model(args.model, ds.num_classes, width=cfg.width, **kwargs)
    aug = "flips" + (f", random scale {scale[0]:g}-{scale[1]:g}" if scale != (1, 1) else " only")
    shown = f"{args.model} {json.dumps(kwargs)}" if kwargs else args.model
    print(f"model: {shown}, {count_parameters(model) / 1e6:.2f} M parameters; "
          f"augmentation: {aug}")
    steps = args.steps or (DEMO["steps"] if cfg.name != "smoke" else cfg.steps)
    history = fit(model, train_loader, None, num_classes=ds.num_classes, max_steps=steps,
                  lr=args.lr, time_budget_s=args.budget or cfg.time_budget_s, seed=cfg.seed,
                  device=cfg.device)
    results = evaluate(model, val_loader, ds.num_classes, device=cfg.device)
    train_s = history.total_time_s
    cut = " (cut short by the time cap)" if history.cut_short else ""
    print(f"trained {history.steps} of {steps} steps in {train_s:.0f}s{cut}; "
          f"val mIoU {results['miou']:.3f}, pixel accuracy {results['pixel_acc']:.3f}")
    for name, iou in zip(ds.classes, results["iou"].tolist()):
        print(f"  {name:>12s}  IoU {iou:.3f}")
    from minseg.infer import predict

    images, masks = next(iter(val_loader))
    preds = predict(model, images[:4].to(cfg.device)).argmax(1).cpu()
    fig = show_grid(images[:4].cpu(), masks[:4].cpu(), preds, class_names=ds.classes)
    fig.savefig(out / "predictions.png", dpi=100)
    plot_curves(history, keys=["loss", "lr"]).savefig(out / "curves.png", dpi=100)
    (out / "results.json").write_text(json.dumps(
        {"profile": cfg.name, "model": args.model, "model_kwargs": kwargs, "scale": list(scale),
         "classes": list(ds.classes),
         "miou": results["miou"], "pixel_acc": results["pixel_acc"], "steps": history.steps,
         "planned_steps": steps, "cut_short": history.cut_short, "train_s": train_s,
         "total_s": time.perf_counter() - t0}, indent=1))
    print(f"saved {out / 'predictions.png'}, {out / 'curves.png'} and {out / 'results.json'} "
          f"(total {time.perf_counter() - t0:.0f}s)")
    return 0


def cmd_train(args) -> int:
    from minseg.config import profile, seed_everything
    from minseg.models import build_model, count_parameters
    from minseg.models.weights import FINETUNE_LR, starting_point
    from minseg.train import fit

    cfg = profile(args.profile)
    if args.image_size:
        cfg = cfg.replace(image_size=args.image_size)
    print(cfg)
    train_loader, val_loader = _load_data(cfg, args.data, args.root, _parse_classes(args.classes),
                                          args.batch_size, split=args.split)
    num_classes = train_loader.dataset.num_classes
    seed_everything(args.seed)
    kwargs = args.model_kwargs or {}
    kwargs.setdefault("width", cfg.width)
    if "backbone" not in kwargs and "pretrained" not in kwargs:
        # the profile's policy (ImageNet weights on gpu when present); explicit kwargs win
        kwargs.update(starting_point(cfg, args.model).kwargs)
    # fine-tune pretrained weights gently, whoever asked for them; an explicit --lr wins
    lr = args.lr if args.lr is not None else (FINETUNE_LR if kwargs.get("pretrained") else TRAIN_LR)
    model = build_model(args.model, num_classes, **kwargs)
    print(f"model {args.model} ({count_parameters(model) / 1e6:.2f} M parameters), "
          f"{num_classes} classes: {', '.join(train_loader.dataset.classes)}; lr {lr:g}")
    history = fit(model, train_loader, val_loader, num_classes=num_classes,
                  epochs=args.epochs, max_steps=args.steps or (None if args.epochs else cfg.steps),
                  loss=args.loss, optimizer=args.optimizer, lr=lr, schedule=args.schedule,
                  device=cfg.device, amp=cfg.amp or None, channels_last=cfg.channels_last or None,
                  seed=args.seed, checkpoint_dir=args.out, resume=args.resume,
                  time_budget_s=args.budget)
    if history:
        last = history[-1]
        print(f"done: epoch {last['epoch']}, step {last['step']}, val mIoU "
              f"{last.get('miou', float('nan')):.3f}; checkpoints in {args.out}")
    return 0


def cmd_eval(args) -> int:
    from minseg.config import profile
    from minseg.data import VOC_CLASSES
    from minseg.train import evaluate, load_model_from_checkpoint

    cfg = profile(args.profile)
    model, meta = load_model_from_checkpoint(args.checkpoint)
    classes = meta.get("classes")
    subset = [c for c in classes if c != "background"] if classes and tuple(classes) != VOC_CLASSES else None
    _, val_loader = _load_data(cfg, args.data, args.root, subset)
    scales = tuple(float(s) for s in args.scales.split(","))
    if args.full_resolution or args.window:
        # every image at its own size, one at a time (published VOC numbers are measured so)
        from torch.utils.data import DataLoader

        from minseg.data import VOCSegmentationDataset, eval_transforms
        from minseg.infer import default_stride

        base = val_loader.dataset.source if hasattr(val_loader.dataset, "source") else val_loader.dataset
        full = VOCSegmentationDataset(base.root, "val", classes=subset,   # the whole split
                                      transforms=eval_transforms(None))
        val_loader = DataLoader(full, batch_size=1, shuffle=False)
        setting = ("full resolution, " + (f"sliding window {args.window} px (stride "
                   f"{args.stride or default_stride(args.window)})" if args.window else "whole image"))
    else:
        setting = f"resized and centre-cropped to {cfg.image_size} px"
    res = evaluate(model, val_loader, val_loader.dataset.num_classes, device=cfg.device,
                   scales=scales, flip=args.flip, window=args.window, stride=args.stride)
    names = val_loader.dataset.classes
    print(f"mIoU {res['miou']:.4f}  pixel acc {res['pixel_acc']:.4f}  mean Dice {res['mdice']:.4f}"
          f"  ({res['time_s']:.1f}s, {res['images']} images, {setting}, scales={scales}, "
          f"flip={args.flip})")
    for name, iou in zip(names, res["iou"].tolist()):
        print(f"  {name:>12s}  IoU {iou:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minseg", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `python -m minseg COMMAND --help` for a command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="train a small model on the built-in data and show results",
                       description="Generate (or reuse) the synthetic VOC-format dataset, train a "
                                   "small model for a fixed number of steps on a 5-class subset, "
                                   "evaluate mIoU on val and save a figure of predictions. About "
                                   "a minute of training on 2 CPU cores.")
    _add_profile(p)
    p.add_argument("--model", default=DEMO["model"], choices=_registry("models"),
                   help="a model from minseg.models.MODELS: %(choices)s")
    p.add_argument("--model-kwargs", type=_model_kwargs, default=None,
                   help="JSON for build_model, e.g. '{\"encoder_blocks\": [1, 1]}'")
    p.add_argument("--classes", default=None,
                   help=f"comma-separated VOC classes (default: {','.join(DEMO['classes'])})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps (default: {DEMO['steps']}; the smoke profile's otherwise)")
    p.add_argument("--scale", type=_scale_range, default=None,
                   help="random-scale range of the augmentation, e.g. 0.5,2 "
                        f"(default: {DEMO['scale'][0]:g},{DEMO['scale'][1]:g})")
    p.add_argument("--budget", type=float, default=None,
                   help="safety cap in seconds (default: the profile's time_budget_s)")
    p.add_argument("--lr", type=float, default=DEMO["lr"], help="peak learning rate (AdamW)")
    p.add_argument("--out", default="runs/demo", help="folder for the figures and results.json")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("data", help="generate the synthetic set; download Pascal VOC, SBD or weights",
                       description="`data synthetic` writes the built-in VOC-format dataset; "
                                   "`data voc` downloads Pascal VOC 2012 trainval (2 GB, md5 "
                                   "checked, mirrors tried in turn); `data sbd` (after `data "
                                   "voc`, same --root) downloads SBD (1.4 GB, md5 checked) into "
                                   "ROOT/benchmark_RELEASE and writes VOC's 10,582-image "
                                   "train_aug split; `data weights` fetches "
                                   "torchvision's ImageNet weights of the backbones into its "
                                   "cache (hash checked), or says where to put them offline.")
    p.add_argument("what", choices=("synthetic", "voc", "sbd", "weights"))
    p.add_argument("--backbones", default=None,
                   help="data weights: comma-separated backbones (default: all of them)")
    p.add_argument("--root", default=None, help="target folder (default: $MINSEG_DATA or ~/.cache/minseg)")
    _add_profile(p)
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--num-val", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("train", help="train a model with checkpoints",
                       description="Train any registered model. Checkpoints go to --out after every "
                                   "epoch; --resume continues from the latest one. Works under "
                                   "torchrun for several GPUs or machines.")
    _add_profile(p)
    p.add_argument("--model", default="unet", choices=_registry("models"),
                   help="a model from minseg.models.MODELS: %(choices)s")
    p.add_argument("--model-kwargs", type=_model_kwargs, default=None,
                   help='JSON, e.g. \'{"skips": false}\'')
    p.add_argument("--data", choices=("synthetic", "voc"), default="synthetic")
    p.add_argument("--root", default=None, help="folder containing VOCdevkit (default: auto)")
    p.add_argument("--classes", default=None, help="comma-separated VOC class subset, e.g. person,car")
    p.add_argument("--split", choices=("train", "train_aug"), default="train",
                   help="training split; train_aug (10,582 images, the published setting) needs "
                        "`python -m minseg data sbd` first")
    p.add_argument("--steps", "--max-steps", type=int, default=None,
                   help="optimizer steps (default: the profile's steps)")
    p.add_argument("--epochs", type=int, default=None, help="stop after this many epochs")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--loss", default="ce", choices=_registry("losses"),
                   help="a loss from minseg.losses.LOSSES: %(choices)s")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default: {TRAIN_LR:g} from scratch; "
                        f"minseg.models.weights.FINETUNE_LR when the encoder starts from "
                        f"ImageNet weights)")
    p.add_argument("--schedule", choices=("poly", "cosine", "constant"), default="poly")
    p.add_argument("--budget", type=float, default=None,
                   help="safety cap: stop after this many seconds even if steps remain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="checkpoint folder")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint",
                       description="Evaluate a checkpoint written by `train` on the val split, "
                                   "optionally at full resolution (whole image or sliding "
                                   "window) and with multi-scale and flip test-time "
                                   "augmentation; the setting is printed next to the number.")
    p.add_argument("--checkpoint", required=True)
    _add_profile(p)
    p.add_argument("--data", choices=("synthetic", "voc"), default="synthetic")
    p.add_argument("--root", default=None)
    p.add_argument("--scales", default="1.0", help="comma-separated, e.g. 0.75,1,1.25")
    p.add_argument("--flip", action="store_true", help="also average horizontally flipped inputs")
    p.add_argument("--full-resolution", action="store_true",
                   help="every val image of the split at its own size, whole (as published VOC "
                        "numbers are measured), instead of resized and centre-cropped")
    p.add_argument("--window", type=int, default=None, metavar="PX",
                   help="full resolution by sliding PX x PX crops (e.g. the training crop size)")
    p.add_argument("--stride", type=int, default=None, metavar="PX",
                   help="--window: step between crops (default two thirds of the window)")
    p.set_defaults(func=cmd_eval)
    from minseg.quiz.cli import add_parser as _add_quiz
    _add_quiz(sub)
    from minseg.grading.cli import add_parsers as _add_grading
    _add_grading(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Data: the VOC reader, the built-in synthetic VOC-format set, joint transforms, loaders."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import DataLoader

from minseg.data.synthetic import make_synthetic_voc
from minseg.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, denormalize, eval_transforms,
                                    train_transforms)
from minseg.data.voc import (IGNORE_INDEX, NUM_VOC_CLASSES, VOC_CLASSES, VOC_PALETTE,
                             VOCSegmentationDataset, check_voc_tree, class_lut, download_voc,
                             find_voc, read_annotation, read_mask, voc_colormap)


def data_root(cfg=None):
    """The dataset root a profile trains on: real VOC when the profile asks for it and it is on
    disk (:func:`find_voc`), else the synthetic set sized by the profile (generated once)."""
    from minseg.config import profile

    cfg = cfg or profile()
    if cfg.data == "voc":
        root = find_voc()
        if root is not None:
            return root
    return make_synthetic_voc(num_train=cfg.num_train, num_val=cfg.num_val,
                              image_size=cfg.image_size, seed=cfg.seed)


def build_datasets(cfg=None, *, root=None, classes: Sequence[str] | None = None,
                   others: str = "background", augment: bool = True,
                   train_limit: int | None = None, val_limit: int | None = None):
    """``(train, val)`` :class:`VOCSegmentationDataset` for a profile.

    Sizes come from the profile: training crops of ``cfg.image_size`` (random scale, crop, flip,
    colour jitter when ``augment``); validation images resized and centre-cropped to the same
    size on real VOC, untouched on the synthetic set (already that size).
    """
    from minseg.config import profile

    cfg = cfg or profile()
    root = root or data_root(cfg)
    train_tf = (train_transforms(cfg.image_size) if augment else eval_transforms(cfg.image_size))
    common = dict(classes=classes, others=others)
    train = VOCSegmentationDataset(root, "train", transforms=train_tf,
                                   limit=train_limit or cfg.num_train, **common)
    val = VOCSegmentationDataset(root, "val", transforms=eval_transforms(cfg.image_size),
                                 limit=val_limit or cfg.num_val, **common)
    return train, val


def build_loaders(cfg=None, *, batch_size: int | None = None, **kw):
    """``(train_loader, val_loader)`` over :func:`build_datasets`; shuffling seeded by the profile."""
    from minseg.config import profile

    cfg = cfg or profile()
    train, val = build_datasets(cfg, **kw)
    bs = batch_size or cfg.batch_size
    g = torch.Generator().manual_seed(cfg.seed)
    common = dict(num_workers=cfg.num_workers, pin_memory=cfg.device.startswith("cuda"),
                  persistent_workers=cfg.num_workers > 0)
    train_loader = DataLoader(train, batch_size=bs, shuffle=True, drop_last=len(train) > bs,
                              generator=g, **common)
    val_loader = DataLoader(val, batch_size=bs, shuffle=False, **common)
    return train_loader, val_loader


__all__ = [
    "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "NUM_VOC_CLASSES", "VOC_CLASSES",
    "VOC_PALETTE", "VOCSegmentationDataset", "build_datasets", "build_loaders",
    "check_voc_tree", "class_lut", "data_root", "denormalize", "download_voc",
    "eval_transforms", "find_voc", "make_synthetic_voc", "read_annotation", "read_mask",
    "train_transforms", "voc_colormap",
]

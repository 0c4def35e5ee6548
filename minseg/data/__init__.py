"""Data: the VOC reader, the built-in synthetic VOC-format set, decoded-tensor loaders.

Training reads decoded tensors: :func:`build_loaders` decodes each split once through the VOC
reader (:func:`decoded_split`, cached on disk) and returns :class:`TensorLoader` s that
augment whole batches on the training device (:class:`BatchAugment`). The per-sample
``VOCSegmentationDataset`` with torchvision v2 transforms (:func:`build_datasets`) stays for
reading single images, their files and annotations.
"""
from __future__ import annotations

from typing import Sequence

from minseg.data.augment import BatchAugment
from minseg.data.contents import class_presence, count_instances, image_class_presence
from minseg.data.loader import TensorLoader
from minseg.data.synthetic import SceneOptions, make_synthetic_voc
from minseg.data.tensors import TensorSegmentationData, decoded_split
from minseg.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, denormalize, eval_transforms,
                                    train_transforms)
from minseg.data.voc import (IGNORE_INDEX, NUM_VOC_CLASSES, VOC_CLASSES, VOC_PALETTE,
                             VOCSegmentationDataset, check_voc_tree, class_lut, download_voc,
                             find_voc, read_annotation, read_mask, voc_colormap)


def data_root(cfg=None, scene: SceneOptions | None = None):
    """The dataset root a profile trains on: real VOC when the profile asks for it and it is on
    disk (:func:`find_voc`), else the synthetic set sized by the profile (generated once, with
    the synthetic ``scene`` options a lesson built for its claim; real VOC ignores them)."""
    from minseg.config import profile

    cfg = cfg or profile()
    if cfg.data == "voc":
        root = find_voc()
        if root is not None:
            return root
    return make_synthetic_voc(num_train=cfg.num_train, num_val=cfg.num_val,
                              image_size=cfg.image_size, seed=cfg.seed, scene=scene)


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


def build_loaders(cfg=None, *, root=None, classes: Sequence[str] | None = None,
                  others: str = "background", augment: bool | BatchAugment = True,
                  train_limit: int | None = None, val_limit: int | None = None,
                  batch_size: int | None = None, seed: int | None = None,
                  scene: SceneOptions | None = None, split: str = "train"):
    """``(train, val)`` :class:`TensorLoader` s for a profile, on its device.

    Both splits are decoded once at the profile's ``image_size`` and cached
    (:func:`decoded_split`). Training batches are shuffled and, with ``augment=True``, get a
    random scale in [0.5, 2], a crop back to ``image_size`` (mask padded with 255) and a
    horizontal flip (:class:`BatchAugment`; pass one to change it, or ``False`` for none).
    Validation batches come in order, unaugmented. ``seed`` (default: the profile's) seeds the
    order and the augmentation when the loader is iterated directly; :func:`minseg.train.fit`
    replaces it with its own ``seed``. ``scene`` chooses the synthetic scenes
    (:class:`SceneOptions`) when ``root`` is not given. ``split`` is the training split:
    ``"train"`` (at most the profile's ``num_train`` images) or, on real VOC, ``"train_aug"``
    (all 10,582 images unless ``train_limit`` says otherwise; see :mod:`minseg.data.sbd`).
    """
    from minseg.config import profile

    cfg = cfg or profile()
    root = root or data_root(cfg, scene)
    common = dict(size=cfg.image_size, classes=classes, others=others)
    limit = train_limit or (cfg.num_train if split == "train" else None)
    train = decoded_split(root, split, limit=limit, **common)
    val = decoded_split(root, "val", limit=val_limit or cfg.num_val, **common)
    bs = batch_size or cfg.batch_size
    device = cfg.device if str(cfg.device).startswith("cuda") else None
    aug = BatchAugment() if augment is True else (augment or None)
    seed = cfg.seed if seed is None else seed
    return (TensorLoader(train, bs, shuffle=True, augment=aug, seed=seed, device=device),
            TensorLoader(val, bs, shuffle=False, device=device))


__all__ = [
    "BatchAugment", "IGNORE_INDEX", "SceneOptions", "IMAGENET_MEAN", "IMAGENET_STD", "NUM_VOC_CLASSES",
    "TensorLoader", "TensorSegmentationData", "VOC_CLASSES", "VOC_PALETTE",
    "VOCSegmentationDataset", "build_datasets", "build_loaders", "class_presence",
    "count_instances", "decoded_split", "image_class_presence",
    "check_voc_tree", "class_lut", "data_root", "denormalize", "download_voc",
    "eval_transforms", "find_voc", "make_synthetic_voc", "read_annotation", "read_mask",
    "train_transforms", "voc_colormap",
]

"""Pascal VOC 2012: class names, the palette, the reader, class subsets and the opt-in download.

The reader wraps :class:`torchvision.datasets.VOCSegmentation`, so the built-in synthetic tree
(:func:`minseg.data.make_synthetic_voc`) and a real ``VOCdevkit`` go through the same code.
Dataset paper: Everingham et al., "The PASCAL Visual Object Classes Challenge",
http://host.robots.ox.ac.uk/pascal/VOC/voc2012/
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.datasets import VOCSegmentation
from torchvision.transforms.v2 import functional as TF

from minseg.validate import IGNORE_INDEX

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
NUM_VOC_CLASSES = len(VOC_CLASSES)


def voc_colormap(n: int = 256) -> np.ndarray:
    """The standard VOC colormap, ``n x 3`` uint8: the bits of each class id are spread over
    R, G and B from the high bit down (class 1 = (128, 0, 0), 15 person = (192, 128, 128))."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_PALETTE: np.ndarray = voc_colormap(256)
"""256 x 3 uint8 palette; row ``IGNORE_INDEX`` (255) is the void colour (224, 224, 192)."""


_REQUIRED = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")
STANDARD_SPLITS = ("train", "val", "trainval")
"""The splits VOC ships; others (``train_aug``, written by :mod:`minseg.data.sbd`) are read
from their split file."""
MASK_DIRS = {"train_aug": "SegmentationClassAug"}
"""Splits whose masks live outside ``SegmentationClass``."""


def check_voc_tree(root: str | os.PathLike, split: str = "train", year: str = "2012") -> Path:
    """Check that ``root/VOCdevkit/VOC{year}`` has what segmentation needs; return that folder.

    Raises ``FileNotFoundError`` naming the first missing path and how to fix it.
    """
    root = Path(root)
    voc = root / "VOCdevkit" / f"VOC{year}"
    fix = (f"download VOC with `python -m minseg data voc --root {root}`, or generate the "
           f"built-in set with `python -m minseg data synthetic --root {root}`")
    if not voc.is_dir():
        hint = ""
        if (root / "JPEGImages").is_dir() or (root / f"VOC{year}").is_dir():
            hint = " (pass the folder that *contains* VOCdevkit as root)"
        raise FileNotFoundError(f"no Pascal VOC tree at {voc}{hint}; {fix}")
    for sub in _REQUIRED:
        if not (voc / sub).is_dir():
            raise FileNotFoundError(f"incomplete VOC tree: missing {voc / sub}; {fix}")
    split_file = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    hint = f"; build it with `python -m minseg data sbd --root {root}`" if split == "train_aug" else ""
    if not split_file.is_file():
        have = sorted(p.stem for p in split_file.parent.glob("*.txt"))
        raise FileNotFoundError(f"missing split file {split_file} (splits present: {have}){hint}")
    masks = voc / MASK_DIRS.get(split, "SegmentationClass")
    if not masks.is_dir():
        raise FileNotFoundError(f"incomplete VOC tree: missing {masks}{hint}")
    return voc


def _split_paths(root: Path, voc: Path, split: str, year: str) -> tuple[list[str], list[str]]:
    """The image and mask paths of a split: torchvision's list for the splits VOC ships, the
    split file and its mask folder (:data:`MASK_DIRS`) for the others."""
    if split in STANDARD_SPLITS:
        tv = VOCSegmentation(str(root), year=year, image_set=split, download=False)
        return list(tv.images), list(tv.masks)
    names = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    masks = voc / MASK_DIRS.get(split, "SegmentationClass")
    return ([str(voc / "JPEGImages" / f"{n}.jpg") for n in names],
            [str(masks / f"{n}.png") for n in names])


def class_lut(classes: Sequence[str] | None, others: str = "background") -> tuple[torch.Tensor, tuple[str, ...]]:
    """Lookup table that remaps VOC ids to a class subset, and the subset's names.

    ``classes`` lists VOC class names to keep (background is always id 0 and is added if
    missing); they become ids ``1..K`` in the given order. Pixels of the other VOC classes become
    background (``others="background"``: the model must learn that they are not a target
    class, which is what a deployed K-class model faces) or are ignored (``others="ignore"``:
    they cost nothing but the model never learns to reject them). 255 stays 255.
    """
    lut = torch.arange(256, dtype=torch.int64)
    if classes is None:
        return lut, VOC_CLASSES
    names = [c for c in classes if c != "background"]
    unknown = [c for c in names if c not in VOC_CLASSES]
    if unknown:
        raise ValueError(f"unknown VOC classes {unknown}; valid names: {', '.join(VOC_CLASSES[1:])}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in {list(classes)}")
    if others not in ("background", "ignore"):
        raise ValueError(f"others must be 'background' or 'ignore', got {others!r}")
    lut[1:NUM_VOC_CLASSES] = 0 if others == "background" else IGNORE_INDEX
    for new_id, name in enumerate(names, start=1):
        lut[VOC_CLASSES.index(name)] = new_id
    return lut, ("background", *names)


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """Read a VOC palette PNG as an ``int64`` ``H,W`` tensor of raw ids (0..20 and 255),
    raising ``ValueError`` naming the file for any other value or a non-palette PNG."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise ValueError(f"{path}: expected a palette (mode 'P') PNG mask, got mode {im.mode!r}")
        m = torch.from_numpy(np.array(im)).to(torch.int64)
    bad = (m >= NUM_VOC_CLASSES) & (m != IGNORE_INDEX)
    if bool(bad.any()):
        raise ValueError(f"{path}: mask contains ids {torch.unique(m[bad]).tolist()} outside "
                         f"0..{NUM_VOC_CLASSES - 1} and {IGNORE_INDEX}")
    return m


def read_annotation(path: str | os.PathLike) -> list[dict]:
    """Objects of a VOC ``Annotations/*.xml`` file: ``[{"name", "bbox": (x0, y0, x1, y1)}]``
    with 1-based inclusive pixel coordinates, as VOC writes them."""
    objs = []
    for o in ET.parse(path).getroot().iter("object"):
        b = o.find("bndbox")
        objs.append({"name": o.findtext("name"),
                     "bbox": tuple(int(float(b.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")),
                     "difficult": o.findtext("difficult", "0") == "1"})
    return objs


class VOCSegmentationDataset(torch.utils.data.Dataset):
    """Pascal VOC segmentation (real or synthetic) as ``(image, mask)`` tensors.

    Wraps :class:`torchvision.datasets.VOCSegmentation` for the file list and decoding, then
    checks each mask, remaps classes (see :func:`class_lut`) and applies joint transforms
    (``transforms(image: tv_tensors.Image, mask: tv_tensors.Mask)``, default
    :func:`minseg.data.transforms.eval_transforms`). Returns a float ``3,H,W`` image and an
    ``int64`` ``H,W`` mask with ids ``0..num_classes-1`` and 255 for void.

    Args:
        root: the folder that contains ``VOCdevkit``.
        split: ``"train"``, ``"val"``, ``"trainval"``, or ``"train_aug"`` (10,582 images with
            SBD's masks, built by ``python -m minseg data sbd``; :mod:`minseg.data.sbd`).
        classes: optional subset of VOC class names (see :func:`class_lut`).
        others: what the other classes become: ``"background"`` or ``"ignore"``.
        limit: keep at most this many images (the first ones of the split, after filtering).
        only_with_classes: with ``classes``, keep only images showing at least one of them.
    Dataset: Everingham et al. 2010, http://host.robots.ox.ac.uk/pascal/VOC/
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *,
                 classes: Sequence[str] | None = None, others: str = "background",
                 limit: int | None = None, transforms: Callable | None = None,
                 only_with_classes: bool = True, year: str = "2012"):
        self.voc_dir = check_voc_tree(root, split, year)
        self.root = Path(root)
        self.split = split
        self._images, self._masks = _split_paths(self.root, self.voc_dir, split, year)
        self.lut, self.classes = class_lut(classes, others)
        self.voc_ids = tuple(VOC_CLASSES.index(c) for c in self.classes)
        names = [Path(p).stem for p in self._images]
        keep = range(len(names))
        if classes is not None and only_with_classes:
            wanted = set(self.voc_ids[1:])
            keep = [i for i in keep if wanted & set(read_mask(self._masks[i]).unique().tolist())]
        keep = list(keep)[:limit] if limit is not None else list(keep)
        if not keep:
            raise ValueError(f"no images left in {self.voc_dir} split {split!r} "
                             f"(classes={classes}, limit={limit})")
        self.indices = keep
        self.names = [names[i] for i in keep]
        if transforms is None:
            from minseg.data.transforms import eval_transforms
            transforms = eval_transforms()
        self.transforms = transforms

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.indices)

    def image_path(self, i: int) -> Path:
        return Path(self._images[self.indices[i]])

    def mask_path(self, i: int) -> Path:
        return Path(self._masks[self.indices[i]])

    def instance_path(self, i: int) -> Path:
        return self.voc_dir / "SegmentationObject" / f"{self.names[i]}.png"

    def annotation_path(self, i: int) -> Path:
        return self.voc_dir / "Annotations" / f"{self.names[i]}.xml"

    def _check_sizes(self, i: int, image_hw: tuple[int, int], mask_hw: tuple[int, int]) -> None:
        # a mask that does not cover its image would silently score the wrong pixels
        if tuple(image_hw) != tuple(mask_hw):
            raise ValueError(f"{self.mask_path(i)} is {mask_hw[0]}x{mask_hw[1]} but its image "
                             f"{self.image_path(i)} is {image_hw[0]}x{image_hw[1]} (H x W)")

    def raw(self, i: int) -> tuple[np.ndarray, torch.Tensor]:
        """The untransformed RGB ``uint8`` image ``H,W,3`` and the remapped mask ``H,W``."""
        with Image.open(self.image_path(i)) as im:
            img = np.array(im.convert("RGB"))
        mask = self.lut[read_mask(self.mask_path(i))]
        self._check_sizes(i, img.shape[:2], tuple(mask.shape))
        return img, mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.image_path(i)) as im:
            image = tv_tensors.Image(TF.pil_to_tensor(im.convert("RGB")))
        mask = tv_tensors.Mask(self.lut[read_mask(self.mask_path(i))])
        self._check_sizes(i, tuple(image.shape[-2:]), tuple(mask.shape[-2:]))
        image, mask = self.transforms(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


# --------------------------------------------------------------------------- opt-in download
VOC2012_TRAINVAL = {
    "filename": "VOCtrainval_11-May-2012.tar",
    "md5": "6cd6e144f989b92b3379bac3b3de84fd",
    "size_gb": 1.9,
    "urls": (
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        "http://d2l-data.s3-accelerate.amazonaws.com/VOCtrainval_11-May-2012.tar",
    ),
}


def download_voc(root: str | os.PathLike, *, urls: Sequence[str] | None = None,
                 keep_archive: bool = False, progress: bool = True) -> Path:
    """Download and extract Pascal VOC 2012 trainval into ``root`` (opt-in; about 2 GB).

    Tries the official host, its new location and a known mirror in turn, verifies the md5
    that torchvision also checks, resumes partial downloads and removes a corrupt archive.
    Offline, the error says where to put the tar by hand. Returns ``root``.
    """
    from minseg.data.download import fetch_dataset

    return fetch_dataset(root, VOC2012_TRAINVAL, lambda r: check_voc_tree(r, "val"), urls=urls,
                         keep_archive=keep_archive, progress=progress)


def find_voc(root: str | os.PathLike | None = None) -> Path | None:
    """The folder containing ``VOCdevkit/VOC2012`` under ``root`` (default the data dir), or None."""
    from minseg.config import data_dir

    for cand in ([Path(root)] if root else [data_dir(), data_dir() / "voc"]):
        try:
            check_voc_tree(cand, "val")
            return cand
        except FileNotFoundError:
            continue
    return None

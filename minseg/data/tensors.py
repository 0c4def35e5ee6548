"""Decoded-tensor datasets: decode a split once, cache it on disk, train from memory.

Decoding a JPEG and a PNG and running per-sample transforms at every step costs more than the
forward and backward pass of a small network on a CPU. :func:`decoded_split` reads a split once
through :class:`minseg.data.VOCSegmentationDataset` (so real VOC and the synthetic set share one
parser), stores the images as ``uint8 N,3,S,S`` and the masks as ``uint8 N,S,S`` (class ids and
255 for void), and caches both in one file keyed by everything that changes them: the dataset
root, split, size, class subset, ``others``, ``limit`` and the image list. A later call loads
the file in a fraction of a second.

How an image becomes ``S x S``:

* ``fit="pad"`` (training): the longer side is resized to ``S`` and the rest padded, the image
  with black and the mask with 255, so nothing of the photo is cut away and the padding costs
  nothing in the loss. Random scale and crop happen later, in batches
  (:class:`minseg.data.augment.BatchAugment`).
* ``fit="crop"`` (validation): the shorter side is resized to ``S`` and the centre cropped, as
  :func:`minseg.data.eval_transforms` does.

The synthetic set is already square at the profile's size, so both are the identity there.

The cache is never trusted blindly: a truncated file, other shapes or dtypes, or a file written
for other parameters is rebuilt with one warning. When the cache folder cannot be written, the
split is decoded in memory with a warning and training goes on.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from minseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from minseg.data.voc import VOCSegmentationDataset
from minseg.validate import IGNORE_INDEX

__all__ = ["TensorSegmentationData", "decoded_split", "default_cache_dir", "normalize_uint8"]

CACHE_FORMAT = 1
FITS = ("pad", "crop")


def default_cache_dir() -> Path:
    """``$MINSEG_DATA/tensor-cache`` (``~/.cache/minseg/tensor-cache`` by default)."""
    from minseg.config import data_dir

    return data_dir() / "tensor-cache"


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """``uint8 N,3,H,W`` (or float in 0..255) to float32 normalised with ImageNet mean/std,
    exactly what :func:`minseg.data.eval_transforms` produces from the same pixels."""
    return TF.normalize(images.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)


class TensorSegmentationData(torch.utils.data.Dataset):
    """A split held as ``uint8`` tensors: ``images N,3,S,S`` and ``masks N,S,S`` (255 = void).

    Indexing gives what :class:`minseg.data.VOCSegmentationDataset` gives without random
    augmentation (a normalised float image and an ``int64`` mask). ``source`` is the reader it
    was decoded from; its per-image files (``image_path``, ``mask_path``, ``instance_path``,
    ``annotation_path``, ``raw``) are reachable from here too, with the same indices.
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor,
                 source: VOCSegmentationDataset, fit: str):
        self.images, self.masks, self.source, self.fit = images, masks, source, fit

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize_uint8(self.images[i:i + 1])[0], self.masks[i].long()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.source.classes

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def head(self, n: int) -> "TensorSegmentationData":
        """The first ``n`` images (e.g. a learning curve over training-set sizes), without
        decoding anything again."""
        if not 1 <= n <= len(self):
            raise ValueError(f"n must be in 1..{len(self)}, got {n}")
        source = copy.copy(self.source)
        source.indices, source.names = self.source.indices[:n], self.source.names[:n]
        return TensorSegmentationData(self.images[:n], self.masks[:n], source, self.fit)

    def to(self, device: str | torch.device) -> "TensorSegmentationData":
        """The same data on ``device`` (e.g. CUDA, so that augmentation runs there)."""
        return TensorSegmentationData(self.images.to(device), self.masks.to(device),
                                      self.source, self.fit)

    def __getattr__(self, name: str):
        # image_path, mask_path, instance_path, annotation_path, raw, names, root, split, lut...
        # no delegation for these: while unpickling or copying, self.source does not exist yet and
        # getattr(self.source, ...) would call __getattr__ again, forever
        if name.startswith("_") or name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    def __repr__(self) -> str:
        return (f"TensorSegmentationData({len(self)} images {self.image_size}px, "
                f"{self.num_classes} classes, split={self.source.split!r}, fit={self.fit!r})")


# --------------------------------------------------------------------------- decoding
def _square(image: np.ndarray, mask: torch.Tensor, size: int, fit: str
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``H,W,3`` uint8 image and its ``H,W`` mask as ``3,S,S`` / ``S,S`` uint8 tensors."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # H,W,3 -> 3,H,W
    h, w = img.shape[-2:]
    if (h, w) == (size, size):
        return img.contiguous(), mask.to(torch.uint8)
    # pad: the longer side becomes S; crop: the shorter side does
    s = size / (max(h, w) if fit == "pad" else min(h, w))
    nh, nw = max(1, round(h * s)), max(1, round(w * s))  # a very thin image keeps >= 1 pixel
    # antialiased bilinear for the photo, nearest for the ids (never blend two classes)
    # round() before uint8: .to() alone would truncate
    img = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", align_corners=False,
                        antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
    # 'nearest-exact' samples at pixel centres; plain 'nearest' is off by half a pixel
    m = F.interpolate(mask[None, None].float(), size=(nh, nw), mode="nearest-exact")[0, 0]
    m = m.to(torch.uint8)
    if fit == "pad":
        out_i = torch.zeros(3, size, size, dtype=torch.uint8)
        out_m = torch.full((size, size), IGNORE_INDEX, dtype=torch.uint8)
        # the photo sits top-left; the rest is black / void
        out_i[:, :nh, :nw], out_m[:nh, :nw] = img, m
        return out_i, out_m
    top, left = (nh - size) // 2, (nw - size) // 2
    return (img[:, top:top + size, left:left + size].contiguous(),
            m[top:top + size, left:left + size].contiguous())


def _decode(source: VOCSegmentationDataset, size: int, fit: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.empty(len(source), 3, size, size, dtype=torch.uint8)
    masks = torch.empty(len(source), size, size, dtype=torch.uint8)
    for i in range(len(source)):
        img, mask = source.raw(i)  # the reader's decoding and class remapping
        images[i], masks[i] = _square(img, mask, size, fit)
    return images, masks


def _key(source: VOCSegmentationDataset, size: int, fit: str, options: dict) -> dict:
    return {"format": CACHE_FORMAT, "root": str(Path(source.root).resolve()),
            "split": source.split, "size": int(size), "fit": fit, "classes": list(source.classes),
            "options": {k: v for k, v in sorted(options.items())},
            # another image list gives another key, hence another file
            "names_sha1": hashlib.sha1("\n".join(source.names).encode()).hexdigest(),
            "count": len(source)}


def _cache_path(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{key['split']}-{key['size']}px-{digest}.pt"


def _load_cached(path: Path, key: dict, num_classes: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached tensors, or ``None`` (with one warning) when the file is stale or broken."""
    if not path.is_file():
        return None
    n, s = key["count"], key["size"]
    try:
        # weights_only: tensors and plain containers only, never arbitrary pickled code
        blob = torch.load(path, map_location="cpu", weights_only=True)
        images, masks = blob["images"], blob["masks"]
        problem = None
        if blob.get("key") != key:
            problem = "it was written for other parameters"
        elif images.dtype != torch.uint8 or masks.dtype != torch.uint8:
            problem = f"dtypes {images.dtype}/{masks.dtype} instead of uint8"
        elif tuple(images.shape) != (n, 3, s, s) or tuple(masks.shape) != (n, s, s):
            problem = f"shapes {tuple(images.shape)}/{tuple(masks.shape)} instead of ({n}, 3, {s}, {s})"
        else:
            bad = (masks >= num_classes) & (masks != IGNORE_INDEX)
            if bool(bad.any()):
                problem = f"mask ids {torch.unique(masks[bad]).tolist()} outside 0..{num_classes - 1}"
    except Exception as e:  # truncated or not a torch file at all
        problem = f"it cannot be read ({type(e).__name__}: {str(e)[:80]})"
    if problem:
        warnings.warn(f"decoded-tensor cache {path} is not usable ({problem}); rebuilding it",
                      stacklevel=3)
        return None
    return images, masks


def _save_atomic(path: Path, blob: dict) -> bool:
    """Write ``blob`` to ``path`` through a temporary file and a rename; False (with a warning)
    when the folder cannot be written."""
    # pid in the name: two processes building the same cache never share a temporary file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(blob, tmp)
        os.replace(tmp, path)  # atomic rename: a reader never sees a half-written file
        return True
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        warnings.warn(f"cannot write the decoded-tensor cache in {path.parent} ({e.strerror or e}); "
                      f"decoded the split in memory, it will be decoded again next time",
                      stacklevel=3)
        return False


def decoded_split(root: str | os.PathLike, split: str = "train", *, size: int,
                  classes: Sequence[str] | None = None, others: str = "background",
                  limit: int | None = None, only_with_classes: bool = True,
                  fit: str | None = None, cache_dir: str | os.PathLike | None = None,
                  use_cache: bool = True) -> TensorSegmentationData:
    """The split ``split`` of the VOC tree at ``root`` as ``S x S`` uint8 tensors, cached.

    Args:
        root, split, classes, others, limit, only_with_classes: as for
            :class:`minseg.data.VOCSegmentationDataset`, which does the reading.
        size: side ``S`` of the stored square images.
        fit: ``"pad"`` or ``"crop"`` (see the module docstring); default ``"crop"`` for the
            val split and ``"pad"`` for the training splits (``train``, ``train_aug``).
        cache_dir: where cache files live (default :func:`default_cache_dir`).
        use_cache: ``False`` decodes in memory without reading or writing a cache file.
    """
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8 pixels, got {size!r}")
    fit = fit or ("crop" if split == "val" else "pad")   # training splits keep whole images
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    source = VOCSegmentationDataset(root, split, classes=classes, others=others, limit=limit,
                                    only_with_classes=only_with_classes)
    key = _key(source, size, fit, {"others": others, "limit": limit,
                                   "only_with_classes": only_with_classes})
    path = _cache_path(Path(cache_dir) if cache_dir else default_cache_dir(), key)
    cached = _load_cached(path, key, source.num_classes) if use_cache else None
    if cached is None:
        cached = _decode(source, size, fit)
        if use_cache:
            _save_atomic(path, {"key": key, "images": cached[0], "masks": cached[1]})
    return TensorSegmentationData(*cached, source=source, fit=fit)

"""SBD and the standard VOC ``train_aug`` split (10,582 images): the opt-in download and the merge.

Most published VOC 2012 results (DeepLab, PSPNet, the model zoos) train on ``train_aug``: VOC's
own 1,464 training masks plus the masks of the Semantic Boundaries Dataset (SBD) for the other
VOC images, minus every image of VOC val, which stays the test set. SBD's annotations are
``.mat`` files without VOC's 255 void band along object borders, so where VOC has its own mask
for an image, that one is used.

:func:`download_sbd` fetches ``benchmark.tgz`` (1.4 GB; the URL and md5 torchvision's
``SBDataset`` uses) into ``root/benchmark_RELEASE``; :func:`make_train_aug` writes
``SegmentationClassAug/*.png`` and ``ImageSets/Segmentation/train_aug.txt`` into the VOC tree,
so that ``VOCSegmentationDataset(root, "train_aug")`` reads it like any other split.
``python -m minseg data sbd --root ROOT`` does both.

Dataset paper: Hariharan et al. 2011, "Semantic Contours from Inverse Detectors" (ICCV),
http://home.bharathh.info/pubs/codes/SBD/download.html
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from minseg.data.voc import MASK_DIRS, NUM_VOC_CLASSES, VOC_PALETTE, check_voc_tree

__all__ = ["SBD", "TRAIN_AUG_SIZE", "check_sbd_tree", "check_voc_for_sbd", "download_sbd",
           "make_train_aug", "read_sbd_mask"]

SBD = {
    "filename": "benchmark.tgz",
    "md5": "82b4d87ceb2ed10f6038a1cba92111cb",
    "size_gb": 1.4,
    "urls": (
        # torchvision's current address first, then the original one
        "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
        "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
    ),
}

TRAIN_AUG_SIZE = 10582
"""Images in train_aug on the real data: (SBD train + SBD val + VOC train) - VOC val."""
SBD_SPLIT_SIZES = {"train": 8498, "val": 2857}
"""Names in SBD's own ``train.txt`` / ``val.txt``: how :func:`make_train_aug` tells real data."""
AUG_SPLIT = "train_aug"


def _fix(root: str | os.PathLike) -> str:
    return f"`python -m minseg data sbd --root {root}`"


def check_sbd_tree(root: str | os.PathLike) -> Path:
    """Check that ``root/benchmark_RELEASE/dataset`` has SBD's class masks and split lists;
    return that folder. Raises ``FileNotFoundError`` naming the first missing path."""
    dataset = Path(root) / "benchmark_RELEASE" / "dataset"
    for need in (dataset, dataset / "cls", dataset / "train.txt", dataset / "val.txt"):
        if not need.exists():
            raise FileNotFoundError(f"no complete SBD tree: missing {need}; download it with "
                                    f"{_fix(root)} (it also builds the train_aug split)")
    return dataset


def check_voc_for_sbd(voc_root: str | os.PathLike) -> Path:
    """The ``VOCdevkit/VOC2012`` folder train_aug is written into; ``FileNotFoundError`` naming
    the path and both commands when VOC is missing (SBD alone has no VOC val to exclude)."""
    try:
        check_voc_tree(voc_root, "train")
        return check_voc_tree(voc_root, "val")
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e}\ntrain_aug adds SBD to Pascal VOC 2012, which must be there first: "
            f"`python -m minseg data voc --root {voc_root}`, then {_fix(voc_root)}") from None


# --------------------------------------------------------------------------- opt-in download
def download_sbd(root: str | os.PathLike, *, urls: Sequence[str] | None = None,
                 keep_archive: bool = False, progress: bool = True) -> Path:
    """Download and extract SBD into ``root/benchmark_RELEASE`` (opt-in; 1.4 GB). Returns ``root``.

    Like :func:`minseg.data.voc.download_voc`: an extracted tree is kept; otherwise each URL is
    tried in turn, the md5 is verified, a partial file is resumed and a corrupt one removed.
    Offline, the error says where to put ``benchmark.tgz`` by hand.
    """
    from minseg.data.download import fetch_dataset

    return fetch_dataset(root, SBD, check_sbd_tree, urls=urls, keep_archive=keep_archive,
                         progress=progress,
                         page="http://home.bharathh.info/pubs/codes/SBD/download.html")


# --------------------------------------------------------------------------- reading SBD masks
def read_sbd_mask(path: str | os.PathLike) -> torch.Tensor:
    """An SBD ``cls/*.mat`` (MATLAB struct ``GTcls``, field ``Segmentation``: ``uint8 H,W``) as
    an ``int64`` ``H,W`` tensor of VOC ids 0..20 (SBD has no void label). Raises ``ValueError``
    naming the file when it is not such a file or holds other ids."""
    from scipy.io import loadmat

    try:
        # squeeze_me + struct_as_record=False: GTcls comes back as an object with attributes
        seg = loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
        seg = np.asarray(seg)
    except Exception as e:  # loadmat raises several types for a truncated or foreign file
        raise ValueError(f"{path}: not an SBD class mask (a .mat file with struct "
                         f"GTcls.Segmentation): {type(e).__name__}: {e}") from None
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"{path}: GTcls.Segmentation must be an integer H x W array, "
                         f"got {seg.dtype} of shape {seg.shape}")
    mask = torch.from_numpy(seg.astype(np.int64))
    bad = (mask < 0) | (mask >= NUM_VOC_CLASSES)
    if bool(bad.any()):
        raise ValueError(f"{path}: mask contains ids {torch.unique(mask[bad]).tolist()} "
                         f"outside 0..{NUM_VOC_CLASSES - 1}")
    return mask


# --------------------------------------------------------------------------- building train_aug
def _names(path: Path) -> list[str]:
    return path.read_text().split()


def _tmp(path: Path) -> Path:
    # pid in the name: two processes building the same tree never share a temporary file
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_png(mask: torch.Tensor, path: Path) -> None:
    """Save ids as a VOC palette PNG through a temporary file and an atomic rename."""
    im = Image.fromarray(mask.numpy().astype(np.uint8))  # mode "L"
    im.putpalette(VOC_PALETTE.reshape(-1).tolist())      # ... becomes mode "P", ids unchanged
    tmp = _tmp(path)
    im.save(tmp, format="PNG")
    os.replace(tmp, path)


def _copy(src: Path, path: Path) -> None:
    tmp = _tmp(path)
    shutil.copyfile(src, tmp)
    os.replace(tmp, path)


def _up_to_date(dst: Path, src: Path) -> bool:
    # like make: a mask written after its source is kept, so a re-run only redoes what changed
    return dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime


def _sbd_mask_for(name: str, mat: Path, jpeg: Path) -> torch.Tensor:
    if not mat.is_file():
        raise FileNotFoundError(f"SBD lists {name} but {mat} is missing (incomplete extraction? "
                                f"delete {mat.parent.parent.parent} and download again)")
    mask = read_sbd_mask(mat)
    with Image.open(jpeg) as im:  # reads the header only
        w, h = im.size
    if tuple(mask.shape) != (h, w):
        raise ValueError(f"{mat} is {mask.shape[0]}x{mask.shape[1]} but its image {jpeg} is "
                         f"{h}x{w} (H x W)")
    return mask


def make_train_aug(voc_root: str | os.PathLike, sbd_root: str | os.PathLike, *,
                   progress: bool = True) -> Path:
    """Write the train_aug split into ``voc_root/VOCdevkit/VOC2012`` and return that folder.

    * ``ImageSets/Segmentation/train_aug.txt``: sorted (SBD train | SBD val | VOC train) - VOC
      val, keeping the names with a JPEG in ``JPEGImages`` (the others are counted and
      reported). On the real data: :data:`TRAIN_AUG_SIZE` images, with a warning otherwise.
    * ``SegmentationClassAug/<name>.png``: VOC's own ``SegmentationClass`` mask where there is
      one (copied, void borders included), else SBD's ``cls/<name>.mat`` as a palette PNG.

    Every file is written to a temporary name and renamed, so an interrupted run leaves no
    half-written file; a re-run rewrites only masks older than their source and gives the same
    files. ``sbd_root`` is the folder containing ``benchmark_RELEASE`` (see :func:`download_sbd`).
    """
    voc = check_voc_for_sbd(voc_root)
    try:
        sbd = check_sbd_tree(sbd_root)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}\n(train_aug for {voc}: {_fix(voc_root)} downloads SBD "
                                f"next to VOCdevkit)") from None
    sets = voc / "ImageSets" / "Segmentation"
    sbd_train, sbd_val = _names(sbd / "train.txt"), _names(sbd / "val.txt")
    voc_val = set(_names(sets / "val.txt"))
    wanted = (set(sbd_train) | set(sbd_val) | set(_names(sets / "train.txt"))) - voc_val
    jpeg_dir = voc / "JPEGImages"
    have_jpeg = {p[:-4] for p in os.listdir(jpeg_dir) if p.endswith(".jpg")}
    names = sorted(wanted & have_jpeg)
    skipped = sorted(wanted - have_jpeg)

    out = voc / MASK_DIRS[AUG_SPLIT]
    out.mkdir(exist_ok=True)
    from_voc = 0
    it = names
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(names, desc="train_aug masks", unit="mask")
    for name in it:
        dst = out / f"{name}.png"
        voc_png = voc / "SegmentationClass" / f"{name}.png"
        if voc_png.is_file():
            from_voc += 1
            if not _up_to_date(dst, voc_png):
                _copy(voc_png, dst)
            continue
        mat = sbd / "cls" / f"{name}.mat"
        if not (mat.is_file() and _up_to_date(dst, mat)):
            _write_png(_sbd_mask_for(name, mat, jpeg_dir / f"{name}.jpg"), dst)

    split = sets / f"{AUG_SPLIT}.txt"
    tmp = _tmp(split)
    tmp.write_text("".join(n + "\n" for n in names))
    os.replace(tmp, split)

    print(f"{AUG_SPLIT}: {len(names)} images ({from_voc} with VOC's own mask, "
          f"{len(names) - from_voc} from SBD) in {split}"
          + (f"; skipped {len(skipped)} names without a JPEG in {jpeg_dir} "
             f"(e.g. {', '.join(skipped[:3])})" if skipped else ""))
    real = len(sbd_train) == SBD_SPLIT_SIZES["train"] and len(sbd_val) == SBD_SPLIT_SIZES["val"]
    if real and len(names) != TRAIN_AUG_SIZE:
        warnings.warn(f"{split} has {len(names)} images, not the standard {TRAIN_AUG_SIZE}: "
                      f"is {voc} the complete VOC 2012 trainval?", stacklevel=2)
    return voc

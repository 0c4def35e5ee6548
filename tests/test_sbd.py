"""SBD and the VOC train_aug split: the merge, the reader, the opt-in download (offline)."""
from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from PIL import Image

from minseg.data import VOCSegmentationDataset, make_synthetic_voc, read_mask
from minseg.data.download import DownloadError
from minseg.data.sbd import (SBD, TRAIN_AUG_SIZE, check_sbd_tree, download_sbd, make_train_aug,
                             read_sbd_mask)

SIZE = 32
# VOC (synthetic): train synth_000000..05, val synth_000006..08. SBD's lists overlap both, add
# two images VOC has no mask for, and one name without a JPEG in VOC.
SBD_TRAIN = ["synth_000004", "synth_000007", "extra_a", "no_jpeg"]
SBD_VAL = ["synth_000005", "extra_b", "synth_000008"]
VOC_TRAIN = [f"synth_{i:06d}" for i in range(6)]
VOC_VAL = [f"synth_{i:06d}" for i in range(6, 9)]
EXPECTED = sorted((set(SBD_TRAIN) | set(SBD_VAL) | set(VOC_TRAIN)) - set(VOC_VAL) - {"no_jpeg"})


def _save_sbd_mat(path: Path, seg: np.ndarray) -> None:
    """An SBD-style ``cls/*.mat``: struct GTcls with Boundaries (a 20 x 1 cell of sparse
    matrices), Segmentation (uint8 H,W) and CategoriesPresent, as MATLAB writes it."""
    boundaries = np.empty((20, 1), dtype=object)
    for c in range(20):
        boundaries[c, 0] = scipy.sparse.csc_matrix(seg.shape, dtype=np.uint8)
    present = np.unique(seg[(seg > 0) & (seg < 21)]).astype(np.uint8)
    # a dict saves as a MATLAB struct
    scipy.io.savemat(path, {"GTcls": {"Boundaries": boundaries, "Segmentation": seg.astype(np.uint8),
                                      "CategoriesPresent": present}})


def _sbd_seg(name: str) -> np.ndarray:
    rng = np.random.default_rng(int(hashlib.md5(name.encode()).hexdigest()[:8], 16))
    return rng.integers(0, 21, size=(SIZE, SIZE), dtype=np.uint8)


@pytest.fixture
def trees(tmp_path):
    """A tiny VOC tree and an SBD tree next to it: ``(root, voc_dir)``."""
    root = make_synthetic_voc(tmp_path / "data", num_train=6, num_val=3, image_size=SIZE, workers=1)
    voc = root / "VOCdevkit" / "VOC2012"
    for name in ("extra_a", "extra_b"):  # VOC images without a VOC segmentation mask
        Image.fromarray(np.full((SIZE, SIZE, 3), 90, np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    for name in SBD_TRAIN + SBD_VAL:
        _save_sbd_mat(dataset / "cls" / f"{name}.mat", _sbd_seg(name))
    (dataset / "train.txt").write_text("".join(n + "\n" for n in SBD_TRAIN))
    (dataset / "val.txt").write_text("".join(n + "\n" for n in SBD_VAL))
    return root, voc


def _aug_files(voc: Path) -> dict[str, bytes]:
    files = sorted((voc / "SegmentationClassAug").iterdir())
    files.append(voc / "ImageSets/Segmentation/train_aug.txt")
    return {p.name: p.read_bytes() for p in files}


def test_split_is_the_set_algebra_and_masks_come_from_the_right_source(trees, capsys):
    root, voc = trees
    assert make_train_aug(root, root, progress=False) == voc
    names = (voc / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    assert names == EXPECTED
    assert not set(names) & set(VOC_VAL)
    assert "skipped 1 names without a JPEG" in capsys.readouterr().out
    for name in names:
        got = read_mask(voc / "SegmentationClassAug" / f"{name}.png")
        voc_png = voc / "SegmentationClass" / f"{name}.png"
        if voc_png.is_file():  # VOC's own mask, void borders included, wins over SBD's
            assert torch.equal(got, read_mask(voc_png))
            assert (voc / "SegmentationClassAug" / f"{name}.png").read_bytes() == voc_png.read_bytes()
        else:
            assert torch.equal(got, torch.from_numpy(_sbd_seg(name)).long())
    with Image.open(voc / "SegmentationClassAug/extra_a.png") as im:
        assert im.mode == "P"
    # an SBD image VOC also has a mask for keeps VOC's, which differs from SBD's
    assert not torch.equal(read_mask(voc / "SegmentationClassAug/synth_000004.png"),
                           torch.from_numpy(_sbd_seg("synth_000004")).long())


def test_reader_reads_train_aug(trees):
    root, voc = trees
    make_train_aug(root, root, progress=False)
    ds = VOCSegmentationDataset(root, "train_aug")
    assert ds.names == EXPECTED
    for i, name in enumerate(ds.names):
        assert ds.mask_path(i) == voc / "SegmentationClassAug" / f"{name}.png"
        assert ds.image_path(i) == voc / "JPEGImages" / f"{name}.jpg"
        _, mask = ds.raw(i)
        assert torch.equal(mask, read_mask(ds.mask_path(i)))
    x, y = ds[EXPECTED.index("extra_b")]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    # the standard splits still come from torchvision's list, unchanged
    assert VOCSegmentationDataset(root, "train").names == VOC_TRAIN


def test_build_loaders_trains_on_train_aug(trees, tmp_path, monkeypatch):
    """The training path: train_aug is decoded whole (not capped at the profile's num_train)
    and fitted like train (padded, not centre-cropped)."""
    from minseg.config import profile
    from minseg.data import build_loaders, decoded_split

    monkeypatch.setenv("MINSEG_DATA", str(tmp_path / "cache"))
    root, _ = trees
    make_train_aug(root, root, progress=False)
    cfg = profile("smoke").replace(image_size=SIZE, num_train=2)
    train, val = build_loaders(cfg, root=root, split="train_aug", augment=False)
    assert len(train.dataset) == len(EXPECTED) and len(val.dataset) == len(VOC_VAL)
    assert len(build_loaders(cfg, root=root, augment=False)[0].dataset) == 2   # train: capped
    aug = decoded_split(root, "train_aug", size=SIZE)
    plain = decoded_split(root, "train", size=SIZE)
    i, j = EXPECTED.index("synth_000001"), VOC_TRAIN.index("synth_000001")
    assert aug.fit == plain.fit == "pad"
    assert torch.equal(aug.images[i], plain.images[j]) and torch.equal(aug.masks[i], plain.masks[j])


def test_rerun_is_idempotent_and_repairs_a_lost_file(trees):
    root, voc = trees
    make_train_aug(root, root, progress=False)
    first = _aug_files(voc)
    make_train_aug(root, root, progress=False)
    assert _aug_files(voc) == first
    (voc / "SegmentationClassAug/extra_a.png").unlink()
    make_train_aug(root, root, progress=False)
    assert _aug_files(voc) == first
    assert not list(voc.rglob("*.tmp"))


def test_missing_trees_name_the_path_and_the_command(tmp_path, trees):
    root, voc = trees
    with pytest.raises(FileNotFoundError, match=r"(?s)benchmark_RELEASE.*python -m minseg data sbd"):
        make_train_aug(root, tmp_path / "nowhere", progress=False)
    with pytest.raises(FileNotFoundError, match=r"(?s)VOCdevkit.*data voc.*data sbd"):
        make_train_aug(tmp_path / "novoc", root, progress=False)
    (root / "benchmark_RELEASE/dataset/val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"dataset.val\.txt"):
        check_sbd_tree(root)
    # the reader before train_aug was built
    with pytest.raises(FileNotFoundError, match=r"train_aug\.txt.*python -m minseg data sbd"):
        VOCSegmentationDataset(root, "train_aug")


def test_bad_mat_files_name_the_file(tmp_path):
    bad_id = tmp_path / "bad_id.mat"
    seg = np.zeros((4, 5), np.uint8)
    seg[1, 2] = 30
    _save_sbd_mat(bad_id, seg)
    with pytest.raises(ValueError, match=r"bad_id\.mat.*\[30\]"):
        read_sbd_mask(bad_id)
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match=r"junk\.mat.*GTcls"):
        read_sbd_mask(junk)
    seg[1, 2] = 20
    _save_sbd_mat(bad_id, seg)
    got = read_sbd_mask(bad_id)
    assert got.dtype == torch.int64 and got.shape == (4, 5) and int(got[1, 2]) == 20


def test_sbd_mask_of_another_size_than_its_image_is_an_error(trees):
    root, _ = trees
    _save_sbd_mat(root / "benchmark_RELEASE/dataset/cls/extra_a.mat", np.zeros((16, SIZE), np.uint8))
    with pytest.raises(ValueError, match=r"extra_a\.mat is 16x32 but its image .*extra_a\.jpg"):
        make_train_aug(root, root, progress=False)


def test_real_data_count_is_checked(trees, monkeypatch):
    import minseg.data.sbd as sbd

    root, _ = trees
    monkeypatch.setattr(sbd, "SBD_SPLIT_SIZES", {"train": len(SBD_TRAIN), "val": len(SBD_VAL)})
    with pytest.warns(UserWarning, match=f"{len(EXPECTED)} images, not the standard {TRAIN_AUG_SIZE}"):
        make_train_aug(root, root, progress=False)


# ------------------------------------------------------------------ download (offline, file://)
def _sbd_tgz(tmp_path: Path) -> Path:
    src = tmp_path / "src" / "benchmark_RELEASE" / "dataset"
    (src / "cls").mkdir(parents=True)
    _save_sbd_mat(src / "cls" / "extra_a.mat", _sbd_seg("extra_a"))
    (src / "train.txt").write_text("extra_a\n")
    (src / "val.txt").write_text("")
    tgz = tmp_path / "benchmark.tgz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(src.parent, arcname="benchmark_RELEASE")
    return tgz


def test_download_rejects_a_wrong_archive(tmp_path):
    tgz = _sbd_tgz(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match=r"(?s)md5 mismatch.*removed.*Offline or blocked.*benchmark\.tgz"):
        download_sbd(out, urls=[tgz.as_uri()], progress=False)
    assert not (out / "benchmark.tgz").exists() and not (out / "benchmark.tgz.part").exists()
    assert not (out / "benchmark_RELEASE").exists()


def test_download_accepts_the_right_md5_and_extracts(tmp_path, monkeypatch):
    tgz = _sbd_tgz(tmp_path)
    monkeypatch.setitem(SBD, "md5", hashlib.md5(tgz.read_bytes()).hexdigest())
    out = tmp_path / "out"
    assert download_sbd(out, urls=[f"file://{tmp_path}/missing.tgz", tgz.as_uri()],
                        progress=False) == out
    assert check_sbd_tree(out) == out / "benchmark_RELEASE" / "dataset"
    assert torch.equal(read_sbd_mask(out / "benchmark_RELEASE/dataset/cls/extra_a.mat"),
                       torch.from_numpy(_sbd_seg("extra_a")).long())
    assert not (out / "benchmark.tgz").exists()  # removed after extraction by default
    # extracted: a second call returns at once, without any source
    assert download_sbd(out, urls=["http://127.0.0.1:9/benchmark.tgz"], progress=False) == out


def test_cli_builds_train_aug(trees, capsys):
    from minseg.__main__ import main

    root, voc = trees
    assert main(["data", "sbd", "--root", str(root)]) == 0  # SBD already extracted: no download
    assert (voc / "ImageSets/Segmentation/train_aug.txt").read_text().split() == EXPECTED
    assert main(["data", "sbd", "--root", str(root / "empty")]) == 2
    assert "data voc" in capsys.readouterr().err

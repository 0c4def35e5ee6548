"""The built-in synthetic VOC tree, the reader, class subsets, transforms and the download."""
from __future__ import annotations

import hashlib
import json
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import tv_tensors

from minseg.data import (IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE, VOCSegmentationDataset,
                         build_loaders, class_lut, denormalize, eval_transforms,
                         make_synthetic_voc, read_annotation, train_transforms)
from minseg.data.download import DownloadError, download
from minseg.data.synthetic import render_scene
from minseg.data.voc import download_voc


def _bitget_colormap(n=256):
    # independent re-derivation of the VOC devkit's VOClabelcolormap.m
    out = []
    for i in range(n):
        r = g = b = 0
        cid = i
        for j in range(7, -1, -1):
            r |= (cid & 1) << j
            g |= ((cid >> 1) & 1) << j
            b |= ((cid >> 2) & 1) << j
            cid >>= 3
        out.append((r, g, b))
    return np.array(out, dtype=np.uint8)


def test_palette_is_the_standard_voc_colormap():
    assert np.array_equal(VOC_PALETTE, _bitget_colormap())
    assert tuple(VOC_PALETTE[1]) == (128, 0, 0)
    assert tuple(VOC_PALETTE[15]) == (192, 128, 128)     # person
    assert tuple(VOC_PALETTE[255]) == (224, 224, 192)    # void


def test_tree_layout_and_plain_torchvision_reads_it(voc_root):
    voc = voc_root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations"):
        assert len(list((voc / sub).iterdir())) == 32, sub
    train = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    assert len(train) == 24 and len(val) == 8 and not set(train) & set(val)
    ds = torchvision.datasets.VOCSegmentation(str(voc_root), year="2012", image_set="val")
    img, target = ds[0]
    assert img.mode == "RGB" and target.mode == "P" and img.size == target.size == (64, 64)
    pal = np.array(target.getpalette()[:768], dtype=np.uint8).reshape(256, 3)
    assert np.array_equal(pal, VOC_PALETTE)


def test_masks_hold_only_voc_ids_and_have_void_bands(voc_root):
    voc = voc_root / "VOCdevkit" / "VOC2012"
    seen = set()
    for png in (voc / "SegmentationClass").glob("*.png"):
        ids = set(np.unique(np.array(Image.open(png))).tolist())
        assert ids <= set(range(21)) | {255}, png
        seen |= ids
    assert 255 in seen and 0 in seen and len(seen) > 5


def test_same_seed_gives_identical_bytes_and_cache_reuse(tmp_path):
    a = make_synthetic_voc(tmp_path / "a", num_train=6, num_val=2, image_size=48, seed=7, workers=1)
    b = make_synthetic_voc(tmp_path / "b", num_train=6, num_val=2, image_size=48, seed=7, workers=1)
    c = make_synthetic_voc(tmp_path / "c", num_train=6, num_val=2, image_size=48, seed=8, workers=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) > 30
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    stamp = (a / "VOCdevkit/VOC2012/JPEGImages/synth_000000.jpg").stat().st_mtime_ns
    make_synthetic_voc(tmp_path / "a", num_train=6, num_val=2, image_size=48, seed=7)  # cached
    assert (a / "VOCdevkit/VOC2012/JPEGImages/synth_000000.jpg").stat().st_mtime_ns == stamp


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(i, 0, 96) for i in range(300)]


def test_all_classes_occur_with_imbalanced_frequencies(scenes):
    counts = np.zeros(21, np.int64)
    for s in scenes:
        counts += np.bincount(s["mask"][s["mask"] != 255].ravel(), minlength=21)
    assert (counts[1:] > 0).all(), [VOC_CLASSES[i] for i in np.nonzero(counts == 0)[0]]
    fg = counts[1:]
    assert fg.max() / fg.min() > 10          # imbalanced, as in VOC
    assert VOC_CLASSES[1 + fg.argmax()] == "person"


def test_colour_alone_does_not_identify_the_class(scenes):
    # nearest-centroid on each object's mean colour, fitted on half the scenes
    feats, labels = [], []
    for s in scenes:
        for k, (name, *_box) in enumerate(s["objects"], start=1):
            m = s["instances"] == k
            if m.sum() >= 10:
                feats.append(s["image"][m].mean(0))
                labels.append(VOC_CLASSES.index(name))
    feats, labels = np.array(feats), np.array(labels)
    half = len(labels) // 2
    classes = np.unique(labels[:half])
    cent = np.stack([feats[:half][labels[:half] == c].mean(0) for c in classes])
    pred = classes[np.argmin(((feats[half:, None] - cent[None]) ** 2).sum(-1), 1)]
    acc = (pred == labels[half:]).mean()
    majority = (labels[half:] == np.bincount(labels[:half]).argmax()).mean()
    assert acc < majority + 0.1, (acc, majority)


def test_touching_same_class_instances_and_thin_structures(scenes):
    touching = thin = 0
    for s in scenes:
        inst, names = s["instances"], [o[0] for o in s["objects"]]
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                if names[a] != names[b]:
                    continue
                ya, xa = np.nonzero(inst == a + 1)
                yb, xb = np.nonzero(inst == b + 1)
                if len(ya) and len(yb):
                    d = np.abs(ya[:, None] - yb[None]) + np.abs(xa[:, None] - xb[None])
                    touching += int(d.min() <= 2)     # only the 1-px void band between them
        m = (s["mask"] > 0) & (s["mask"] != 255)
        # a labelled pixel whose left and right neighbours are both unlabelled: 1 px wide
        thin += int((m[:, 1:-1] & ~m[:, :-2] & ~m[:, 2:]).sum())
    assert touching >= 10 and thin >= 100, (touching, thin)


def test_boxes_match_instance_masks(voc_root):
    voc = voc_root / "VOCdevkit" / "VOC2012"
    for xml in sorted((voc / "Annotations").glob("*.xml"))[:10]:
        objs = read_annotation(xml)
        inst = np.array(Image.open(voc / "SegmentationObject" / f"{xml.stem}.png"))
        cls = np.array(Image.open(voc / "SegmentationClass" / f"{xml.stem}.png"))
        assert set(np.unique(inst).tolist()) - {0, 255} == set(range(1, len(objs) + 1))
        for k, o in enumerate(objs, start=1):
            ys, xs = np.nonzero(inst == k)
            assert o["bbox"] == (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)
            assert set(np.unique(cls[inst == k]).tolist()) == {VOC_CLASSES.index(o["name"])}


def test_reader_returns_tensors_in_range(voc_root):
    ds = VOCSegmentationDataset(voc_root, "train", limit=5)
    assert len(ds) == 5 and ds.num_classes == 21
    x, y = ds[0]
    assert type(x) is torch.Tensor and type(y) is torch.Tensor
    assert x.dtype == torch.float32 and x.shape == (3, 64, 64)
    assert y.dtype == torch.int64 and y.shape == (64, 64)
    assert set(y.unique().tolist()) <= set(range(21)) | {255}


@pytest.mark.parametrize("others", ["background", "ignore"])
def test_class_subset_remap(voc_root, others):
    full = VOCSegmentationDataset(voc_root, "train")
    sub = VOCSegmentationDataset(voc_root, "train", classes=["car", "person"], others=others)
    assert sub.classes == ("background", "car", "person") and sub.num_classes == 3
    other_value = 0 if others == "background" else 255
    for i, name in enumerate(sub.names):
        raw = full[full.names.index(name)][1]
        got = sub[i][1]
        expect = torch.full_like(raw, other_value)
        expect[raw == 0] = 0
        expect[raw == 255] = 255
        expect[raw == VOC_CLASSES.index("car")] = 1
        expect[raw == VOC_CLASSES.index("person")] = 2
        assert torch.equal(got, expect)
        assert ((got == 1) | (got == 2)).any()   # only images showing a kept class


def test_class_lut_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown VOC classes.*'cats'"):
        class_lut(["cats"])
    with pytest.raises(ValueError, match="others"):
        class_lut(["cat"], others="drop")


def test_missing_or_incomplete_tree_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"VOCdevkit.VOC2012.*python -m minseg data voc"):
        VOCSegmentationDataset(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/JPEGImages").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="SegmentationClass"):
        VOCSegmentationDataset(tmp_path)


def test_bad_mask_id_names_the_file(tmp_path):
    root = make_synthetic_voc(tmp_path / "bad", num_train=2, num_val=1, image_size=32, workers=1)
    png = root / "VOCdevkit/VOC2012/SegmentationClass/synth_000001.png"
    m = np.array(Image.open(png))
    m[0, 0] = 30
    im = Image.fromarray(m, mode="P")
    im.putpalette(VOC_PALETTE.reshape(-1).tolist())
    im.save(png)
    ds = VOCSegmentationDataset(root, "train")
    ds[0]
    with pytest.raises(ValueError, match=r"synth_000001\.png.*\[30\]"):
        ds[1]


def _label_image(mask: torch.Tensor) -> tv_tensors.Image:
    # an image drawn from the mask: every channel holds 10 * class id
    return tv_tensors.Image((mask * 10).to(torch.uint8).expand(3, -1, -1).clone())


def _recover(img: torch.Tensor) -> torch.Tensor:
    return (denormalize(img) * 255 / 10).round().to(torch.int64)[0]


def test_transforms_keep_image_and_mask_aligned():
    torch.manual_seed(0)
    mask = torch.zeros(56, 80, dtype=torch.int64)
    mask[5:30, 10:20] = 3
    mask[20:45, 30:60] = 7
    mask[0:10, 40:80] = 12
    # shorter side already 56 and scale 1: crop + flip only, exact alignment everywhere
    tf = train_transforms(56, scale=(1.0, 1.0), jitter=0)
    for _ in range(20):
        img, m = tf(_label_image(mask), tv_tensors.Mask(mask))
        assert img.shape[-2:] == m.shape == (56, 56)
        valid = m != 255
        assert torch.equal(_recover(img)[valid], m[valid])
    # with rescaling (and padding when the image gets small), bilinear blurs edges: compare
    # away from class boundaries; padded pixels are void in the mask and black in the image
    tf = train_transforms(64, scale=(0.5, 1.5), jitter=0)
    for _ in range(20):
        img, m = tf(_label_image(mask), tv_tensors.Mask(mask))
        mm = m.clone().float()[None, None]
        lo = -torch.nn.functional.max_pool2d(-mm, 5, 1, 2)[0, 0]
        hi = torch.nn.functional.max_pool2d(mm, 5, 1, 2)[0, 0]
        interior = (lo == hi) & (m != 255)
        # the crop border may cut through a blurred edge whose other side is out of view
        interior[:2] = interior[-2:] = interior[:, :2] = interior[:, -2:] = False
        assert interior.sum() > 100
        assert torch.equal(_recover(img)[interior], m[interior])
        assert (denormalize(img)[:, m == 255] < 0.01).all()


def test_colour_jitter_leaves_mask_alone():
    mask = torch.randint(0, 21, (32, 32))
    tf = train_transforms(32, scale=(1.0, 1.0), hflip=0.0, jitter=0.4)
    _, m = tf(_label_image(mask), tv_tensors.Mask(mask))
    assert torch.equal(m, mask)


def test_eval_transform_and_loaders(voc_root):
    img = tv_tensors.Image(torch.zeros(3, 50, 80, dtype=torch.uint8))
    x, m = eval_transforms(32)(img, tv_tensors.Mask(torch.zeros(50, 80, dtype=torch.int64)))
    assert x.shape == (3, 32, 32) and m.shape == (32, 32)
    import minseg
    tl, vl = build_loaders(minseg.profile("smoke"), root=voc_root)
    xb, yb = next(iter(tl))
    assert xb.shape == (8, 3, 64, 64) and yb.shape == (8, 64, 64) and yb.dtype == torch.int64


# ------------------------------------------------------------------ download (offline, file://)
def _tar_bytes(tmp_path: Path) -> Path:
    src = tmp_path / "payload.txt"
    src.write_text("hello VOC\n" * 100)
    tar = tmp_path / "archive.tar"
    with tarfile.open(tar, "w") as t:
        t.add(src, arcname="VOCdevkit/VOC2012/hello.txt")
    return tar


def test_download_verifies_md5_and_tries_mirrors(tmp_path):
    tar = _tar_bytes(tmp_path)
    md5 = hashlib.md5(tar.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "a.tar"
    got = download([f"file://{tmp_path}/missing.tar", tar.as_uri()], dest, md5, progress=False)
    assert got == dest and dest.read_bytes() == tar.read_bytes()
    assert not dest.with_name("a.tar.part").exists()


def test_corrupt_download_is_removed(tmp_path):
    tar = _tar_bytes(tmp_path)
    dest = tmp_path / "out" / "a.tar"
    with pytest.raises(DownloadError, match="md5 mismatch.*removed"):
        download([tar.as_uri()], dest, "0" * 32, progress=False)
    assert not dest.exists() and not dest.with_name("a.tar.part").exists()


def test_download_voc_offline_says_where_to_put_the_tar(tmp_path):
    with pytest.raises(DownloadError, match=r"(?s)Offline or blocked.*VOCtrainval_11-May-2012\.tar"):
        download_voc(tmp_path, urls=["http://127.0.0.1:9/VOCtrainval_11-May-2012.tar"],
                     progress=False)


# --------------------------------------------------------------------------- scene options
def _scenes(opts, n=24, size=64):
    from minseg.data.synthetic import render_scene
    return [render_scene(i, 0, size, opts) for i in range(n)]


def test_scene_options_default_is_the_standard_generator():
    from minseg.data import SceneOptions
    from minseg.data.synthetic import render_scene
    a, b = render_scene(5, 1, 64), render_scene(5, 1, 64, SceneOptions())
    assert all(np.array_equal(a[k], b[k]) for k in ("image", "mask", "instances"))
    assert SceneOptions().is_default and SceneOptions().to_dict() == {}


def test_scene_options_shape_the_data():
    from minseg.data import SceneOptions
    from minseg.data.synthetic import CLASS_ID, LOOKALIKE_CLASS
    only = _scenes(SceneOptions(classes=("bird", "boat")))
    ids = set(np.unique(np.concatenate([s["mask"].ravel() for s in only]))) - {0, 255}
    assert ids <= {CLASS_ID["bird"], CLASS_ID["boat"]} and ids
    look = _scenes(SceneOptions(lookalike=True))
    for s in look:
        assert {o[0] for o in s["objects"]} == {LOOKALIKE_CLASS[s["scene"]]}
    fg = lambda ss: np.mean([((s["mask"] > 0) & (s["mask"] < 255)).mean() for s in ss])  # noqa
    assert fg(_scenes(SceneOptions(scale=(0.3, 0.4)))) < 0.3 * fg(_scenes(SceneOptions()))
    many = _scenes(SceneOptions(objects=(3, 3), twins=1.0, classes=("person",)))
    assert min(len(s["objects"]) for s in many) >= 2
    assert np.mean([len(s["objects"]) for s in many]) > 4
    rare = _scenes(SceneOptions(classes=("bottle", "chair"), class_weights=(("bottle", 0.02),)),
                   n=40)
    names = [o[0] for s in rare for o in s["objects"]]
    assert names.count("bottle") < 0.1 * names.count("chair")
    flat = _scenes(SceneOptions(flat=True), n=4)[0]
    inside = flat["instances"] == 1
    # one colour per object, plus sensor noise of sd 4
    assert flat["image"][inside].astype(float).std(0).max() < 8
    # deterministic per seed, and a distinct cache folder per option set
    from minseg.data.synthetic import default_synthetic_root, render_scene
    o = SceneOptions(thin=0.5, scale=(1.0, 1.5))
    assert np.array_equal(render_scene(3, 2, 64, o)["image"], render_scene(3, 2, 64, o)["image"])
    roots = {default_synthetic_root(8, 2, 64, 0, x) for x in (None, SceneOptions(), o)}
    assert len(roots) == 2


@pytest.mark.parametrize("kw, match", [
    ({"classes": ("unicorn",)}, "unknown object class"),
    ({"classes": ()}, "at least one"),
    ({"class_weights": (("car", 0),)}, "> 0"),
    ({"objects": (3, 1)}, "objects"),
    ({"scale": (0, 1)}, "scale"),
    ({"twins": 1.5}, "probability"),
    ({"thin": 0}, "thin"),
    ({"lookalike": True, "classes": ("car",)}, "lookalike"),
])
def test_scene_options_reject_bad_values(kw, match):
    from minseg.data import SceneOptions
    with pytest.raises(ValueError, match=match):
        SceneOptions(**kw)


def test_make_synthetic_voc_with_scene_options(tmp_path):
    from minseg.data import SceneOptions, VOCSegmentationDataset
    opts = SceneOptions(classes=("car",), objects=(2, 2))
    root = make_synthetic_voc(tmp_path / "s", num_train=4, num_val=2, image_size=48, workers=1,
                              scene=opts)
    meta = json.loads((root / "minseg_synthetic.json").read_text())["params"]
    assert meta["scene"] == {"classes": ["car"], "objects": [2, 2]}
    _, mask = VOCSegmentationDataset(root, "train").raw(0)
    assert set(mask.unique().tolist()) <= {0, 7, 255}

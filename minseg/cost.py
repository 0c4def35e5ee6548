"""What a segmentation model or dataset costs: FLOPs, speed, and human labelling time.

Lessons 18-20 weigh accuracy against two prices: the compute a model spends per image
(:func:`flops`, :func:`conv2d_cost`, :func:`speed_table`) and the human time a labelled
dataset took (:data:`LABEL_COSTS`, :func:`count_objects`, :func:`annotation_hours`).

Conventions. A *FLOP* here is one multiply or one add, so a multiply-accumulate (MAC) counts 2,
as :mod:`torch.utils.flop_counter` counts; many papers (and mmcv's ``get_flops``) report MACs
under the name "FLOPs", so their numbers are half of ours for the same network. Only
convolutions, matrix products and attention are counted (normalisation, activations and
interpolation are cheap in FLOPs, though not free in time).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from minseg.data.contents import class_presence, count_instances

__all__ = [
    "flops", "conv2d_cost", "median_time", "speed_table", "LabelCost", "LABEL_COSTS", "LABEL_TYPES",
    "count_objects", "annotation_hours", "annotation_seconds", "image_label_counts",
]


# --------------------------------------------------------------------------------------------
# compute
# --------------------------------------------------------------------------------------------
def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _custom_mapping() -> dict:
    """FLOP formulas torch's counter lacks. On the CPU ``F.scaled_dot_product_attention`` runs
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which torch 2.x does not count (it
    reports 0 FLOPs for attention); we count it like the GPU kernels: ``Q K^T`` and
    ``softmax(.) V``, ``2 * 2 * B * heads * Tq * Tk * d``."""
    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    return mapping


def _input(model: nn.Module, image_size, batch_size: int, in_channels: int | None):
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    try:
        p = next(model.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    c = in_channels or getattr(model, "in_channels", None) or 3
    return torch.randn(batch_size, c, h, w, device=device, dtype=dtype)


@torch.no_grad()
def flops(model: nn.Module, image_size: int | tuple[int, int] = 256, batch_size: int = 1, *,
          by_module: bool = False, in_channels: int | None = None) -> int | dict[str, int]:
    """Forward FLOPs of ``model`` on a ``batch_size x C x H x W`` input (2 per multiply-add).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions, linear layers,
    matrix products) plus scaled-dot-product attention on the CPU, which torch does not count
    by itself. ``by_module=True`` returns ``{child name: FLOPs}`` for the model's direct
    children instead of the total (children without FLOPs are left out; members of an
    ``nn.ModuleList`` are summed under the list's name; the values add up to the total when
    every counted op runs inside a child). Runs one forward pass in eval mode.
    """
    x = _input(model, image_size, batch_size, in_channels)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, depth=3, custom_mapping=_custom_mapping()) as fc:
            model(x)
    finally:
        model.train(was_training)
    if not by_module:
        return int(fc.get_total_flops())
    counts = {k: int(sum(v.values())) for k, v in fc.get_flop_counts().items()}
    root = type(model).__name__
    out = {}
    for name, _ in model.named_children():
        key = f"{root}.{name}"
        if key in counts:
            total = counts[key]
        else:  # a container that is never called itself (nn.ModuleList): sum its members
            total = sum(v for k, v in counts.items()
                        if k.startswith(key + ".") and k.count(".") == key.count(".") + 1)
        if total:
            out[name] = total
    return out


def conv2d_cost(in_ch: int, out_ch: int, kernel: int, height: int, width: int, *,
                groups: int = 1, stride: int = 1, bias: bool = False) -> dict[str, int]:
    """Weights and multiply-adds of one ``nn.Conv2d`` (square kernel, "same" padding).

    ``params = k^2 * (C_in / g) * C_out (+ C_out with bias)`` and
    ``macs = k^2 * (C_in / g) * C_out * H_out * W_out`` with ``H_out = ceil(H / stride)``.
    A depthwise conv is ``groups = C_in = C_out``; a pointwise conv is ``kernel = 1``.
    ``flops`` is ``2 * macs`` (the convention of :func:`flops`).
    """
    if in_ch % groups or out_ch % groups:
        raise ValueError(f"groups={groups} must divide in_ch={in_ch} and out_ch={out_ch}")
    h_out, w_out = -(-height // stride), -(-width // stride)
    weights = kernel * kernel * (in_ch // groups) * out_ch
    macs = weights * h_out * w_out
    return {"params": weights + (out_ch if bias else 0), "macs": macs, "flops": 2 * macs}


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none): printed next to every timing, since
    a figure taken while other work saturates the cores is not a figure."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def median_time(fn, *, warmup: int = 2, reps: int = 5, cuda_sync: bool | None = None) -> float:
    """Median wall-clock seconds of one call of ``fn()``, over ``reps`` timed calls after
    ``warmup`` untimed ones (the first calls allocate memory and choose kernels). With CUDA
    (``cuda_sync`` default: whenever CUDA is initialised) the clock is read only after
    ``torch.cuda.synchronize()``, because GPU kernels run asynchronously. Wrap ``fn`` in
    ``torch.no_grad()`` and put models in eval mode yourself when timing inference."""
    import time

    if reps < 1 or warmup < 0:
        raise ValueError(f"need reps >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")
    sync = torch.cuda.is_available() and torch.cuda.is_initialized() if cuda_sync is None \
        else cuda_sync
    times = []
    for i in range(warmup + reps):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def speed_table(models: Mapping[str, nn.Module], sizes: Sequence[int], *, batch_size: int = 1,
                device: str | torch.device | None = None, warmup: int = 2,
                reps: int = 5) -> list[dict]:
    """Measured speed of each model at each square input size: one row per (model, size) with
    ``name``, ``size``, ``fps`` (images per second, median of ``reps`` timed batches after
    ``warmup``, see :func:`minseg.experiment.throughput`), ``latency_ms`` (per image) and
    ``gflops`` (:func:`flops` at that size, batch 1).

    Times depend on the machine and its load: compare rows measured in the same call only.
    """
    from minseg.experiment import throughput

    rows = []
    for name, model in models.items():
        if device is not None:
            model.to(device)
        for s in sizes:
            fps = throughput(model, s, batch_size, device=device, warmup=warmup, reps=reps)
            rows.append({"name": name, "size": int(s), "fps": fps, "latency_ms": 1000.0 / fps,
                         "gflops": flops(model, s) / 1e9})
    return rows


# --------------------------------------------------------------------------------------------
# labelling
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelCost:
    """A published human annotation time: ``seconds`` per ``unit`` (``"image"``, ``"object"``,
    ``"class"``: one decision per class of the label set, per image, or ``"click"``: one click
    on an object or on the background), what it buys, and where it was measured."""

    name: str
    seconds: float
    unit: str
    label: str
    source: str


LABEL_COSTS: dict[str, LabelCost] = {c.name: c for c in (
    LabelCost("full_mask", 239.7, "image", "full pixel mask of a VOC 2012 image",
              "Bearman et al. 2016, What's the point, arXiv:1506.02106"),
    LabelCost("polygon", 79.0, "object", "polygon outline of one object (COCO)",
              "Lin et al. 2014, Microsoft COCO, arXiv:1405.0312"),
    LabelCost("box_drawn", 35.0, "object", "bounding box drawn the usual way (ILSVRC)",
              "as quoted by Papadopoulos et al. 2017, arXiv:1708.02750"),
    LabelCost("box_extreme", 7.0, "object", "bounding box by extreme clicking",
              "Papadopoulos et al. 2017, Extreme clicking, arXiv:1708.02750"),
    LabelCost("point", 22.1, "image", "image tags plus one point per class present",
              "Bearman et al. 2016, arXiv:1506.02106"),
    LabelCost("tags", 1.0, "class", "image-level tags (one yes/no per class)",
              "Bearman et al. 2016, arXiv:1506.02106"),
    LabelCost("click", 2.4, "click", "one click on an object of a class, or on the background",
              "Bearman et al. 2016, arXiv:1506.02106"),
    LabelCost("cityscapes_fine", 5400.0, "image", "fine mask of a 2048x1024 street scene",
              "Cordts et al. 2016, Cityscapes, arXiv:1604.01685 (more than 1.5 h per image)"),
)}


def count_objects(dataset) -> int:
    """Number of labelled object instances in a VOC-format dataset: the distinct instance ids
    (not 0 = background, not 255 = void) in each image's ``SegmentationObject`` PNG, summed
    (:func:`minseg.data.contents.count_instances` per image). ``dataset`` needs ``__len__`` and
    ``instance_path(i)`` (as :class:`minseg.data.VOCSegmentationDataset` has)."""
    from PIL import Image

    total = 0
    for i in range(len(dataset)):
        with Image.open(dataset.instance_path(i)) as im:
            total += count_instances(torch.from_numpy(np.asarray(im).copy()))
    return total


def annotation_hours(num_images: int, num_objects: int, *, num_classes: int = 20,
                     num_clicks: int | None = None,
                     costs: Iterable[str] | None = None) -> dict[str, float]:
    """Human hours to label ``num_images`` images holding ``num_objects`` objects, for each
    annotation kind in :data:`LABEL_COSTS` (or the names in ``costs``): ``seconds * count /
    3600``, where the count is the images, the objects, ``images * num_classes`` (a tag
    decision per class and image) or ``num_clicks``, as the kind's ``unit`` says. Without
    ``num_clicks`` the per-click kind is left out of the default list (and asking for it is an
    error).

    These are the published *average* times of the cited studies, for their interfaces and
    images; treat the result as an order of magnitude, not a quote.
    """
    if num_images < 0 or num_objects < 0 or num_classes < 1 or (num_clicks or 0) < 0:
        raise ValueError("num_images, num_objects and num_clicks must be >= 0 and num_classes >= 1")
    names = list(costs) if costs is not None else [
        n for n, c in LABEL_COSTS.items() if c.unit != "click" or num_clicks is not None]
    out = {}
    for name in names:
        if name not in LABEL_COSTS:
            raise ValueError(f"unknown annotation kind {name!r}; valid: {', '.join(LABEL_COSTS)}")
        c = LABEL_COSTS[name]
        if c.unit == "click" and num_clicks is None:
            raise ValueError(f"{name!r} is priced per click: give num_clicks")
        count = {"image": num_images, "object": num_objects, "class": num_images * num_classes,
                 "click": num_clicks}[c.unit]
        out[name] = c.seconds * count / 3600.0
    return out


def image_label_counts(mask: torch.Tensor, instances: torch.Tensor | None = None,
                       ignore_index: int = 255, background: int = 0) -> dict:
    """What an annotator has to label in one image: ``{"classes": foreground classes present,
    "objects": object instances}``. ``instances`` (ids ``> 0`` per object, 0 / 255 elsewhere)
    gives the object count (:func:`~minseg.data.contents.count_instances`, instances on object
    pixels only); without it every foreground class counts as one object."""
    # Any id below 255 is a valid class here: the count does not need the dataset's C.
    present = class_presence(mask, ignore_index, ignore_index=ignore_index, background=background)
    classes = int(present.sum())
    if instances is None:
        return {"classes": classes, "objects": classes}
    return {"classes": classes,
            "objects": count_instances(instances, mask, ignore_index=ignore_index, background=background)}


LABEL_TYPES: dict[str, tuple[str, ...]] = {
    "full": ("polygon",),             # one polygon mask per object
    "tags": ("tags",),                # a yes/no per class of the vocabulary
    "points": ("tags", "click"),      # the tags, then clicks (Bearman et al.'s protocol)
    "boxes": ("box_extreme",),        # one box per object, by extreme clicking
    "boxes_drawn": ("box_drawn",),    # one box per object, drawn and verified
}
"""Which :data:`LABEL_COSTS` entries make each weak-label type of lesson 14. Scribbles have no
entry: the course's references hold no measured time per scribble, so none is invented."""


def annotation_seconds(kind: str, *, objects: int, classes: int, vocabulary: int = 20,
                       points_per_class: int = 1, background_points: int = 1) -> float:
    """Seconds to label one image holding ``objects`` objects of ``classes`` foreground classes
    with the label type ``kind`` of :data:`LABEL_TYPES`, priced by :func:`annotation_hours`:

    * ``"tags"``: one yes/no decision per class of the ``vocabulary`` (20 for VOC);
    * ``"points"``: the tags, then ``points_per_class`` clicks per class present plus
      ``background_points`` clicks on the background (partial cross entropy needs background
      pixels too);
    * ``"boxes"`` / ``"boxes_drawn"``: one box per object (extreme clicking / drawn);
    * ``"full"``: one polygon mask per object.

    ``objects`` and ``classes`` come from :func:`image_label_counts`. Raises ``ValueError``
    for a kind without a published time (e.g. scribbles).
    """
    if kind not in LABEL_TYPES:
        raise ValueError(f"no published annotation time for {kind!r}; known: {', '.join(LABEL_TYPES)}")
    clicks = points_per_class * classes + background_points
    hours = annotation_hours(1, objects, num_classes=vocabulary, num_clicks=clicks,
                             costs=LABEL_TYPES[kind])
    return 3600.0 * sum(hours.values())

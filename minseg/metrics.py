"""Segmentation metrics: the dataset confusion matrix and everything read off it, boundary
quality (boundary F1, trimap IoU), panoptic quality, and calibration (reliability bins, ECE).

Conventions (``docs/DESIGN.md``, "Conventions"):

* One ``C x C`` confusion matrix is accumulated over the whole dataset, rows = target,
  columns = prediction; pixels whose *target* is ``ignore_index`` (255, VOC's void) are dropped.
  Scores are computed once from the accumulated matrix, never averaged per batch or per image.
* ``IoU_c = TP / (TP + FP + FN)``; a class absent from both target and prediction has
  ``0 / 0`` and is ``NaN`` per class and skipped by the mean (``mIoU = nanmean``). This is what
  torchmetrics 1.9 ``MulticlassJaccardIndex(average="macro", ignore_index=255)`` computes: it
  gives such classes weight 0 in the macro mean (its ``average="none"`` reports them as 0.0,
  ``zero_division=0``, where we report ``NaN``).
* ``Dice_c = 2 TP / (2 TP + FP + FN)`` (= F1), averaged the same way (= torchmetrics
  ``MulticlassF1Score(average="macro", ignore_index=255)``).

Everything works on CPU and GPU tensors.

Size: one job, scoring predicted label maps against masks, in about 600 lines: the confusion
matrix family, then boundary F1 / trimap IoU, panoptic quality and calibration, each a few small
functions that share this module's label-map checks and the convention above. The exercise
grader's delegation guard and the lessons import them from here.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F

from minseg.validate import (IGNORE_INDEX, check_logits, check_mask, check_num_classes,
                             check_same_shape)

__all__ = [
    "confusion_matrix", "scores_from_confusion", "ConfusionMatrix", "boundary_mask",
    "distance_to_mask", "boundary_f1", "trimap_iou", "panoptic_quality", "reliability_bins",
    "expected_calibration_error",
]


# --------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------
def _check_label_tensor(x: torch.Tensor, name: str) -> None:
    """An integer tensor (cheap: dtype only, no pass over the data)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer class-id tensor, got dtype {x.dtype} "
                         f"(use .long() on a mask, argmax(1) on logits)")


def _confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                      ignore_index: int | None, check_pred: bool = True) -> torch.Tensor:
    C = num_classes
    if pred.device != target.device:
        raise ValueError(f"pred is on {pred.device} but target is on {target.device}")
    if pred.dtype != torch.int64:
        pred = pred.long()
    if target.dtype != torch.int64:
        target = target.long()
    given_target = target
    if check_pred and pred.numel():
        # one fused min/max pass instead of (pred >= 0) & (pred < C) and an .all()
        lo, hi = torch.aminmax(pred)
        if bool((lo < 0) | (hi >= C)):  # a single host sync on GPU
            check_mask(pred, C, "pred", ignore_index=None)  # raises with the offending ids
    if ignore_index is None:
        rows, drop = C, None
    # a small void id (255) keeps its own row of bins, sliced off below: no remapping pass
    # (the 4096 cap bounds the rows * C bins that bincount allocates)
    elif C <= ignore_index < 4096:
        rows, drop = ignore_index + 1, ignore_index
    elif ignore_index < 0 or ignore_index >= 4096:
        # e.g. -100 (F.cross_entropy's default) or 65535: move it to row C (one more pass)
        target = torch.where(target == ignore_index, C, target)
        rows, drop = C + 1, C
    else:
        raise ValueError(f"ignore_index={ignore_index} is a class id (0..{C - 1}); use a value "
                         f"outside the classes, e.g. {IGNORE_INDEX}")
    # Pixel (t, p) goes to bin t*C + p. Ignored targets land in row `drop` and are sliced off
    # afterwards, which is cheaper than a boolean-index copy of the valid pixels. Target ids
    # are validated for free: a negative id gives a negative bin (bincount refuses it), an id
    # above `rows - 1` makes bincount return more than rows*C bins, and an id between C and
    # `drop` fills a row that must stay empty. (int64 overflow of t*C would need |t| > 4e17.)
    idx = torch.add(pred, target, alpha=C).reshape(-1)  # = target * C + pred, in one kernel
    try:
        counts = torch.bincount(idx, minlength=rows * C)
    except RuntimeError:
        counts = None
    if counts is None or counts.numel() > rows * C or (
            drop is not None and drop > C and bool(counts[C * C:drop * C].any())):
        check_mask(given_target, C, "target", ignore_index=ignore_index)
        raise ValueError("target contains label ids outside the classes")  # not reached
    # clone: a view would keep the whole rows * C count buffer alive
    return counts[:C * C].reshape(C, C).clone()


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """The ``C x C`` confusion matrix of one batch: ``mat[t, p]`` = number of pixels of target
    class ``t`` predicted as ``p`` (rows = target, columns = prediction).

    ``pred`` and ``target`` are integer tensors of the same shape (e.g. ``N,H,W``). Pixels
    whose target is ``ignore_index`` are dropped (``None``: no pixel is ignored); a
    prediction outside ``0..C-1`` or a target outside ``0..C-1`` / ``ignore_index`` raises
    ``ValueError``. ``ignore_index`` must not be a class id. Computed with a single
    ``torch.bincount`` over ``target * C + pred`` (the classic trick, e.g. in torchvision's
    reference scripts, https://github.com/pytorch/vision/tree/main/references/segmentation).
    Returns an ``int64`` tensor on the input's device.
    """
    check_num_classes(num_classes)
    _check_label_tensor(pred, "pred")
    _check_label_tensor(target, "target")
    check_same_shape(pred, target, "pred", "target")
    return _confusion_matrix(pred, target, num_classes, ignore_index)


def scores_from_confusion(mat: torch.Tensor) -> dict:
    """Every score read off an accumulated confusion matrix (rows = target, cols = prediction).

    Returns a dict with

    * ``pixel_acc`` = trace / total (float; NaN when the matrix is empty),
    * ``class_acc`` (tensor [C]) = TP_c / (TP_c + FN_c), NaN for classes absent from the
      target; ``mean_acc`` = its nanmean,
    * ``iou`` (tensor [C]) = TP / (TP + FP + FN), NaN for classes absent from both target and
      prediction; ``miou`` = its nanmean (= torchmetrics ``MulticlassJaccardIndex`` macro),
    * ``dice`` (tensor [C]) = 2TP / (2TP + FP + FN), NaN as above; ``mdice`` = nanmean
      (= torchmetrics ``MulticlassF1Score`` macro),
    * ``fwiou`` = sum_c (support_c / total) * IoU_c over classes present in the target
      (Long et al. 2015, https://arxiv.org/abs/1411.4038, section 5).

    Per-class tensors are float64 on the CPU; scalars are Python floats.
    """
    # float64: integer counts stay exact up to 2^53 pixels, and the ratios below are precise
    m = mat.detach().to("cpu", torch.float64)
    tp = m.diagonal()
    support = m.sum(1)  # target pixels per class
    predicted = m.sum(0)
    total = m.sum()
    union = support + predicted - tp  # (TP + FN) + (TP + FP) - TP = TP + FP + FN
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    # 0 / 0 (a class with no pixels to score) becomes NaN, which the nanmeans below skip
    class_acc = torch.where(support > 0, tp / support, nan)
    iou = torch.where(union > 0, tp / union, nan)
    # support + predicted = 2 TP + FP + FN
    dice = torch.where(union > 0, 2 * tp / (support + predicted), nan)
    present = support > 0
    # classes absent from the target weigh 0 but may have IoU NaN (0 * NaN = NaN): leave them out
    fwiou = (support[present] * iou[present]).sum() / total if total > 0 else nan
    return {
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_acc": float(class_acc.nanmean()),
        "class_acc": class_acc,
        "iou": iou,
        "miou": float(iou.nanmean()),
        "dice": dice,
        "mdice": float(dice.nanmean()),
        "fwiou": float(fwiou),
    }


class ConfusionMatrix:
    """Accumulates one confusion matrix over a dataset and computes every score from it.

    >>> cm = ConfusionMatrix(21)
    >>> for images, masks in loader:
    ...     cm.update(model(images), masks)      # logits N,C,H,W or class ids N,H,W
    >>> cm.compute()["miou"]

    ``update`` accepts float logits ``N,C,H,W`` (argmax over dim 1) or integer predictions of
    the target's shape; ``compute`` returns :func:`scores_from_confusion` of the accumulated
    matrix, so the result does not depend on how the data is split into batches. ``mat`` is the
    ``int64`` ``C x C`` matrix (rows = target, cols = prediction). ``device=None`` keeps the
    matrix on the device of the first batch. Under ``torch.distributed`` call
    :meth:`all_reduce` once before :meth:`compute`. Conventions: see the module docstring and
    ``docs/DESIGN.md``; reference: torchmetrics ``MulticlassJaccardIndex`` (macro).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX,
                 device: torch.device | str | None = None) -> None:
        check_num_classes(num_classes)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._device_fixed = device is not None
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred_or_logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: logits ``N,C,H,W`` (float) or class ids (integer, target's shape)."""
        _check_label_tensor(target, "target")
        x = pred_or_logits
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            check_logits(x, "logits")
            if x.shape[1] != self.num_classes:
                raise ValueError(f"logits have {x.shape[1]} channels but num_classes is "
                                 f"{self.num_classes}")
            if target.shape != x.shape[:1] + x.shape[2:]:
                raise ValueError(f"logits have shape {tuple(x.shape)} so target must have shape "
                                 f"{tuple(x.shape[:1] + x.shape[2:])}; got {tuple(target.shape)}")
            cm = _confusion_matrix(x.argmax(1), target, self.num_classes, self.ignore_index,
                                   check_pred=False)  # argmax is always in range
        else:
            _check_label_tensor(x, "pred")
            check_same_shape(x, target, "pred", "target")
            cm = _confusion_matrix(x, target, self.num_classes, self.ignore_index)
        # the first batch decides the device (unless one was given); later batches move to it
        if cm.device != self.mat.device:
            if self._device_fixed or self.mat.any():
                cm = cm.to(self.mat.device)
            else:
                self.mat = self.mat.to(cm.device)
        self.mat += cm

    def compute(self) -> dict:
        """Scores of the accumulated matrix; see :func:`scores_from_confusion`."""
        return scores_from_confusion(self.mat)

    def reset(self) -> None:
        """Forget every count (keeps the device)."""
        self.mat.zero_()

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum ``mat`` over all ranks when ``torch.distributed`` is initialised (no-op
        otherwise). Call it once, right before :meth:`compute`."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.mat, op=torch.distributed.ReduceOp.SUM)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts to this one, in place (e.g. per-worker matrices)."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError("can only merge ConfusionMatrix objects with the same num_classes "
                             "and ignore_index")
        self.mat += other.mat.to(self.mat.device)
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        out = ConfusionMatrix(self.num_classes, self.ignore_index, device=self.mat.device)
        out.mat = self.mat.clone()
        return out.merge(other)

    def __repr__(self) -> str:
        return (f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index="
                f"{self.ignore_index}, pixels={int(self.mat.sum())})")


# --------------------------------------------------------------------------------------------
# boundaries
# --------------------------------------------------------------------------------------------
def boundary_mask(labels: torch.Tensor) -> torch.Tensor:
    """Boolean map of the pixels whose label differs from at least one of their 4 neighbours
    inside the image (the image border is not a boundary). Both sides of an interface are
    marked, each pixel belonging to the boundary of its own label ("inner" boundaries).
    Works on ``H,W`` or ``...,H,W`` label maps; any label value (also 255) counts as a label.
    """
    b = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    # dh[y] compares rows y and y + 1 (shape H-1); both pixels of a differing pair are marked.
    # Nothing wraps around, so the image border is never a boundary
    dh = labels[..., 1:, :] != labels[..., :-1, :]
    b[..., 1:, :] |= dh
    b[..., :-1, :] |= dh
    dw = labels[..., :, 1:] != labels[..., :, :-1]
    b[..., :, 1:] |= dw
    b[..., :, :-1] |= dw
    return b


def distance_to_mask(mask: torch.Tensor, max_dist: float) -> torch.Tensor:
    """Euclidean distance from every pixel to the nearest ``True`` pixel of ``mask``
    (``...,H,W``), exact up to ``max_dist`` and ``inf`` beyond it (float32).

    Separable min-plus passes (the idea of Felzenszwalb & Huttenlocher's distance transform,
    https://cs.brown.edu/people/pfelzens/papers/dt-final.pdf) restricted to a
    ``(2R+1) x (2R+1)`` window, ``R = floor(max_dist)``: first ``min_dx (dx^2 + f)`` along rows,
    then ``min_dy (dy^2 + .)`` along columns; every point within distance R of a pixel lies in
    that window, so the truncated result is exact.
    """
    R = int(math.floor(max_dist))
    inf = float("inf")
    f = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    f.masked_fill_(~mask, inf)  # f = 0 on the mask, inf elsewhere: the transform's input
    H, W = f.shape[-2:]
    g = f.clone()
    # inf padding: a shift never wraps around or sees a fake mask pixel past the border
    padded = F.pad(f, (R, R), value=inf)
    for dx in range(-R, R + 1):
        if dx:
            # g = min_dx f(x + dx) + dx^2: squared distance to the nearest mask pixel in its row
            torch.minimum(g, padded[..., R + dx:R + dx + W] + dx * dx, out=g)
    d2 = g.clone()
    padded = F.pad(g, (0, 0, R, R), value=inf)
    for dy in range(-R, R + 1):
        if dy:
            # d2(y, x) = min_dy g(y + dy, x) + dy^2 = min over the window of dx^2 + dy^2
            torch.minimum(d2, padded[..., R + dy:R + dy + H, :] + dy * dy, out=d2)
    d = d2.sqrt_()
    # a value above max_dist came from the window's corners and may miss a closer pixel outside
    # the window: report it as inf
    return d.masked_fill_(d > max_dist, inf)


def _as_label_maps(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_label_tensor(pred, "pred")
    _check_label_tensor(target, "target")
    check_same_shape(pred, target, "pred", "target")
    if pred.ndim not in (2, 3):
        raise ValueError(f"pred and target must be H,W or N,H,W label maps; got shape "
                         f"{tuple(pred.shape)}")
    if pred.ndim == 2:
        pred, target = pred[None], target[None]
    return pred.long(), target.long()


def _valid(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool)
    return target != ignore_index


def _infer_num_classes(pred: torch.Tensor, target: torch.Tensor, ignore_index: int | None,
                       num_classes: int | None) -> int:
    if num_classes is None:
        t = target if ignore_index is None else target[target != ignore_index]
        hi = max(int(pred.max()) if pred.numel() else 0, int(t.max()) if t.numel() else 0)
        num_classes = max(hi + 1, 2)  # check_num_classes needs at least 2
    check_num_classes(num_classes)
    check_mask(pred, num_classes, "pred", ignore_index=None)
    check_mask(target, num_classes, "target", ignore_index=ignore_index)
    return num_classes


def boundary_f1(pred: torch.Tensor, target: torch.Tensor, tolerance_px: float = 2,
                ignore_index: int | None = IGNORE_INDEX, num_classes: int | None = None) -> float:
    """Mean boundary F1 score over classes (Csurka et al. 2013, "What is a good evaluation
    measure for semantic segmentation?", BMVC,
    http://www.xrce.xerox.com/Research-Development/Publications/2013-027; the same matching as
    the DAVIS boundary measure F, Perazzi et al. 2016, https://davischallenge.org/).

    Csurka et al. score each image separately and average the per-image scores; call this
    function once per image for that. Given a batch, it pools the counts over the batch.

    Definition used here, for label maps ``H,W`` or ``N,H,W``:

    * the boundary of class ``c`` in a label map = pixels labelled ``c`` with a 4-neighbour of
      another label (:func:`boundary_mask`; in the target a void neighbour counts as another
      label, so object boundaries next to VOC's void band are boundaries);
    * a boundary pixel is *matched* if a boundary pixel of the same class in the other map lies
      within Euclidean distance ``tolerance_px``;
    * precision_c = matched predicted boundary pixels / predicted boundary pixels, counting
      only predicted boundary pixels whose target is not ``ignore_index``; recall_c = matched
      target boundary pixels / target boundary pixels, where any predicted boundary pixel
      (also one on a void pixel) may serve as a match;
    * counts are pooled over all images passed in (not averaged per image); an empty side
      gives precision or recall 1 (DAVIS convention), so F_c = 0 when only one side has
      boundary pixels; F_c = 2PR / (P + R);
    * the result is the mean of F_c over classes with boundary pixels in the target or the
      (non-void part of the) prediction; 1.0 if there are none at all (nothing to find,
      nothing spurious).

    ``num_classes=None`` infers it from the largest id. Returns a Python float in [0, 1].
    """
    pred, target = _as_label_maps(pred, target)
    C = _infer_num_classes(pred, target, ignore_index, num_classes)
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
    valid = _valid(target, ignore_index)
    bp_all = boundary_mask(pred)
    bt_all = boundary_mask(target)
    scores = []
    for c in range(C):
        bp = bp_all & (pred == c)
        bt = bt_all & (target == c)
        # precision scores predicted boundary pixels on valid target pixels; recall may use all bp
        bp_scored = bp & valid
        n_p, n_t = int(bp_scored.sum()), int(bt.sum())
        if n_p == 0 and n_t == 0:
            continue
        # an empty side scores 1 (DAVIS); the other side then scores 0, so F_c = 0
        precision = recall = 1.0
        if n_p:
            # finite distance <=> a target boundary pixel of class c within tolerance_px
            near_t = torch.isfinite(distance_to_mask(bt, tolerance_px))
            precision = int((bp_scored & near_t).sum()) / n_p
        if n_t:
            near_p = torch.isfinite(distance_to_mask(bp, tolerance_px))
            recall = int((bt & near_p).sum()) / n_t
        s = precision + recall
        # P = R = 0: F is 0, not 0/0
        scores.append(2 * precision * recall / s if s > 0 else 0.0)
    return sum(scores) / len(scores) if scores else 1.0


def trimap_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, band_px: float,
               ignore_index: int | None = IGNORE_INDEX) -> float:
    """mIoU restricted to a band of ``band_px`` pixels around the target's boundaries: the
    "trimap" evaluation of Kohli et al. 2009 (https://doi.org/10.1007/s11263-008-0202-0), used
    by DeepLab (Chen et al., https://arxiv.org/abs/1412.7062 and
    https://arxiv.org/abs/1606.00915) to show that a CRF sharpens boundaries.

    The band = valid pixels within Euclidean distance ``band_px`` of a target boundary pixel
    (:func:`boundary_mask` of the target, void transitions included, void pixels excluded);
    inside it the usual confusion-matrix mIoU is taken (nanmean over classes present in the
    band's target or prediction). Returns NaN when the band is empty (a target without
    boundaries).
    """
    pred, target = _as_label_maps(pred, target)
    check_num_classes(num_classes)
    check_mask(pred, num_classes, "pred", ignore_index=None)
    check_mask(target, num_classes, "target", ignore_index=ignore_index)
    if band_px < 0:
        raise ValueError(f"band_px must be >= 0, got {band_px}")
    valid = _valid(target, ignore_index)
    band = torch.isfinite(distance_to_mask(boundary_mask(target) & valid, band_px)) & valid
    if not bool(band.any()):
        return float("nan")
    # pixels outside the band get target -1, which the confusion matrix ignores
    t = torch.where(band, target, -1)
    return scores_from_confusion(_confusion_matrix(pred, t, num_classes, -1))["miou"]


# --------------------------------------------------------------------------------------------
# panoptic quality
# --------------------------------------------------------------------------------------------
def _pq_ratios(tp: int, fp: int, fn: int, iou_sum: float) -> dict:
    denom = tp + 0.5 * fp + 0.5 * fn
    sq = iou_sum / tp if tp else 0.0
    rq = tp / denom if denom else 0.0
    return {"pq": sq * rq, "sq": sq, "rq": rq}


def panoptic_quality(pred: torch.Tensor, target: torch.Tensor, num_classes: int | None = None,
                     thing_classes: Iterable[int] | None = None, label_divisor: int = 1000,
                     void_id: int = -1) -> dict:
    """Panoptic quality PQ = SQ x RQ (Kirillov et al. 2019, https://arxiv.org/abs/1801.00868).

    Panoptic maps (shared with :mod:`minseg.instances`): integer ``H,W`` or ``N,H,W`` tensors
    with ``id = class_id * label_divisor + instance_id``, ``instance_id = 0`` for stuff, and
    ``void_id`` (-1) for void pixels. Each image is matched on its own:

    * a predicted and a target segment of the same class match when IoU > 0.5 (unique by
      construction); the IoU leaves out predicted pixels that are void in the target, as the
      reference ``panopticapi`` does;
    * matched pairs are TP; unmatched target segments FN; unmatched predicted segments FP,
      except those with more than half of their area on target void (neither TP nor FP);
      predicted void pixels belong to no segment;
    * per class: SQ = sum IoU(TP) / TP (0 when TP = 0), RQ = TP / (TP + FP/2 + FN/2),
      PQ = SQ x RQ, counts summed over all images;
    * overall (and for ``things`` / ``stuff``): the plain mean over classes with
      TP + FP + FN > 0.

    There are no crowd regions. ``thing_classes=None`` treats a class as a thing when any of
    its segments (target or prediction) has ``instance_id > 0``. Returns ``{"pq", "sq", "rq",
    "n", "per_class": {class_id: {"pq", "sq", "rq", "tp", "fp", "fn", "iou_sum"}},
    "things": {...}, "stuff": {...}}`` with Python numbers (NaN means for empty groups).
    """
    _check_label_tensor(pred, "pred")
    _check_label_tensor(target, "target")
    check_same_shape(pred, target, "pred", "target")
    if pred.ndim not in (2, 3):
        raise ValueError(f"panoptic maps must be H,W or N,H,W; got shape {tuple(pred.shape)}")
    if pred.ndim == 2:
        pred, target = pred[None], target[None]
    if label_divisor < 1:
        raise ValueError(f"label_divisor must be >= 1, got {label_divisor}")
    for x, name in ((pred, "pred"), (target, "target")):
        bad = (x < 0) & (x != void_id)
        if num_classes is not None:
            bad |= x >= num_classes * label_divisor
        if bool(bad.any()):
            ids = torch.unique(x[bad])[:10].tolist()
            rng = f"0..{num_classes * label_divisor - 1}" if num_classes is not None else ">= 0"
            raise ValueError(f"{name} contains panoptic ids {ids} outside {rng} (void = {void_id})")

    stats: dict[int, list] = {}  # class -> [tp, fp, fn, iou_sum]
    things: set[int] = set()
    for p_img, t_img in zip(pred.long(), target.long()):
        ug, gi = torch.unique(t_img.reshape(-1), return_inverse=True)
        up, pi = torch.unique(p_img.reshape(-1), return_inverse=True)
        ng, np_ = len(ug), len(up)
        # overlap areas of every (target segment, predicted segment) pair in one bincount, ng x np
        inter = torch.bincount(gi * np_ + pi, minlength=ng * np_).reshape(ng, np_).cpu().double()
        ug, up = ug.cpu(), up.cpu()
        g_void, p_void = ug == void_id, up == void_id
        g_area, p_area = inter.sum(1), inter.sum(0)
        p_on_void = inter[g_void].sum(0)  # predicted pixels that are void in the target
        # floor division: void (-1) gets class -1, never a real class
        g_cls, p_cls = torch.div(ug, label_divisor, rounding_mode="floor"), \
            torch.div(up, label_divisor, rounding_mode="floor")
        things.update(g_cls[(ug % label_divisor > 0) & ~g_void].tolist())
        things.update(p_cls[(up % label_divisor > 0) & ~p_void].tolist())
        # panopticapi leaves a predicted segment's pixels on target void out of its union
        union = g_area[:, None] + p_area[None, :] - inter - p_on_void[None, :]
        # clamp only avoids 0/0 where the union is empty (IoU 0 there)
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))
        # IoU > 0.5 makes matches unique: two disjoint segments cannot both cover over half of one
        match = (iou > 0.5) & (g_cls[:, None] == p_cls[None, :])
        match &= ~g_void[:, None] & ~p_void[None, :]
        g_matched, p_matched = match.any(1), match.any(0)
        # every class seen in this image gets counters, even before its first TP/FP/FN
        for c in g_cls[~g_void].unique().tolist() + p_cls[~p_void].unique().tolist():
            stats.setdefault(c, [0, 0, 0, 0.0])
        for gi_, pi_ in match.nonzero().tolist():
            s = stats[int(g_cls[gi_])]
            s[0] += 1
            s[3] += float(iou[gi_, pi_])
        for gi_ in (~g_matched & ~g_void).nonzero().flatten().tolist():
            stats[int(g_cls[gi_])][2] += 1
        mostly_void = p_on_void > 0.5 * p_area
        for pi_ in (~p_matched & ~p_void & ~mostly_void).nonzero().flatten().tolist():
            stats[int(p_cls[pi_])][1] += 1

    if thing_classes is not None:
        things = {int(c) for c in thing_classes}
    per_class = {}
    for c in sorted(stats):
        tp, fp, fn, iou_sum = stats[c]
        if tp + fp + fn == 0:
            continue
        per_class[c] = {**_pq_ratios(tp, fp, fn, iou_sum), "tp": tp, "fp": fp, "fn": fn,
                        "iou_sum": iou_sum}

    def average(classes: list[int]) -> dict:
        if not classes:
            return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}
        return {k: sum(per_class[c][k] for c in classes) / len(classes)
                for k in ("pq", "sq", "rq")} | {"n": len(classes)}

    return {**average(list(per_class)), "per_class": per_class,
            "things": average([c for c in per_class if c in things]),
            "stuff": average([c for c in per_class if c not in things])}


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
def reliability_bins(probs: torch.Tensor, target: torch.Tensor, n_bins: int = 15,
                     ignore_index: int | None = IGNORE_INDEX) -> dict:
    """The data of a reliability diagram (Guo et al. 2017, "On calibration of modern neural
    networks", https://arxiv.org/abs/1706.04599, sec. 2): the valid pixels binned by their
    *confidence* ``max_c p_ic`` into ``n_bins`` equal-width bins ``[k/M, (k+1)/M)`` (the last
    one closed, so a confidence of exactly 1 lands in it), and per bin the pixel count, the
    mean confidence and the *accuracy* (share of pixels whose argmax is the target).

    ``probs``: class probabilities ``N,C,H,W`` (``softmax(logits, 1)``, e.g. from
    :func:`minseg.infer.predict`); ``target``: ``N,H,W`` integer mask; pixels whose target is
    ``ignore_index`` are dropped. Returns a dict of float64 CPU tensors ``edges`` [M+1],
    ``count``, ``confidence``, ``accuracy`` [M] (``NaN`` in empty bins), and the floats
    ``mean_confidence`` and ``mean_accuracy`` over all valid pixels (their difference is the
    over-confidence) and ``pixels``. Accumulate over batches by summing ``count`` and
    ``count * confidence`` / ``count * accuracy``, or pass the whole set at once.
    """
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    check_logits(probs, "probs")
    expected = probs.shape[:1] + probs.shape[2:]
    if not isinstance(target, torch.Tensor) or target.shape != expected:
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"probs have shape {tuple(probs.shape)} so target must have shape "
                         f"{tuple(expected)} (N,H,W); got {shape}")
    check_mask(target, probs.shape[1], "target", ignore_index=ignore_index)
    if bool((probs < 0).any()) or bool((probs > 1).any()) or not torch.allclose(
            probs.sum(1, dtype=torch.float64), torch.ones((), dtype=torch.float64,
                                                          device=probs.device), atol=1e-3):
        raise ValueError("probs must be probabilities in [0, 1] that sum to 1 over dim 1 "
                         "(pass softmax(logits, 1), not logits)")
    conf, pred = probs.max(1)  # top-label confidence and its class, N,H,W each
    valid = _valid(target, ignore_index)
    conf = conf[valid].to(torch.float64).cpu()
    # float64 on the CPU: bin sums over millions of pixels, and the same device as `edges`
    correct = (pred == target)[valid].to(torch.float64).cpu()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # bin k holds edges[k] <= conf < edges[k+1]; conf == 1 goes to the last bin
    idx = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=n_bins)
    nan = torch.full_like(count, float("nan"))
    n = float(count.sum())
    return {"edges": edges, "count": count,
            "confidence": torch.where(count > 0, conf_sum / count.clamp_min(1), nan),
            "accuracy": torch.where(count > 0, acc_sum / count.clamp_min(1), nan),
            "mean_confidence": float(conf.mean()) if n else float("nan"),
            "mean_accuracy": float(correct.mean()) if n else float("nan"), "pixels": int(n)}


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, n_bins: int = 15,
                               ignore_index: int | None = IGNORE_INDEX) -> float:
    """Expected calibration error over the valid pixels (Naeini et al. 2015,
    https://ojs.aaai.org/index.php/AAAI/article/view/9602; Guo et al. 2017,
    https://arxiv.org/abs/1706.04599, eq. 3):
    ``ECE = sum_k (n_k / n) |acc_k - conf_k|`` over the equal-width confidence bins of
    :func:`reliability_bins` (top-label calibration). 0 is perfect; ``NaN`` without valid
    pixels.

    Equals torchmetrics ``MulticlassCalibrationError(num_classes, n_bins, norm="l1",
    ignore_index=255)`` except for pixels of confidence exactly 1.0, which torchmetrics puts in a
    bin of their own and this function in the last bin. Pass the whole validation set at once
    (or merge :func:`reliability_bins` of batches): ECE is not a mean of per-batch values.
    """
    bins = reliability_bins(probs, target, n_bins, ignore_index)
    if bins["pixels"] == 0:
        return float("nan")
    full = bins["count"] > 0  # empty bins have NaN accuracy/confidence and weight 0
    gap = (bins["accuracy"][full] - bins["confidence"][full]).abs()
    return float((bins["count"][full] * gap).sum() / bins["pixels"])

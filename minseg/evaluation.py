"""Scoring a model: :func:`evaluate`, segmentation metrics from one dataset-wide confusion matrix.

:func:`minseg.train.fit` calls it after every epoch when it has validation data.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
import torch.nn as nn

from minseg import distributed
from minseg.data.sampling import eval_shard
from minseg.infer import _logits
from minseg.progress import _bar, _show_progress
from minseg.step import (_amp_dtype, _autocast, _len, _resolve_device, _resolve_loss, _split,
                         batch_loss)
from minseg.validate import IGNORE_INDEX, check_num_classes

__all__ = ["evaluate"]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate(model: nn.Module, data, num_classes: int, *, device=None,
             scales: Sequence[float] = (1.0,), flip: bool = False, amp: bool | None = None,
             progress: bool | None = None, loss: str | Callable | None = None,
             channels_last: bool | None = None, window: int | None = None,
             stride: int | None = None) -> dict:
    """Segmentation scores of ``model`` on ``data`` from one dataset-wide confusion matrix.

    ``data`` is a ``DataLoader`` (or any iterable) of ``(images N,3,H,W, masks N,H,W)`` batches,
    or a ``Dataset``. Pixels whose mask is 255 are ignored. With ``scales != (1.0,)`` or
    ``flip`` the prediction is :func:`minseg.infer.predict`'s test-time augmentation; with
    ``window`` each view runs as sliding-window crops (:func:`minseg.infer.sliding_logits`).
    Returns :meth:`minseg.metrics.ConfusionMatrix.compute`'s dict (``miou``, ``iou`` per class,
    ``pixel_acc``, ``mean_acc``, ``dice``, ``mdice``, ``fwiou``) plus ``confusion_matrix`` (the
    ``int64`` C x C tensor, rows = target), ``images`` and ``time_s``; plus ``loss`` (mean over
    images) when ``loss`` is given and no test-time augmentation is used.

    Under ``torchrun`` each rank evaluates its share of the samples and the matrices are summed
    with ``all_reduce``, so every rank gets the scores of the whole dataset.
    The model is moved to ``device`` (default :func:`minseg.config.device`), run in eval mode,
    and put back in training mode if it was.
    """
    from minseg.metrics import ConfusionMatrix

    check_num_classes(num_classes)
    dev = _resolve_device(device)
    net = _unwrap(model)
    dtype = _amp_dtype(dev, amp)
    cl = dev.type == "cuda" if channels_last is None else channels_last
    fmt = torch.channels_last if cl else torch.contiguous_format
    tta = tuple(scales) != (1.0,) or flip or window is not None
    loss_fn = _resolve_loss(loss) if loss is not None and not tta else None
    if tta:
        from minseg.infer import predict
    rank, world = distributed.rank_world()
    batches = eval_shard(data, rank, world)
    was_training = net.training
    net.to(dev, memory_format=fmt).eval()
    cm = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=dev)
    loss_sum, n_images = torch.zeros((), dtype=torch.float64, device=dev), 0
    bar = _bar(_show_progress(progress), total=_len(batches), desc="eval", leave=False)
    t0 = time.perf_counter()
    try:
        for batch in batches:
            images, masks = _split(batch)
            images = images.to(dev, non_blocking=True, memory_format=fmt)
            masks = masks.to(dev, non_blocking=True)
            with _autocast(dev, dtype):
                raw = (predict(net, images, scales=tuple(scales), flip=flip, window=window,
                               stride=stride) if tta else net(images))
            out = _logits(raw).float()
            if loss_fn is not None:
                loss_sum += batch_loss(loss_fn, raw, masks, aux_weight=0.0).double() * images.shape[0]
            n_images += images.shape[0]
            cm.update(out, masks)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
        net.train(was_training)
    cm.all_reduce()
    loss_total, n_total = distributed.all_sum(loss_sum.item(), n_images, device=dev)
    if n_total == 0:
        raise ValueError("evaluate got no data: the dataset or loader is empty")
    result = cm.compute()
    result.update(confusion_matrix=cm.mat.cpu(), images=int(n_total),
                  time_s=time.perf_counter() - t0)
    if loss_fn is not None:
        result["loss"] = loss_total / n_total
    return result

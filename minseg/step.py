"""One batch on a device: unpack it, pick the device and precision, and compute its loss.

Both :func:`minseg.train.fit` and :func:`minseg.evaluation.evaluate` run batches through these
helpers, so training and validation read a batch, autocast and score a model's output the same
way. :func:`batch_loss` is the public piece: the loss of one batch from a model's raw output,
with deep supervision.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from minseg import config, distributed
from minseg.infer import _logits

__all__ = ["batch_loss"]


# --------------------------------------------------------------------------------------------
# batches and their loss
# --------------------------------------------------------------------------------------------
def _split(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        return batch["image"], batch["mask"]
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(f"a batch must be an (images, masks) pair, got {type(batch).__name__}")


def batch_loss(loss_fn: Callable, output, masks: torch.Tensor, aux_weight: float = 0.4) -> torch.Tensor:
    """The training loss of one batch from the model's raw ``output``, in float32.

    * A plain tensor (or torchvision's ``{"out": ...}``): ``loss_fn(logits, masks)``.
    * Deep supervision: a dict whose ``"aux"`` holds one tensor or a list of ``N,C,h,w`` logits
      from intermediate layers adds ``aux_weight * loss_fn(aux, masks)`` for each, after
      upsampling it bilinearly to the mask size (Lee et al. 2015, https://arxiv.org/abs/1409.5185).
    * A loss with the attribute ``wants_outputs = True`` receives the whole output dict instead
      (every tensor in float32), e.g. a mask-classification loss that needs class and mask logits.
    """
    if getattr(loss_fn, "wants_outputs", False):
        if isinstance(output, Mapping):
            output = {k: v.float() if torch.is_tensor(v) else v for k, v in output.items()}
        return loss_fn(output, masks)
    loss = loss_fn(_logits(output).float(), masks)  # float32, also under autocast
    aux = output.get("aux") if isinstance(output, Mapping) else None
    if aux is not None and aux_weight:
        for a in [aux] if torch.is_tensor(aux) else aux:
            if a.shape[-2:] != masks.shape[-2:]:
                a = F.interpolate(a, size=masks.shape[-2:], mode="bilinear", align_corners=False)
            loss = loss + aux_weight * loss_fn(a.float(), masks)
    return loss


def _resolve_loss(loss: str | Callable) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if callable(loss):
        return loss
    if not isinstance(loss, str):
        raise ValueError(f"loss must be a name or a callable(logits, target), got {loss!r}")
    from minseg.losses import get_loss

    return get_loss(loss)  # ValueError listing the valid names for an unknown one


# --------------------------------------------------------------------------------------------
# devices and precision
# --------------------------------------------------------------------------------------------
def _resolve_device(device) -> torch.device:
    dev = config.device(str(device)) if device is not None else config.device()
    if dev.type == "cuda" and distributed.is_distributed():  # one GPU per process under torchrun
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def _amp_dtype(dev: torch.device, amp: bool | None) -> torch.dtype | None:
    """``None`` (float32), ``torch.bfloat16`` or ``torch.float16`` (the latter needs a scaler)."""
    if amp is None:
        amp = dev.type == "cuda"
    if not amp:
        return None
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16  # CPU autocast


def _autocast(dev: torch.device, dtype: torch.dtype | None):
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _len(x) -> int | None:
    try:
        return len(x)
    except TypeError:
        return None

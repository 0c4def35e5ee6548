"""Input checks shared by every module: bad input raises a ``ValueError`` that names the problem.

Each function returns nothing and raises on the first problem it finds; callers pass ``name``
so that the message says which argument was wrong.
"""
from __future__ import annotations

import torch

IGNORE_INDEX = 255


def check_images(x: torch.Tensor, name: str = "images", channels: int | None = 3) -> None:
    """``x`` must be a floating ``N,C,H,W`` tensor (with ``C == channels`` when given), finite."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"{name} must have shape N,C,H,W; got a {x.ndim}-D tensor of shape "
                         f"{tuple(x.shape)}{hint}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")


def check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    """``logits`` must be a finite floating ``N,C,H,W`` tensor with ``C >= 2``."""
    check_images(logits, name, channels=None)
    if logits.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 classes along dim 1; got shape "
                         f"{tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        bad = (~torch.isfinite(logits)).sum().item()
        raise ValueError(f"{name} contain {bad} NaN/inf values")


def check_mask(mask: torch.Tensor, num_classes: int, name: str = "target",
               ignore_index: int | None = IGNORE_INDEX) -> None:
    """``mask`` must be an integer tensor with ids in ``0..num_classes-1`` or ``ignore_index``."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer class-id mask, got dtype {mask.dtype} "
                         f"(use .long() on a mask, argmax(1) on logits)")
    valid = (mask >= 0) & (mask < num_classes)
    if ignore_index is not None:
        valid |= mask == ignore_index
    if not bool(valid.all()):
        bad = torch.unique(mask[~valid])[:10].tolist()
        allowed = f"0..{num_classes - 1}" + (f" or {ignore_index}" if ignore_index is not None else "")
        raise ValueError(f"{name} contains label ids {bad} outside {allowed}")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """``a`` and ``b`` must have the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape "
                         f"{tuple(b.shape)}; they must match")


def check_num_classes(num_classes: int) -> None:
    """A segmentation problem needs at least two classes (background and one more)."""
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")

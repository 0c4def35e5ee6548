"""Pictures for the lessons: coloured masks, overlays, grids, confusion matrices, curves.

Every plotting function returns a ``matplotlib.figure.Figure`` (so notebooks show it and scripts
can ``fig.savefig``); colouring functions return ``uint8`` arrays.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from minseg.data.transforms import denormalize
from minseg.data.voc import VOC_CLASSES, VOC_PALETTE



def _figure(nrows: int = 1, ncols: int = 1, figsize=(4, 3)) -> tuple[Figure, np.ndarray]:
    """A new figure detached from pyplot's list of open figures: it is shown once when a
    notebook cell returns it, and never accumulates in memory in loops."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    plt.close(fig)
    return fig, axes


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def colorize(mask, palette: np.ndarray = VOC_PALETTE) -> np.ndarray:
    """``H,W`` class ids (255 = void) -> ``H,W,3`` uint8 RGB with the VOC palette."""
    m = _np(mask).astype(np.int64)
    if m.ndim != 2:
        raise ValueError(f"mask must be H,W; got shape {m.shape}")
    return palette[np.clip(m, 0, len(palette) - 1)]


def to_rgb(image) -> np.ndarray:
    """An image as ``H,W,3`` uint8: accepts a normalised float tensor ``3,H,W`` (as the data
    pipeline gives), a float array in [0,1], or uint8 ``H,W,3``."""
    if isinstance(image, torch.Tensor):
        x = image.detach().cpu()
        if x.ndim == 3 and x.shape[0] == 3:
            x = (denormalize(x) * 255).round().byte().permute(1, 2, 0) if x.is_floating_point() \
                else x.permute(1, 2, 0)
        return x.numpy().astype(np.uint8)
    x = np.asarray(image)
    if x.dtype != np.uint8:
        x = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    return x


def overlay(image, mask, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured mask over the image (background and void pixels left unblended)."""
    img = to_rgb(image).astype(np.float32)
    m = _np(mask)
    col = colorize(m).astype(np.float32)
    a = np.where(((m > 0) & (m != 255))[..., None], alpha, 0.0)
    return (img * (1 - a) + col * a).round().astype(np.uint8)


def show_grid(images: Sequence, masks: Sequence | None = None, preds: Sequence | None = None,
              titles: Sequence[str] | None = None, class_names: Sequence[str] = VOC_CLASSES,
              legend: bool = True, size: float = 2.2) -> Figure:
    """One row per example: image, ground truth, prediction (those given), plus a class legend
    for the ids that appear."""
    cols = [("image", images)] + ([("ground truth", masks)] if masks is not None else []) + \
           ([("prediction", preds)] if preds is not None else [])
    n = len(images)
    fig, axes = _figure(n, len(cols), (size * len(cols) + (1.6 if legend else 0), size * n))
    seen: set[int] = set()
    for i in range(n):
        for j, (name, seq) in enumerate(cols):
            ax = axes[i, j]
            if name == "image":
                ax.imshow(to_rgb(seq[i]))
            else:
                m = _np(seq[i])
                seen.update(int(v) for v in np.unique(m))
                ax.imshow(colorize(m), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(name if not titles else titles[j], fontsize=9)
    if legend and seen:
        _legend(fig, sorted(seen), class_names)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1) if legend else None)
    return fig


def _legend(fig: Figure, ids: Sequence[int], class_names: Sequence[str]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=VOC_PALETTE[i] / 255,
                     label="void (255)" if i == 255 else
                     (class_names[i] if i < len(class_names) else str(i))) for i in ids]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)


def plot_confusion_matrix(mat, class_names: Sequence[str] | None = None,
                          normalize: bool = True, title: str = "confusion matrix") -> Figure:
    """Heatmap of a ``C x C`` confusion matrix (rows = target, columns = prediction); with
    ``normalize`` each row is divided by its total, so the diagonal shows per-class recall."""
    m = _np(mat).astype(np.float64)
    if normalize:
        m = m / np.maximum(m.sum(1, keepdims=True), 1)
    c = m.shape[0]
    names = list(class_names or range(c))[:c]
    fig, axes = _figure(1, 1, (1.2 + 0.4 * c, 1.0 + 0.4 * c))
    ax = axes[0, 0]
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(c), names, rotation=90, fontsize=7)
    ax.set_yticks(range(c), names, fontsize=7)
    ax.set_xlabel("prediction"), ax.set_ylabel("target"), ax.set_title(title, fontsize=9)
    if c <= 12:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}", ha="center",
                        va="center", fontsize=6, color="white" if m[i, j] > 0.5 * m.max() else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_curves(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
                keys: Sequence[str] | None = None, title: str = "training") -> Figure:
    """Training curves, one panel per key (e.g. ``loss``, ``miou``, ``lr``). ``history`` is a
    dict of lists or a list of per-epoch dicts (as :func:`minseg.train.fit` returns)."""
    if not isinstance(history, Mapping):
        rows = list(history)
        history = {k: [r.get(k, float("nan")) for r in rows] for k in (rows[0] if rows else {})}
    if keys is None:      # the curves worth a panel; timing columns only when asked for
        keys = [k for k in ("loss", "val_loss", "miou", "pixel_acc", "lr") if k in history]
        keys = keys or [k for k in history if k not in ("epoch", "step")]
    fig, axes = _figure(1, max(1, len(keys)), (3.2 * max(1, len(keys)), 2.6))
    axes = axes[0]
    x = history.get("epoch") or list(range(1, len(next(iter(history.values()), [])) + 1))
    for ax, k in zip(axes, keys):
        ax.plot(x[:len(history[k])], history[k], marker="o", ms=3)
        ax.set_title(k, fontsize=9), ax.set_xlabel("epoch"), ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig

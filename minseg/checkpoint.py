"""Checkpoints: atomic writes, safe reads, RNG states, and rebuilding a model from a file.

:func:`minseg.train.fit` writes ``<checkpoint_dir>/last.pt`` with everything a run needs to go
on exactly where it stopped: model, optimizer, gradient scaler, schedule position, the
position inside the epoch, the history so far and every global RNG state (Python, NumPy, torch,
CUDA; one set per DDP rank). Files are read with ``torch.load(weights_only=True)``: plain data and
tensors only, so opening a checkpoint cannot run code.
"""
from __future__ import annotations

import os
import random
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn

from minseg import config

__all__ = ["CHECKPOINT_NAME", "CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint",
           "latest_checkpoint", "load_model_from_checkpoint", "restore_training"]

CHECKPOINT_NAME = "last.pt"  # fit writes <checkpoint_dir>/last.pt (atomically replaced)
CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | os.PathLike, **state) -> Path:
    """``torch.save(state, path)`` atomically: write a temporary file next to ``path``, flush it
    to disk, then ``os.replace`` it over ``path``. A crash or exception at any moment leaves
    either the previous file or the new one, never a partial one (and no temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows (same directory)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: tensors and
    plain Python data only, so loading a file cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file or one with arbitrary pickled objects
        raise ValueError(f"cannot read checkpoint {path}: {e}") from e


def latest_checkpoint(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    """The checkpoint :func:`fit` would resume from: ``<dir>/last.pt`` if present, else the
    newest ``*.pt`` in ``checkpoint_dir``; ``None`` when there is none."""
    if checkpoint_dir is None:
        return None
    d = Path(checkpoint_dir)
    if (d / CHECKPOINT_NAME).is_file():
        return d / CHECKPOINT_NAME
    files = [p for p in d.glob("*.pt") if p.is_file() and not p.name.startswith(".")]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def load_model_from_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                               ) -> tuple[nn.Module, dict]:
    """Rebuild a registered model from a checkpoint: ``(model in eval mode, metadata)``.

    Needs ``meta["model_name"]`` in the checkpoint: :func:`fit` records it when the model has a
    ``minseg_name`` attribute (and ``minseg_kwargs``) or when ``meta=`` was passed to
    :func:`fit`. The model is built with ``minseg.models.build_model(name, num_classes,
    **kwargs)`` and its weights loaded strictly.
    """
    ckpt = load_checkpoint(path, map_location)
    meta = dict(ckpt.get("meta") or {})
    name = meta.get("model_name")
    if not name:
        raise ValueError(f"checkpoint {path} does not record which model it holds (no "
                         f"meta['model_name']); build the model yourself and call "
                         f"model.load_state_dict(load_checkpoint(path)['model'])")
    try:
        from minseg.models import build_model
    except ImportError as e:  # pragma: no cover - the registry ships with minseg
        raise ValueError(f"cannot rebuild {name!r}: minseg.models is unavailable ({e})") from e
    model = build_model(name, meta["num_classes"], **dict(meta.get("model_kwargs") or {}))
    _load_model_state(model, ckpt["model"], path)
    return model.eval(), meta


def _load_model_state(model: nn.Module, state: Mapping, path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path} does not fit this model "
                         f"({type(model).__name__}): {str(e).splitlines()[0]} ...") from None


def plain_data(value):
    """``value`` if it is plain data that ``torch.load(weights_only=True)`` can read, else None."""
    if value is None:
        return None
    for kind in (bool, int, float, str):  # also subclasses, e.g. numpy.float64, TorchVersion
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        items = [plain_data(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) else items
    if isinstance(value, Mapping):
        out = {str(k): plain_data(v) for k, v in value.items()}
        return None if any(out[str(k)] is None and v is not None for k, v in value.items()) else out
    return None


def model_meta(model: nn.Module, num_classes: int, dataset, extra: Mapping | None) -> dict:
    meta = {"num_classes": num_classes,
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "model_name": getattr(model, "minseg_name", None),
            "model_kwargs": plain_data(dict(getattr(model, "minseg_kwargs", None) or {})),
            "classes": plain_data(list(getattr(dataset, "classes", None) or [])) or None,
            "torch_version": str(torch.__version__)}
    meta.update(plain_data(dict(extra or {})) or {})
    return meta


def profile_dict(profile) -> dict | None:
    if profile is None:
        try:
            profile = config.profile()
        except ValueError:
            return None
    return plain_data(asdict(profile)) if is_dataclass(profile) else plain_data(dict(profile))


def rng_state() -> dict:
    """Every global RNG state, in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_training(path: Path, model: nn.Module, opt, scaler, num_classes: int, lr: float,
                     rank: int, world: int) -> dict:
    """Load model, optimizer, scaler and this rank's RNG states from ``path`` (checking that it
    fits this run); return the checkpoint (its ``position`` and ``history`` say where to go on)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("meta", {}).get("num_classes") not in (None, num_classes):
        raise ValueError(f"checkpoint {path} was trained with num_classes="
                         f"{ckpt['meta']['num_classes']}, not {num_classes}")
    _load_model_state(model, ckpt["model"], path)
    try:
        opt.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as e:
        raise ValueError(f"checkpoint {path}: its optimizer state does not fit this run's "
                         f"optimizer ({e})") from None
    for g in opt.param_groups:
        g["initial_lr"] = lr  # this call's lr is the base of the schedule
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt["rng"]
    set_rng_state(rngs[rank] if len(rngs) == world else rngs[0])
    return ckpt


"""The training engine: :func:`fit` and :func:`evaluate`, checkpoints, resume and torchrun DDP.

One small loop in the spirit of nanoGPT's ``train.py``: plain functions, explicit arguments,
no framework. Every notebook, the demo and ``python -m minseg train`` train with it.

>>> history = fit(model, train_loader, val_loader, num_classes=21, epochs=10)   # doctest: +SKIP
>>> history.last["miou"], history.best("miou")["epoch"]                         # doctest: +SKIP
>>> evaluate(model, val_loader, 21)["miou"]                                     # doctest: +SKIP

What happens in one step: images go to the device (``channels_last`` on CUDA), the forward pass
runs under autocast when ``amp`` is on (bf16 when the GPU supports it, else fp16 with a
``GradScaler``), the loss is computed in float32 on the logits, gradients are (optionally)
clipped, the learning rate of the step is set by hand from the schedule (warm-up, then poly or
cosine decay), and the optimizer steps.

**Determinism (CPU).** ``fit`` calls :func:`minseg.config.seed_everything` with ``seed``
(``seed + rank`` under DDP), which fixes dropout and anything else drawing from the global
RNGs (e.g. augmentation when ``num_workers=0``). The *data order* does not come from the
caller's loader: ``fit`` rebuilds the loader around a sampler whose permutation for epoch ``e``
is ``torch.randperm(n, generator=Generator().manual_seed(seed + e))`` (a
``DistributedSampler``, also with one process) and gives the loader a generator re-seeded from
``(seed, epoch, rank)`` at every epoch (it seeds the worker processes). So the same seed gives
the same history on CPU whatever the loader's own ``shuffle`` generator was, and the order of
epoch ``e`` can be rebuilt from ``(seed, e)`` alone, which is what makes resume exact.
Model initialisation is the caller's job (seed before building the model). GPUs run
non-deterministic kernels (cuDNN autotuning) for speed.

**Resume.** A checkpoint holds the model, optimizer, scaler, schedule position, epoch and step
inside the epoch, the partial epoch's statistics, the history so far, and the RNG states
(Python, NumPy, torch, CUDA; every rank's) taken right after the step. ``resume=True`` restores
all of it and restarts the data at the same place: the sampler rebuilds epoch ``e``'s order from
``(seed, e)`` and skips the batches already seen. With ``num_workers=0`` the run then continues
bit for bit as if it had never stopped (tested on CPU with ``torch.equal`` on every weight).
With worker processes the order is still exact but random augmentation inside the workers
restarts its streams.

**Several GPUs or machines.** Run the same script under ``torchrun``; ``fit`` initialises the
process group (NCCL on CUDA, Gloo on CPU) from the environment, wraps the model in
``DistributedDataParallel``, shards the data with a ``DistributedSampler`` (batch size, collate
function and workers kept), averages the logged loss over ranks, sums confusion matrices with
``all_reduce`` and lets rank 0 alone print and write checkpoints.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import (DataLoader, Dataset, DistributedSampler, IterableDataset,
                              RandomSampler, Sampler, SequentialSampler)

from minseg import config
from minseg.infer import _logits
from minseg.validate import IGNORE_INDEX, check_images, check_mask, check_num_classes

__all__ = [
    "History", "fit", "evaluate", "lr_factor", "save_checkpoint", "load_checkpoint",
    "latest_checkpoint", "load_model_from_checkpoint", "CHECKPOINT_NAME",
]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("poly", "cosine", "constant")
CHECKPOINT_NAME = "last.pt"  # fit writes <checkpoint_dir>/last.pt (atomically replaced)
CHECKPOINT_FORMAT = 1
QUIET_ENV = "MINSEG_QUIET"


# --------------------------------------------------------------------------------------------
# history
# --------------------------------------------------------------------------------------------
class History(list):
    """What :func:`fit` returns: a ``list`` of per-epoch dicts, plus a few conveniences.

    Every record has ``epoch`` (1-based), ``step`` (optimizer steps so far), ``loss`` (mean
    training loss of the epoch, averaged over ranks), ``lr`` (at the end of the epoch),
    ``images_per_s`` (training throughput, all ranks), ``time_s`` (wall-clock since the start of
    training, across resumes) and ``epoch_time_s``; with validation data also ``miou``,
    ``pixel_acc``, ``mdice`` and ``val_loss`` (NaN in epochs that were not evaluated). An epoch cut
    short by ``max_steps``, the time budget or a callback is recorded too (``steps_in_epoch``
    tells how far it got).

    ``history["miou"]`` is the column as a list; ``last`` the final record; ``best("miou")`` the
    record with the highest value (lowest for keys containing ``loss`` or ``time``).
    ``stopped_early`` is True when the time budget (or a callback) ended training before
    ``epochs``/``max_steps``, ``stop_reason`` says why training ended and ``total_time_s`` how
    long it took. Pass it straight to :func:`minseg.viz.plot_curves`.
    """

    def __init__(self, records: Iterable[Mapping] = (), *, stopped_early: bool = False,
                 stop_reason: str | None = None, total_time_s: float = 0.0) -> None:
        super().__init__(dict(r) for r in records)
        self.stopped_early = stopped_early
        self.stop_reason = stop_reason
        self.total_time_s = total_time_s

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.column(key)
        return super().__getitem__(key)

    @property
    def last(self) -> dict | None:
        """The final record (``None`` when empty)."""
        return super().__getitem__(-1) if self else None

    def column(self, key: str) -> list:
        """``[record[key] for record in self]`` (NaN where a record lacks the key)."""
        return [r.get(key, float("nan")) for r in self]

    def best(self, key: str = "miou", mode: str | None = None) -> dict | None:
        """The record with the best finite ``key``: ``mode="max"`` (default, except ``"min"`` for
        keys containing ``loss`` or ``time``)."""
        mode = mode or ("min" if ("loss" in key or "time" in key) else "max")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        rows = [r for r in self if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if not rows:
            return None
        return (max if mode == "max" else min)(rows, key=lambda r: r[key])

    def state_dict(self) -> dict:
        return {"records": [dict(r) for r in self], "stopped_early": self.stopped_early,
                "stop_reason": self.stop_reason, "total_time_s": self.total_time_s}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "History":
        return cls(state.get("records", ()), stopped_early=state.get("stopped_early", False),
                   stop_reason=state.get("stop_reason"),
                   total_time_s=state.get("total_time_s", 0.0))

    def __repr__(self) -> str:
        keys = [k for k in ("epoch", "step", "loss", "lr", "miou", "images_per_s", "time_s")
                if any(k in r for r in self)]
        rows = ["  ".join(f"{k}={_fmt(r.get(k))}" for k in keys) for r in self]
        tail = f"stopped_early={self.stopped_early}, stop_reason={self.stop_reason!r}"
        return "History([\n  " + "\n  ".join(rows) + f"\n], {tail})" if rows else f"History([], {tail})"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# --------------------------------------------------------------------------------------------
# learning-rate schedule
# --------------------------------------------------------------------------------------------
def lr_factor(step: int, total_steps: int, schedule: str = "poly", warmup_steps: int = 0,
              power: float = 0.9, progress: float | None = None) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based).

    * linear warm-up over the first ``warmup_steps`` steps (Goyal et al. 2017,
      https://arxiv.org/abs/1706.02677): ``(step + 1) / warmup_steps``;
    * then ``"poly"``: ``(1 - p) ** power``, the DeepLab schedule (Chen et al. 2016,
      https://arxiv.org/abs/1606.00915, section 4.1); ``"cosine"``: ``(1 + cos(pi p)) / 2``
      (SGDR, Loshchilov & Hutter, https://arxiv.org/abs/1608.03983, without restarts);
      ``"constant"``: 1,

    where ``p`` in [0, 1] is the progress after warm-up, ``(step - warmup) / (total - warmup)``,
    or ``progress`` when given (:func:`fit` passes the fraction of the time budget used when
    ``budget_schedule=True``).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if progress is None:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    p = min(max(progress, 0.0), 1.0)
    if schedule == "poly":
        return (1.0 - p) ** power
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}; valid schedules are {', '.join(SCHEDULES)}")


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
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


def _plain(value):
    """``value`` if it is plain data that ``torch.load(weights_only=True)`` can read, else None."""
    if value is None:
        return None
    for kind in (bool, int, float, str):  # also subclasses, e.g. numpy.float64, TorchVersion
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) else items
    if isinstance(value, Mapping):
        out = {str(k): _plain(v) for k, v in value.items()}
        return None if any(out[str(k)] is None and v is not None for k, v in value.items()) else out
    return None


def _model_meta(model: nn.Module, num_classes: int, dataset, extra: Mapping | None) -> dict:
    meta = {"num_classes": num_classes,
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "model_name": getattr(model, "minseg_name", None),
            "model_kwargs": _plain(dict(getattr(model, "minseg_kwargs", None) or {})),
            "classes": _plain(list(getattr(dataset, "classes", None) or [])) or None,
            "torch_version": str(torch.__version__)}
    meta.update(_plain(dict(extra or {})) or {})
    return meta


def _profile_dict(profile) -> dict | None:
    if profile is None:
        try:
            profile = config.profile()
        except ValueError:
            return None
    return _plain(asdict(profile)) if is_dataclass(profile) else _plain(dict(profile))


def _rng_state() -> dict:
    """Every global RNG state, in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# distributed helpers (all no-ops in a single process)
# --------------------------------------------------------------------------------------------
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)


def _init_distributed(device: torch.device | None) -> None:
    """Under ``torchrun`` (``WORLD_SIZE > 1``) initialise the default process group once:
    NCCL when training on CUDA, Gloo otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")


def _all_sum(*values: float | int, device: torch.device) -> list[float]:
    """Sum scalars over ranks (one collective for all of them)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if _distributed():
        dist.all_reduce(t)
    return t.tolist()


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
class _EpochSampler(DistributedSampler):
    """A ``DistributedSampler`` (with one replica when not distributed) that can start mid-epoch.

    Epoch ``e``'s order is a function of ``(seed, e)`` only; ``start`` skips the first indices of
    this rank's share (set by :func:`fit` when resuming in the middle of an epoch).
    """

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


class _ShardSampler(Sampler):
    """Rank ``r`` of ``w`` gets indices ``r, r + w, r + 2w, ...``: every sample exactly once over
    all ranks (a ``DistributedSampler`` pads with repeats, which would count pixels twice)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = range(rank, n, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _rebuild(loader: DataLoader, sampler: Sampler, generator: torch.Generator | None) -> DataLoader:
    """The same loader (batch size, collate, workers, pinning, drop_last) with another sampler."""
    kw = dict(batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
              collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
              drop_last=loader.drop_last, timeout=loader.timeout,
              worker_init_fn=loader.worker_init_fn, generator=generator,
              multiprocessing_context=loader.multiprocessing_context,
              persistent_workers=loader.persistent_workers)
    if loader.num_workers > 0:
        kw["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(loader.dataset, **kw)


def _reseedable(loader: DataLoader) -> bool:
    return (loader.batch_size is not None and not isinstance(loader.dataset, IterableDataset)
            and isinstance(loader.sampler, (RandomSampler, SequentialSampler, DistributedSampler)))


def _train_loader(data, seed: int, rank: int, world: int):
    """``(loader, sampler)``: ``data`` with an :class:`_EpochSampler` (``sampler`` is ``None``
    when the data's own order must be kept, e.g. a ``WeightedRandomSampler`` or a list of
    batches)."""
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        data = DataLoader(data, batch_size=config.profile().batch_size, shuffle=True)
    if isinstance(data, DataLoader) and _reseedable(data):
        shuffle = not isinstance(data.sampler, SequentialSampler)
        if isinstance(data.sampler, DistributedSampler):
            shuffle = data.sampler.shuffle
        sampler = _EpochSampler(data.dataset, world, rank, shuffle, seed)
        return _rebuild(data, sampler, torch.Generator()), sampler
    if world > 1:
        raise ValueError(f"under DDP fit shards the data with a DistributedSampler, but this data "
                         f"({type(data).__name__}) has a custom sampler or no dataset to sample "
                         f"from; pass a DataLoader with shuffle=True/False over a map-style Dataset")
    return data, None


def _eval_batches(data, rank: int, world: int):
    """``data`` restricted to this rank's share of the samples (everything when not distributed)."""
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        data = DataLoader(data, batch_size=config.profile().batch_size)
    if world == 1:
        return data
    if isinstance(data, DataLoader) and data.batch_size is not None and \
            not isinstance(data.dataset, IterableDataset):
        if isinstance(data.sampler, DistributedSampler):
            return data  # already sharded by the caller
        return _rebuild(data, _ShardSampler(len(data.dataset), rank, world), None)
    return [b for i, b in enumerate(data) if i % world == rank]  # shard whole batches


def _split(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        return batch["image"], batch["mask"]
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ValueError(f"a batch must be an (images, masks) pair, got {type(batch).__name__}")


def _check_first_batch(images, masks, logits, num_classes: int) -> None:
    """Clear errors for the usual mistakes, raised before the first optimizer step."""
    check_images(images, "images", channels=None)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape N,H,W; got {tuple(masks.shape)}")
    if logits.ndim != 4:
        raise ValueError(f"the model must return N,C,H,W logits; got shape {tuple(logits.shape)}")
    if logits.shape[1] != num_classes:
        raise ValueError(f"the model outputs {logits.shape[1]} classes but num_classes="
                         f"{num_classes}; build the model with num_classes={num_classes}")
    if logits.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"the model's output is {tuple(logits.shape[-2:])} pixels but the masks "
                         f"are {tuple(masks.shape[-2:])}; upsample the logits to the input size "
                         f"(F.interpolate(..., mode='bilinear', align_corners=False))")
    check_mask(masks, num_classes, "masks")  # e.g. data with more classes than num_classes


# --------------------------------------------------------------------------------------------
# devices, precision, progress
# --------------------------------------------------------------------------------------------
def _resolve_device(device) -> torch.device:
    dev = config.device(str(device)) if device is not None else config.device()
    if dev.type == "cuda" and _distributed():  # one GPU per process under torchrun
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


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:
        return False


def _show_progress(progress: bool | None) -> bool:
    """tqdm bars on rank 0 only; by default only in a terminal or a notebook, never under
    pytest, with ``MINSEG_QUIET=1`` or in the ``smoke`` profile."""
    if _rank_world()[0] != 0:
        return False
    if progress is not None:
        return bool(progress)
    if os.environ.get(QUIET_ENV, "").strip() not in ("", "0"):
        return False
    if os.environ.get(config.PROFILE_ENV, "").strip().lower() == "smoke":
        return False
    if "PYTEST_CURRENT_TEST" in os.environ:
        return False
    return _in_notebook() or sys.stderr.isatty()


def _bar(show: bool, **kw):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(**{"dynamic_ncols": True, "leave": True, **kw})


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: nn.Module, data, num_classes: int, *, device=None,
             scales: Sequence[float] = (1.0,), flip: bool = False, amp: bool | None = None,
             progress: bool | None = None, loss: str | Callable | None = None,
             channels_last: bool | None = None) -> dict:
    """Segmentation scores of ``model`` on ``data`` from one dataset-wide confusion matrix.

    ``data`` is a ``DataLoader`` (or any iterable) of ``(images N,3,H,W, masks N,H,W)`` batches,
    or a ``Dataset``. Pixels whose mask is 255 are ignored. With ``scales != (1.0,)`` or
    ``flip`` the prediction is :func:`minseg.infer.predict`'s test-time augmentation.
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
    tta = tuple(scales) != (1.0,) or flip
    loss_fn = _resolve_loss(loss) if loss is not None and not tta else None
    if tta:
        from minseg.infer import predict
    rank, world = _rank_world()
    batches = _eval_batches(data, rank, world)
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
                out = (predict(net, images, scales=tuple(scales), flip=flip) if tta
                       else _logits(net(images)))
            out = out.float()
            if loss_fn is not None:
                loss_sum += loss_fn(out, masks).double() * images.shape[0]
            n_images += images.shape[0]
            cm.update(out, masks)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
        net.train(was_training)
    cm.all_reduce()
    loss_total, n_total = _all_sum(loss_sum.item(), n_images, device=dev)
    if n_total == 0:
        raise ValueError("evaluate got no data: the dataset or loader is empty")
    result = cm.compute()
    result.update(confusion_matrix=cm.mat.cpu(), images=int(n_total),
                  time_s=time.perf_counter() - t0)
    if loss_fn is not None:
        result["loss"] = loss_total / n_total
    return result


def _len(x) -> int | None:
    try:
        return len(x)
    except TypeError:
        return None


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------
def _resolve_loss(loss: str | Callable) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if callable(loss):
        return loss
    if not isinstance(loss, str):
        raise ValueError(f"loss must be a name or a callable(logits, target), got {loss!r}")
    from minseg.losses import get_loss

    return get_loss(loss)  # ValueError listing the valid names for an unknown one


def _make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _check_args(num_classes, epochs, max_steps, optimizer, schedule, lr, warmup_steps,
                grad_clip, log_every, eval_every, checkpoint_every, time_budget_s) -> None:
    check_num_classes(num_classes)
    if epochs is None and max_steps is None:
        raise ValueError("say how long to train: pass epochs=... or max_steps=... (or both; "
                         "training stops at whichever comes first)")
    for name, v in (("epochs", epochs), ("max_steps", max_steps),
                    ("checkpoint_every", checkpoint_every)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid optimizers are "
                         f"{', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid schedules are {', '.join(SCHEDULES)}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be None or > 0, got {grad_clip!r}")
    if log_every < 1 or eval_every < 1:
        raise ValueError(f"log_every and eval_every must be >= 1, got {log_every}, {eval_every}")
    if time_budget_s is not None and not time_budget_s > 0:
        raise ValueError(f"time_budget_s must be None or > 0 seconds, got {time_budget_s!r}")


def _notify(callbacks, event: str, state: dict) -> bool:
    for cb in callbacks:
        cb(event, state)
    return bool(state.get("stop"))


def fit(model: nn.Module, train_data, val_data=None, *, num_classes: int,
        epochs: int | None = None, max_steps: int | None = None,
        loss: str | Callable = "ce", optimizer: str = "adamw", lr: float = 1e-3,
        weight_decay: float = 1e-4, momentum: float = 0.9, schedule: str = "poly",
        warmup_steps: int = 0, power: float = 0.9, grad_clip: float | None = None,
        device: str | torch.device | None = None, amp: bool | None = None,
        channels_last: bool | None = None, seed: int = 0, log_every: int = 10,
        eval_every: int = 1, checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None, resume: bool | str | os.PathLike = False,
        time_budget_s: float | None = None, budget_schedule: bool = False,
        clock: Callable[[], float] = time.perf_counter, callbacks: Sequence[Callable[[str, dict], None]] = (), progress: bool | None = None,
        profile=None, meta: Mapping | None = None) -> History:
    """Train ``model`` on ``train_data`` and return its :class:`History`.

    Args:
        model: maps ``N,3,H,W`` images to ``N,num_classes,H,W`` logits (a dict with ``"out"``,
            as torchvision's models return, works too). Trained in place.
        train_data: a ``DataLoader`` of ``(images, masks)`` batches (masks ``int64 N,H,W``,
            255 = ignore) or a ``Dataset`` (batched with the profile's batch size). fit rebuilds
            the loader around its own seeded sampler (see the module docstring); a loader with a
            custom sampler (e.g. ``WeightedRandomSampler``) or a plain list of batches is used
            as it is.
        val_data: evaluated with :func:`evaluate` every ``eval_every`` epochs and at the end.
        num_classes: number of classes, checked against the model's output and the masks.
        epochs, max_steps: train for this many epochs and/or optimizer steps (first reached).
        loss: a name for :func:`minseg.losses.get_loss` (``"ce"``, ``"focal"``, ``"dice"``,
            ``"ce+dice"``, ...) or ``callable(logits, target) -> scalar``; computed in float32.
        optimizer, lr, weight_decay, momentum: ``"adamw"`` (Loshchilov & Hutter,
            https://arxiv.org/abs/1711.05101) or ``"sgd"`` with momentum.
        schedule, warmup_steps, power: learning rate per step, see :func:`lr_factor`.
        grad_clip: clip the global gradient norm to this value.
        device, amp, channels_last: default CUDA/MPS/CPU via :func:`minseg.config.device`;
            mixed precision and channels_last only on CUDA (bf16 where supported, else fp16 with
            a ``GradScaler``).
        seed: seeds dropout, augmentation and the data order (not the model's initial weights).
        log_every: refresh the progress bar's loss every this many steps.
        checkpoint_dir: write ``<dir>/last.pt`` (atomically) after every epoch, every
            ``checkpoint_every`` steps and at the end; ``resume=True`` continues from
            :func:`latest_checkpoint` (a path continues from that file; no checkpoint yet: start
            from scratch).
        time_budget_s: stop after the step during which the wall-clock time (since the first
            call, across resumes) reaches the budget minus the last evaluation's duration, then
            evaluate once; marks ``history.stopped_early``. ``budget_schedule=True`` also runs
            the LR schedule on the fraction of the budget used (so a budget-limited run still
            ends with a decayed LR; not deterministic). ``clock`` is the time source of the
            budget: wall-clock by default; e.g. ``time.process_time`` gives a CPU-time budget
            that other processes on a shared machine cannot eat.
        callbacks: ``callback(event, state)`` with ``event`` in ``"step"``, ``"epoch"``,
            ``"end"``; ``state`` has ``model``, ``optimizer``, ``step``, ``epoch``, ``loss`` (a
            0-d tensor at ``"step"``), ``lr``, ``history``, ``elapsed_s``; setting
            ``state["stop"] = True`` ends training after the current step.
        progress: tqdm bars (None: see :func:`_show_progress`).
        profile: the :class:`minseg.config.Profile` to record in checkpoints (default: active).
        meta: extra metadata for checkpoints, e.g. ``{"model_name": "unet", "model_kwargs":
            {"width": 16}}`` so that :func:`load_model_from_checkpoint` can rebuild the model.
    """
    optimizer = optimizer.lower() if isinstance(optimizer, str) else optimizer
    schedule = schedule.lower() if isinstance(schedule, str) else schedule
    _check_args(num_classes, epochs, max_steps, optimizer, schedule, lr, warmup_steps, grad_clip,
                log_every, eval_every, checkpoint_every, time_budget_s)
    loss_fn = _resolve_loss(loss)
    callbacks = [callbacks] if callable(callbacks) else list(callbacks)
    n_data = _len(getattr(train_data, "dataset", train_data))
    if n_data == 0 or _len(train_data) == 0:
        raise ValueError("train_data is empty" + (
            f" (no full batch: {n_data} samples, batch_size {train_data.batch_size}, "
            f"drop_last=True)" if n_data else ""))
    if val_data is not None and _len(getattr(val_data, "dataset", val_data)) == 0:
        raise ValueError("val_data is empty; pass None to train without validation")

    # --- devices, processes, precision
    _init_distributed(config.device(str(device)) if device is not None else None)
    rank, world = _rank_world()
    dev = _resolve_device(device)
    amp_dtype = _amp_dtype(dev, amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    fmt = torch.channels_last if (dev.type == "cuda" if channels_last is None else channels_last) \
        else torch.contiguous_format
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    config.seed_everything(seed + rank)

    # --- model, optimizer, data
    model.to(dev, memory_format=fmt)
    net = nn.parallel.DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None) if world > 1 else model
    opt = _make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr,
                          weight_decay, momentum)
    for g in opt.param_groups:
        g["initial_lr"] = lr
    loader, sampler = _train_loader(train_data, seed, rank, world)
    steps_per_epoch = _len(loader)
    if not steps_per_epoch:
        raise ValueError("train_data must have a length (a DataLoader, a Dataset or a list of "
                         "batches) and at least one batch")
    total_steps = min(max_steps or math.inf, (epochs or math.inf) * steps_per_epoch)
    meta = _model_meta(model, num_classes, getattr(train_data, "dataset", None), meta)
    run_args = _plain({"loss": loss if isinstance(loss, str) else repr(loss), "optimizer": optimizer,
                       "lr": lr, "weight_decay": weight_decay, "schedule": schedule,
                       "epochs": epochs, "max_steps": max_steps, "seed": seed,
                       "batch_size": getattr(loader, "batch_size", None), "world_size": world})

    # --- where training starts: step 0, or where the checkpoint left off
    pos, history = _Position(), History()
    path = latest_checkpoint(checkpoint_dir) if resume is True else (Path(resume) if resume else None)
    if path is not None:
        pos, history = _restore(path, model, opt, scaler, num_classes, lr, rank, world)
        if pos.step < total_steps and pos.in_epoch and history and \
                history.last.get("epoch") == pos.epoch + 1:
            history.pop()  # a partial epoch's record: rewritten when that epoch ends
    t_start, c_start = time.perf_counter(), clock()

    def elapsed() -> float:  # wall-clock training time, including earlier calls (resume)
        return pos.elapsed_s + time.perf_counter() - t_start

    def used() -> float:  # the time budget used so far, measured with `clock`
        return pos.used_s + clock() - c_start

    def set_lr(step: int) -> float:
        progress_ = None
        if budget_schedule and time_budget_s:
            progress_ = max((step - warmup_steps) / max(1, total_steps - warmup_steps),
                            used() / max(1e-9, time_budget_s - pos.last_eval_s))
        factor = lr_factor(step, total_steps, schedule, warmup_steps, power, progress_)
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * factor
        return opt.param_groups[0]["lr"]

    def save() -> None:
        """Every rank contributes its RNG states; rank 0 writes the file."""
        if checkpoint_dir is None:
            return
        rngs = _gather(_rng_state(), world)
        if rank == 0:
            history.total_time_s = elapsed()
            save_checkpoint(
                Path(checkpoint_dir) / CHECKPOINT_NAME, format=CHECKPOINT_FORMAT,
                model=model.state_dict(), optimizer=opt.state_dict(),
                scaler=scaler.state_dict() if scaler.is_enabled() else None,
                scheduler={"schedule": schedule, "step": pos.step, "warmup_steps": warmup_steps,
                           "total_steps": float(total_steps), "power": power},
                epoch=pos.epoch, step=pos.step, position={**asdict(pos), "elapsed_s": elapsed(), "used_s": used()},
                history=history.state_dict(), rng=rngs, profile=_profile_dict(profile),
                meta=meta, args=run_args)

    def epoch_record(with_eval: bool, lr_now: float) -> dict:
        """The epoch's statistics, summed over ranks, and its validation scores."""
        loss_sum, n_steps, n_images = _all_sum(pos.loss_sum, pos.steps, pos.images, device=dev)
        record = {"epoch": pos.epoch + 1, "step": pos.step, "loss": loss_sum / max(1.0, n_steps),
                  "lr": lr_now, "images_per_s": n_images / max(1e-9, pos.time_s),
                  "epoch_time_s": pos.time_s, "steps_in_epoch": pos.in_epoch}
        if val_data is not None:
            res = {}
            if with_eval:
                cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] \
                    if dev.type == "cuda" else []
                with torch.random.fork_rng(devices=cuda):  # must not shift the training RNGs
                    res = evaluate(model, val_data, num_classes, device=dev,
                                   amp=amp_dtype is not None, progress=False, loss=loss_fn,
                                   channels_last=fmt == torch.channels_last)
                pos.last_eval_s = res["time_s"]
            nan = float("nan")
            record.update(miou=res.get("miou", nan), pixel_acc=res.get("pixel_acc", nan),
                          mdice=res.get("mdice", nan), val_loss=res.get("loss", nan))
        record["time_s"] = elapsed()
        return record

    def callback_state(loss_value, lr_now: float) -> dict:
        return {"model": model, "optimizer": opt, "step": pos.step, "epoch": pos.epoch + 1,
                "loss": loss_value, "lr": lr_now, "history": history, "elapsed_s": elapsed(),
                "stop": False}

    # --- the loop: one pass per epoch (the first one may start part-way through)
    stop = "max_steps" if pos.step >= total_steps else None
    lr_now, first = opt.param_groups[0]["lr"], True
    bar = _bar(_show_progress(progress), unit="step", initial=pos.step,
               total=None if math.isinf(total_steps) else int(total_steps))
    try:
        while stop is None:
            net.train()
            if bar is not None:
                bar.set_description(f"epoch {pos.epoch + 1}" + (f"/{epochs}" if epochs else ""))
            batches = _epoch_batches(loader, sampler, pos.epoch, pos.in_epoch, seed, rank)
            t0 = time.perf_counter()
            loss_acc = torch.zeros((), dtype=torch.float64, device=dev)  # no host sync per step
            for batch in batches:
                images, masks = _split(batch)
                images = images.to(dev, non_blocking=True, memory_format=fmt)
                masks = masks.to(dev, non_blocking=True)
                lr_now = set_lr(pos.step)
                loss_value = _train_step(net, opt, scaler, loss_fn, images, masks, amp_dtype,
                                         grad_clip, check=num_classes if first else None)
                first = False
                pos.step, pos.in_epoch, pos.steps = pos.step + 1, pos.in_epoch + 1, pos.steps + 1
                pos.images += images.shape[0]
                loss_acc += loss_value.double()
                if bar is not None:
                    if pos.step % log_every == 0:
                        bar.set_postfix(loss=f"{loss_value.item():.4f}", lr=f"{lr_now:.2e}")
                    bar.update()

                asked = bool(callbacks) and _notify(callbacks, "step",
                                                    callback_state(loss_value, lr_now))
                if pos.step >= total_steps:
                    stop = "max_steps" if max_steps and pos.step >= max_steps else "epochs"
                elif time_budget_s is not None and used() + pos.last_eval_s >= time_budget_s:
                    stop = "time_budget"
                elif asked:
                    stop = "callback"
                if world > 1 and (time_budget_s is not None or callbacks):
                    stop = _agree(stop, dev)  # or a rank that stops alone would hang the others
                epoch_done = pos.in_epoch >= steps_per_epoch
                if stop or epoch_done:
                    break
                if checkpoint_every and pos.step % checkpoint_every == 0:
                    pos.time_s, t0 = pos.time_s + time.perf_counter() - t0, time.perf_counter()
                    pos.loss_sum += loss_acc.item()
                    loss_acc.zero_()
                    save()

            # --- end of an epoch, or of training part-way through one
            pos.time_s += time.perf_counter() - t0
            pos.loss_sum += loss_acc.item()
            epoch_done = pos.in_epoch >= steps_per_epoch
            if epoch_done and epochs is not None and pos.epoch + 1 >= epochs:
                stop = stop or "epochs"
            record = epoch_record(stop is not None or (epoch_done and (pos.epoch + 1) % eval_every == 0),
                                  lr_now)
            history.append(record)
            if bar is not None and "miou" in record:
                bar.set_postfix(loss=f"{record['loss']:.4f}", miou=f"{record['miou']:.3f}")
            if callbacks:
                asked = _notify(callbacks, "epoch", callback_state(record["loss"], lr_now))
                stop = stop or ("callback" if asked else None)
                if world > 1:
                    stop = _agree(stop, dev)
            if epoch_done:
                pos.next_epoch()
            history.stopped_early = stop in ("time_budget", "callback")
            history.stop_reason = stop
            save()
    finally:
        if bar is not None:
            bar.close()
    history.stopped_early = stop in ("time_budget", "callback")
    history.stop_reason = stop
    history.total_time_s = elapsed()
    if callbacks:
        _notify(callbacks, "end", {**callback_state(None, lr_now), "epoch": pos.epoch, "stop": True})
    return history


@dataclass
class _Position:
    """Where training stands: everything besides model, optimizer and RNGs that a checkpoint
    needs to continue exactly."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the current epoch, 0-based
    in_epoch: int = 0  # steps done in the current epoch
    elapsed_s: float = 0.0  # wall-clock training time of earlier calls (resume)
    used_s: float = 0.0  # time budget used by earlier calls (measured with fit's `clock`)
    last_eval_s: float = 0.0  # how long the last evaluation took (the time budget reserves it)
    loss_sum: float = 0.0  # the current epoch's statistics so far (this rank)
    steps: int = 0
    images: int = 0
    time_s: float = 0.0

    def next_epoch(self) -> None:
        self.epoch, self.in_epoch = self.epoch + 1, 0
        self.loss_sum, self.steps, self.images, self.time_s = 0.0, 0, 0, 0.0


def _train_step(net: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                loss_fn: Callable, images: torch.Tensor, masks: torch.Tensor,
                amp_dtype: torch.dtype | None, grad_clip: float | None,
                check: int | None = None) -> torch.Tensor:
    """One optimizer step; returns the detached loss. ``check=num_classes`` first validates the
    batch and the model's output (before anything is updated)."""
    with _autocast(images.device, amp_dtype):
        logits = _logits(net(images))
    if check is not None:
        _check_first_batch(images, masks, logits, check)
    loss = loss_fn(logits.float(), masks)  # the loss in float32, also under autocast
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # the scaler is a no-op unless fp16
    if grad_clip is not None:
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    return loss.detach()


def _epoch_batches(loader, sampler: _EpochSampler | None, epoch: int, in_epoch: int, seed: int,
                   rank: int):
    """Epoch ``epoch``'s batches after the first ``in_epoch`` (already done when resuming)."""
    if sampler is not None:
        sampler.set_epoch(epoch)
        sampler.start = in_epoch * loader.batch_size
        loader.generator.manual_seed(seed + 1_000_003 * epoch + 7919 * rank)  # worker seeds
        return iter(loader)
    if in_epoch and isinstance(loader, (list, tuple)):
        return iter(loader[in_epoch:])
    return iter(loader)  # a custom sampler: its own order (not resumable mid-epoch exactly)


def _restore(path: Path, model: nn.Module, opt, scaler, num_classes: int, lr: float, rank: int,
             world: int) -> tuple[_Position, History]:
    """Load model, optimizer, scaler and RNG states from ``path``; return position and history."""
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
    _set_rng_state(rngs[rank] if len(rngs) == world else rngs[0])
    return _Position(**ckpt["position"]), History.from_state_dict(ckpt["history"])


_STOPS = (None, "epochs", "max_steps", "time_budget", "callback")


def _agree(stop: str | None, device: torch.device) -> str | None:
    """The same stop decision on every rank (the "largest" one any rank made)."""
    t = torch.tensor([_STOPS.index(stop)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return _STOPS[int(t.item())]


def _gather(obj, world: int) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out

"""The training engine: :func:`fit`, the loop, and its run state.

One small loop in the spirit of nanoGPT's ``train.py``: plain functions, explicit arguments,
no framework. Every notebook, the demo and ``python -m minseg train`` train with it.
What it uses lives next door and is importable from here too: :func:`evaluate` in
:mod:`minseg.evaluation`, :class:`History` in :mod:`minseg.history`, the learning-rate schedule
:func:`lr_factor` in :mod:`minseg.schedule`, the progress bars in :mod:`minseg.progress`, and
:func:`batch_loss` with the per-batch device and precision helpers in :mod:`minseg.step`.

>>> history = fit(model, train_loader, val_loader, num_classes=21, max_steps=600)  # doctest: +SKIP
>>> history.last["miou"], history.best("miou")["epoch"]                         # doctest: +SKIP
>>> evaluate(model, val_loader, 21)["miou"]                                     # doctest: +SKIP

What happens in one step: a batch comes from the loader (a :class:`minseg.data.TensorLoader`
augments it on the training device), images go to the device (``channels_last`` on CUDA), the
forward pass runs under autocast when ``amp`` is on (bf16 when the GPU supports it, else fp16
with a ``GradScaler``), the loss is computed in float32 on the logits, gradients are
(optionally) clipped, the learning rate of the step is set by hand from the schedule (warm-up,
then poly or cosine decay) and the optimizer steps.

**Budgets are steps.** A run lasts ``max_steps`` optimizer steps (or ``epochs``), so the same
seed gives the same history on any machine of the same kind: bitwise on the CPU for a given
torch version, thread count and instruction set (AVX2 and AVX512 kernels round differently).
``time_budget_s`` is only a safety cap; a run it cuts short says so (a warning,
``history.stop_reason == "time_budget"``, ``history.cut_short``).

**Determinism.** ``fit`` seeds the global RNGs with ``seed`` (``seed + rank`` under DDP: dropout
and anything else drawing from them) and hands the data order to
:func:`minseg.data.sampling.seeded_loader`: epoch ``e``'s order is a function of ``(seed, e)``,
and a :class:`~minseg.data.TensorLoader`'s augmentation of batch ``b`` a function of
``(seed, e, b, rank)``. Model initialisation is the caller's job (seed before building the
model). GPUs run non-deterministic kernels (cuDNN autotuning) for speed.

**Resume.** A checkpoint (:mod:`minseg.checkpoint`) holds the model, optimizer, scaler,
position (epoch, step inside the epoch, the partial epoch's statistics), the history so far and
the RNG states taken right after the step. ``resume=True`` restores all of it and restarts the
data at the same batch of the same epoch, so the run continues bit for bit as if it had never
stopped (tested on CPU with ``torch.equal`` on every weight). With ``DataLoader`` worker
processes the order is still exact, but random augmentation inside the workers restarts its
streams.

**Several GPUs or machines.** Run the same script under ``torchrun``; ``fit`` initialises the
process group (NCCL on CUDA, Gloo on CPU, :mod:`minseg.distributed`), wraps the model in
``DistributedDataParallel``, gives each rank its shard of every epoch, averages the logged loss
over ranks, sums confusion matrices with ``all_reduce`` and lets rank 0 alone print and write
checkpoints.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from minseg import checkpoint, config, distributed
from minseg.checkpoint import (CHECKPOINT_NAME, latest_checkpoint, load_checkpoint,
                               load_model_from_checkpoint, save_checkpoint)
from minseg.data.sampling import seeded_loader
from minseg.evaluation import evaluate
from minseg.history import History
from minseg.infer import _logits
from minseg.progress import QUIET_ENV, _bar, _show_progress
from minseg.schedule import SCHEDULES, lr_factor
from minseg.step import (_amp_dtype, _autocast, _len, _resolve_device, _resolve_loss, _split,
                         batch_loss)
from minseg.validate import check_images, check_mask, check_num_classes

__all__ = [
    "fit", "batch_loss", "OPTIMIZERS", "CUT_SHORT",
    # defined elsewhere, importable from here as before the split
    "History", "evaluate", "lr_factor", "SCHEDULES", "QUIET_ENV", "save_checkpoint",
    "load_checkpoint", "latest_checkpoint", "load_model_from_checkpoint", "CHECKPOINT_NAME",
]

OPTIMIZERS = ("adamw", "sgd")
CUT_SHORT = "stopped training after"  # in the warning a time cap gives; tools look for it


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
# fit
# --------------------------------------------------------------------------------------------
def _check_args(num_classes, epochs, max_steps, optimizer, schedule, lr, warmup_steps,
                grad_clip, checkpoint_every, time_budget_s) -> None:
    check_num_classes(num_classes)
    if epochs is None and max_steps is None:
        raise ValueError("say how long to train: pass max_steps=... (a step budget, e.g. the "
                         "profile's cfg.steps) or epochs=... (or both; the first one reached wins)")
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
    if time_budget_s is not None and not time_budget_s > 0:
        raise ValueError(f"time_budget_s must be None or > 0 seconds, got {time_budget_s!r}")


def _check_data(train_data, val_data) -> None:
    n_data = _len(getattr(train_data, "dataset", train_data))
    if n_data == 0 or _len(train_data) == 0:
        raise ValueError("train_data is empty" + (
            f" (no full batch: {n_data} samples, batch_size {train_data.batch_size}, "
            f"drop_last=True)" if n_data else ""))
    if val_data is not None and _len(getattr(val_data, "dataset", val_data)) == 0:
        raise ValueError("val_data is empty; pass None to train without validation")


def fit(model: nn.Module, train_data, val_data=None, *, num_classes: int,
        max_steps: int | None = None, epochs: int | None = None,
        loss: str | Callable = "ce", optimizer: str = "adamw", lr: float = 1e-3,
        weight_decay: float = 1e-4, schedule: str = "poly", warmup_steps: int = 0,
        grad_clip: float | None = None, device: str | torch.device | None = None,
        amp: bool | None = None, channels_last: bool | None = None, seed: int = 0,
        checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
        resume: bool | str | os.PathLike = False, time_budget_s: float | None = None,
        callbacks: Sequence[Callable[[str, dict], None]] = (), progress: bool | None = None,
        meta: Mapping | None = None, aux_weight: float = 0.4) -> History:
    """Train ``model`` on ``train_data`` for a step budget and return its :class:`History`.

    Args:
        model: maps ``N,3,H,W`` images to ``N,num_classes,H,W`` logits (a dict with ``"out"``,
            as torchvision's models return, works too). Trained in place.
        train_data: a :class:`minseg.data.TensorLoader` (fastest), a ``DataLoader`` of
            ``(images, masks)`` batches (masks ``int64 N,H,W``, 255 = ignore), a ``Dataset`` or a
            list of batches. Its order is put under ``seed`` by
            :func:`minseg.data.sampling.seeded_loader`.
        val_data: evaluated with :func:`evaluate` after every epoch and at the end.
        num_classes: number of classes, checked against the model's output and the masks.
        max_steps, epochs: the budget, in optimizer steps and/or epochs (first reached).
        loss: a name for :func:`minseg.losses.get_loss` (``"ce"``, ``"focal"``, ``"dice"``,
            ``"ce+dice"``, ...) or ``callable(logits, target) -> scalar``; computed in float32.
        optimizer, lr, weight_decay: ``"adamw"`` (Loshchilov & Hutter,
            https://arxiv.org/abs/1711.05101) or ``"sgd"`` with momentum 0.9.
        schedule, warmup_steps: learning rate per step, see :func:`lr_factor`.
        grad_clip: clip the global gradient norm to this value.
        device, amp, channels_last: default CUDA/MPS/CPU via :func:`minseg.config.device`;
            mixed precision and channels_last only on CUDA (bf16 where supported, else fp16 with
            a ``GradScaler``).
        seed: seeds dropout, the data order and the augmentation (not the initial weights).
        checkpoint_dir: write ``<dir>/last.pt`` (atomically) after every epoch, every
            ``checkpoint_every`` steps and at the end; ``resume=True`` continues from
            :func:`latest_checkpoint` (a path continues from that file; no checkpoint yet: start
            from scratch).
        time_budget_s: a wall-clock safety cap (seconds, across resumes), not the budget: when
            it stops a run before its steps are done, ``history.stop_reason`` is
            ``"time_budget"``, ``history.cut_short`` is True and a warning says how many of the
            planned steps ran. The last validation's duration is reserved inside the cap.
        callbacks: ``callback(event, state)`` with ``event`` in ``"step"``, ``"epoch"``,
            ``"end"``; ``state`` has ``model``, ``optimizer``, ``step``, ``epoch``, ``loss`` (a
            0-d tensor at ``"step"``), ``lr``, ``history``, ``elapsed_s``; setting
            ``state["stop"] = True`` ends training after the current step.
        progress: tqdm bars (None: see :func:`_show_progress`).
        aux_weight: weight of each auxiliary output's loss when the model returns a dict with
            ``"aux"`` in training mode (deep supervision; see :func:`batch_loss`). 0.4 is the
            weight of PSPNet's auxiliary loss (Zhao et al. 2017, https://arxiv.org/abs/1612.01105).
        meta: extra metadata for checkpoints, e.g. ``{"model_name": "unet", "model_kwargs":
            {"width": 16}}`` so that :func:`load_model_from_checkpoint` can rebuild the model.
    """
    optimizer = optimizer.lower() if isinstance(optimizer, str) else optimizer
    schedule = schedule.lower() if isinstance(schedule, str) else schedule
    _check_args(num_classes, epochs, max_steps, optimizer, schedule, lr, warmup_steps, grad_clip,
                checkpoint_every, time_budget_s)
    _check_data(train_data, val_data)
    loss_fn = _resolve_loss(loss)
    callbacks = [callbacks] if callable(callbacks) else list(callbacks)
    distributed.init(config.device(str(device)) if device is not None else None)
    run = _Run.start(model, train_data, val_data, num_classes, seed, device, amp, channels_last,
                     optimizer, lr, weight_decay, loss_fn, checkpoint_dir, resume, meta,
                     {"loss": loss if isinstance(loss, str) else repr(loss), "lr": lr,
                      "optimizer": optimizer, "weight_decay": weight_decay, "schedule": schedule,
                      "epochs": epochs, "max_steps": max_steps, "seed": seed,
                      "aux_weight": aux_weight})
    pos, history, loader = run.pos, run.history, run.loader
    total = min(max_steps or math.inf, (epochs or math.inf) * len(loader))
    history.planned_steps = total
    if pos.step < total and pos.in_epoch and history and history.last.get("epoch") == pos.epoch + 1:
        history.pop()  # a resumed partial epoch's record: rewritten when that epoch ends
    run.scheduler = {"schedule": schedule, "warmup_steps": warmup_steps, "total_steps": float(total)}
    if time_budget_s is not None and pos.used_s + pos.last_eval_s >= time_budget_s:
        raise ValueError(f"time_budget_s={time_budget_s} s is already used up ({pos.used_s:.1f} s "
                         f"by the run being resumed) and would stop it before its first step")
    stop = "max_steps" if pos.step >= total else None
    bar = _bar(_show_progress(progress), unit="step", initial=pos.step,
               total=None if math.isinf(total) else int(total))
    lr_now = run.opt.param_groups[0]["lr"]
    try:
        while stop is None:  # one pass per epoch (the first one may start part-way through)
            run.net.train()
            if bar is not None:
                bar.set_description(f"epoch {pos.epoch + 1}" + (f"/{epochs}" if epochs else ""))
            loader.set_epoch(pos.epoch, pos.in_epoch)
            t0, loss_acc = time.perf_counter(), torch.zeros((), dtype=torch.float64, device=run.dev)
            for batch in loader:
                lr_now = run.set_lr(lr * lr_factor(pos.step, total, schedule, warmup_steps))
                loss_value = run.step(*_split(batch), grad_clip)
                loss_acc += loss_value.double()
                if bar is not None:
                    bar.update()
                stop = _stop_reason(pos, total, max_steps, time_budget_s, run, callbacks,
                                    loss_value, lr_now)
                if stop or pos.in_epoch >= len(loader):
                    break
                if checkpoint_every and pos.step % checkpoint_every == 0:
                    pos.close_segment(t0, loss_acc)
                    t0 = time.perf_counter()
                    run.save(checkpoint_dir)
            pos.close_segment(t0, loss_acc)
            epoch_done = pos.in_epoch >= len(loader)
            if epoch_done and epochs is not None and pos.epoch + 1 >= epochs:
                stop = stop or "epochs"
            history.append(run.epoch_record(lr_now))
            if bar is not None:
                bar.set_postfix({k: f"{history.last[k]:.4f}" for k in ("loss", "miou")
                                 if k in history.last})
            if callbacks and _notify(callbacks, "epoch", run.callback_state(history.last["loss"], lr_now)):
                stop = stop or "callback"
            if run.world > 1:
                stop = distributed.agree(stop, run.dev)
            if epoch_done:
                pos.next_epoch()
            history.stop_reason = stop
            run.save(checkpoint_dir)
    finally:
        if bar is not None:
            bar.close()
    history.stop_reason, history.total_time_s = stop, run.elapsed()
    if stop == "time_budget" and run.rank == 0:
        warnings.warn(f"the time cap time_budget_s={time_budget_s:g} s {CUT_SHORT} "
                      f"{pos.step} of {total:g} planned steps: these results are not the ones "
                      f"this step budget gives on an idle machine (raise the cap, e.g. "
                      f"{config.BUDGET_ENV}, or lower max_steps)", RuntimeWarning, stacklevel=2)
    if callbacks:
        _notify(callbacks, "end", {**run.callback_state(None, lr_now), "epoch": pos.epoch,
                                   "stop": True})
    return history


def _stop_reason(pos, total, max_steps, time_budget_s, run, callbacks, loss_value, lr_now):
    """Why training stops after this step (None: it goes on). The same answer on every rank."""
    asked = bool(callbacks) and _notify(callbacks, "step", run.callback_state(loss_value, lr_now))
    stop = None
    if pos.step >= total:
        stop = "max_steps" if max_steps and pos.step >= max_steps else "epochs"
    elif time_budget_s is not None and run.used() + pos.last_eval_s >= time_budget_s:
        stop = "time_budget"
    elif asked:
        stop = "callback"
    if run.world > 1 and (time_budget_s is not None or callbacks):
        stop = distributed.agree(stop, run.dev)  # or a rank that stops alone would hang the others
    return stop


@dataclass
class _Position:
    """Where training stands: everything besides model, optimizer and RNGs that a checkpoint
    needs to continue exactly."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the current epoch, 0-based
    in_epoch: int = 0  # steps done in the current epoch
    elapsed_s: float = 0.0  # wall-clock training time of earlier calls (resume)
    used_s: float = 0.0  # the same, counted for the time cap
    last_eval_s: float = 0.0  # how long the last evaluation took (the time cap reserves it)
    loss_sum: float = 0.0  # the current epoch's statistics so far (this rank)
    steps: int = 0
    images: int = 0
    time_s: float = 0.0

    def advance(self, images: int) -> None:
        self.step, self.in_epoch, self.steps = self.step + 1, self.in_epoch + 1, self.steps + 1
        self.images += images

    def close_segment(self, t0: float, loss_acc: torch.Tensor) -> None:
        """Add the time and losses since ``t0`` to the epoch's statistics (one host sync)."""
        self.time_s += time.perf_counter() - t0
        self.loss_sum += loss_acc.item()
        loss_acc.zero_()

    def next_epoch(self) -> None:
        self.epoch, self.in_epoch = self.epoch + 1, 0
        self.loss_sum, self.steps, self.images, self.time_s = 0.0, 0, 0, 0.0


class _Run:
    """The state of one :func:`fit` call: device, wrapped model, optimizer, data, position."""

    @classmethod
    def start(cls, model, train_data, val_data, num_classes, seed, device, amp, channels_last,
              optimizer, lr, weight_decay, loss_fn, checkpoint_dir, resume, meta, args) -> "_Run":
        r = cls()
        r.rank, r.world = distributed.rank_world()
        r.dev = _resolve_device(device)
        r.amp_dtype = _amp_dtype(r.dev, amp)
        r.scaler = torch.amp.GradScaler(r.dev.type, enabled=r.amp_dtype == torch.float16)
        cl = r.dev.type == "cuda" if channels_last is None else channels_last
        r.fmt = torch.channels_last if cl else torch.contiguous_format
        if r.dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        config.seed_everything(seed + r.rank)
        r.model, r.num_classes, r.val_data, r.loss_fn = model, num_classes, val_data, loss_fn
        r.aux_weight = float(args.get("aux_weight", 0.4))
        model.to(r.dev, memory_format=r.fmt)
        r.net = nn.parallel.DistributedDataParallel(
            model, device_ids=[r.dev.index] if r.dev.type == "cuda" else None) if r.world > 1 else model
        params = [p for p in model.parameters() if p.requires_grad]
        r.opt = (torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if optimizer == "adamw"
                 else torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay))
        r.loader = seeded_loader(train_data, seed, r.rank, r.world)
        if not _len(r.loader):
            raise ValueError("train_data must have a length (a TensorLoader, a DataLoader, a "
                             "Dataset or a list of batches) and at least one batch")
        r.meta = checkpoint.model_meta(model, num_classes, getattr(train_data, "dataset", None), meta)
        r.args = checkpoint.plain_data({**args, "batch_size": getattr(r.loader, "batch_size", None),
                                        "world_size": r.world})
        r.pos, r.history, r.first = _Position(), History(), True
        path = latest_checkpoint(checkpoint_dir) if resume is True else (Path(resume) if resume else None)
        if path is not None:
            ckpt = checkpoint.restore_training(path, model, r.opt, r.scaler, num_classes, lr,
                                               r.rank, r.world)
            r.pos, r.history = _Position(**ckpt["position"]), History.from_state_dict(ckpt["history"])
        r.t_start = time.perf_counter()
        return r

    def elapsed(self) -> float:  # wall-clock training time, including earlier calls (resume)
        return self.pos.elapsed_s + time.perf_counter() - self.t_start

    def used(self) -> float:  # the time counted against the cap
        return self.pos.used_s + time.perf_counter() - self.t_start

    def set_lr(self, value: float) -> float:
        for g in self.opt.param_groups:
            g["lr"] = value
        return value

    def step(self, images: torch.Tensor, masks: torch.Tensor, grad_clip: float | None) -> torch.Tensor:
        """One optimizer step; returns the detached loss. The first batch of a call is checked
        (shapes, classes, the model's output) before anything is updated."""
        images = images.to(self.dev, non_blocking=True, memory_format=self.fmt)
        masks = masks.to(self.dev, non_blocking=True)
        with _autocast(images.device, self.amp_dtype):
            output = self.net(images)
        if self.first:
            _check_first_batch(images, masks, _logits(output), self.num_classes)
            self.first = False
        loss = batch_loss(self.loss_fn, output, masks, self.aux_weight)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # the scaler is a no-op unless fp16
        if grad_clip is not None:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.net.parameters(), grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.pos.advance(images.shape[0])
        return loss.detach()

    def epoch_record(self, lr_now: float) -> dict:
        """The epoch's statistics, summed over ranks, and its validation scores."""
        pos = self.pos
        loss_sum, n_steps, n_images = distributed.all_sum(pos.loss_sum, pos.steps, pos.images,
                                                          device=self.dev)
        record = {"epoch": pos.epoch + 1, "step": pos.step, "loss": loss_sum / max(1.0, n_steps),
                  "lr": lr_now, "images_per_s": n_images / max(1e-9, pos.time_s),
                  "epoch_time_s": pos.time_s, "steps_in_epoch": pos.in_epoch}
        if self.val_data is not None:
            cuda = [self.dev.index if self.dev.index is not None else torch.cuda.current_device()] \
                if self.dev.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):  # must not shift the training RNGs
                res = evaluate(self.model, self.val_data, self.num_classes, device=self.dev,
                               amp=self.amp_dtype is not None, progress=False, loss=self.loss_fn,
                               channels_last=self.fmt == torch.channels_last)
            pos.last_eval_s = res["time_s"]
            record.update(miou=res["miou"], pixel_acc=res["pixel_acc"], mdice=res["mdice"],
                          val_loss=res["loss"])
        record["time_s"] = self.elapsed()
        return record

    def callback_state(self, loss_value, lr_now: float) -> dict:
        return {"model": self.model, "optimizer": self.opt, "step": self.pos.step,
                "epoch": self.pos.epoch + 1, "loss": loss_value, "lr": lr_now,
                "history": self.history, "elapsed_s": self.elapsed(), "stop": False}

    def save(self, checkpoint_dir) -> None:
        """Every rank contributes its RNG states; rank 0 writes the file."""
        if checkpoint_dir is None:
            return
        rngs = distributed.gather(checkpoint.rng_state(), self.world)
        if self.rank == 0:
            self.history.total_time_s = self.elapsed()
            save_checkpoint(
                Path(checkpoint_dir) / CHECKPOINT_NAME, format=checkpoint.CHECKPOINT_FORMAT,
                model=self.model.state_dict(), optimizer=self.opt.state_dict(),
                scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                scheduler={**self.scheduler, "step": self.pos.step}, step=self.pos.step, epoch=self.pos.epoch,
                position={**asdict(self.pos), "elapsed_s": self.elapsed(), "used_s": self.used()},
                history=self.history.state_dict(), rng=rngs,
                profile=checkpoint.profile_dict(None), meta=self.meta, args=self.args)


def _notify(callbacks, event: str, state: dict) -> bool:
    for cb in callbacks:
        cb(event, state)
    return bool(state.get("stop"))

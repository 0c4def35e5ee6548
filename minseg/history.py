"""What :func:`minseg.train.fit` returns: :class:`History`, a list of per-epoch records.

It is plain data: a checkpoint stores it with :meth:`History.state_dict` and a resumed run
rebuilds it with :meth:`History.from_state_dict`.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

__all__ = ["History"]


class History(list):
    """What :func:`minseg.train.fit` returns: a ``list`` of per-epoch dicts and a few conveniences.

    Every record has ``epoch`` (1-based), ``step`` (optimizer steps so far), ``loss`` (mean
    training loss of the epoch, averaged over ranks), ``lr`` (at the end of the epoch),
    ``images_per_s`` (training throughput, all ranks), ``time_s`` (wall-clock since the start of
    training, across resumes) and ``epoch_time_s``; with validation data also ``miou``,
    ``pixel_acc``, ``mdice`` and ``val_loss`` (NaN in epochs that were not evaluated). An epoch cut
    short by ``max_steps``, the time budget or a callback is recorded too (``steps_in_epoch``
    tells how far it got).

    ``history["miou"]`` is the column as a list; ``last`` the final record; ``best("miou")`` the
    record with the highest value (lowest for keys containing ``loss`` or ``time``).
    ``stop_reason`` says why training ended (``"max_steps"``, ``"epochs"``, ``"time_budget"``,
    ``"callback"``), ``planned_steps`` how many steps the budget asked for, ``cut_short`` whether
    the time cap ended the run before them, ``stopped_early`` whether the cap or a callback did,
    and ``total_time_s`` how long it took. Pass it straight to :func:`minseg.viz.plot_curves`.
    """

    def __init__(self, records: Iterable[Mapping] = (), *, stop_reason: str | None = None,
                 total_time_s: float = 0.0, planned_steps: float | None = None) -> None:
        super().__init__(dict(r) for r in records)
        self.stop_reason = stop_reason
        self.total_time_s = total_time_s
        self.planned_steps = planned_steps

    @property
    def cut_short(self) -> bool:
        """True when the time cap stopped training before its step budget was done."""
        return self.stop_reason == "time_budget"

    @property
    def stopped_early(self) -> bool:
        """True when the time cap or a callback ended training before its budget."""
        return self.stop_reason in ("time_budget", "callback")

    @property
    def steps(self) -> int:
        """Optimizer steps done (0 before the first epoch record)."""
        return self.last["step"] if self else 0

    def __getitem__(self, key: str | int | slice):
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
        return {"records": [dict(r) for r in self], "stop_reason": self.stop_reason,
                "total_time_s": self.total_time_s,
                "planned_steps": None if self.planned_steps is None else float(self.planned_steps)}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "History":
        return cls(state.get("records", ()), stop_reason=state.get("stop_reason"),
                   total_time_s=state.get("total_time_s", 0.0),
                   planned_steps=state.get("planned_steps"))

    def __repr__(self) -> str:
        keys = [k for k in ("epoch", "step", "loss", "lr", "miou", "images_per_s", "time_s")
                if any(k in r for r in self)]
        rows = ["  ".join(f"{k}={_fmt(r.get(k))}" for k in keys) for r in self]
        tail = f"stop_reason={self.stop_reason!r}" + (
            f" after {self.steps} of {self.planned_steps:g} planned steps (cut short by the time cap)"
            if self.cut_short and self.planned_steps else "")
        return "History([\n  " + "\n  ".join(rows) + f"\n], {tail})" if rows else f"History([], {tail})"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)

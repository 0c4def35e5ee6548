"""Exercise 20 (real-time models): depthwise separable convolution and what it saves, a latency
benchmark that measures what it should, and a compute-capped training challenge."""
from __future__ import annotations

import copy
import statistics

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from minseg.grading.challenge import Challenge
from minseg.grading.checks._common import challenge_task, rng
from minseg.grading.tasks import Case, Task, close, exact

SLUG = "20_realtime_models"
TITLE = "Real-time models"


def _dws_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex20.dws")
    return [Case({"x": torch.randn(n, c, h, w, generator=g), "dw_weight": torch.randn(c, 1, 3, 3, generator=g),
                  "pw_weight": torch.randn(o, c, 1, 1, generator=g)}, f"x {n}x{c}x{h}x{w} -> {o} channels")
            for n, c, h, w, o in [(1, 2, 4, 4, 3), (2, 4, 5, 6, 2), (1, 3, 3, 7, 5)]]


def _flops(model: nn.Module, c_in: int, h: int, w: int) -> int:
    with FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, c_in, h, w))
    return int(fc.get_total_flops())


def _ref_conv_flops(h, w, c_in, c_out, k, stride=1, groups=1) -> int:
    return _flops(nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, groups=groups, bias=False), c_in, h, w)


def call_each(fn, inputs: dict) -> list:
    return [fn(**p) for p in inputs["settings"]]


def _flop_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex20.flops")
    out = []
    for note, grouped in [("plain convs", False), ("grouped and depthwise convs", True), ("mixed", True)]:
        settings = []
        for _ in range(5):
            c_in = int(torch.randint(1, 5, (1,), generator=g)) * 4
            groups = [1, 2, 4, c_in][int(torch.randint(0, 4, (1,), generator=g))] if grouped else 1
            c_out = groups * int(torch.randint(1, 4, (1,), generator=g))
            settings.append({"h": int(torch.randint(4, 20, (1,), generator=g)),
                             "w": int(torch.randint(4, 20, (1,), generator=g)), "c_in": c_in,
                             "c_out": c_out, "k": [1, 3, 5][int(torch.randint(0, 3, (1,), generator=g))],
                             "stride": int(torch.randint(1, 3, (1,), generator=g)), "groups": groups})
        out.append(Case({"settings": settings}, f"5 settings, {note}: {settings}"))
    return out


def _ratio_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex20.ratio")
    out = []
    for _ in range(4):
        c_in, c_out = int(torch.randint(1, 65, (1,), generator=g)), int(torch.randint(1, 65, (1,), generator=g))
        k = [3, 5, 7][int(torch.randint(0, 3, (1,), generator=g))]
        out.append(Case({"c_in": c_in, "c_out": c_out, "k": k}, f"c_in={c_in}, c_out={c_out}, k={k}"))
    return out


def _ref_ratio(c_in: int, c_out: int, k: int) -> float:
    h = w = 8
    sep = nn.Sequential(nn.Conv2d(c_in, c_in, k, padding=k // 2, groups=c_in, bias=False),
                        nn.Conv2d(c_in, c_out, 1, bias=False))
    std = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
    return _flops(sep, c_in, h, w) / _flops(std, c_in, h, w)



CHALLENGE = Challenge(
    classes=("person", "car", "cow", "boat"), scene={"classes": ["person", "car", "cow", "boat"]},
    metric="miou", bands=((0.33, 1 / 3), (0.37, 2 / 3), (0.41, 1.0)), steps=200, max_gflops=0.05)
"""Accuracy under a compute cap: at most ``max_gflops`` per 64 px image."""


class SimulatedDevice:
    """An accelerator the grader controls, asynchronous like CUDA: ``run()`` launches one
    forward pass (the ``i``-th call takes ``costs[i]`` seconds of device time) and returns at
    once; ``sync()`` waits until the queued work is done; ``clock()`` reads the host clock in
    seconds. A timer without ``sync()`` measures only the launch (``launch`` seconds). Pickles
    as a fresh device, so the student's copy starts where the grader's did."""

    def __init__(self, costs, launch: float = 1e-5):
        self.costs, self.launch = [float(c) for c in costs], float(launch)
        self.t, self.queued, self.calls = 0.0, 0.0, 0

    def __getstate__(self) -> dict:
        return {"costs": self.costs, "launch": self.launch}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["costs"], state["launch"])

    def __repr__(self) -> str:
        costs = ", ".join(f"{c:.6g}" for c in self.costs)
        return f"SimulatedDevice(costs=[{costs}], launch={self.launch:g})"

    def __deepcopy__(self, memo) -> "SimulatedDevice":
        return SimulatedDevice(self.costs, self.launch)

    def run(self) -> None:
        if self.calls >= len(self.costs):
            raise RuntimeError(f"run() called {self.calls + 1} times; the benchmark asked for "
                               f"{len(self.costs)} (warmup + repeats)")
        self.queued += self.costs[self.calls]
        self.t += self.launch
        self.calls += 1

    def sync(self) -> None:
        self.t += self.queued
        self.queued = 0.0

    def clock(self) -> float:
        return self.t


def _latency_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex20.latency")
    out = []
    for warmup, repeats, note in [(2, 5, "2 slow warm-up calls, an outlier among 5"),
                                  (1, 4, "an even number of timed calls"), (0, 3, "no warm-up")]:
        costs = (0.005 + 0.01 * torch.rand(warmup + repeats, generator=g, dtype=torch.float64)).tolist()
        for i in range(warmup):
            costs[i] *= 40                      # first calls: allocation, autotuning
        if repeats >= 5:
            costs[warmup + 1] *= 15             # one interrupted run: the median ignores it
        out.append(Case({"device": SimulatedDevice(costs), "warmup": warmup, "repeats": repeats},
                        f"{note} (simulated asynchronous device)"))
    return out


def _ref_latency(device, warmup: int, repeats: int) -> float:
    d = copy.deepcopy(device)
    times = []
    for i in range(warmup + repeats):
        d.sync()
        t0 = d.clock()
        d.run()
        d.sync()
        if i >= warmup:
            times.append(d.clock() - t0)
    return 1000 * statistics.median(times)


def _challenge_reference(num_classes: int, data) -> dict:
    from minseg.models import build_model

    return {"model": build_model("fastscnn", num_classes, width=16), "lr": 3e-3}

TASKS = [
    Task("ex20.depthwise_separable", "depthwise_separable", 2,
         "a 3x3 depthwise conv (one filter per channel, padding 1) followed by a 1x1 pointwise "
         "conv, no bias", _dws_cases,
         lambda x, dw_weight, pw_weight: F.conv2d(F.conv2d(x, dw_weight, padding=1, groups=x.shape[1]), pw_weight),
         hint="F.conv2d(..., groups=C) with a C x 1 x 3 x 3 weight is a depthwise conv"),
    Task("ex20.conv_flops", "conv_flops", 1,
         "FLOPs (2 per multiply-add) of a k x k conv with padding k // 2, stride and groups on a "
         "1 x c_in x h x w input", _flop_cases, _ref_conv_flops, call=call_each, compare=exact(),
         hint="output pixels x c_out x (c_in / groups) x k x k multiply-adds"),
    Task("ex20.separable_cost_ratio", "separable_cost_ratio", 1,
         "FLOPs of a depthwise separable conv divided by those of a standard k x k conv (same "
         "c_in, c_out, stride 1)", _ratio_cases, _ref_ratio),
    Task("ex20.latency_ms", "latency_ms", 2,
         "median latency in ms of one forward pass: `warmup` untimed calls, then `repeats` calls "
         "each timed alone, synchronising the device before reading the clock (median of an "
         "even count = mean of the two middle values)", _latency_cases, _ref_latency,
         compare=close(rtol=1e-6, atol=1e-9),
         hint="device.sync(); t0 = device.clock(); device.run(); device.sync(); "
              "t = device.clock() - t0; statistics.median"),
    challenge_task("ex20", CHALLENGE, _challenge_reference,
                   "a recipe under the compute cap whose mIoU on held-out scenes reaches the bands "
                   "within the challenge's steps",
                   hint="downsample early, depthwise-separable convolutions, a light decoder"),
]

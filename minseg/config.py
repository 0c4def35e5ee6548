"""Profiles, device choice and seeding.

A *profile* fixes every size a lesson or the demo uses (image size, dataset size, optimizer
steps per training run, batch size, model width), so that the same notebook runs in seconds in
CI (``smoke``), in minutes on a laptop (``cpu``) and on real Pascal VOC on a GPU (``gpu``), and
gives every reader on the same profile the same numbers: budgets are steps, not seconds.
Choose one with the ``MINSEG_PROFILE`` environment variable; when it is unset, ``gpu`` is used
if CUDA is available, else ``cpu``. ``time_budget_s`` is a safety cap per training run, not the
budget; ``MINSEG_TIME_BUDGET_S`` replaces it, e.g. for a quick look at the ``gpu`` profile
(a run the cap cuts short says so).
"""
from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

PROFILE_ENV = "MINSEG_PROFILE"
DATA_ENV = "MINSEG_DATA"
BUDGET_ENV = "MINSEG_TIME_BUDGET_S"


@dataclass(frozen=True)
class Profile:
    """Every size that depends on the machine, in one immutable record.

    ``data`` is ``"synthetic"`` (the built-in VOC-format set) or ``"voc"`` (real Pascal VOC 2012
    when it is found on disk; see :func:`minseg.data.find_voc`). ``steps`` is the optimizer-step
    budget of one training run; ``time_budget_s`` only a wall-clock safety cap on it. ``seeds``
    is how many seeds a lesson's comparison trains each variant with (see
    :func:`minseg.experiment.compare`): one proves the code runs, three give an interval.
    ``backbone`` names the torchvision backbone whose ImageNet weights a lesson's encoder starts
    from where the lesson is not about training from scratch (``None``: every model starts from
    random weights); see :func:`minseg.models.weights.starting_point` and ``MINSEG_PRETRAINED``.
    """

    name: str
    device: str
    data: str
    image_size: int
    num_train: int
    num_val: int
    batch_size: int
    steps: int
    time_budget_s: float
    width: int
    amp: bool
    channels_last: bool
    num_workers: int
    seed: int = 0
    seeds: int = 1
    backbone: str | None = None

    def __str__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in asdict(self).items() if k != "name")
        return f"Profile[{self.name}]({fields})"

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed (the profile itself is frozen)."""
        return replace(self, **changes)


def _base_profiles(dev: str) -> dict[str, Profile]:
    return {
        # CI and tests: proves the code runs, not that it learns.
        "smoke": Profile("smoke", dev, "synthetic", image_size=64, num_train=32, num_val=16,
                         batch_size=8, steps=4, time_budget_s=60.0, width=8, amp=False,
                         channels_last=False, num_workers=0),
        # A 2-core laptop: a few minutes per lesson, enough to see each effect. Thousands of
        # generated images (seconds to make), so that a run of `steps` steps does not overfit.
        "cpu": Profile("cpu", dev, "synthetic", image_size=96, num_train=3000, num_val=200,
                       batch_size=16, steps=300, time_budget_s=300.0, width=16, amp=False,
                       channels_last=False, num_workers=0, seeds=3),
        # A CUDA GPU: real VOC 2012 when present (else a larger synthetic set), AMP.
        # 3,600 steps of 16 images: about 40 epochs of VOC's 1,464 training images. Models that
        # can take a torchvision encoder start from an ImageNet-pretrained ResNet-50, as the
        # published VOC numbers do (from scratch when the weights are absent).
        "gpu": Profile("gpu", dev, "voc", image_size=320, num_train=1464, num_val=500,
                       batch_size=16, steps=3600, time_budget_s=1800.0, width=32, amp=True,
                       channels_last=True, num_workers=4, seeds=3, backbone="resnet50"),
    }


PROFILE_NAMES = ("smoke", "cpu", "gpu")


def device(name: str | None = None) -> torch.device:
    """The device to run on: ``name`` if given, else CUDA when available, else Apple MPS, else CPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def profile(name: str | None = None) -> Profile:
    """The active profile: ``name``, else ``$MINSEG_PROFILE``, else ``gpu`` with CUDA or ``cpu``.

    ``$MINSEG_TIME_BUDGET_S``, when set, replaces the profile's ``time_budget_s``.

    >>> print(profile("smoke"))  # doctest: +ELLIPSIS
    Profile[smoke](device=..., data=synthetic, image_size=64, ...)
    """
    name = name or os.environ.get(PROFILE_ENV) or ("gpu" if torch.cuda.is_available() else "cpu")
    name = name.strip().lower()
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {name!r}; valid profiles are {', '.join(PROFILE_NAMES)} "
                         f"(set {PROFILE_ENV} or pass --profile)")
    dev = device()
    p = _base_profiles(str(dev))[name]
    if dev.type != "cuda":
        p = p.replace(amp=False, channels_last=False)
    budget = os.environ.get(BUDGET_ENV, "").strip()
    if budget:
        try:
            seconds = float(budget)
        except ValueError:
            seconds = float("nan")
        if not seconds > 0 or seconds == float("inf"):
            raise ValueError(f"{BUDGET_ENV}={budget!r} is not a positive number of seconds")
        p = p.replace(time_budget_s=seconds)
    return p


def data_dir() -> Path:
    """Where datasets live: ``$MINSEG_DATA`` if set, else ``~/.cache/minseg``."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "minseg").expanduser()


def seed_everything(seed: int = 0, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a ``torch.Generator`` seeded the same.

    ``deterministic=True`` also asks PyTorch for deterministic kernels (slower on GPU).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g

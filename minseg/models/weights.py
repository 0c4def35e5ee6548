"""ImageNet weights for the torchvision backbones: where they live, fetching them (opt-in),
and checking a file before a model loads it.

Nothing here downloads by itself. ``python -m minseg data weights`` fetches the weights of the
backbones through torchvision's own weights API (its URL, its cache folder
``$TORCH_HOME/hub/checkpoints``, its hash check on download). Offline, it says which file to
put where. :func:`check_weights_file` runs before every pretrained build
(:func:`minseg.models.backbones.torchvision_backbone`): torchvision names each file after the
first hex digits of its SHA-256 (``resnet50-11ad3fa6.pth``), so a truncated or foreign file is
caught with an error naming the file and the model, instead of failing deep inside
``load_state_dict`` (or worse, not failing).

:func:`starting_point` is the policy a lesson or ``train`` asks: does this model start from
ImageNet weights under this profile? Only where the profile names a backbone (``gpu``), the
model can take one, ``MINSEG_PRETRAINED`` is not ``0`` and the weights are in the cache; it
prints which it chose and why.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

__all__ = ["WeightsFile", "weights_file", "check_weights_file", "fetch_weights", "StartingPoint",
           "starting_point", "pretrained_enabled", "PRETRAINED_ENV", "BACKBONE_MODELS",
           "FINETUNE_LR"]

PRETRAINED_ENV = "MINSEG_PRETRAINED"
BACKBONE_MODELS = ("deeplabv3", "pspnet", "unet")
"""The registered models whose encoder can be a torchvision backbone (the others build their own)."""
FINETUNE_LR = 1e-4
"""AdamW learning rate for a model whose encoder starts from ImageNet weights: a tenth or less
of the from-scratch rates the lessons use, so that the first steps, driven by a random head, do
not wash out the pretrained features (SegFormer fine-tunes with 6e-5, arXiv:2105.15203)."""

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,})\.")


@dataclass(frozen=True)
class WeightsFile:
    """torchvision's default ImageNet weights of one backbone: ``url``, the cache ``path``
    torchvision reads, and the SHA-256 prefix ``sha256`` its file name promises."""

    backbone: str
    weights: str       # e.g. "ResNet50_Weights.IMAGENET1K_V2"
    url: str
    path: Path
    sha256: str

    @property
    def present(self) -> bool:
        return self.path.is_file()


def weights_file(backbone: str) -> WeightsFile:
    """Where torchvision keeps (or would download) ``backbone``'s default weights."""
    import torchvision

    from minseg.models.backbones import BACKBONES

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid backbones are {', '.join(BACKBONES)}")
    weights = torchvision.models.get_model_weights(backbone).DEFAULT
    name = weights.url.rsplit("/", 1)[-1]
    match = _HASH_IN_NAME.search(name)
    return WeightsFile(backbone, f"{type(weights).__name__}.{weights.name}", weights.url,
                       Path(torch.hub.get_dir()) / "checkpoints" / name,
                       match.group(1) if match else "")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_weights_file(backbone: str) -> WeightsFile:
    """The weights file of ``backbone``, checked: present, and its SHA-256 starting with the
    prefix in its name. Raises ``FileNotFoundError`` (saying where to put it) or
    ``ValueError`` (naming the file and the expected model)."""
    wf = weights_file(backbone)
    if not wf.present:
        raise FileNotFoundError(
            f"no ImageNet weights for {backbone} at {wf.path}. Fetch them with `python -m minseg "
            f"data weights`, or offline download {wf.url} elsewhere and copy it to that path")
    digest = _sha256(wf.path)
    if wf.sha256 and not digest.startswith(wf.sha256):
        raise ValueError(
            f"{wf.path} is not torchvision's {wf.weights} for {backbone}: its SHA-256 starts with "
            f"{digest[:len(wf.sha256)]}, the file name promises {wf.sha256} (a truncated download "
            f"or another file); delete it and fetch again")
    return wf


def load_checked(backbone: str, model: torch.nn.Module) -> None:
    """Load ``backbone``'s checked ImageNet weights into ``model`` (torchvision's architecture);
    an architecture mismatch is an error naming the file and the model it expected."""
    wf = check_weights_file(backbone)
    state = torch.load(wf.path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1:2] or [str(e)]
        raise ValueError(f"{wf.path} does not hold weights for torchvision's {backbone} "
                         f"({wf.weights}): {first[0].strip()}") from e


def fetch_weights(backbones: list[str], say=print) -> int:
    """Make sure the weights of ``backbones`` are in torchvision's cache: download what is
    missing through torchvision (hash-checked), check what is there. Returns the number of
    backbones still without valid weights (0 = all ready)."""
    missing = 0
    for b in backbones:
        wf = weights_file(b)
        if not wf.present:
            import torchvision

            say(f"{b}: downloading {wf.url} ...")
            try:
                torchvision.models.get_model_weights(b).DEFAULT.get_state_dict(progress=True,
                                                                                check_hash=True)
            except Exception as e:   # offline, proxy, disk full
                say(f"{b}: could not download ({type(e).__name__}: {e}). Offline: fetch {wf.url} "
                    f"on another machine and copy it to {wf.path}")
                missing += 1
                continue
        try:
            check_weights_file(b)
            say(f"{b}: ready ({wf.weights}, {wf.path})")
        except (FileNotFoundError, ValueError) as e:
            say(f"{b}: {e}")
            missing += 1
    return missing


def pretrained_enabled() -> bool:
    """``$MINSEG_PRETRAINED``: unset, ``1``/``true``/``yes``/``on`` allow ImageNet weights where a
    profile asks for them; ``0``/``false``/``no``/``off`` train every model from scratch.
    Anything else is an error naming the variable."""
    value = os.environ.get(PRETRAINED_ENV, "").strip().lower()
    if value in ("", "1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{PRETRAINED_ENV}={value!r}: expected 0 (train from scratch) or 1")


@dataclass(frozen=True)
class StartingPoint:
    """Where a model's weights start: ``backbone`` with its checked ImageNet ``weights``, or from
    scratch (both ``None``: the model's own encoder, randomly initialised).

    ``kwargs`` go to :func:`minseg.models.build_model`; :meth:`lr` picks the learning rate.
    """

    model: str
    backbone: str | None = None
    weights: WeightsFile | None = None
    reason: str = "the profile trains from scratch"

    @property
    def pretrained(self) -> bool:
        return self.weights is not None

    @property
    def kwargs(self) -> dict:
        return {"backbone": self.backbone, "pretrained": True} if self.pretrained else {}

    def lr(self, scratch_lr: float) -> float:
        """``scratch_lr`` from scratch, :data:`FINETUNE_LR` when fine-tuning ImageNet weights."""
        return FINETUNE_LR if self.pretrained else scratch_lr

    def __str__(self) -> str:
        if self.pretrained:
            return (f"{self.model} starts from torchvision's ImageNet-pretrained {self.backbone} "
                    f"({self.weights.weights}, {self.weights.path}); {PRETRAINED_ENV}=0 trains it "
                    f"from scratch")
        return f"{self.model} trains from scratch: {self.reason}"


def starting_point(cfg, model: str, say: Callable[[str], None] | None = print) -> StartingPoint:
    """Whether ``model`` starts from ImageNet weights under profile ``cfg``, said once.

    Pretrained only when all hold: the profile names a backbone (``gpu``: ResNet-50; ``smoke``
    and ``cpu`` teach from scratch and say nothing), ``model`` can take a torchvision encoder
    (:data:`BACKBONE_MODELS`), ``$MINSEG_PRETRAINED`` is not 0, and the weights are in
    torchvision's cache. Absent weights fall back to the model's own from-scratch encoder with
    a notice saying how to fetch them; a file that fails its hash check is an error, never a
    silent fallback.
    """
    backbone = getattr(cfg, "backbone", None)
    if backbone is None:
        return StartingPoint(model)
    if model not in BACKBONE_MODELS:
        point = StartingPoint(model, reason=f"it has its own encoder (models that can start from "
                                            f"{backbone}: {', '.join(BACKBONE_MODELS)})")
    elif not pretrained_enabled():
        point = StartingPoint(model, reason=f"{PRETRAINED_ENV}=0")
    else:
        wf = weights_file(backbone)
        if wf.present:
            point = StartingPoint(model, backbone, check_weights_file(backbone))
        else:
            point = StartingPoint(model, reason=(
                f"no ImageNet weights for {backbone} at {wf.path} (fetch them with `python -m "
                f"minseg data weights --backbones {backbone}`); its own encoder is used instead"))
    if say is not None:
        say(f"[profile {cfg.name}] {point}")
    return point

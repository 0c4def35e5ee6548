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
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["WeightsFile", "weights_file", "check_weights_file", "fetch_weights"]

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

"""Batched augmentation on tensors, on the training device (CPU or CUDA).

Per-sample transforms in a ``Dataset`` run once per image per step, in Python. Here a whole
batch of ``uint8`` images and masks is augmented with a handful of tensor operations:

* **random scale + crop + horizontal flip** as one affine map per image: each image gets its own
  scale ``s`` in ``scale``, crop position and flip, and ``torch.nn.functional.grid_sample``
  resamples the whole batch at once (bilinear for images, nearest for masks, so class ids are
  never blended). Where the crop leaves the image, the image is black and the mask is 255
  (void), so padding costs nothing in the loss, as in :func:`minseg.data.train_transforms`.
* **colour jitter** on images only: per-image brightness, contrast and saturation factors in
  ``[1 - jitter, 1 + jitter]`` (the same blends as torchvision's ``adjust_*`` functions, with
  per-image factors instead of one per call, in that fixed order; the grey image comes from
  torchvision's batched ``rgb_to_grayscale``).

Then images are converted to float and normalised with ImageNet mean/std, masks to ``int64``.
torchvision's v2 functional ops apply one parameter set to a whole batch, which is why the
per-image geometry goes through ``grid_sample`` (Jaderberg et al. 2015, spatial transformer
networks, https://arxiv.org/abs/1506.02025). Every random draw comes from the ``generator``
passed in, so a batch's augmentation is a function of that generator's seed alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from minseg.data.tensors import normalize_uint8
from minseg.validate import IGNORE_INDEX

__all__ = ["BatchAugment"]


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


@dataclass(frozen=True)
class BatchAugment:
    """Random scale in ``scale``, ``crop x crop`` crop (default: the input size), horizontal flip
    with probability ``hflip`` and colour jitter of strength ``jitter`` (0 turns it off).

    ``aug(images_uint8, masks_uint8, generator) -> (normalised float images, int64 masks)``.
    Scale ``s`` means the image is shown ``s`` times its stored size before cropping (the stored
    size is the profile's ``image_size``; see :mod:`minseg.data.tensors`).
    """

    scale: tuple[float, float] = (0.5, 2.0)
    hflip: float = 0.5
    jitter: float = 0.0
    crop: int | None = None

    def __post_init__(self):
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {self.scale}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip is a probability in [0, 1], got {self.hflip}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.crop is not None and self.crop < 1:
            raise ValueError(f"crop must be a positive number of pixels, got {self.crop}")

    def params(self, n: int, height: int, width: int, g: torch.Generator) -> dict:
        """The random draws for ``n`` images of ``height x width`` (float64, on the CPU)."""
        crop = self.crop or height  # default: the stored (square) size
        s = _uniform(n, *self.scale, g)
        # crop offset in the scaled image: inside it when it is larger than the crop, else the
        # smaller image lands at a random place inside the crop (the rest is padding)
        room_x, room_y = width * s - crop, height * s - crop
        ox, oy = _uniform(n, 0, 1, g) * room_x, _uniform(n, 0, 1, g) * room_y
        flip = torch.rand(n, generator=g, dtype=torch.float64) < self.hflip
        # rows: brightness, contrast, saturation
        jit = _uniform(3 * n, 1 - self.jitter, 1 + self.jitter, g).view(3, n)
        return {"scale": s, "ox": ox, "oy": oy, "flip": flip, "brightness": jit[0],
                "contrast": jit[1], "saturation": jit[2], "crop": crop}

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if images.ndim != 4 or masks.ndim != 3 or images.shape[0] != masks.shape[0] \
                or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"expected images N,3,H,W and masks N,H,W of the same N,H,W; got "
                             f"{tuple(images.shape)} and {tuple(masks.shape)}")
        n, _, h, w = images.shape
        p = self.params(n, h, w, generator)
        crop, dev = p["crop"], images.device
        # output pixel centre u in [-1, 1] (align_corners=False) -> input coordinate:
        # x = (ox + (u + 1) * crop / 2) / s, normalised xn = 2 x / W - 1
        ax = crop / (p["scale"] * w)
        ay = crop / (p["scale"] * h)
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        # xn = ax * u + tx; a flip negates ax, mirroring the crop about its own centre
        theta[:, 0, 0] = torch.where(p["flip"], -ax, ax)
        theta[:, 0, 2] = (2 * p["ox"] + crop) / (p["scale"] * w) - 1
        theta[:, 1, 1] = ay
        theta[:, 1, 2] = (2 * p["oy"] + crop) / (p["scale"] * h) - 1
        # N, crop, crop, 2: where each output pixel samples its image, in [-1, 1] coordinates
        grid = F.affine_grid(theta.float().to(dev), [n, 1, crop, crop], align_corners=False)
        # grid_sample needs float; values stay in 0..255, black outside the image
        x = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        # masks: shift ids by one so that 0 marks "outside the image" after zero padding
        m = F.grid_sample(masks[:, None].float() + 1, grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[:, 0].round().long()
        # round() above only guards float error; nearest sampling never blends two ids
        m = torch.where(m == 0, torch.full_like(m, IGNORE_INDEX), m - 1)
        if self.jitter > 0:
            x = self._jitter(x / 255.0, p) * 255.0  # the blends work in [0, 1], as torchvision's
        return normalize_uint8(x), m

    @staticmethod
    def _jitter(x: torch.Tensor, p: dict) -> torch.Tensor:
        """Brightness, contrast, saturation with per-image factors (images in [0, 1])."""
        # one factor per image, broadcast over C,H,W
        view = lambda t: t.float().to(x.device).view(-1, 1, 1, 1)  # noqa: E731
        x = (x * view(p["brightness"])).clamp(0, 1)
        c = view(p["contrast"])
        # contrast blends with each image's mean grey level (torchvision's adjust_contrast)
        grey_mean = TF.rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
        x = (c * x + (1 - c) * grey_mean).clamp(0, 1)
        s = view(p["saturation"])
        # saturation blends with the per-pixel grey image (adjust_saturation)
        return (s * x + (1 - s) * TF.rgb_to_grayscale(x)).clamp(0, 1)

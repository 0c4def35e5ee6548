"""Exercise 01 (what is semantic segmentation): palette colours to class ids, class
frequencies, colorizing a mask."""
from __future__ import annotations

import torch

from minseg.data.voc import VOC_PALETTE
from minseg.grading.checks._common import IGNORE, blobs, rng
from minseg.grading.tasks import Case, Task, exact
from minseg.losses import class_frequencies
from minseg.viz import colorize as ref_colorize

SLUG = "01_what_is_semantic_segmentation"
TITLE = "What is semantic segmentation"
PALETTE = torch.from_numpy(VOC_PALETTE.copy())


def _rgb_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex01.rgb")
    out = []
    for h, w, unknown, note in [(4, 5, 0, "palette colours and void"), (6, 6, 3, "3 colours not in the palette"),
                                (3, 8, 0, "palette colours only")]:
        ids = torch.randint(0, 21, (h, w), generator=g)
        if "void" in note:
            ids[torch.rand(h, w, generator=g) < 0.2] = IGNORE
        rgb = PALETTE[ids].clone()
        for _ in range(unknown):
            y, x = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
            rgb[y, x] = torch.tensor([13, 200, 77], dtype=torch.uint8)
        out.append(Case({"rgb": rgb, "palette": PALETTE.clone()}, f"{h}x{w}x3 image, {note}"))
    return out


def _ref_rgb(rgb: torch.Tensor, palette: torch.Tensor, num_classes: int = 21) -> torch.Tensor:
    lookup = {tuple(palette[c].tolist()): c for c in range(num_classes)}
    flat = [lookup.get(tuple(px), IGNORE) for px in rgb.reshape(-1, 3).tolist()]
    return torch.tensor(flat, dtype=torch.long).reshape(rgb.shape[:2])


def _mask_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex01.masks")
    return [Case({"masks": torch.stack([blobs(g, 6, 7, c, count=3, ignore_border=True) for _ in range(n)]),
                  "num_classes": c}, f"{n} masks 6x7, {c} classes, void borders")
            for n, c in [(1, 3), (3, 5), (2, 21)]]


def _color_cases(seed: int) -> list[Case]:
    g = rng(seed, "ex01.color")
    return [Case({"mask": blobs(g, h, w, 21, count=4, ignore_border=v), "palette": PALETTE.clone()},
                 f"{h}x{w} mask" + (" with void (255)" if v else ""))
            for h, w, v in [(4, 4, False), (6, 9, True), (5, 3, True)]]


TASKS = [
    Task("ex01.rgb_to_labels", "rgb_to_labels", 2,
         "turn an H,W,3 uint8 colour mask into H,W int64 class ids: c where the colour equals "
         "palette[c] for c < num_classes, 255 for every other colour (void included)",
         _rgb_cases, _ref_rgb, compare=exact(),
         hint="compare each pixel's colour with each of the num_classes palette rows"),
    Task("ex01.class_frequencies", "class_frequencies", 1,
         "the fraction of valid (non-255) pixels of each class over all masks, a float tensor [C] "
         "summing to 1", _mask_cases,
         lambda masks, num_classes: (lambda n: n.double() / n.sum())(class_frequencies(masks, num_classes))),
    Task("ex01.colorize", "colorize", 1,
         "H,W class ids (255 = void) to an H,W,3 uint8 RGB image: the palette row of each id",
         _color_cases, lambda mask, palette: torch.from_numpy(ref_colorize(mask)), compare=exact()),
]

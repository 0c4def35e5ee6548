"""Pascal VOC 2012: class names, the palette, the reader, class subsets and the opt-in download.

The reader wraps :class:`torchvision.datasets.VOCSegmentation`, so the built-in synthetic tree
(:func:`minseg.data.make_synthetic_voc`) and a real ``VOCdevkit`` go through the same code.
Dataset paper: Everingham et al., "The PASCAL Visual Object Classes Challenge",
http://host.robots.ox.ac.uk/pascal/VOC/voc2012/
"""
from __future__ import annotations

import numpy as np

from minseg.validate import IGNORE_INDEX

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
NUM_VOC_CLASSES = len(VOC_CLASSES)


def voc_colormap(n: int = 256) -> np.ndarray:
    """The standard VOC colormap, ``n x 3`` uint8: the bits of each class id are spread over
    R, G and B from the high bit down (class 1 = (128, 0, 0), 15 person = (192, 128, 128))."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_PALETTE: np.ndarray = voc_colormap(256)
"""256 x 3 uint8 palette; row ``IGNORE_INDEX`` (255) is the void colour (224, 224, 192)."""

__all__ = ["IGNORE_INDEX", "VOC_CLASSES", "NUM_VOC_CLASSES", "VOC_PALETTE", "voc_colormap"]

"""Weak supervision: cheaper labels than full masks, and how to train a segmenter on them.

A full mask labels every pixel; it is the most expensive label there is. Weaker labels tell
the network less, and cost a small fraction of the time:

* **points** and **scribbles** label a few pixels exactly (everything else is unknown, 255);
  the network is trained with a *partial* cross entropy over the labelled pixels only
  (:func:`minseg.losses.partial_cross_entropy`; Bearman et al. 2016,
  https://arxiv.org/abs/1506.02106; Lin et al. 2016, ScribbleSup,
  https://arxiv.org/abs/1604.05144);
* **boxes** say where each object is, not its shape; filling them gives a dense but noisy
  *pseudo-label* (:func:`boxes_to_masks`; the "box as mask" baseline of Dai et al. 2015,
  BoxSup, https://arxiv.org/abs/1503.01640, and Khoreva et al. 2017, "Simple does it",
  https://arxiv.org/abs/1603.07485, who also leave the uncertain rim of each box unlabelled);
* **image tags** say only which classes occur; a classifier trained on them localises each
  class through its *class activation map* (Zhou et al. 2016,
  https://arxiv.org/abs/1512.04150), which is thresholded into pseudo-labels
  (:mod:`minseg.classification` owns the classifier, its training and its CAMs;
  :func:`cam_pseudo_labels_for` labels a dataset with them); or the segmenter itself is
  trained on the tags by *multiple-instance learning*, the image a bag of pixels whose pooled
  per-pixel scores must match the tags (:func:`mil_pool`, :func:`mil_loss`; Pathak et al. 2015,
  https://arxiv.org/abs/1412.7144; Pinheiro & Collobert 2015, https://arxiv.org/abs/1411.6228).

Here every weak label is *derived from a full mask*, deterministically from a seed, so a lesson
can compare label types on the same images with the same budget and score them against the
truth. :class:`WeakLabelDataset` wraps a :class:`minseg.data.VOCSegmentationDataset` so its
loader yields weak masks (at the image's own resolution, before the joint transforms) instead
of full ones. What each label type costs to make is priced in :mod:`minseg.cost`
(:data:`~minseg.cost.LABEL_COSTS`, :func:`~minseg.cost.annotation_seconds`).

Masks follow the package convention: ``int64`` ``H,W`` class ids, ``255`` (``IGNORE_INDEX``)
for unlabelled or void pixels.

The package has one module per job: :mod:`~minseg.weak.labels` (points, scribbles, boxes from a
mask), :mod:`~minseg.weak.mil` (the multiple-instance loss) and :mod:`~minseg.weak.dataset` (the
dataset of weak masks, CAM pseudo-labels for it, and their quality against the truth). Import
from ``minseg.weak``.
"""
from minseg.weak.dataset import WEAK_KINDS, WeakLabelDataset, cam_pseudo_labels_for, label_quality
from minseg.weak.labels import (boxes_from_instances, boxes_to_masks, points_from_mask,
                                scribbles_from_mask)
from minseg.weak.mil import MIL_POOLS, mil_loss, mil_pool

__all__ = [
    "points_from_mask", "scribbles_from_mask", "boxes_from_instances", "boxes_to_masks",
    "cam_pseudo_labels_for", "MIL_POOLS", "mil_pool", "mil_loss", "WeakLabelDataset",
    "label_quality", "WEAK_KINDS",
]

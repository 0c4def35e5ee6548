"""merged_and_split: why connected-component instances miss the true ones (lesson 15)."""
from __future__ import annotations

import pytest
import torch

from minseg.instances import merged_and_split, semantic_to_instances, to_panoptic
from minseg.metrics import panoptic_quality


def scene():
    """Background (stuff 0) with two touching persons (15) and one dog (12)."""
    sem = torch.zeros(6, 10, dtype=torch.long)
    inst = torch.zeros_like(sem)
    sem[1:5, 1:4], inst[1:5, 1:4] = 15, 1
    sem[1:5, 4:7], inst[1:5, 4:7] = 15, 2
    sem[2:5, 8:10], inst[2:5, 8:10] = 12, 3
    return sem, inst


def test_perfect_prediction_has_no_errors():
    sem, inst = scene()
    gt = to_panoptic(sem, inst, thing_classes=range(1, 21))
    assert merged_and_split(gt, gt) == {"targets": 3, "merged": 0, "split": 0}
    assert merged_and_split(gt[None], gt[None]) == {"targets": 3, "merged": 0, "split": 0}


def test_connected_components_merge_touching_things():
    sem, inst = scene()
    things = range(1, 21)
    gt = to_panoptic(sem, inst, things)
    pred = to_panoptic(sem, semantic_to_instances(sem, things), things)
    assert merged_and_split(pred, gt) == {"targets": 3, "merged": 2, "split": 0}
    pq = panoptic_quality(pred, gt, num_classes=21)
    assert pq["per_class"][15]["tp"] == 0 and pq["per_class"][15]["fn"] == 2
    assert pq["per_class"][15]["fp"] == 1 and pq["per_class"][12]["rq"] == 1.0


def test_a_split_object_and_void():
    sem, inst = scene()
    things = range(1, 21)
    gt = to_panoptic(sem, inst, things)
    pred = gt.clone()
    pred[2:5, 9] = 12 * 1000 + 7            # the dog cut in two halves of 3 pixels each
    assert merged_and_split(pred, gt) == {"targets": 3, "merged": 0, "split": 1}
    assert merged_and_split(pred, gt, min_fraction=0.6)["split"] == 0
    gt_void = gt.clone()
    gt_void[1:5, 1:4] = -1                  # a void target segment does not count
    assert merged_and_split(gt_void, gt_void)["targets"] == 2
    with pytest.raises(ValueError):
        merged_and_split(pred, gt[:3])
    with pytest.raises(ValueError):
        merged_and_split(pred, gt, min_fraction=0)

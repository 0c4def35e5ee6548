"""minseg.cost: FLOP counting (incl. attention on the CPU), conv cost formulas, speed table,
annotation-time estimates and object counting."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minseg.blocks import DepthwiseSeparableConv
from minseg.cost import (LABEL_COSTS, annotation_hours, annotation_seconds, image_label_counts, conv2d_cost, count_objects, flops,
                         median_time, speed_table)
from minseg.models import build_model, count_parameters


class _Attn(nn.Module):
    def forward(self, x):
        q = x.reshape(1, 2, 50, 8)
        k = q[:, :, :10]
        return F.scaled_dot_product_attention(q, k, k)


def test_attention_is_counted_on_cpu():
    # Q K^T and P V: 2 matmuls of 2*Tq*Tk*d FLOPs per head.
    assert flops(_Attn(), (1, 800), in_channels=1) == 2 * 2 * 2 * 50 * 10 * 8


@pytest.mark.parametrize("groups,kernel,stride", [(1, 3, 1), (1, 1, 1), (16, 3, 1), (1, 3, 2),
                                                  (4, 3, 2)])
def test_conv2d_cost_matches_torch(groups, kernel, stride):
    conv = nn.Conv2d(16, 32 if groups != 16 else 16, kernel, stride=stride,
                     padding=kernel // 2, groups=groups, bias=False)
    cost = conv2d_cost(16, conv.out_channels, kernel, 20, 22, groups=groups, stride=stride)
    assert cost["params"] == count_parameters(conv)
    assert cost["flops"] == flops(conv, (20, 22), in_channels=16) == 2 * cost["macs"]


def test_conv2d_cost_bias_and_errors():
    assert conv2d_cost(3, 8, 3, 4, 4, bias=True)["params"] == 9 * 3 * 8 + 8
    with pytest.raises(ValueError, match="groups"):
        conv2d_cost(6, 8, 3, 4, 4, groups=4)


def test_depthwise_separable_ratio():
    # the MobileNet ratio 1/C_out + 1/k^2 for the convolutions alone
    std = conv2d_cost(64, 128, 3, 32, 32)
    sep_dw = conv2d_cost(64, 64, 3, 32, 32, groups=64)
    sep_pw = conv2d_cost(64, 128, 1, 32, 32)
    ratio = (sep_dw["macs"] + sep_pw["macs"]) / std["macs"]
    assert math.isclose(ratio, 1 / 128 + 1 / 9)
    block = DepthwiseSeparableConv(64, 128)
    assert flops(block, 32, in_channels=64) == sep_dw["flops"] + sep_pw["flops"]


def test_flops_by_module_sums_to_total_and_keeps_mode():
    model = build_model("fastscnn", 21, width=8).train()
    parts = flops(model, 64, by_module=True)
    assert set(parts) == {"downsample", "context", "fusion", "classifier"}
    assert sum(parts.values()) == flops(model, 64)
    assert model.training
    # batch and size scale the count as they should for a fully convolutional model
    assert flops(model, 64, batch_size=2) == 2 * flops(model, 64)


def test_segformer_flops_include_attention():
    model = build_model("segformer", 21, width=8)
    with torch.no_grad(), torch.utils.flop_counter.FlopCounterMode(display=False) as fc:
        model.eval()(torch.randn(1, 3, 64, 64))
    assert flops(model, 64) > fc.get_total_flops()  # torch alone misses the attention


def test_speed_table_rows():
    models = {"a": build_model("fastscnn", 3, width=4), "b": build_model("segformer", 3, width=4)}
    rows = speed_table(models, [32, 48], warmup=0, reps=1)
    assert [(r["name"], r["size"]) for r in rows] == [("a", 32), ("a", 48), ("b", 32), ("b", 48)]
    for r in rows:
        assert r["fps"] > 0 and math.isclose(r["latency_ms"], 1000 / r["fps"])
        assert r["gflops"] > 0


def test_annotation_hours():
    h = annotation_hours(2913, 6929)
    assert math.isclose(h["full_mask"], 2913 * 239.7 / 3600)
    assert math.isclose(h["polygon"], 6929 * 79 / 3600)
    assert math.isclose(h["tags"], 2913 * 20 / 3600)
    assert set(h) == set(LABEL_COSTS) - {"click"}          # no click count given
    assert math.isclose(annotation_hours(1, 0, num_clicks=5)["click"], 5 * 2.4 / 3600)
    with pytest.raises(ValueError, match="per click"):
        annotation_hours(1, 1, costs=["click"])
    assert annotation_hours(10, 0, costs=["polygon"]) == {"polygon": 0.0}
    with pytest.raises(ValueError, match="unknown annotation kind"):
        annotation_hours(1, 1, costs=["magic"])
    with pytest.raises(ValueError):
        annotation_hours(-1, 1)


def test_count_objects(voc_root):
    from PIL import Image
    import numpy as np

    from minseg.data import VOCSegmentationDataset

    ds = VOCSegmentationDataset(voc_root, "train", limit=5)
    n = count_objects(ds)
    expect = 0
    for i in range(len(ds)):
        ids = set(np.unique(np.asarray(Image.open(ds.instance_path(i))))) - {0, 255}
        expect += len(ids)
    assert n == expect > 0


def test_flops_by_module_sums_module_lists():
    model = build_model("segformer", 21, width=8)
    parts = flops(model, 64, by_module=True)
    assert set(parts) == {"stages", "linears", "fuse", "classifier"}
    assert sum(parts.values()) == flops(model, 64)


def test_median_time():
    import time

    calls = []
    t = median_time(lambda: (calls.append(1), time.sleep(0.01)), warmup=1, reps=3)
    assert len(calls) == 4 and 0.009 < t < 1.0
    with pytest.raises(ValueError):
        median_time(lambda: None, reps=0)


def test_annotation_seconds_per_label_type():
    """Lesson 14's label types priced from the one table (79 s per polygon, 1 s per tag, 2.4 s
    per click, 7 / 35 s per box)."""
    m = torch.zeros(6, 6, dtype=torch.long)
    m[1:3, 1:3], m[4:6, 3:6], m[0, 5] = 15, 12, 255
    counts = image_label_counts(m)
    assert counts == {"classes": 2, "objects": 2}
    assert annotation_seconds("tags", **counts) == 20.0
    assert annotation_seconds("points", **counts) == pytest.approx(20 + 2.4 * 3)
    assert annotation_seconds("boxes", **counts) == pytest.approx(14.0)
    assert annotation_seconds("boxes_drawn", **counts) == pytest.approx(70.0)
    assert annotation_seconds("full", **counts) == pytest.approx(158.0)
    assert LABEL_COSTS["click"].seconds == 2.4 and "1506.02106" in LABEL_COSTS["click"].source
    with pytest.raises(ValueError, match="scribbles"):
        annotation_seconds("scribbles", **counts)

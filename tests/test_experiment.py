import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from minseg.config import profile
from minseg.experiment import compare, format_table, measure, predictions, throughput
from minseg.metrics import ConfusionMatrix


def _data(n=8, c=3, size=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    y[:, :2] = 255
    return DataLoader(TensorDataset(x, y), batch_size=4)


def _net(c=3):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, c, 1))


def test_predictions_and_measure_match_confusion_matrix():
    loader, model = _data(), _net()
    x, y, p = predictions(model, loader)
    assert x.shape == (8, 3, 16, 16) and y.shape == p.shape == (8, 16, 16)
    cm = ConfusionMatrix(3)
    for xb, yb in loader:
        cm.update(model(xb), yb)
    res = measure(model, loader, 3)
    assert abs(res["miou"] - cm.compute()["miou"]) < 1e-12
    assert 0 <= res["boundary_f1"] <= 1
    assert predictions(model, loader, limit=5)[0].shape[0] == 5


def test_compare_same_seed_same_start_and_table():
    loader = _data()
    cfg = profile("smoke")
    rows = compare({"a": _net, "b": _net}, loader, loader, num_classes=3, cfg=cfg,
                   budget_s=30, epochs=1)
    assert [r["name"] for r in rows] == ["a", "b"]
    # identical builders, identical seed and data: identical results
    assert rows[0]["miou"] == rows[1]["miou"] and rows[0]["steps"] == 2
    table = format_table(rows, ["name", "params", "miou"])
    assert table.splitlines()[0] == "| name | params | miou |" and len(table.splitlines()) == 4


def test_throughput_positive():
    assert throughput(_net(), 16, batch_size=2, reps=2) > 0

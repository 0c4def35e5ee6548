import json

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from minseg.config import profile
from minseg.experiment import (EVIDENCE_ENV, Variant, compare, evidence, evidence_effect,
                               measure, predictions, throughput)
from minseg.stats import Difference, Interval
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
    cmp = compare({"a": _net, "b": _net}, loader, loader, num_classes=3, cfg=cfg,
                  budget_s=30, epochs=1, verbose=False)
    assert cmp.names == ["a", "b"] and cmp.seeds == [cfg.seed]
    # identical builders, identical seed and data: identical results
    assert cmp.values("a", "miou") == cmp.values("b", "miou") and cmp.rows[0]["steps"] == 2
    # one seed: the interval of a confusion-matrix score comes from a bootstrap over images
    d = cmp.difference("a", "b")
    assert d.interval.method == "bootstrap" and d.interval.mean == 0 and not d.separated
    assert cmp.difference("a", "b", "boundary_f1").interval.method == "single"
    table = cmp.table(["name", "params", "miou"])
    assert table.splitlines()[0] == "| name | params | miou |" and len(table.splitlines()) == 4
    with pytest.raises(KeyError, match="no variant 'c'"):
        cmp.difference("a", "c")
    with pytest.raises(KeyError, match="no metric"):
        cmp.values("a", "nope")


def test_compare_pairs_seeds_and_gives_intervals():
    loader = _data()
    cfg = profile("smoke")
    seen = []

    def extra(model, row):
        seen.append(row["targets"].shape)
        return {"fg_acc": float((row["preds"] == row["targets"]).float().mean())}

    starts = {"a": [], "b": []}

    def build(arm):
        def f():
            net = _net()
            starts[arm].append([p.detach().clone() for p in net.parameters()])
            return net
        return f

    cmp = compare({"a": build("a"), "b": Variant(build("b"), fit_kwargs={"lr": 0.5})}, loader,
                  loader, num_classes=3, cfg=cfg, seeds=3, steps=2, extra=extra, verbose=False)
    assert cmp.seeds == [0, 1, 2] and len(cmp.runs["a"]) == 3 and len(seen) == 6
    assert [r["seed"] for r in cmp.runs["b"]] == [0, 1, 2]
    # seed s builds the same initial weights for both arms, other seeds other weights
    for k in range(3):
        assert all(torch.equal(p, q) for p, q in zip(starts["a"][k], starts["b"][k]))
    assert not torch.equal(starts["a"][0][0], starts["a"][1][0])
    assert cmp.runs["a"][0]["history"][-1]["lr"] != cmp.runs["b"][0]["history"][-1]["lr"]
    d = cmp.difference("a", "b", "fg_acc")
    vals = [x - y for x, y in zip(cmp.values("a", "fg_acc"), cmp.values("b", "fg_acc"))]
    assert d.interval.method == "t" and d.interval.mean == pytest.approx(sum(vals) / 3)
    assert "±" in cmp.table(["name", "miou", "fg_acc"])
    assert cmp.interval("a").n == 3
    with pytest.raises(ValueError, match="distinct"):
        compare({"a": _net}, loader, loader, num_classes=3, cfg=cfg, seeds=[1, 1])


def test_evidence_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(EVIDENCE_ENV, str(tmp_path))
    d = Difference("skips", "no skips", "boundary F1", Interval(0.1, 0.05, 0.15, 3, "t"), steps=50)
    row = evidence("04", "skips sharpen boundaries", d)
    assert row["status"] == "confirmed" and row["effect"] == 0.1 and row["steps"] == 50
    rev = evidence("04", "no skips is better", d, expect="no skips")
    assert rev["status"] == "reversed" and (rev["effect"], rev["lo"], rev["hi"]) == (-0.1, -0.15, -0.05)
    chk = evidence("06", "mIoU equals torchmetrics", True, detail="max |diff| 0 on 3 cases")
    assert chk["status"] == "check passed"
    assert "[confirmed]" in capsys.readouterr().out
    rows = json.loads((tmp_path / "04.json").read_text())
    assert [r["status"] for r in rows] == ["confirmed", "reversed"]
    assert evidence_effect(rows[0]) == "boundary F1 +0.100 (+0.050 to +0.150; 3 seeds)"
    t = Difference("PSP", "local", "absent-class rate", Interval(-0.09, -0.165, -0.015, 3, "t"),
                   higher_is_better=False)
    low = evidence("12", "PSP labels fewer absent-class pixels", t)
    assert low["status"] == "confirmed"
    assert evidence_effect(low) == "absent-class rate reduction +0.090 (+0.015 to +0.165; 3 seeds)"
    fps = Difference("fast", "slow", "log2 FPS", Interval(0.5, 0.4, 0.6, 8, "t", "timing rounds"))
    assert evidence_effect(evidence("20", "fast is faster", fps)) == (
        "log2 FPS +0.500 (+0.400 to +0.600; 8 timing rounds)")
    with pytest.raises(ValueError, match="neither"):
        evidence("04", "x", d, expect="other")
    with pytest.raises(ValueError, match="detail"):
        evidence("06", "x", True)


def test_throughput_positive():
    assert throughput(_net(), 16, batch_size=2, reps=2) > 0


def test_predictions_read_the_out_entry_of_dict_outputs():
    """Models that return a dict (torchvision's, MaskFormer's) are evaluated on ``"out"``."""
    class DictNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return {"out": self.conv(x), "aux": self.conv(x).flip(1)}

    net = DictNet()
    batches = [(torch.randn(2, 3, 5, 5), torch.zeros(2, 5, 5, dtype=torch.long))]
    _, _, preds = predictions(net, batches)
    assert torch.equal(preds, net.conv(batches[0][0]).argmax(1))

"""The training engine: fit / evaluate, time budget, determinism, checkpoints and resume."""
from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from minseg import train as T
from minseg.config import profile
from minseg.metrics import ConfusionMatrix
from minseg.models import build_model
from minseg.train import (History, evaluate, fit, latest_checkpoint, load_checkpoint,
                          load_model_from_checkpoint, lr_factor, save_checkpoint)


# ---------------------------------------------------------------------------------------------
# tiny models and data
# ---------------------------------------------------------------------------------------------
def tiny_net(num_classes: int = 3, seed: int = 0, dropout: float = 0.0, bn: bool = False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 8, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.Dropout2d(dropout), nn.Conv2d(8, num_classes, 1)]
    return nn.Sequential(*layers)


def blob_data(n: int = 32, size: int = 16, num_classes: int = 3, seed: int = 0, void: bool = True):
    """Class = which colour channel is brightest (learnable by a 1-layer net); a void border."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = x[:, :num_classes].argmax(1)
    if void:
        y[:, 0, :] = 255
    return TensorDataset(x, y)


def loader(ds, batch_size: int = 8, shuffle: bool = True):
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def voc_loaders(voc_root):
    """The real pipeline: synthetic VOC tree, random augmentation, smoke profile (no workers)."""
    from minseg.data import build_loaders

    return build_loaders(profile("smoke"), root=voc_root, batch_size=8, val_limit=8)


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------
def test_fit_drives_the_loss_down_and_records_history():
    ds = blob_data()
    model = tiny_net()
    h = fit(model, loader(ds), loader(ds, shuffle=False), num_classes=3, epochs=6, lr=2e-2)
    assert isinstance(h, History) and isinstance(h, list) and len(h) == 6
    for key in ("epoch", "step", "loss", "lr", "images_per_s", "time_s", "miou", "pixel_acc",
                "mdice"):
        assert key in h.last, key
    assert [r["epoch"] for r in h] == [1, 2, 3, 4, 5, 6] and h.last["step"] == 24
    assert h["loss"][-1] < 0.7 * h["loss"][0]
    assert h.last["miou"] > h[0]["miou"] and h.last["miou"] > 0.6
    assert h.best("miou")["miou"] == max(h["miou"]) and h.best("loss")["loss"] == min(h["loss"])
    assert h.stopped_early is False and h.stop_reason == "epochs"
    assert h["lr"][0] > h["lr"][-1]  # poly decay
    assert h.total_time_s >= h.last["time_s"] > 0


def test_history_plots_and_survives_a_round_trip():
    import matplotlib

    matplotlib.use("Agg")
    from minseg.viz import plot_curves

    h = fit(tiny_net(), loader(blob_data(16)), loader(blob_data(8)), num_classes=3, epochs=2)
    assert plot_curves(h) is not None
    h2 = History.from_state_dict(h.state_dict())
    assert h2 == h and h2.stop_reason == h.stop_reason and "epoch=2" in repr(h2)


def test_max_steps_and_epochs_are_honoured():
    dl = loader(blob_data(32))  # 4 batches per epoch
    h = fit(tiny_net(), dl, num_classes=3, max_steps=6)
    assert h.last["step"] == 6 and len(h) == 2 and h.last["steps_in_epoch"] == 2
    assert h.stop_reason == "max_steps" and not h.stopped_early
    assert "miou" not in h.last  # no validation data
    h = fit(tiny_net(), dl, num_classes=3, epochs=2)
    assert h.last["step"] == 8 and h.stop_reason == "epochs"
    h = fit(tiny_net(), dl, num_classes=3, epochs=5, max_steps=3)  # whichever comes first
    assert h.last["step"] == 3


def test_time_budget_stops_early_evaluates_and_marks_the_history():
    def slow(event, state):
        if event == "step":
            time.sleep(0.03)

    ds = blob_data(16)
    t0 = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="time cap"):
        h = fit(tiny_net(), loader(ds, 4), loader(ds, 8, False), num_classes=3, epochs=1000,
                time_budget_s=0.4, callbacks=[slow])
    took = time.perf_counter() - t0
    assert h.stopped_early and h.cut_short and h.stop_reason == "time_budget"
    assert 1 <= h.last["step"] < 1000 * 4
    assert math.isfinite(h.last["miou"])  # evaluated once at the end
    assert took < 5.0


def test_a_time_cap_that_cuts_a_run_short_says_so():
    def slow(event, state):
        if event == "step":
            time.sleep(0.05)

    with pytest.warns(RuntimeWarning, match=r"stopped training after \d+ of 40 planned steps"):
        h = fit(tiny_net(), loader(blob_data(32)), num_classes=3, max_steps=40,
                time_budget_s=0.2, callbacks=[slow])
    assert h.cut_short and h.stopped_early and h.planned_steps == 40 and h.steps < 40
    assert "cut short by the time cap" in repr(h)
    h = fit(tiny_net(), loader(blob_data(32)), num_classes=3, max_steps=3, time_budget_s=60)
    assert not h.cut_short and h.steps == 3 and h.stop_reason == "max_steps"


def test_a_cap_used_up_before_the_first_step_is_an_error(tmp_path):
    dl = loader(blob_data(32))
    fit(tiny_net(), dl, num_classes=3, max_steps=2, checkpoint_dir=tmp_path)
    ck = load_checkpoint(tmp_path / "last.pt")
    ck["position"]["used_s"] = 100.0  # as if the first part had run for 100 s
    save_checkpoint(tmp_path / "last.pt", **ck)
    with pytest.raises(ValueError, match="already used up"):
        fit(tiny_net(), dl, num_classes=3, max_steps=4, checkpoint_dir=tmp_path, resume=True,
            time_budget_s=50)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="time_budget_s must be None or > 0"):
            fit(tiny_net(), dl, num_classes=3, max_steps=4, time_budget_s=bad)
    with pytest.raises(ValueError, match="max_steps must be a positive int"):
        fit(tiny_net(), dl, num_classes=3, max_steps=0)


def test_callbacks_see_each_step_and_can_stop():
    seen = []

    def cb(event, state):
        seen.append((event, state["step"]))
        if event == "step" and state["step"] == 3:
            state["stop"] = True

    h = fit(tiny_net(), loader(blob_data(32)), num_classes=3, epochs=10, callbacks=[cb])
    assert h.last["step"] == 3 and h.stop_reason == "callback" and h.stopped_early
    assert seen == [("step", 1), ("step", 2), ("step", 3), ("epoch", 3), ("end", 3)]


def test_lr_schedules():
    assert lr_factor(0, 100, "poly") == 1.0
    assert lr_factor(50, 100, "poly", power=0.9) == pytest.approx(0.5 ** 0.9)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, "constant") == 1.0
    assert [lr_factor(i, 100, "cosine", warmup_steps=4) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 100, "cosine", warmup_steps=4) == 1.0
    assert lr_factor(10, 100, "poly", progress=1.0) == 0.0
    h = fit(tiny_net(), loader(blob_data(32)), num_classes=3, epochs=2, schedule="constant",
            optimizer="sgd", lr=0.05)
    assert h["lr"] == [0.05, 0.05]


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------
def test_evaluate_equals_a_hand_accumulated_confusion_matrix():
    ds = blob_data(20, seed=3)
    model = tiny_net(seed=1).eval()
    dl = loader(ds, 6, shuffle=False)  # uneven last batch
    cm = ConfusionMatrix(3)
    with torch.no_grad():
        for x, y in dl:
            cm.update(model(x), y)
    res = evaluate(model, dl, 3, device="cpu")
    assert torch.equal(res["confusion_matrix"], cm.mat)
    assert res["miou"] == cm.compute()["miou"] and res["pixel_acc"] == cm.compute()["pixel_acc"]
    assert res["images"] == 20 and res["time_s"] >= 0
    # batching does not matter (one dataset-wide matrix, never a mean of per-batch scores)
    assert torch.equal(evaluate(model, loader(ds, 20, False), 3)["confusion_matrix"], cm.mat)
    assert evaluate(model, ds, 3)["miou"] == res["miou"]  # a Dataset works too
    assert not model.training


def test_evaluate_with_test_time_augmentation_uses_predict():
    from minseg.infer import predict

    ds = blob_data(10, size=20, seed=4)
    model = tiny_net(seed=2)
    cm = ConfusionMatrix(3)
    for x, y in loader(ds, 4, False):
        cm.update(predict(model, x, scales=(0.75, 1.25), flip=True), y)
    res = evaluate(model, loader(ds, 4, False), 3, scales=(0.75, 1.25), flip=True)
    assert torch.equal(res["confusion_matrix"], cm.mat)
    assert not torch.equal(res["confusion_matrix"], evaluate(model, ds, 3)["confusion_matrix"])


def test_evaluate_with_a_loss_and_a_torchvision_style_output():
    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_net()

        def forward(self, x):
            return {"out": self.net(x), "aux": None}

    ds = blob_data(8)
    res = evaluate(DictOut(), loader(ds, 4, False), 3, loss="ce")
    assert res["loss"] > 0 and 0 <= res["miou"] <= 1


# ---------------------------------------------------------------------------------------------
# determinism and resume
# ---------------------------------------------------------------------------------------------
def test_same_seed_same_history_and_weights(voc_loaders):
    train_dl, val_dl = voc_loaders
    runs = []
    for seed in (0, 0, 1):
        model = tiny_net(21, dropout=0.2, bn=True)
        h = fit(model, train_dl, val_dl, num_classes=21, max_steps=4, seed=seed)
        runs.append((model, h))
    (m0, h0), (m1, h1), (m2, h2) = runs
    assert same_weights(m0, m1) and h0["loss"] == h1["loss"] and h0["miou"] == h1["miou"]
    assert not same_weights(m0, m2)  # the seed changes data order, augmentation and dropout


@pytest.mark.parametrize("crash_at", [3, 5])  # 3 batches per epoch: after an epoch / mid-epoch
def test_resume_after_a_crash_gives_bitwise_identical_weights(voc_loaders, tmp_path, crash_at):
    train_dl, val_dl = voc_loaders  # random augmentation on the global RNG, BN and dropout
    kw = dict(num_classes=21, max_steps=8, lr=3e-3, warmup_steps=2, checkpoint_every=2, seed=7)
    straight = tiny_net(21, dropout=0.2, bn=True)
    h_straight = fit(straight, train_dl, val_dl, **kw)

    class Crash(Exception):
        pass

    def crash(event, state):
        if event == "step" and state["step"] == crash_at:
            raise Crash

    ckdir = tmp_path / "ck"
    with pytest.raises(Crash):
        fit(tiny_net(21, dropout=0.2, bn=True), train_dl, val_dl, checkpoint_dir=ckdir,
            callbacks=[crash], **kw)
    saved = load_checkpoint(latest_checkpoint(ckdir))
    assert saved["step"] == crash_at - 1 if crash_at % 2 else crash_at  # the last one written
    resumed = tiny_net(21, dropout=0.2, bn=True, seed=123)  # weights come from the checkpoint
    h_resumed = fit(resumed, train_dl, val_dl, checkpoint_dir=ckdir, resume=True, **kw)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert h_resumed["step"] == h_straight["step"]
    assert h_resumed["loss"] == h_straight["loss"] and h_resumed["miou"] == h_straight["miou"]
    final = load_checkpoint(latest_checkpoint(ckdir))
    assert final["step"] == 8 and same_weights(resumed, _loaded(final))
    # resuming a finished run trains no further
    again = fit(resumed, train_dl, val_dl, checkpoint_dir=ckdir, resume=True, **kw)
    assert again["step"] == h_straight["step"] and same_weights(resumed, _loaded(final))


def _loaded(ckpt):
    m = tiny_net(21, bn=True, dropout=0.2)
    m.load_state_dict(ckpt["model"])
    return m


def test_checkpoint_contents_and_rebuilding_the_model(tmp_path):
    from minseg.models import build_model

    model = build_model("unet", 3, width=4)
    model.minseg_name, model.minseg_kwargs = "unet", {"width": 4}
    ds = blob_data(8, size=32)
    fit(model, loader(ds, 4), num_classes=3, max_steps=2, checkpoint_dir=tmp_path)
    ck = load_checkpoint(tmp_path / "last.pt")
    for key in ("model", "optimizer", "scheduler", "scaler", "epoch", "step", "position",
                "rng", "profile", "meta", "history"):
        assert key in ck, key
    assert ck["meta"]["model_name"] == "unet" and ck["meta"]["num_classes"] == 3
    assert ck["profile"]["name"] == "smoke" and ck["scheduler"]["step"] == 2
    rebuilt, meta = load_model_from_checkpoint(tmp_path / "last.pt")
    assert same_weights(model.cpu(), rebuilt) and meta["model_kwargs"] == {"width": 4}
    # without the attributes, meta= tells fit what the model is
    plain = tiny_net()
    fit(plain, loader(blob_data(8)), num_classes=3, max_steps=1, checkpoint_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="model_name"):
        load_model_from_checkpoint(tmp_path / "b" / "last.pt")


def test_an_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, step=1, model={"w": torch.ones(3)})
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, step=2, model={"w": torch.zeros(3)})
    monkeypatch.setattr(torch, "save", real_save)
    ck = load_checkpoint(path)
    assert ck["step"] == 1 and torch.equal(ck["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no partial / temp file
    assert latest_checkpoint(tmp_path) == path and latest_checkpoint(tmp_path / "none") is None


# ---------------------------------------------------------------------------------------------
# bad input: clear errors before any training step
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({}, "pass max_steps=..."),
    ({"epochs": 1, "loss": "hinge"}, "unknown loss"),
    ({"epochs": 1, "optimizer": "adam"}, "unknown optimizer"),
    ({"epochs": 1, "schedule": "step"}, "unknown schedule"),
    ({"epochs": 0}, "epochs must be a positive int"),
    ({"epochs": 1, "lr": 0.0}, "lr must be > 0"),
    ({"epochs": 1, "num_classes": 1}, "num_classes"),
])
def test_bad_arguments_raise_a_clear_value_error(kwargs, match):
    kwargs = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        fit(tiny_net(), loader(blob_data(8)), **kwargs)


def test_bad_models_and_data_fail_before_any_step(tmp_path):
    ds = blob_data(8)
    model = tiny_net(num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="outputs 3 classes but num_classes=4"):
        fit(model, loader(ds), num_classes=4, epochs=1)
    shrink = nn.Sequential(nn.Conv2d(3, 3, 3, stride=2, padding=1))
    with pytest.raises(ValueError, match="upsample the logits"):
        fit(shrink, loader(ds), num_classes=3, epochs=1)
    bad = TensorDataset(ds.tensors[0], ds.tensors[1].clamp(max=5))  # void 255 -> 5: not a class
    with pytest.raises(ValueError, match="outside 0..2 or 255"):
        fit(model, loader(bad), num_classes=3, epochs=1)
    empty = TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, 8, 8).long())
    for data in (empty, loader(empty, shuffle=False)):
        with pytest.raises(ValueError, match="empty"):
            fit(model, data, num_classes=3, epochs=1)
    with pytest.raises(ValueError, match="no full batch"):
        fit(model, DataLoader(ds, batch_size=16, drop_last=True), num_classes=3, epochs=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # a checkpoint from another model
    fit(nn.Conv2d(3, 3, 1), loader(ds), num_classes=3, max_steps=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="does not fit this model"):
        fit(model, loader(ds), num_classes=3, max_steps=2, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="num_classes=3, not 4"):
        fit(tiny_net(4), loader(ds), num_classes=4, max_steps=2, checkpoint_dir=tmp_path,
            resume=True)


def test_progress_bars_when_asked(capfd):
    ds = blob_data(8)
    fit(tiny_net(), loader(ds, 4), loader(ds), num_classes=3, epochs=2, progress=True)
    evaluate(tiny_net(), loader(ds), 3, progress=True)
    err = capfd.readouterr().err
    assert "epoch 2/2" in err and "miou=" in err and "eval" in err


def test_quiet_under_pytest(capfd):
    assert T._show_progress(None) is False
    fit(tiny_net(), loader(blob_data(8)), loader(blob_data(8)), num_classes=3, epochs=1)
    evaluate(tiny_net(), loader(blob_data(8)), 3)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_batch_loss_adds_weighted_aux_losses_and_passes_dicts():
    from minseg.losses import cross_entropy
    from minseg.train import batch_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    aux = torch.randn(2, 3, 4, 4, generator=g)      # coarser: upsampled to the masks
    masks = torch.randint(0, 3, (2, 8, 8), generator=g)
    masks[0, :2] = 255
    up = F.interpolate(aux, size=(8, 8), mode="bilinear", align_corners=False)
    want = cross_entropy(logits, masks) + 0.4 * cross_entropy(up, masks)
    torch.testing.assert_close(batch_loss(cross_entropy, {"out": logits, "aux": [aux]}, masks), want)
    torch.testing.assert_close(batch_loss(cross_entropy, {"out": logits, "aux": aux}, masks, 0.0),
                               cross_entropy(logits, masks))
    torch.testing.assert_close(batch_loss(cross_entropy, logits, masks), cross_entropy(logits, masks))

    class WholeOutput:
        wants_outputs = True

        def __call__(self, out, target):
            assert set(out) == {"out", "extra"} and out["extra"].dtype == torch.float32
            return out["extra"].sum()

    out = {"out": logits, "extra": torch.ones(3, dtype=torch.float64)}
    assert float(batch_loss(WholeOutput(), out, masks)) == 3.0


def test_fit_trains_a_deeply_supervised_model():
    model = build_model("deeplabv3", 3, width=4, aux_head=True)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 16, 16, generator=g), torch.randint(0, 3, (2, 16, 16), generator=g))
               for _ in range(2)]
    before = model.aux[0][0].weight.detach().clone()
    hist = fit(model, batches, batches, num_classes=3, max_steps=2, progress=False)
    assert hist.steps == 2 and not torch.equal(before, model.aux[0][0].weight)
    assert hist.last["val_loss"] == hist.last["val_loss"]   # evaluated in eval mode, finite

"""Training challenges: data split, budget, scoring by bands, bad submissions."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import textwrap

import pytest
import torch
import torch.nn as nn

from minseg.grading import check
from minseg.grading.challenge import (Challenge, call_challenge, held_out, measure, predict_labels,
                                      score, train_recipe)
from minseg.metrics import confusion_matrix, scores_from_confusion

TINY = Challenge(classes=("person", "car"), scene={"classes": ["person", "car"]}, metric="miou",
                 bands=((0.2, 1 / 3), (0.4, 2 / 3), (0.6, 1.0)), steps=2, batch_size=4,
                 image_size=32, num_train=8, num_test=6)


class Const(nn.Module):
    """Predicts class ``k`` everywhere (or NaN / a wrong number of classes)."""

    def __init__(self, c: int, k: int = 0, nan: bool = False):
        super().__init__()
        self.c, self.k, self.nan = c, k, nan
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.c, *x.shape[-2:]) + self.w
        out[:, self.k] += 1
        return out * float("nan") if self.nan else out


def test_challenge_validates_and_travels_as_plain_data():
    assert Challenge.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    with pytest.raises(ValueError, match="metric"):
        Challenge(("person",), {}, "accuracy", ((0.1, 1.0),))
    with pytest.raises(ValueError, match="focus"):
        Challenge(("person",), {}, "iou_of", ((0.1, 1.0),))
    with pytest.raises(ValueError, match="bands"):
        Challenge(("person",), {}, "miou", ((0.1, 1.5),))
    assert "mIoU on held-out images" in TINY.describe()


def test_held_out_split_is_seeded_and_not_the_training_data():
    a_img, a_mask = held_out(TINY, 1)
    b_img, _ = held_out(TINY, 1)
    c_img, _ = held_out(TINY, 2)
    assert torch.equal(a_img, b_img) and not torch.equal(a_img, c_img)
    assert a_img.dtype == torch.uint8 and a_img.shape[1:] == (3, 32, 32) and a_mask.shape == (len(a_img), 32, 32)
    assert set(a_mask.unique().tolist()) <= {0, 1, 2, 255}


def test_measure_and_bands_match_the_metrics():
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 3, (4, 16, 16), generator=g).to(torch.uint8)
    masks[:, 0] = 255
    preds = torch.where(torch.rand(4, 16, 16, generator=g) < 0.7, masks, torch.zeros_like(masks))
    preds[preds == 255] = 1
    want = float(scores_from_confusion(confusion_matrix(preds.long(), masks.long(), 3))["iou"].nanmean())
    assert measure(TINY, masks, preds) == pytest.approx(want)
    share, text = score(TINY, masks, preds)
    assert share == max(s for t, s in TINY.bands if want >= t) and f"{want:.3f}" in text
    perfect = torch.where(masks == 255, torch.zeros_like(masks), masks)
    assert score(TINY, masks, perfect)[0] == 1.0
    assert score(TINY, masks, preds[:2])[0] == 0.0                       # wrong shape
    focus = Challenge(**{**TINY.to_dict(), "metric": "iou_of", "focus": ("car",)})
    iou = scores_from_confusion(confusion_matrix(preds.long(), masks.long(), 3))["iou"]
    assert measure(focus, masks, preds) == pytest.approx(float(iou[2]))


def test_bad_models_get_clear_errors():
    x = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    assert predict_labels(Const(3, k=2), x, 3).unique().tolist() == [2]
    with pytest.raises(ValueError, match="shape"):
        predict_labels(Const(5), x, 3)
    with pytest.raises(ValueError, match="NaN"):
        predict_labels(Const(3, nan=True), x, 3)
    with pytest.raises(TypeError, match="nn.Module under 'model'"):
        train_recipe(TINY, lambda c, d: {"net": Const(c)})
    with pytest.raises(ValueError, match="unknown recipe keys"):
        train_recipe(TINY, lambda c, d: {"model": Const(c), "steps": 10_000})
    capped = Challenge(**{**TINY.to_dict(), "max_gflops": 1e-9})
    conv = lambda c, d: nn.Conv2d(3, c, 3, padding=1)
    with pytest.raises(ValueError, match="GFLOPs"):
        train_recipe(capped, conv)


def test_call_trains_for_the_budget_and_predicts(monkeypatch):
    monkeypatch.setenv("MINSEG_CHALLENGE_BUDGET", "smoke")
    images, masks = held_out(TINY, 3)
    seen = []
    def recipe(c, data):
        assert data.masks.dtype == torch.uint8 and len(data) <= TINY.num_train
        m = nn.Conv2d(3, c, 3, padding=1)
        m.register_forward_hook(lambda *a: seen.append(1))
        return {"model": m, "lr": 1e-2, "augment": False}
    preds = call_challenge(recipe, {"challenge": TINY.to_dict(), "images": images})
    assert preds.shape == masks.shape and preds.dtype == torch.uint8
    assert len(seen) >= 4                      # 4 smoke steps, then the predictions


CHALLENGE_CHECKS = '''
"""A tiny training challenge for the grader's own tests."""
from minseg.grading.challenge import Challenge, challenge_cases, challenge_score, call_challenge
from minseg.grading.tasks import Task

SLUG = "98_challenge"
CH = Challenge(classes=("person", "car"), scene={"classes": ["person", "car"]}, metric="miou",
               bands=((0.05, 1 / 3), (0.1, 2 / 3), (0.99, 1.0)), steps=2, batch_size=4,
               image_size=32, num_train=8, num_test=6)


def _ref(num_classes, data):
    import torch.nn as nn
    return {"model": nn.Conv2d(3, num_classes, 3, padding=1)}


TASKS = [Task("ex98.challenge", "recipe", 3, "a recipe reaching the bands", challenge_cases(CH, 1),
              _ref, call=call_challenge, score=challenge_score(CH), timeout_s=120)]
'''


def test_check_prints_the_score_and_bands(tmp_path, monkeypatch):
    monkeypatch.setenv("MINSEG_CHALLENGE_BUDGET", "smoke")
    (tmp_path / "ex98_challenge.py").write_text(CHALLENGE_CHECKS)
    import torch.nn as nn
    with contextlib.redirect_stdout(io.StringIO()) as out:
        ok = check("ex98.challenge", lambda c, d: {"model": nn.Conv2d(3, c, 1)}, checks=[tmp_path])
    assert not ok and "miou" in out.getvalue() and "of 3 points" in out.getvalue(), out.getvalue()


@pytest.mark.slow
def test_grade_challenge_submissions(tmp_path, monkeypatch):
    from minseg.grading.gradebook import grade

    monkeypatch.setenv("MINSEG_CHALLENGE_BUDGET", "smoke")
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "ex98_challenge.py").write_text(CHALLENGE_CHECKS)
    head = "import torch, torch.nn as nn\n"
    subs = {
        # predicts background everywhere: mIoU about a third, the lower bands
        "background": head + textwrap.dedent("""
            class Bg(nn.Module):
                def __init__(self, c):
                    super().__init__(); self.c = c; self.w = nn.Parameter(torch.zeros(1))
                def forward(self, x):
                    out = torch.zeros(x.shape[0], self.c, *x.shape[-2:]) + self.w
                    out[:, 0] += 1
                    return out
            def recipe(num_classes, data):
                return {"model": Bg(num_classes), "lr": 1e-9}
            """),
        "nan": head + "def recipe(num_classes, data):\n    m = nn.Conv2d(3, num_classes, 1)\n"
                      "    nn.init.constant_(m.bias, float('nan'))\n    return {'model': m}\n",
        "shape": head + "def recipe(num_classes, data):\n    return {'model': nn.Conv2d(3, num_classes + 2, 1)}\n",
        "hangs": head + "def recipe(num_classes, data):\n    import time\n    time.sleep(1000)\n",
        "deleted": head + "x = 1\n",
    }
    for name, src in subs.items():
        d = tmp_path / "subs" / name
        d.mkdir(parents=True)
        nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "a", "metadata": {},
                         "outputs": [], "source": src}],
              "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "P"}},
              "nbformat": 4, "nbformat_minor": 5}
        (d / "98_challenge.ipynb").write_text(json.dumps(nb))
    out = tmp_path / "grades"
    grade([tmp_path / "subs"], timeout=30, jobs=2, out=out, cell_timeout=20, checks=[checks],
          verbose=False)
    rows = {r["student"]: r for r in csv.DictReader((out / "gradebook.csv").open())}
    st = json.loads((out / "gradebook.json").read_text())["students"]
    fb = {s: st[s]["exercises"]["ex98"]["tasks"][0]["feedback"] for s in subs}
    assert 1 <= int(rows["background"]["ex98"]) <= 2, fb["background"]
    assert "held-out images" in fb["background"]
    assert int(rows["nan"]["ex98"]) == 0 and "NaN" in fb["nan"]
    assert int(rows["shape"]["ex98"]) == 0 and "outputs 5 classes" in fb["shape"]
    assert int(rows["hangs"]["ex98"]) == 0 and "time limit" in fb["hangs"], fb["hangs"]
    assert int(rows["deleted"]["ex98"]) == 0 and "defines no `recipe`" in fb["deleted"]


def test_only_the_challenge_budget_variable_shrinks_a_challenge(monkeypatch):
    """The grader runs student kernels under MINSEG_PROFILE=smoke; that must not shrink the
    challenge every student is graded on."""
    monkeypatch.setenv("MINSEG_PROFILE", "smoke")
    monkeypatch.delenv("MINSEG_CHALLENGE_BUDGET", raising=False)
    assert TINY.budget() == TINY.steps and TINY.sizes() == (TINY.num_train, TINY.num_test)
    monkeypatch.setenv("MINSEG_CHALLENGE_BUDGET", "smoke")
    assert TINY.budget() == 4

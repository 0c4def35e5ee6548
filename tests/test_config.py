import pytest
import torch

import minseg
from minseg.config import PROFILE_NAMES, profile, seed_everything


def test_profiles_are_frozen_and_print_on_one_line():
    for name in PROFILE_NAMES:
        p = profile(name)
        assert p.name == name
        text = str(p)
        assert "\n" not in text and text.startswith(f"Profile[{name}]")
        with pytest.raises(Exception):
            p.steps = 3  # frozen dataclass


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("MINSEG_PROFILE", "cpu")
    assert profile().name == "cpu"
    monkeypatch.delenv("MINSEG_PROFILE")
    assert profile().name == ("gpu" if torch.cuda.is_available() else "cpu")


def test_time_budget_override(monkeypatch):
    monkeypatch.setenv("MINSEG_TIME_BUDGET_S", "45")
    assert profile("gpu").time_budget_s == 45.0
    assert profile("smoke").image_size == 64            # only the budget changes
    for bad in ("0", "-3", "soon", "inf", "nan"):
        monkeypatch.setenv("MINSEG_TIME_BUDGET_S", bad)
        with pytest.raises(ValueError, match="MINSEG_TIME_BUDGET_S"):
            profile("cpu")
    monkeypatch.delenv("MINSEG_TIME_BUDGET_S")
    assert profile("cpu").time_budget_s == 300.0


def test_unknown_profile_lists_valid_ones(monkeypatch):
    monkeypatch.setenv("MINSEG_PROFILE", "turbo")
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        profile()


def test_smoke_is_smallest(monkeypatch):
    monkeypatch.delenv("MINSEG_TIME_BUDGET_S", raising=False)
    s, c = profile("smoke"), profile("cpu")
    assert s.image_size <= c.image_size and s.num_train < c.num_train
    assert s.time_budget_s < c.time_budget_s and 0 < s.steps < c.steps


def test_budgets_are_steps_and_data_outnumbers_what_a_run_sees_twice():
    # a cpu run sees steps * batch_size images: the training set must not be shown many times
    # over (400 synthetic images were, and overfit: train loss 0.05 against val mIoU 0.42)
    c = profile("cpu")
    assert c.steps * c.batch_size <= 3 * c.num_train


def test_seed_everything_repeats():
    g1 = seed_everything(3)
    a = torch.rand(4), torch.rand(2, generator=g1)
    g2 = seed_everything(3)
    b = torch.rand(4), torch.rand(2, generator=g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_top_level_exports():
    assert minseg.IGNORE_INDEX == 255
    assert len(minseg.VOC_CLASSES) == 21
    assert minseg.device().type in ("cpu", "cuda", "mps")

"""Shared fixtures: a tiny synthetic VOC tree generated once per test session."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MINSEG_PROFILE", "smoke")
if os.environ["MINSEG_PROFILE"] == "smoke":   # the exercises' training challenges too
    os.environ.setdefault("MINSEG_CHALLENGE_BUDGET", "smoke")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory):
    from minseg.data import make_synthetic_voc

    return make_synthetic_voc(tmp_path_factory.mktemp("voc"), num_train=24, num_val=8,
                              image_size=64, seed=0, workers=1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_data_dir(tmp_path_factory):
    """Tests never touch the user's cache: MINSEG_DATA points to a temporary folder."""
    old = os.environ.get("MINSEG_DATA")
    os.environ["MINSEG_DATA"] = str(tmp_path_factory.mktemp("minseg-data"))
    yield
    if old is None:
        os.environ.pop("MINSEG_DATA", None)
    else:
        os.environ["MINSEG_DATA"] = old

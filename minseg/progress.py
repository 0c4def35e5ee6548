"""Progress bars for :func:`minseg.train.fit` and :func:`minseg.evaluation.evaluate`: when to
show them (:func:`_show_progress`) and the tqdm bar itself (:func:`_bar`)."""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from minseg import config, distributed

if TYPE_CHECKING:
    from tqdm.std import tqdm

__all__ = ["QUIET_ENV"]

QUIET_ENV = "MINSEG_QUIET"


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:
        return False


def _show_progress(progress: bool | None) -> bool:
    """tqdm bars on rank 0 only; by default only in a terminal or a notebook, never under
    pytest, with ``MINSEG_QUIET=1`` or in the ``smoke`` profile."""
    if distributed.rank_world()[0] != 0:
        return False
    if progress is not None:
        return bool(progress)
    if os.environ.get(QUIET_ENV, "").strip() not in ("", "0"):
        return False
    if os.environ.get(config.PROFILE_ENV, "").strip().lower() == "smoke":
        return False
    if "PYTEST_CURRENT_TEST" in os.environ:
        return False
    return _in_notebook() or sys.stderr.isatty()


def _bar(show: bool, **kw: Any) -> tqdm | None:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(**{"dynamic_ncols": True, "leave": True, **kw})

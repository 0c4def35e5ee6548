"""Repository-wide pytest hooks: a timing guard for the notebooks run by nbval.

Every notebook's wall time (the sum of its cells, kernel start included) is reported at the
end of the run, and those over ``MINSEG_NOTEBOOK_BUDGET_S`` (default 60 s, the smoke-profile
budget in docs/DESIGN.md) are flagged. A notebook over twice the budget fails the run: the slack
absorbs a busy machine (torch's threads slow down a lot when the cores are shared), a real
regression does not hide in it.
"""
from __future__ import annotations

import os
from collections import defaultdict

_times: dict[str, float] = defaultdict(float)

# The smoke profile also shrinks the exercises' training challenges to a few steps (their real
# budget is minutes of training; bench/challenges.py checks it). Set before any kernel starts,
# so the notebooks nbval runs and the grader's kernels inherit it.
if os.environ.get("MINSEG_PROFILE") == "smoke":
    os.environ.setdefault("MINSEG_CHALLENGE_BUDGET", "smoke")


def _budget() -> float:
    return float(os.environ.get("MINSEG_NOTEBOOK_BUDGET_S", "60"))


def pytest_runtest_logreport(report):
    # setup + call + teardown of every cell; the kernel starts in the first cell's setup
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _times[path] += report.duration


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _times:
        return
    tr = terminalreporter
    tr.section("notebook times (timing guard)")
    budget = _budget()
    for nb, t in sorted(_times.items()):
        flag = "  OVER BUDGET" if t > budget else ""
        tr.write_line(f"{t:7.1f} s  {nb}{flag}")
    tr.write_line(f"{sum(_times.values()):7.1f} s  all {len(_times)} notebooks (budget {budget:.0f} s each)")


def pytest_sessionfinish(session, exitstatus):
    over = {nb: t for nb, t in _times.items() if t > 2 * _budget()}
    if over and session.exitstatus == 0:
        session.exitstatus = 1
        print(f"\nnotebooks over twice the {_budget():.0f} s budget: " +
              ", ".join(f"{nb} ({t:.0f} s)" for nb, t in over.items()))

"""Repository-wide pytest hooks: a timing guard for the notebooks run by nbval, and the
lessons nbval executed kept for the book.

Every notebook's wall time (the sum of its cells, kernel start included) is reported at the
end of the run, and those over ``MINSEG_NOTEBOOK_BUDGET_S`` (default 60 s, the smoke-profile
budget in docs/DESIGN.md) are flagged. A notebook over twice the budget fails the run: the slack
absorbs a busy machine (torch's threads slow down a lot when the cores are shared), a real
regression does not hide in it.

Every lesson nbval executes is also written, with its outputs, to ``runs/<profile>/`` (the
folder ``tools/run_notebooks.py`` writes to), and its evidence rows to ``runs/<profile>/evidence``:
``tools/build_book.py`` (and ``tests/test_book.py``, which runs last) then renders the book from
these copies instead of executing every lesson a second time.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from collections import defaultdict
from pathlib import Path

import nbformat

_times: dict[str, float] = defaultdict(float)

# The smoke profile also shrinks the exercises' training challenges to a few steps (their real
# budget is minutes of training; bench/challenges.py checks it). Set before any kernel starts,
# so the notebooks nbval runs and the grader's kernels inherit it.
if os.environ.get("MINSEG_PROFILE") == "smoke":
    os.environ.setdefault("MINSEG_CHALLENGE_BUDGET", "smoke")


ROOT = Path(__file__).resolve().parent
PROFILE = os.environ.get("MINSEG_PROFILE", "smoke")
RUNS = ROOT / "runs" / PROFILE
# the lessons' evidence() rows of this run, for the book (kernels inherit the variable)
os.environ.setdefault("MINSEG_EVIDENCE_DIR", str(RUNS / "evidence"))
_outputs: dict[str, dict[int, list]] = defaultdict(dict)


def _is_lesson(path: Path) -> bool:
    return path.suffix == ".ipynb" and path.parent == ROOT / "notebooks" and path.name[:2].isdigit()


@functools.cache
def _run_notebooks():
    """tools/run_notebooks.py as a module, loaded once (it owns the executed-copy metadata)."""
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "tools" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_metadata(wall_s: float, status: str) -> dict:
    return _run_notebooks().run_metadata(wall_s, status, executor="nbval (pytest)")


def pytest_runtest_setup(item):
    path = Path(str(item.fspath))
    if _is_lesson(path) and getattr(item, "cell_num", None) == 0:   # a lesson starts
        (Path(os.environ["MINSEG_EVIDENCE_DIR"]) / f"{path.name[:2]}.json").unlink(missing_ok=True)


def pytest_runtest_teardown(item, nextitem):
    """Collect each cell's outputs; after a lesson's last cell write the executed copy."""
    path = Path(str(item.fspath))
    if not _is_lesson(path) or getattr(item, "test_outputs", None) is None:
        return
    _outputs[str(path)][item.cell_num] = item.test_outputs
    if nextitem is not None and Path(str(nextitem.fspath)) == path:
        return
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    outs = _outputs.pop(str(path))
    for i, cell in enumerate(code):
        cell.outputs = outs.get(i, [])
        cell.execution_count = i + 1 if i in outs else None
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for c in code for o in c.outputs
              if o.get("output_type") == "error"]
    status = "ok" if len(outs) == len(code) and not errors else \
        f"error: {errors[0] if errors else 'not every cell ran'}"[:120]
    nb.metadata["minseg"] = _run_metadata(_times[item.nodeid.split("::")[0]], status)
    RUNS.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, RUNS / path.name)


def pytest_collection_modifyitems(session, config, items):
    # the book is built from the lessons executed in this session: its tests run last
    items.sort(key=lambda it: Path(str(it.fspath)).name == "test_book.py")


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

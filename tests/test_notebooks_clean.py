"""Notebooks are committed clean and follow the lesson template; the strip tool works."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
sys.path.insert(0, str(ROOT / "tools"))
import strip_notebooks  # noqa: E402


def test_strip_tool_keeps_only_checked_outputs(tmp_path):
    nb = {"cells": [
        {"cell_type": "code", "source": "# NBVAL_CHECK_OUTPUT\nprint(1)", "metadata": {},
         "execution_count": 3, "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}]},
        {"cell_type": "code", "source": "print(2)", "metadata": {}, "execution_count": 4,
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "2\n"}]},
        {"cell_type": "markdown", "source": "# hi", "metadata": {}}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "widgets": {"x": 1}}, "nbformat": 4, "nbformat_minor": 5}
    p = tmp_path / "x.ipynb"
    p.write_text(json.dumps(nb))
    assert strip_notebooks.main(["--check", str(p)]) == 1
    assert strip_notebooks.main([str(p)]) == 0
    out = json.loads(p.read_text())
    assert out["cells"][0]["outputs"] and out["cells"][0]["execution_count"] == 3
    assert out["cells"][1]["outputs"] == [] and out["cells"][1]["execution_count"] is None
    assert "widgets" not in out["metadata"]
    assert strip_notebooks.main(["--check", str(p)]) == 0


def test_committed_notebooks_are_clean():
    out = subprocess.run([sys.executable, str(ROOT / "tools/strip_notebooks.py"), "--check"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, "run `python tools/strip_notebooks.py`:\n" + out.stdout


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_template(path):
    nb = json.loads(path.read_text())
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    num = path.name[:2]
    assert re.match(rf"#\s*{num}\b", md.lstrip()), "title '# NN ...' first"
    assert "## In an interview" in md and "## Exercise" in md
    assert f"exercises/{path.name}" in md, "the exercise pointer names exercises/<same file>"
    assert "profile()" in code, "sizes must come from minseg.config.profile()"
    for c in nb["cells"]:
        if c["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in "".join(c["source"]):
            assert c["execution_count"] is not None and c["outputs"], "checked cell without output"


def test_twenty_lessons_when_complete():
    nums = sorted(int(p.name[:2]) for p in LESSONS)
    assert nums == sorted(set(nums)), "duplicate lesson numbers"
    assert all(1 <= n <= 20 for n in nums)


def test_run_notebooks_tool_keeps_outputs_and_reports_failures(tmp_path, monkeypatch):
    import nbformat
    import run_notebooks

    ok, bad = tmp_path / "01_ok.ipynb", tmp_path / "02_bad.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os; print('profile', os.environ['MINSEG_PROFILE'])")]), ok)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "raise ValueError('broken lesson')")]), bad)
    out = tmp_path / "out"
    monkeypatch.setenv("MINSEG_PROFILE", "smoke")  # the tool sets it; restored after the test
    assert run_notebooks.main(["--profile", "smoke", "--out", str(out), str(ok), str(bad)]) == 1
    executed = nbformat.read(out / "01_ok.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "profile smoke\n"
    table = (out / "times.md").read_text()
    assert "| 01_ok |" in table and "| ok |" in table
    assert "| 02_bad |" in table and "ValueError: broken lesson" in table and "| all 2 |" in table

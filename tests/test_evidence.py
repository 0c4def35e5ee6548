"""The evidence protocol: every lesson records its claim, and the runner's table reads them."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem[:2])
def test_every_lesson_records_its_claim(path):
    calls = re.findall(r"evidence\(\s*[\"'](\d\d)[\"']", _code(path))
    assert calls, f"{path.name} never calls minseg.experiment.evidence('{path.stem[:2]}', ...)"
    assert set(calls) == {path.stem[:2]}, f"{path.name} records claims for lessons {set(calls)}"


def test_evidence_table_from_rows(tmp_path):
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "tools/run_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "04.json").write_text(json.dumps([{
        "lesson": "04", "claim": "skips | sharpen", "metric": "boundary F1",
        "comparison": "skips vs none", "effect": 0.1, "lo": 0.05, "hi": 0.15, "n": 3,
        "method": "t", "steps": 90, "status": "confirmed", "verdict": "..."}]))
    (tmp_path / "06.json").write_text(json.dumps([{
        "lesson": "06", "claim": "equals torchmetrics", "status": "check passed",
        "verdict": "max diff 0", "steps": None}]))
    table = mod.evidence_table(tmp_path, {"04_unet": 65.0, "06_miou": 20.0, "07_dice": 3.0},
                               "cpu", [0.5, 1.1])
    rows = [line for line in table.splitlines() if line.startswith("| 0")]
    assert len(rows) == 3
    assert "skips / sharpen" in rows[0] and "+0.100 (+0.050 to +0.150; 3 seeds)" in rows[0]
    assert "| 90 | 1:05 |" in rows[0] and "check passed" in rows[1] and "missing" in rows[2]
    assert "2 of 3 lessons confirm" in table and "0.50 to 1.10" in table


def test_committed_evidence_table_covers_every_lesson_and_claim():
    """EVIDENCE.md (from `tools/run_notebooks.py --profile cpu`) has a row for every lesson and
    every claim a lesson records; a new or renamed claim needs the table regenerated."""
    text = (ROOT / "EVIDENCE.md").read_text()
    for path in LESSONS:
        rows = [line for line in text.splitlines() if line.startswith(f"| {path.stem} |")]
        assert rows, f"EVIDENCE.md has no row for {path.stem}; rerun tools/run_notebooks.py"
        assert not any("| missing |" in r for r in rows), f"{path.stem} recorded no claim"
        found = re.findall(r"""evidence\(\s*["']\d\d["'],\s*(["'])(.*?)\1""", _code(path))
        for _, claim in found:
            assert any(f"| {claim} |" in r for r in rows), \
                f"claim {claim!r} of {path.stem} is not in EVIDENCE.md; rerun tools/run_notebooks.py"

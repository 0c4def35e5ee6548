"""The exercises and the auto-grader: checks, release, and grading of hostile notebooks.

The hostile notebooks use a tiny torch-free exercise (``ex99``, written to tmp_path) so that
their kernels start fast; the real exercise 06 runs in the same class for the paths that
need torch (a good submission, an untouched handout, a monkeypatching one).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from minseg.grading import check, failed_inputs
from minseg.grading import codec
from minseg.grading.checks import all_exercises, exercise_for_notebook, get_exercise, get_task
from minseg.grading.gradebook import DEFAULT_SEED, find_notebooks, grade
from minseg.grading.release import (ReleaseError, exercise_section, release, release_notebook, released_text,
                                   sync_lessons, with_exercise_section)
from minseg.grading.worker import is_check_cell, kill_tree

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
LESSON_SLUGS = {
    "01_what_is_semantic_segmentation", "02_vs_image_classification",
    "03_fully_convolutional_networks", "04_unet_skip_connections", "05_upsampling_methods",
    "06_miou", "07_dice", "08_standard_loss", "09_boundaries", "10_class_imbalance", "11_aspp",
    "12_pspnet", "13_multiscale_inference", "14_weak_supervision", "15_panoptic",
    "16_crf_postprocessing", "17_separating_instances", "18_data_cost", "19_transformers",
    "20_realtime_models"}


def _cells(nb: dict, kind: str = "code") -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == kind]


def _notebook(*sources: str) -> dict:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
              "outputs": [], "source": textwrap.dedent(s)} for i, s in enumerate(sources)]
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "language": "python",
            "display_name": "Python 3"}}, "nbformat": 4, "nbformat_minor": 5}


def _write(path: Path, nb: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


def _run_in_process(path: Path) -> dict:
    """Execute a (trusted) notebook's code cells in a fresh namespace, output silenced."""
    ns: dict = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()):
        for src in _cells(json.loads(path.read_text())):
            exec(compile(src, str(path), "exec"), ns)
    return ns


# ------------------------------------------------------------------------------------------
# registry, codec, check()
# ------------------------------------------------------------------------------------------
def test_registry_is_consistent():
    exercises = all_exercises()
    assert exercises, "no checks modules"
    for ex in exercises:
        assert ex.slug in LESSON_SLUGS, ex.slug
        assert 2 <= len(ex.tasks) <= 5, ex.id
        assert all(1 <= t.points <= 4 and t.prompt and t.function.isidentifier() for t in ex.tasks)
        assert len({t.function for t in ex.tasks}) == len(ex.tasks)
        for t in ex.tasks:  # cases are deterministic and differ between seeds
            a, b = t.cases(0), t.cases(0)
            # a training challenge has one case: a held-out split scored by bands
            assert len(a) >= (1 if t.score else 3) and [c.note for c in a] == [c.note for c in b], t.id
            if t.score:
                assert len(a) == 1 and a[0].secret is not None and t.id.endswith(".challenge")
                assert torch.equal(a[0].secret, b[0].secret) and t.timeout_s
            assert codec.dumps([c.inputs for c in a]) == codec.dumps([c.inputs for c in b]), t.id
            assert codec.dumps([c.inputs for c in a]) != codec.dumps([c.inputs for c in t.cases(1)]), t.id


def test_codec_roundtrip_and_hostile_values():
    x = {"a": torch.arange(6).reshape(2, 3), "b": (1.5, float("nan"), None, "s"),
         "c": torch.tensor([True, False]), 3: [torch.zeros(0, 2)]}
    y = codec.roundtrip(x)
    assert torch.equal(y["a"], x["a"]) and y["a"].dtype == torch.int64
    assert y["b"][0] == 1.5 and y["b"][1] != y["b"][1] and y["b"][2:] == (None, "s")
    assert y["c"].dtype == torch.bool and y[3][0].shape == (0, 2)
    assert isinstance(codec.roundtrip(torch.nn.Linear(2, 2)), codec.Opaque)
    for bad in ({"__tensor__": True, "dtype": "object", "shape": [1], "data": [1]},
                {"__tensor__": True, "dtype": "float32", "shape": [3], "data": [1, 2]},
                {"__dict__": [[[], 1]]}, {"__tensor__": True, "dtype": "int64", "shape": [1], "data": ["x"]}):
        assert isinstance(codec.decode(bad), codec.Opaque)


def test_check_prints_helpful_feedback(capsys):
    def right(mat):
        m = mat.double()
        tp = m.diagonal()
        return (tp / (m.sum(0) + m.sum(1) - tp)).nanmean().item()

    def wrong(mat):  # forgets that absent classes must be skipped
        m = mat.double()
        tp = m.diagonal()
        return (tp / (m.sum(0) + m.sum(1) - tp)).mean().item()

    def todo(mat):
        raise NotImplementedError("ex06.miou: ...")

    assert check("ex06.miou", right)
    assert "ex06.miou: PASSED all" in capsys.readouterr().out
    assert not check("ex06.miou", wrong)
    out = capsys.readouterr().out
    assert "FAILED on case" in out and "expected:" in out and "got:      nan" in out
    assert "hint:" in out and "absent" in out
    assert set(failed_inputs("ex06.miou")) == {"mat"}
    assert not check("ex06.miou", todo)
    assert "not implemented yet" in capsys.readouterr().out
    assert not check("ex06.miou", lambda mat: mat[99])
    assert "raised IndexError" in capsys.readouterr().out
    assert not check("ex06.nope", right)
    assert "no task" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# solutions and exercises
# ------------------------------------------------------------------------------------------
def test_every_exercise_has_a_solution_notebook():
    names = {p.stem for p in SOLUTIONS}
    for ex in all_exercises():
        assert ex.slug in names, f"checks for {ex.id} but no solutions/{ex.notebook}"
    for p in SOLUTIONS:
        assert p.stem in LESSON_SLUGS, p.name
        nb = json.loads(p.read_text())
        ex = get_exercise(exercise_for_notebook(p, p.read_text()))
        code = "\n".join(_cells(nb))
        assert "### BEGIN SOLUTION" in code
        for t in ex.tasks:
            assert re.search(rf"^def {t.function}\(", code, re.M), f"{p.name}: no def {t.function}"
            assert f'minseg.grading.check("{t.id}", {t.function})' in code, f"{p.name}: no check of {t.id}"
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_passes_every_check(path):
    ns = _run_in_process(path)
    ex = get_exercise(exercise_for_notebook(path, path.read_text()))
    smoke = os.environ.get("MINSEG_CHALLENGE_BUDGET") == "smoke"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        for seed in (0, DEFAULT_SEED):
            for t in ex.tasks:
                if t.score is not None:
                    # a training challenge: under smoke the pipeline runs (a few steps, scored);
                    # whether the solution reaches the bands at the real budget is
                    # bench/challenges.py's job (minutes of training)
                    if smoke:
                        check(t.id, ns[t.function], seed=seed)
                        assert f"{t.id}: " in out.getvalue() and "held-out images" in out.getvalue()
                    continue
                assert check(t.id, ns[t.function], seed=seed), out.getvalue()


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_released_exercise_runs_and_scores_zero(path):
    ex_path = ROOT / "exercises" / path.name
    ns = _run_in_process(ex_path)  # every cell runs: the self-checks report, never raise
    ex = get_exercise(exercise_for_notebook(path, path.read_text()))
    with contextlib.redirect_stdout(io.StringIO()):
        assert not any(check(t.id, ns[t.function]) for t in ex.tasks)


def test_exercises_are_what_release_produces():
    assert release(ROOT / "solutions", ROOT / "exercises", check=True) == [], \
        "exercises/ is out of date: run `python -m minseg release`"


def test_lessons_list_exactly_their_exercise_tasks():
    """Each lesson's '## Exercise' section is written from the checks module: every graded
    task, nothing else. Fails when a task is added, renamed or re-pointed without the lesson."""
    assert sync_lessons(ROOT / "notebooks", check=True) == [], \
        "a lesson's exercise section is out of date: run `python -m minseg release`"
    for ex in all_exercises():
        section = exercise_section(ex.id)
        listed = re.findall(r"^\d+\. `(\w+)` \((\d+) points?\)", section, re.M)
        assert listed == [(t.function, str(t.points)) for t in ex.tasks]
        lesson = json.loads((ROOT / "notebooks" / ex.notebook).read_text())
        assert section in "".join("".join(c["source"]) for c in lesson["cells"])


def test_exercise_section_replaces_only_its_own_section():
    nb = _notebook()
    nb["cells"] = [{"cell_type": "markdown", "id": "m", "metadata": {},
                    "source": "## Pitfalls\n\nx\n\n## Exercise\n\nold promise\n\n## After\n\nkept\n"}]
    out = "".join(with_exercise_section(nb, "## Exercise\n\n1. `f` (1 point): do f.")["cells"][0]["source"])
    assert out == "## Pitfalls\n\nx\n\n## Exercise\n\n1. `f` (1 point): do f.\n\n## After\n\nkept\n"
    nb["cells"].append(dict(nb["cells"][0], id="m2"))
    with pytest.raises(ReleaseError, match="one markdown cell"):
        with_exercise_section(nb, "## Exercise")


def test_release_replaces_regions_and_is_idempotent(tmp_path):
    nb = _notebook(
        "import torch",
        "def miou(mat):\n    x = 1\n    ### BEGIN SOLUTION\n    return mat.sum()\n    ### END SOLUTION\n",
        "class A:\n    def iou_per_class(self, mat):\n        ### BEGIN SOLUTION\n        return 0\n"
        "        ### END SOLUTION\n",
        "### BEGIN SOLUTION\nsecret = 42\n### END SOLUTION\nprint(secret)")
    nb["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}]
    nb["cells"][0]["execution_count"] = 3
    nb["metadata"]["widgets"] = {"junk": 1}
    src, dst = tmp_path / "solutions", tmp_path / "exercises"
    _write(src / "06_miou.ipynb", nb)
    assert release(src, dst) == [dst / "06_miou.ipynb"]
    out = json.loads((dst / "06_miou.ipynb").read_text())
    code = _cells(out)
    assert code[1] == ('def miou(mat):\n    x = 1\n    raise NotImplementedError("ex06.miou: '
                       + get_task("ex06.miou").prompt + '")\n')
    assert 'raise NotImplementedError("ex06.iou_per_class: ' in code[2]
    assert code[3].startswith('raise NotImplementedError("ex06: ') and "42" not in code[3]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in out["cells"])
    assert set(out["metadata"]) == {"kernelspec"}
    assert release(src, dst) == [] and release(src, dst, check=True) == []
    assert released_text(dst / "06_miou.ipynb") == (dst / "06_miou.ipynb").read_text()
    (dst / "07_dice.ipynb").write_text("{}")
    assert release(src, dst, check=True) == [dst / "07_dice.ipynb"]
    for bad in ("### BEGIN SOLUTION\nx = 1\n", "x = 1\n### END SOLUTION\n",
                "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n"):
        with pytest.raises(ReleaseError):
            release_notebook(_notebook(bad), "ex06", {})


def test_release_cli_check_exit_code(tmp_path):
    from minseg.__main__ import main

    src = _write(tmp_path / "s" / "06_miou.ipynb", _notebook("x = 1")).parent
    assert main(["release", str(src), str(tmp_path / "e"), "--check"]) == 1
    assert main(["release", str(src), str(tmp_path / "e")]) == 0
    assert main(["release", str(src), str(tmp_path / "e"), "--check"]) == 0


def test_helpers():
    assert is_check_cell('minseg.grading.check("ex06.miou", miou)\n# comment\n')
    assert not is_check_cell('def f():\n    pass\ncheck("ex06.miou", f)')
    assert exercise_for_notebook("x/06_miou (1).ipynb") == "ex06"
    assert exercise_for_notebook("x/mine.ipynb", 'check("ex06.miou", miou)') == "ex06"
    assert exercise_for_notebook("x/mine.ipynb", "") is None


def test_find_notebooks_names_students(tmp_path):
    for rel in ("class/ann/06_miou.ipynb", "class/ann/week2/07_dice.ipynb", "class/bob/06_miou.ipynb",
                "class/bob/.ipynb_checkpoints/06_miou-checkpoint.ipynb", "class/top.ipynb", "single/x.ipynb"):
        _write(tmp_path / rel, _notebook("x = 1"))
    found = [(s, p.relative_to(tmp_path).as_posix())
             for s, p in find_notebooks([tmp_path / "class", tmp_path / "single" / "x.ipynb"])]
    assert found == [("ann", "class/ann/06_miou.ipynb"), ("ann", "class/ann/week2/07_dice.ipynb"),
                     ("bob", "class/bob/06_miou.ipynb"), ("class", "class/top.ipynb"),
                     ("single", "single/x.ipynb")]
    with pytest.raises(FileNotFoundError):
        find_notebooks([tmp_path / "nope"])


def test_kill_tree_reaches_detached_grandchildren(tmp_path):
    pidfile = tmp_path / "pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)'], start_new_session=True); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    kill_tree(proc.pid)
    proc.wait(timeout=10)
    for _ in range(100):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{grandchild}/stat").read_text().split(")")[1].split()[0] == "Z":
            break  # killed, waiting to be reaped by init
        time.sleep(0.05)
    else:
        pytest.fail("grandchild survived")


# ------------------------------------------------------------------------------------------
# grading a class with hostile submissions
# ------------------------------------------------------------------------------------------
DUMMY_CHECKS = '''
"""A torch-free exercise for the grader's own tests."""
import random

from minseg.grading.tasks import Case, Task, exact

SLUG = "99_dummy"
PRELOAD = ()


def _cases(seed):
    r = random.Random(seed)
    return [Case({"a": r.randint(2, 50), "b": r.randint(2, 50)}, f"pair {k}") for k in range(3)]


TASKS = [Task("ex99.add", "add", 2, "return a + b", _cases, lambda a, b: a + b, compare=exact()),
         Task("ex99.mul", "mul", 1, "return a * b", _cases, lambda a, b: a * b, compare=exact())]
'''

ADD = "def add(a, b):\n    return a + b\n"
MUL = "def mul(a, b):\n    return a * b\n"


def _hostile(gradebook_csv: Path) -> dict[str, tuple[list[str], int]]:
    """student -> (cells of their 99_dummy notebook, expected points out of 3)."""
    forge = textwrap.dedent("""
        import json
        print("ex99.add: PASSED all 3 cases (2 points)")
        def _forge(result):  # overwrite the collected outputs after every cell
            c = globals().get("__minseg_collector__")
            if c is not None:
                for f in c.out_dir.glob("*.json"):
                    f.write_text(json.dumps({"cases": [{"value": 7}] * 3, "done": True}))
        get_ipython().events.register("post_run_cell", _forge)
        """)
    sleep_forever = "import time\nwhile True:\n    time.sleep(0.5)\n"
    return {
        "partial": ([ADD, "def mul(a, b):\n    return a + b\n"], 2),
        "raises": (["raise RuntimeError('boom')", "import sys\nsys.exit(3)", ADD,
                    "def mul(a, b):\n    raise ValueError('no')"], 2),
        "loops": ([sleep_forever, ADD, MUL], 3),
        "deaf_loop": (["import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + sleep_forever,
                       ADD, MUL], 3),
        "os_exit": (["import os\nos._exit(0)", ADD, MUL], 3),
        "function_exits": ([ADD, "def mul(a, b):\n    import os\n    os._exit(1)"], 2),
        "function_hangs": ([ADD, "def mul(a, b):\n" + textwrap.indent(sleep_forever, "    ")], 2),
        "memory": (["x = bytearray(1 << 40)",  # 1 TiB: refused at once by RLIMIT_AS
                    "import mmap\nmaps = [mmap.mmap(-1, 1 << 28) for _ in range(100_000)]",
                    ADD, MUL], 3),
        "fakes": ([forge, "def add(a, b):\n    return 'PASSED'", "def mul(a, b):\n    return 7"], 0),
        "writes_files": ([f"import os\nos.makedirs(os.path.dirname({str(gradebook_csv)!r}), exist_ok=True)\n"
                          f"open({str(gradebook_csv)!r}, 'w').write('student,total\\nwriter,999\\n')\n"
                          "open('gradebook.csv', 'w').write('x')", ADD, MUL], 3),
        "deleted_cells": ([ADD], 2),
    }


MONKEYPATCH_06 = [
    "import torch, minseg, minseg.metrics, minseg.grading, minseg.grading.tasks\n"
    "import minseg.grading.checks.ex06 as ex06\n"
    "minseg.metrics.confusion_matrix = lambda *a, **k: torch.zeros(3, 3, dtype=torch.long)\n"
    "minseg.metrics.scores_from_confusion = lambda mat: {'iou': torch.zeros(len(mat)), 'miou': 0.0}\n"
    "minseg.grading.tasks.close = lambda *a, **k: (lambda e, g: None)\n"
    "for t in ex06.TASKS:\n    object.__setattr__(t, 'compare', lambda e, g: None)\n"
    "minseg.grading.check = lambda *a, **k: print('PASSED') or True\n",
    "def confusion_matrix(pred, target, num_classes, ignore_index=255):\n"
    "    v = target != ignore_index\n"
    "    return torch.bincount(target[v] * num_classes + pred[v], minlength=num_classes ** 2)"
    ".reshape(num_classes, num_classes)\n",
    "def iou_per_class(mat):\n    return torch.zeros(len(mat))\n",
    "def miou(mat):\n    return 0.0\n",
    "def dataset_miou(batches, num_classes):\n    return 0.0\n",
]

# calls the reference answers instead of writing them: only the hand-written task scores
DELEGATES_06 = [
    "import torch\nfrom minseg.metrics import confusion_matrix as cm\nimport minseg.metrics\n",
    "def confusion_matrix(pred, target, num_classes, ignore_index=255):\n"
    "    return cm(pred, target, num_classes, ignore_index)\n",
    "def iou_per_class(mat):\n    tp = mat.diag().double()\n"
    "    return tp / (mat.sum(0) + mat.sum(1) - mat.diag()).double()\n",
    "def miou(mat):\n    return minseg.metrics.scores_from_confusion(mat)['miou']\n",
]


@pytest.mark.slow
def test_grade_class_with_hostile_submissions(tmp_path):
    checks = tmp_path / "checks"
    checks.mkdir()
    (checks / "ex99_dummy.py").write_text(DUMMY_CHECKS)
    subs, out = tmp_path / "submissions", tmp_path / "grades"
    hostile = _hostile(out / "gradebook.csv")
    _write(subs / "good" / "99_dummy.ipynb", _notebook(ADD, MUL))
    (subs / "good" / "06_miou.ipynb").write_bytes((ROOT / "solutions" / "06_miou.ipynb").read_bytes())
    (subs / "untouched" / "06_miou.ipynb").parent.mkdir(parents=True)
    (subs / "untouched" / "06_miou.ipynb").write_bytes((ROOT / "exercises" / "06_miou.ipynb").read_bytes())
    _write(subs / "monkeypatch" / "06_miou.ipynb", _notebook(*MONKEYPATCH_06))
    _write(subs / "delegates" / "06_miou.ipynb", _notebook(*DELEGATES_06))
    for student, (cells, _) in hostile.items():
        _write(subs / student / "99_dummy.ipynb", _notebook(*cells))
    _write(subs / "lost" / "notes.ipynb", _notebook("x = 1"))
    (subs / "broken").mkdir()
    (subs / "broken" / "99_dummy.ipynb").write_text("{not json")

    t0 = time.monotonic()
    book = grade([subs], timeout=90, jobs=4, out=out, cell_timeout=5, checks=[checks], verbose=False)
    elapsed = time.monotonic() - t0
    print(book.table(), f"\n({elapsed:.1f}s)")

    rows = {r["student"]: r for r in csv.DictReader((out / "gradebook.csv").open())}
    expected_99 = {s: pts for s, (_, pts) in hostile.items()} | {"good": 3, "broken": 0}
    expected_06 = {"good": 5, "untouched": 0, "monkeypatch": 2, "delegates": 1}
    assert set(rows) == set(expected_99) | set(expected_06) | {"lost"}
    for s, row in rows.items():
        assert int(row["ex99"]) == expected_99.get(s, 0), (s, book.to_json()["students"][s])
        assert int(row["ex06"]) == expected_06.get(s, 0), (s, book.to_json()["students"][s])
        assert int(row["total"]) == int(row["ex99"]) + int(row["ex06"])
        assert int(row["max_total"]) == 8

    data = json.loads((out / "gradebook.json").read_text())
    st = data["students"]
    mul = {t["id"]: t for t in st["partial"]["exercises"]["ex99"]["tasks"]}["ex99.mul"]
    assert mul["points"] == 0 and mul["case"] and mul["expected"] and mul["got"]
    assert "wrong output" in mul["feedback"]
    assert "defines no `mul`" in st["deleted_cells"]["exercises"]["ex99"]["tasks"][1]["feedback"]
    assert any("killed or hung" in n for n in st["os_exit"]["exercises"]["ex99"]["notes"])
    assert any("interrupted" in n for n in st["loops"]["exercises"]["ex99"]["notes"])
    assert any("killed or hung" in n for n in st["deaf_loop"]["exercises"]["ex99"]["notes"])
    assert any("MemoryError" in n for n in st["memory"]["exercises"]["ex99"]["notes"])
    assert "not implemented" in st["untouched"]["exercises"]["ex06"]["tasks"][0]["feedback"]
    fb = {t["id"]: t["feedback"] for t in st["delegates"]["exercises"]["ex06"]["tasks"]}
    assert fb["ex06.confusion_matrix"].startswith("this task asks you to write `confusion_matrix` yourself")
    assert "write `miou` yourself" in fb["ex06.miou"]
    assert st["lost"]["unrecognised_notebooks"] and st["broken"]["exercises"]["ex99"]["notes"]
    assert not (subs / "writes_files" / "gradebook.csv").exists()
    assert "writer" not in (out / "gradebook.csv").read_text()
    assert "student" in book.table() and "good" in book.table()

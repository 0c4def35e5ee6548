"""Grade a class: find the notebooks, run them (in parallel), write the gradebook.

``grade(["submissions/"])`` treats every sub-folder as one student
(``submissions/<student>/*.ipynb``, deeper folders belong to the same student); notebooks
directly inside a folder argument, or a notebook given by path, belong to a student named
after their folder. Which exercise a notebook is comes from its file name (``06_*.ipynb``),
else from the ``check("exNN...`` calls in it.

Output (always complete, whatever the notebooks did): ``gradebook.csv`` (one row per
student: points per exercise, total, maximum), ``gradebook.json`` (per notebook and task: points,
feedback, the failing case, expected vs got, notes on crashed or interrupted cells) and a table
on the terminal. Both files are written after every notebook has finished, atomically.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from minseg.grading import runner
from minseg.grading.checks import exercise_for_notebook, get_exercise
from minseg.grading.runner import NotebookResult

DEFAULT_SEED = 20240611
"""Seed of the graded cases; the self-check in the notebook uses other cases (seed 0)."""


def find_notebooks(paths: Sequence[str | os.PathLike]) -> list[tuple[str, Path]]:
    """``(student, notebook)`` pairs for files, folders and class trees (sorted, unique)."""
    found: dict[Path, str] = {}
    for p in map(Path, paths):
        if p.is_file():
            found.setdefault(p.resolve(), p.resolve().parent.name)
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"no such notebook or folder: {p}")
        for nb in sorted(p.rglob("*.ipynb")):
            rel = nb.relative_to(p)
            if ".ipynb_checkpoints" in rel.parts or any(s.startswith(".") for s in rel.parts):
                continue
            student = rel.parts[0] if len(rel.parts) > 1 else p.resolve().name
            found.setdefault(nb.resolve(), student)
    return sorted(((s, nb) for nb, s in found.items()), key=lambda x: (x[0], str(x[1])))


@dataclass
class Gradebook:
    """The results of one grading run."""

    results: list[NotebookResult]
    maxima: dict[str, int]  # exercise id -> points available
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def exercises(self) -> list[str]:
        return sorted(self.maxima)

    def students(self) -> list[str]:
        return sorted({r.student for r in self.results})

    def best(self, student: str, exercise: str) -> NotebookResult | None:
        """The student's best notebook for an exercise (several may be submitted)."""
        mine = [r for r in self.results if r.student == student and r.exercise == exercise]
        return max(mine, key=lambda r: r.points, default=None)

    def row(self, student: str) -> dict:
        row: dict = {"student": student}
        for ex in self.exercises:
            best = self.best(student, ex)
            row[ex] = best.points if best else 0
        row["total"] = sum(row[ex] for ex in self.exercises)
        row["max_total"] = sum(self.maxima.values())
        return row

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, ["student", *self.exercises, "total", "max_total"], lineterminator="\n")
        w.writeheader()
        for s in self.students():
            w.writerow(self.row(s))
        return buf.getvalue()

    def to_json(self) -> dict:
        students = {}
        for s in self.students():
            row = self.row(s)
            exercises = {}
            for ex in self.exercises:
                best = self.best(s, ex)
                exercises[ex] = ({"points": 0, "max_points": self.maxima[ex], "submitted": False}
                                 if best is None else
                                 {"submitted": True, **best.to_dict()})
            others = [r.to_dict() for r in self.results if r.student == s and r.exercise is None]
            students[s] = {"total": row["total"], "max_total": row["max_total"],
                           "exercises": exercises, "unrecognised_notebooks": others}
        return {"settings": self.settings, "seconds": round(self.seconds, 1),
                "maxima": self.maxima, "students": students}

    def write(self, out: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``gradebook.csv`` and ``gradebook.json`` into ``out`` (atomic replace)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, text in (("gradebook.csv", self.to_csv()),
                           ("gradebook.json", json.dumps(self.to_json(), indent=1, default=str) + "\n")):
            tmp = out / f".{name}.{os.getpid()}.tmp"
            tmp.write_text(text)
            os.replace(tmp, out / name)
            paths.append(out / name)
        return paths[0], paths[1]

    def table(self) -> str:
        """A plain-text table: one row per student, points per exercise, total, first note."""
        exs = self.exercises
        head = ["student", *exs, "total", "notes"]
        rows = [head, ["(max)", *[str(self.maxima[e]) for e in exs], str(sum(self.maxima.values())), ""]]
        for s in self.students():
            row = self.row(s)
            notes, missing = [], []
            for ex in exs:
                best = self.best(s, ex)
                if best is None:
                    missing.append(ex)
                    continue
                failed = [t for t in best.tasks if not t.passed]
                if best.notes:
                    notes.append(f"{ex}: {best.notes[0]}")
                elif failed:
                    notes.append(f"{ex}: {failed[0].id.split('.', 1)[1]}: {failed[0].feedback}")
            if any(r.student == s and r.exercise is None for r in self.results):
                notes.append("unrecognised notebook(s)")
            if missing:
                notes.append("not submitted: " + ", ".join(missing))
            note = "; ".join(notes)
            rows.append([s, *[str(row[e]) for e in exs], str(row["total"]),
                         note if len(note) <= 70 else note[:67] + "..."])
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        lines = []
        for k, r in enumerate(rows):
            cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:-1], widths[1:])]
            lines.append("  ".join(cells + [r[-1]]).rstrip())
            if k == 1:
                lines.append("  ".join("-" * w for w in widths) + "  -----")
        return "\n".join(lines)


def grade(paths: Sequence[str | os.PathLike], timeout: float = runner.DEFAULT_TIMEOUT_S,
          jobs: int = 1, out: str | os.PathLike | None = "grades", *,
          cell_timeout: float = runner.DEFAULT_CELL_TIMEOUT_S,
          memory_mb: int = runner.DEFAULT_MEMORY_MB, seed: int = DEFAULT_SEED,
          checks: Sequence[str | os.PathLike] | None = None, verbose: bool = True) -> Gradebook:
    """Grade notebooks, folders or class trees; write the gradebook to ``out`` (``None``: don't).

    Each notebook runs in its own worker process (at most ``jobs`` at a time) with a
    wall-clock ``timeout`` (seconds per notebook), a per-cell limit ``cell_timeout`` and an
    address-space limit ``memory_mb``; see :mod:`minseg.grading.runner` for how hostile code
    is contained. Returns the :class:`Gradebook`.
    """
    t0 = time.monotonic()
    missing = [m for m in ("nbclient", "ipykernel") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"grading needs {' and '.join(missing)}: pip install nbclient ipykernel "
                         f"(or pip install -e '.[dev]')")
    checks = list(checks or [])
    found = find_notebooks(paths)
    submissions: list[tuple[str, Path, str | None]] = []
    for student, nb in found:
        try:
            text = nb.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        submissions.append((student, nb, exercise_for_notebook(nb, text, checks)))
    needed = sorted({ex for _, _, ex in submissions if ex})
    exercises = {ex: get_exercise(ex, checks) for ex in needed}
    expected = {ex: runner.expectations(e, seed) for ex, e in exercises.items()}
    results: list[NotebookResult] = []

    def one(student: str, nb: Path, ex: str | None) -> NotebookResult:
        if ex is None:
            return NotebookResult(str(nb), student, None, notes=[
                "could not tell which exercise this is: name it NN_topic.ipynb like the handout"])
        return runner.run_notebook(nb, exercises[ex], expected[ex], student=student,
                                   timeout=timeout, cell_timeout=cell_timeout, memory_mb=memory_mb)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(one, *s): s for s in submissions}
        for k, fut in enumerate(as_completed(futures), 1):
            student, nb, ex = futures[fut]
            try:
                r = fut.result()
            except Exception as e:  # never lose a row
                r = NotebookResult(str(nb), student, ex, notes=[f"grader error: {e}"])
            results.append(r)
            if verbose:
                score = f"{r.points}/{r.max_points}" if ex else "?"
                print(f"[{k}/{len(submissions)}] {student}/{nb.name}: {score} ({r.seconds:.1f}s)",
                      file=sys.stderr, flush=True)
    for r in results:  # a notebook whose grading failed before its tasks were listed
        if r.exercise in exercises and not r.tasks:
            r.tasks = [runner.TaskResult(t.id, 0, t.points, "not graded")
                       for t in exercises[r.exercise].tasks]
    book = Gradebook(sorted(results, key=lambda r: (r.student, r.path)),
                     {ex: e.points for ex, e in exercises.items()},
                     settings={"timeout_s": timeout, "cell_timeout_s": cell_timeout,
                               "memory_mb": memory_mb, "seed": seed, "jobs": jobs})
    book.seconds = time.monotonic() - t0
    if out is not None:
        book.write(out)
    return book

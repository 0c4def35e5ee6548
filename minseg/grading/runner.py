"""Grade one notebook: run it in a worker process under limits, then judge its outputs.

How a student's functions are collected (and why a hostile notebook cannot fake a pass):

1. **Expectations stay here.** The grader builds every case's inputs from a seed and computes
   the expected outputs with the reference implementation *in its own process*, before any
   student code runs (:func:`expectations`). Only the inputs go to the child, in
   ``request.pkl``; the expected values never leave this process.
2. **Student code runs elsewhere.** ``worker.py`` (a fresh ``python`` in a new session, with
   ``RLIMIT_AS``/``RLIMIT_FSIZE`` set) starts a Jupyter kernel, executes the notebook and then
   calls each graded function on the inputs (``collect.py``), writing the outputs as JSON to a
   folder this process created. Monkeypatching ``minseg`` or the checks inside the kernel
   changes nothing here; printing "PASSED" changes nothing either: stdout is never read.
3. **Wall clock enforced here.** If the worker is not done after ``timeout`` seconds (plus a
   short grace) its whole process tree is killed; whatever it had collected still counts.
4. **Judging here.** Each output file is read with a size cap, parsed as plain JSON (no
   pickle, no eval) and compared with the expectation by the task's comparator. A task
   whose function is missing, raises, hangs, or returns something else scores 0 with
   feedback naming the failing case, the expected and the actual value.

Tasks come from the checks registry, not from the notebook: deleting cells only loses the
points of the functions they defined.

Debugging: ``MINSEG_GRADING_KEEP=1`` keeps each notebook's temporary folder (``job.json``,
``events.jsonl``, ``worker.log``, the result files) instead of deleting it.

Not a security sandbox: the kernel runs as the grading user, so it can read and write that
user's files. Grade untrusted classes in a container or as a separate user; the gradebook
itself is written only after every notebook has finished and its processes are dead.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minseg.grading.checks import Exercise
from minseg.grading.codec import decode
from minseg.grading.tasks import Case, Task, describe, one_thread, reference_outputs
from minseg.grading.worker import kill_tree

HERE = Path(__file__).resolve().parent
KERNEL_NAME = "minseg-grader"
GRACE_S = 10.0
MAX_RESULT_BYTES = 64 << 20
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_CELL_TIMEOUT_S = 60.0
DEFAULT_MEMORY_MB = 8192


@dataclass
class TaskResult:
    """Points and feedback of one task."""

    id: str
    points: int
    max_points: int
    feedback: str
    case: str = ""
    expected: str = ""
    got: str = ""
    cases_passed: int = 0
    cases: int = 0

    @property
    def passed(self) -> bool:
        return self.points == self.max_points


@dataclass
class NotebookResult:
    """Everything the grader learned about one submitted notebook."""

    path: str
    student: str
    exercise: str | None
    tasks: list[TaskResult] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(t.points for t in self.tasks)

    @property
    def max_points(self) -> int:
        return sum(t.max_points for t in self.tasks)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["points"], d["max_points"] = self.points, self.max_points
        return d


# ------------------------------------------------------------------------------------------
# expectations (computed in this process, before any student code runs)
# ------------------------------------------------------------------------------------------
@dataclass
class Expected:
    case: Case
    value: Any
    forbid: tuple[str, ...] = ()     # minseg names blocked while the student's function runs


def expectations(exercise: Exercise, seed: int) -> dict[str, list[Expected]]:
    """Cases and reference outputs (as the codec returns them) of every task, and the minseg
    functions each task's student function may not call (:mod:`minseg.grading.guard`)."""
    out = {}
    with one_thread():
        for task in exercise.tasks:
            cases = task.cases(seed)
            values, blocked = reference_outputs(task, cases)
            out[task.id] = [Expected(c, v, tuple(blocked)) for c, v in zip(cases, values)]
    return out


def _call_ref(task: Task, exercise: Exercise) -> tuple[str, str, str] | None:
    """How the kernel finds ``task.call``: ``None`` for ``fn(**inputs)``, else an importable
    module name or the checks file it was defined in, and the function's name."""
    if task.call.__name__ == "call_kwargs":
        return None
    module = task.call.__module__
    if module.startswith("minseg_checks_"):  # loaded from a file (see checks.load_module_file)
        return ("file", exercise.source[1], task.call.__qualname__)
    return ("module", module, task.call.__qualname__)


# ------------------------------------------------------------------------------------------
# judging the child's outputs
# ------------------------------------------------------------------------------------------
def _read_result(path: Path) -> dict | str:
    """The parsed result file, or a reason why there is none."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISREG(st.st_mode):
        return "the result is not a regular file"
    if st.st_size > MAX_RESULT_BYTES:
        return "the result is too large"
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_RESULT_BYTES + 1))
    except Exception as e:
        return f"unreadable result ({type(e).__name__})"
    return data if isinstance(data, dict) else "malformed result"


def judge(task: Task, expected: list[Expected], result: dict | str, why_missing: str) -> TaskResult:
    """Score one task from the child's result (all cases must pass for the points)."""
    r = TaskResult(task.id, 0, task.points, "", cases=len(expected))
    if isinstance(result, str):
        r.feedback = (f"no result for `{task.function}`: {why_missing}" if result == "missing"
                      else f"no usable result for `{task.function}`: {result}")
        return r
    if result.get("missing"):
        r.feedback = f"{str(result['missing'])[:200]}; write `{task.function}` as the exercise asks"
        return r
    got_cases = result.get("cases")
    got_cases = got_cases if isinstance(got_cases, list) else []
    for k, exp in enumerate(expected):
        where = f"case {k + 1} of {len(expected)} ({exp.case.note})"
        item = got_cases[k] if k < len(got_cases) else None
        if not isinstance(item, dict):
            r.case, r.feedback = exp.case.note, f"did not finish {where}: {why_missing}"
            return r
        if "error" in item or "value" not in item:
            r.case, error = exp.case.note, str(item.get("error"))[:500]
            if error.startswith("NotImplementedError"):
                r.feedback = f"not implemented yet ({error})"
            elif error.startswith("DelegationError: "):
                r.feedback = error[len("DelegationError: "):]
            elif error.startswith("did not finish"):
                r.feedback = f"`{task.function}` {error} on {where}"
            else:
                r.feedback = f"`{task.function}` raised on {where}: {error}"
            return r
        if task.score is not None:          # graded by bands (a training challenge)
            try:
                share, r.feedback = task.score(exp.value, decode(item["value"]))
            except Exception as e:
                share, r.feedback = 0.0, f"could not score the output ({type(e).__name__}: {e})"
            r.case = exp.case.note
            r.points = int(round(share * task.points))
            r.cases_passed = int(share > 0)
            return r
        try:
            got = decode(item["value"])
            reason = task.compare(exp.value, got)
        except Exception as e:  # a value so odd that the comparator fails on it
            got, reason = None, f"could not compare the output ({type(e).__name__}: {e})"
        if reason:
            r.case, r.expected, r.got = exp.case.note, describe(exp.value), describe(got)
            r.feedback = f"wrong output on {where}: {reason}"
            if task.hint:
                r.feedback += f". Hint: {task.hint}"
            return r
        r.cases_passed += 1
    r.points = task.points
    r.feedback = f"passed {len(expected)}/{len(expected)} cases"
    return r


# ------------------------------------------------------------------------------------------
# running one notebook
# ------------------------------------------------------------------------------------------
def _kernel_spec(root: Path) -> Path:
    """A kernelspec that runs this very interpreter (not whatever "python3" resolves to)."""
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "minseg grader", "language": "python"}))
    return root


def _env(tmp: Path, jupyter_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(HERE.parents[1])  # the folder holding the `minseg` package
    for key, first in (("PYTHONPATH", package_root), ("JUPYTER_PATH", str(jupyter_path))):
        rest = [p for p in env.get(key, "").split(os.pathsep) if p]
        env[key] = os.pathsep.join([first] + rest)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = "1"
    env.update(MPLBACKEND="Agg", IPYTHONDIR=str(tmp / "ipython"), MPLCONFIGDIR=str(tmp / "mpl"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), PYDEVD_DISABLE_FILE_VALIDATION="1",
               PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("MINSEG_PROFILE", "smoke")
    return env


_WHY = {
    "task_timeout": "it did not finish within the cell time limit ({limit_s}s)",
    "kernel_lost": "the kernel died or stopped answering while it ran ({detail})",
    "time_limit": "the notebook's time limit ran out before it was called",
    "collector_error": "collecting it failed ({detail})",
}


def _notes(events: list[dict]) -> tuple[list[str], dict[str, str]]:
    """Readable notes for the notebook, and why each task without a result has none."""
    notes, why = [], {}
    for e in events:
        kind, cell = e.get("kind"), e.get("cell")
        where = f"cell {cell + 1}" if isinstance(cell, int) else ""
        if kind == "cell_error":
            notes.append(f"{where} raised {str(e.get('detail'))[:200]}")
        elif kind == "cell_timeout":
            limit = e.get("limit_s")
            limit = f"{limit:g}" if isinstance(limit, (int, float)) else "?"
            notes.append(f"{where} was interrupted after {limit}s (time limit per cell)")
        elif kind == "kernel_lost" and isinstance(cell, int):
            notes.append(f"{where} killed or hung the kernel ({str(e.get('detail'))[:100]}); "
                         f"re-ran the notebook without it")
        elif kind in ("unreadable", "collector_failed", "worker_error"):
            notes.append(f"{kind.replace('_', ' ')}: {str(e.get('detail'))[:300]}")
        elif kind == "time_limit" and "time limit" not in " ".join(notes):
            notes.append("the notebook's time limit ran out")
        task = e.get("task")
        if isinstance(task, str) and kind in _WHY:
            try:
                why[task] = _WHY[kind].format(limit_s=e.get("limit_s"),
                                              detail=str(e.get("detail"))[:100])
            except (KeyError, IndexError, ValueError):
                why[task] = str(kind)
    return list(dict.fromkeys(notes)), why


def _read_events(path: Path) -> list[dict]:
    events = []
    try:
        with open(path, "rb") as f:
            lines = f.read(1 << 20).decode("utf-8", "replace").splitlines()
    except OSError:
        return events
    for line in lines[:1000]:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict):
            events.append(e)
    return events


def run_notebook(path: str | os.PathLike, exercise: Exercise, expected: dict[str, list[Expected]],
                 *, student: str = "", timeout: float = DEFAULT_TIMEOUT_S,
                 cell_timeout: float = DEFAULT_CELL_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB,
                 file_size_mb: int = 512) -> NotebookResult:
    """Execute ``path`` in a worker process and score every task of ``exercise``."""
    path = Path(path)
    t0 = time.monotonic()
    res = NotebookResult(str(path), student, exercise.id)
    tmp = Path(tempfile.mkdtemp(prefix="minseg-grade-"))
    try:
        results, scratch = tmp / "results", tmp / "scratch"
        results.mkdir()
        scratch.mkdir()
        request = {"result_dir": str(results), "tasks": {
            t.id: {"function": t.function, "call": _call_ref(t, exercise),
                   "forbid": list(expected[t.id][0].forbid) if expected[t.id] else [],
                   "cases": [e.case.inputs for e in expected[t.id]]} for t in exercise.tasks}}
        with open(tmp / "request.pkl", "wb") as f:
            pickle.dump(request, f)
        job = {"notebook": str(path.resolve()), "scratch": str(scratch),
               "request": str(tmp / "request.pkl"), "events": str(tmp / "events.jsonl"),
               "tasks": [t.id for t in exercise.tasks],
               "time_limit_s": timeout, "cell_timeout_s": min(cell_timeout, timeout),
               # a training challenge gets its own, longer limit (still within the notebook's)
               "task_timeouts": {t.id: min(max(t.timeout_s, cell_timeout), timeout)
                                 for t in exercise.tasks if t.timeout_s},
               "memory_mb": memory_mb, "file_size_mb": file_size_mb,
               "collect_py": str(HERE / "collect.py"), "kernel_name": KERNEL_NAME,
               "preload": list(exercise.preload)}
        (tmp / "job.json").write_text(json.dumps(job))
        env = _env(tmp, _kernel_spec(tmp / "jupyter"))
        with open(tmp / "worker.log", "wb") as log:
            cmd = [sys.executable, str(HERE / "worker.py"), str(tmp / "job.json")]
            proc = subprocess.Popen(cmd, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=timeout + GRACE_S)
            except subprocess.TimeoutExpired:
                res.notes.append(f"killed after the time limit of {timeout:.0f}s")
            finally:
                kill_tree(proc.pid)
                proc.wait()
        events = _read_events(tmp / "events.jsonl")
        notes, why = _notes(events)
        res.notes += notes
        if proc.returncode not in (0, None) and not any("killed after" in n for n in res.notes):
            tail = (tmp / "worker.log").read_bytes()[-300:].decode("utf-8", "replace").strip()
            res.notes.append(f"the grading worker exited with status {proc.returncode}: {tail}")
        default_why = ("the notebook did not get this far (" + "; ".join(res.notes) + ")"
                       if res.notes else "no output was collected")
        for task in exercise.tasks:
            result = _read_result(results / f"{task.id}.json")
            res.tasks.append(judge(task, expected[task.id], result, why.get(task.id, default_why)))
    except Exception as e:  # the grader's own failure: still a complete (zero) row
        res.notes.append(f"grader error: {type(e).__name__}: {e}")
        done = {t.id for t in res.tasks}
        res.tasks += [TaskResult(t.id, 0, t.points, "not graded (grader error)")
                      for t in exercise.tasks if t.id not in done]
    finally:
        if not os.environ.get("MINSEG_GRADING_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        res.seconds = time.monotonic() - t0
    return res

"""Exercises, self-checks and the auto-grader.

Three entry points:

* ``check("ex06.miou", miou)`` in a notebook: runs the task's cases against the ``minseg``
  reference and prints PASSED, or the first failing case with expected vs got;
* ``release("solutions", "exercises")`` (``python -m minseg release``): writes the student
  notebooks, each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region replaced by
  ``raise NotImplementedError("exNN.task: ...")``, outputs cleared;
* ``grade(paths, timeout=..., jobs=..., out=...)`` (``python -m minseg grade``): runs each
  notebook in its own process under time and memory limits, collects its functions, scores
  them and writes ``gradebook.csv`` / ``gradebook.json``.

Design in one paragraph: tasks live in ``minseg/grading/checks/exNN.py`` (the source of
truth, not the notebook). The grader computes expected outputs with the reference
implementation in its own process before any student code runs, sends only the inputs to a
worker process, which runs the notebook in a Jupyter kernel and then calls the student's
functions on them; the outputs come back as plain JSON files and are compared here. Details,
and what is and is not contained, in :mod:`minseg.grading.runner`; how to add an exercise in
``minseg/grading/README.md``.
"""
from __future__ import annotations

import copy
import os
import traceback
from typing import Any, Callable, Sequence

__all__ = ["check", "release", "grade", "failed_inputs"]

_failures: dict[str, dict] = {}


def failed_inputs(task_id: str) -> dict | None:
    """The arguments of the case that :func:`check` last reported as failing for ``task_id``
    (call ``fn(**failed_inputs(task_id))`` to debug), or ``None``."""
    return copy.deepcopy(_failures.get(task_id))


def _where(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if "minseg/grading" not in f.filename.replace(os.sep, "/")]
    if not mine:
        return ""
    f = mine[-1]
    return f" (line {f.lineno} in {f.name}: {(f.line or '').strip()[:80]})"


def check(task_id: str, fn: Callable, *, seed: int = 0,
          checks: Sequence[str | os.PathLike] | None = None) -> bool:
    """Check one function against the reference on the task's cases; print feedback.

    Returns ``True`` when every case passes. The grader uses the same comparison on other
    cases (another seed), so a function that passes here but hard-codes answers will not.
    """
    from minseg.grading.tasks import one_thread

    with one_thread():
        return _check(task_id, fn, seed, checks)


def _check(task_id: str, fn: Callable, seed: int, checks) -> bool:
    from minseg.grading.checks import get_task
    from minseg.grading.codec import roundtrip
    from minseg.grading.guard import DelegationError, forbidden
    from minseg.grading.tasks import describe, reference_outputs

    try:
        task = get_task(task_id, checks)
    except KeyError as e:
        print(f"check: {e.args[0]}")
        return False
    if not callable(fn):
        print(f"{task_id}: FAILED: expected a function `{task.function}`, got a {type(fn).__name__}")
        return False
    cases = task.cases(seed)
    outputs, blocked = reference_outputs(task, cases)
    for k, (case, expected) in enumerate(zip(cases, outputs), 1):
        head = f"{task_id}: FAILED on case {k} of {len(cases)} ({case.note})"
        try:
            # the minseg functions this task asks the student to write raise while fn runs
            with forbidden(blocked, task.function):
                got = roundtrip(task.call(fn, copy.deepcopy(case.inputs)))
        except NotImplementedError:
            print(f"{task_id}: not implemented yet. To do: {task.prompt}")
            return False
        except DelegationError as e:
            print(f"{task_id}: FAILED: {e}. Scores 0 when graded.")
            return False
        except Exception as e:
            _failures[task_id] = case.inputs
            print(f"{head}\n  your function raised {type(e).__name__}: {str(e)[:300]}{_where(e)}\n"
                  f"  debug: {task.function}(**minseg.grading.failed_inputs({task_id!r}))")
            return False
        if task.score is not None:           # a training challenge: points by bands
            share, feedback = task.score(expected, got)
            smoke = " (smoke budget: a few steps, the bands mean nothing)" \
                if os.environ.get("MINSEG_CHALLENGE_BUDGET") == "smoke" else ""
            print(f"{task_id}: {feedback}{smoke}; {round(share * task.points)} of {task.points} "
                  f"point{'s' if task.points != 1 else ''} when graded on other held-out images")
            return share >= 1.0
        reason = task.compare(expected, got)
        if reason:
            _failures[task_id] = case.inputs
            lines = [head, f"  problem:  {reason}", f"  expected: {describe(expected)}",
                     f"  got:      {describe(got)}"]
            if task.hint:
                lines.append(f"  hint:     {task.hint}")
            lines.append(f"  debug:    {task.function}(**minseg.grading.failed_inputs({task_id!r}))")
            print("\n".join(lines))
            return False
    _failures.pop(task_id, None)
    pts = f"{task.points} point{'s' if task.points != 1 else ''}"
    print(f"{task_id}: PASSED all {len(cases)} cases ({pts} when graded)")
    return True


def release(src: str | os.PathLike = "solutions", dst: str | os.PathLike = "exercises",
            **kw: Any) -> list:
    """Write student notebooks from solution notebooks; see :mod:`minseg.grading.release`."""
    from minseg.grading.release import release as _release

    return _release(src, dst, **kw)


def grade(paths: Sequence[str | os.PathLike], timeout: float = 300.0, jobs: int = 1,
          out: str | os.PathLike | None = "grades", **kw: Any):
    """Grade notebooks / folders / class trees; see :func:`minseg.grading.gradebook.grade`."""
    from minseg.grading.gradebook import grade as _grade

    return _grade(paths, timeout=timeout, jobs=jobs, out=out, **kw)

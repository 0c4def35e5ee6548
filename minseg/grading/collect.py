"""Kernel side of the grader: call the notebook's functions on the grader's inputs.

This file runs *inside the student's kernel*, after every cell of the notebook, so nothing
here is trusted: the student's code ran first and may have replaced anything in the process.
That is fine, because this side decides nothing. It only

1. reads the case inputs from ``request.pkl`` (written by the grader, holding no expected
   values),
2. looks up each task's function by name in the notebook's namespace and applies it to the
   inputs, and
3. writes the encoded outputs (``codec.encode``) to ``<task id>.json`` in the grader's
   folder, after every case, so a kernel that dies or hangs half-way keeps what it did.

The grader compares these outputs with expectations it computed in its own process; a
forged or corrupt result can only lose points. Standard library only (loaded by path, without
importing :mod:`minseg`, so that notebooks that never import torch start fast); only a task
that blocks delegation imports :mod:`minseg.grading.guard`.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pickle
import time
from pathlib import Path
from typing import Any, Callable

_HERE = Path(__file__).resolve().parent


def _load(path: str | os.PathLike, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _resolve(ref: tuple[str, str, str] | None) -> Callable[[Callable, dict], Any]:
    if ref is None:
        return lambda fn, inputs: fn(**inputs)
    kind, name, attr = ref
    module = importlib.import_module(name) if kind == "module" else _load(name, "_minseg_checks_file")
    return getattr(module, attr)


def _error(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:
        text = "?"
    return f"{type(e).__name__}: {text}"[:1000]


class Collector:
    """Runs the graded functions of one notebook; one :meth:`run` per task (one cell each)."""

    def __init__(self, request_path: str, namespace: dict) -> None:
        with open(request_path, "rb") as f:
            self.request = pickle.load(f)
        self.namespace = namespace
        self.codec = _load(_HERE / "codec.py", "_minseg_codec")
        self.out_dir = Path(self.request["result_dir"])

    def _write(self, task_id: str, result: dict) -> None:
        path = self.out_dir / f"{task_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, allow_nan=True))
        os.replace(tmp, path)

    def _guard(self):
        # a fresh copy by path, so that a notebook that patched minseg.grading.guard does not
        # switch the guard off; registered so that the blocked functions' stand-in code finds it
        import sys
        if "_minseg_guard" not in sys.modules:
            sys.modules["_minseg_guard"] = _load(_HERE / "guard.py", "_minseg_guard")
        return sys.modules["_minseg_guard"]

    def run(self, task_id: str) -> None:
        spec = self.request["tasks"][task_id]
        result: dict = {"task": task_id, "cases": []}
        fn = self.namespace.get(spec["function"])
        if fn is None:
            result["missing"] = f"the notebook defines no `{spec['function']}`"
            return self._write(task_id, result)
        if not callable(fn):
            result["missing"] = f"`{spec['function']}` is a {type(fn).__name__}, not a function"
            return self._write(task_id, result)
        call = _resolve(spec["call"])
        forbid = spec.get("forbid") or []
        # the minseg functions this task asks the student to write raise while fn runs
        guard = self._guard() if forbid else None
        for inputs in spec["cases"]:
            t0 = time.perf_counter()
            case: dict = {}
            result["cases"].append(case)
            try:
                if guard is None:
                    value = call(fn, inputs)
                else:
                    with guard.forbidden(forbid, spec["function"]):
                        value = call(fn, inputs)
                case["value"] = self.codec.encode(value)
            except KeyboardInterrupt:  # the grader's interrupt: the time limit is reached
                case["error"] = "did not finish within the time limit"
                self._write(task_id, result)
                raise
            except BaseException as e:  # SystemExit too: it is the student's error
                case["error"] = _error(e)
            case["seconds"] = time.perf_counter() - t0
            self._write(task_id, result)
        result["done"] = True
        self._write(task_id, result)

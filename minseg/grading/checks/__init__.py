"""The registry of exercises: one module ``exNN.py`` per exercise, the source of truth for
what is graded.

A checks module defines ``SLUG`` (the notebook's file name without ``.ipynb``, e.g.
``"06_miou"``), ``TITLE`` and ``TASKS`` (a list of :class:`minseg.grading.tasks.Task` whose ids
start with ``exNN.``), optionally ``PRELOAD`` (modules the kernel imports before the notebook,
default torch and minseg.grading). Teachers can add exercises outside the package: put ``exNN_*.py``
modules in a folder and pass it as ``checks=[folder]`` (``--checks DIR`` on the command line)
or list it in the ``MINSEG_CHECKS`` environment variable (``os.pathsep``-separated).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterable, Sequence

from minseg.grading.tasks import Task

CHECKS_ENV = "MINSEG_CHECKS"
DEFAULT_PRELOAD = ("torch", "minseg.grading")
"""Modules a kernel imports before the notebook runs (override with ``PRELOAD`` in a module)."""
_MODULE = re.compile(r"^ex(\d\d)(_\w*)?$")


@dataclass(frozen=True)
class Exercise:
    """An exercise: ``id`` ``"exNN"``, its notebook ``slug``, title and tasks; ``source`` says
    how a kernel imports the module (``("module", dotted name)`` or ``("file", path)``)."""

    id: str
    slug: str
    title: str
    tasks: tuple[Task, ...]
    source: tuple[str, str]
    preload: tuple[str, ...] = DEFAULT_PRELOAD

    @property
    def points(self) -> int:
        return sum(t.points for t in self.tasks)

    @property
    def notebook(self) -> str:
        return f"{self.slug}.ipynb"


def _extra_dirs(checks: Sequence[str | os.PathLike] | None) -> list[Path]:
    dirs = [Path(p) for p in (checks or ())]
    env = os.environ.get(CHECKS_ENV, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    return dirs


def load_module_file(path: str | os.PathLike) -> ModuleType:
    """Import a checks module from a file (cached in ``sys.modules`` by its resolved path)."""
    path = Path(path).resolve()
    name = "minseg_checks_" + re.sub(r"\W", "_", str(path))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import checks from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _exercise(module: ModuleType, source: tuple[str, str]) -> Exercise:
    slug = getattr(module, "SLUG", None)
    tasks = tuple(getattr(module, "TASKS", ()))
    if not isinstance(slug, str) or not re.match(r"^\d\d_\w+$", slug):
        raise ValueError(f"checks module {source[1]} needs SLUG = 'NN_name'")
    ex_id = f"ex{slug[:2]}"
    seen = set()
    for t in tasks:
        if not isinstance(t, Task) or not t.id.startswith(ex_id + "."):
            raise ValueError(f"{source[1]}: every task id must start with {ex_id}. (got {t!r})")
        if t.id in seen:
            raise ValueError(f"{source[1]}: duplicate task id {t.id}")
        seen.add(t.id)
    preload = tuple(getattr(module, "PRELOAD", DEFAULT_PRELOAD))
    return Exercise(ex_id, slug, getattr(module, "TITLE", slug), tasks, source, preload)


def _sources(checks: Sequence[str | os.PathLike] | None) -> dict[str, tuple[str, str]]:
    """``"exNN"`` -> how to import its module; extra folders override built-in modules."""
    found: dict[str, tuple[str, str]] = {}
    here = Path(__file__).parent
    for info in pkgutil.iter_modules([str(here)]):
        m = _MODULE.match(info.name)
        if m:
            found[f"ex{m.group(1)}"] = ("module", f"{__name__}.{info.name}")
    for d in _extra_dirs(checks):
        for f in sorted(Path(d).glob("ex[0-9][0-9]*.py")):
            m = _MODULE.match(f.stem)
            if m:
                found[f"ex{m.group(1)}"] = ("file", str(f.resolve()))
    return found


def exercise_ids(checks: Sequence[str | os.PathLike] | None = None) -> list[str]:
    """Every known exercise id, sorted (``["ex03", "ex05", ...]``)."""
    return sorted(_sources(checks))


def get_exercise(ex_id: str, checks: Sequence[str | os.PathLike] | None = None) -> Exercise:
    """The exercise ``"exNN"`` (``KeyError`` naming the known ones if there is none)."""
    sources = _sources(checks)
    if ex_id not in sources:
        raise KeyError(f"no exercise {ex_id!r}; known: {', '.join(sorted(sources)) or 'none'}")
    kind, name = sources[ex_id]
    module = importlib.import_module(name) if kind == "module" else load_module_file(name)
    return _exercise(module, (kind, name))


def get_task(task_id: str, checks: Sequence[str | os.PathLike] | None = None) -> Task:
    """The task ``"exNN.name"``."""
    ex = get_exercise(task_id.split(".")[0], checks)
    for t in ex.tasks:
        if t.id == task_id:
            return t
    raise KeyError(f"no task {task_id!r}; {ex.id} has {', '.join(t.id for t in ex.tasks)}")


def all_exercises(checks: Sequence[str | os.PathLike] | None = None) -> list[Exercise]:
    """Every exercise, sorted by id."""
    return [get_exercise(e, checks) for e in exercise_ids(checks)]


def exercise_for_notebook(path: str | os.PathLike, source_text: str = "",
                          checks: Iterable[str | os.PathLike] | None = None) -> str | None:
    """Which exercise a notebook is: ``NN`` from a file name ``NN_*.ipynb``, else the first
    ``check("exNN.`` in its source; ``None`` if neither names a known exercise."""
    known = set(exercise_ids(list(checks or ())))
    m = re.match(r"^(\d\d)(?!\d)", Path(path).name)
    if m and f"ex{m.group(1)}" in known:
        return f"ex{m.group(1)}"
    for m in re.finditer(r"""check\(\s*["'](ex\d\d)\.""", source_text):
        if m.group(1) in known:
            return m.group(1)
    return None

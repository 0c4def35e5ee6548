"""Delegation guard: a task that asks for ``confusion_matrix`` is not passed by calling minseg's.

Every student has :mod:`minseg` installed, and it holds a reference answer to every task. So
while a student's function runs (under :func:`minseg.grading.check` or the grader), the minseg
functions that the task's reference calls raise :class:`DelegationError` with the message
"this task asks you to write `confusion_matrix` yourself". Everything else in minseg (data,
models given as inputs, plots) stays usable.

Two steps:

1. :func:`reference_calls` runs the reference on the task's cases with a profiler hook and
   records the minseg functions it calls *directly* (the reference's own frames calling into
   ``minseg``, outside ``minseg.grading``), as dotted names such as
   ``"minseg.metrics.confusion_matrix"`` or ``"minseg.metrics.ConfusionMatrix.update"``. A
   task adds names with ``Task.forbid`` and exempts helpers students may use with
   ``Task.allow``.
2. :func:`forbidden` swaps the code object of each of those functions for one that raises, for
   the duration of the student's call, and restores it afterwards. Every name bound to the
   function object (the module attribute, a re-export in a package ``__init__``, a
   ``from minseg.metrics import confusion_matrix`` executed earlier in the notebook, a
   subclass calling ``super().__init__``) reaches the same object, so aliases are caught too.

Standard library only, so that the grader's collector can use it inside the student's kernel.
It is not a sandbox: a notebook that copies a function's code before the call, pastes in its
source, or replaces a module attribute and then calls the original through another name, is
not caught (read the code if that matters).
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
from typing import Any, Callable, Iterable, Iterator

MESSAGE = "this task asks you to write `{function}` yourself"

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # .../minseg
_GRADING = os.path.join(_PACKAGE, "grading")
_active: list[str] = []          # the student functions being guarded (innermost last)


class DelegationError(RuntimeError):
    """A student's function called the minseg function it was asked to write."""


def refusal(name: str) -> DelegationError:
    """The error a blocked function raises (called from the stand-in code, see :func:`_stand_in`)."""
    function = _active[-1] if _active else name.rsplit(".", 1)[-1]
    return DelegationError(MESSAGE.format(function=function)
                           + f" (it called {name}, the reference answer)")


# ------------------------------------------------------------------------------------------
# step 1: which minseg functions does a reference call?
# ------------------------------------------------------------------------------------------
def _in_minseg(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE + os.sep) and not path.startswith(_GRADING + os.sep)


def _dotted(frame: types.FrameType) -> str | None:
    """``module.qualname`` of the function running in ``frame``, if that name leads back to
    this very code object (nested functions and lambdas have no such name)."""
    code = frame.f_code
    module = frame.f_globals.get("__name__", "")
    qualname = getattr(code, "co_qualname", code.co_name)
    if "<" in qualname or module not in sys.modules:
        return None
    name = f"{module}.{qualname}"
    try:
        return name if _code_of(resolve(name)) is code else None
    except (LookupError, TypeError):
        return None


def reference_calls(reference: Callable, run: Callable[[Callable], Any]) -> list[str]:
    """Dotted names of the minseg functions that ``reference`` calls directly while
    ``run(fn)`` applies ``fn`` to the task's cases (``run`` receives a wrapped reference).

    "Directly" means from the reference's own source file (its checks module): a call made by
    minseg or torch on the way (a block's ``forward`` that ``nn.Module.__call__`` runs) is an
    implementation detail of the reference, not the answer, and stays allowed."""
    found: dict[str, None] = {}
    code = getattr(reference, "__code__", None)
    own = {os.path.abspath(code.co_filename)} if code is not None else set()
    checks_dir = os.path.join(_GRADING, "checks") + os.sep

    def hook(frame: types.FrameType, event: str, arg: Any) -> None:
        if event != "call" or not _in_minseg(frame.f_code.co_filename):
            return
        caller = frame.f_back
        if caller is None:
            return
        where = os.path.abspath(caller.f_code.co_filename)
        if where in own or where.startswith(checks_dir):
            name = _dotted(frame)
            if name:
                found[name] = None

    def traced(*args: Any, **kwargs: Any) -> Any:
        old = sys.getprofile()
        sys.setprofile(hook)
        try:
            return reference(*args, **kwargs)
        finally:
            sys.setprofile(old)

    run(traced)
    return list(found)


# ------------------------------------------------------------------------------------------
# step 2: make them raise while the student's function runs
# ------------------------------------------------------------------------------------------
def resolve(name: str) -> Any:
    """The object a dotted name such as ``"minseg.metrics.ConfusionMatrix.update"`` names."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):       # the longest importable module prefix
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                # a class's own attribute as stored (a staticmethod stays one), else getattr
                obj = obj.__dict__[attr] if isinstance(obj, type) and attr in obj.__dict__ else getattr(obj, attr)
        except AttributeError as e:
            raise LookupError(f"cannot resolve {name}: {e}") from None
        return obj
    raise LookupError(f"cannot import {name}")


def _code_of(obj: Any) -> types.CodeType:
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if not isinstance(obj, types.FunctionType):
        raise TypeError(f"{obj!r} is not a plain Python function")
    return obj.__code__


def _functions(name: str) -> list[tuple[types.FunctionType, str]]:
    """The function objects behind ``name``: the function itself, or a class's own
    ``__init__``, ``forward`` and ``__call__``."""
    obj = resolve(name)
    if isinstance(obj, type):
        out = []
        for attr in ("__init__", "forward", "__call__"):
            f = obj.__dict__.get(attr)
            if isinstance(f, types.FunctionType):
                out.append((f, f"{name}.{attr}"))
        if not out:
            raise TypeError(f"{name} defines none of __init__, forward, __call__ to guard")
        return out
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    obj = getattr(obj, "__wrapped__", obj) if not isinstance(obj, types.FunctionType) else obj
    if not isinstance(obj, types.FunctionType):
        raise TypeError(f"{name} is not a plain Python function or class, it cannot be guarded")
    return [(obj, name)]


def _stand_in(fn: types.FunctionType, name: str) -> types.CodeType:
    """Code that raises :func:`refusal` for ``name``. It runs with ``fn``'s globals, so it
    reaches this module through ``sys.modules`` only, and it keeps ``fn``'s closure size."""
    free = fn.__code__.co_freevars
    inner = ("def _blocked(*args, **kwargs):\n"
             + (f"    {', '.join(free)}\n" if free else "")      # reference the free variables
             + f"    raise __import__('sys').modules[{__name__!r}].refusal({name!r})\n")
    src = (f"def _outer():\n    {' = '.join(free)} = None\n" + "\n".join("    " + line for line in inner.splitlines())
           + "\n    return _blocked\n") if free else inner
    ns: dict[str, Any] = {}
    exec(compile(src, f"<guard of {name}>", "exec"), ns)
    made = ns["_outer"]() if free else ns["_blocked"]
    return made.__code__


@contextlib.contextmanager
def forbidden(names: Iterable[str], function: str) -> Iterator[None]:
    """While the block runs, every function in ``names`` raises "this task asks you to write
    `function` yourself". Names that no longer resolve are skipped."""
    targets: dict[int, tuple[types.FunctionType, str]] = {}
    for name in names:
        try:
            for fn, label in _functions(name):
                targets.setdefault(id(fn), (fn, label))
        except (LookupError, TypeError, ImportError):
            continue
    saved: list[tuple[types.FunctionType, types.CodeType]] = []
    _active.append(function)
    try:
        for fn, label in targets.values():
            saved.append((fn, fn.__code__))
            fn.__code__ = _stand_in(fn, label)
        yield
    finally:
        for fn, code in reversed(saved):
            fn.__code__ = code
        _active.pop()

"""What a graded task is, and how an output is compared with the expected one.

A :class:`Task` names the function a notebook must define, how many points it is worth,
the seeded test cases, a *reference* (a correct function with the same signature, built on
:mod:`minseg`) and a comparator. The expected output of every case is ``call(reference,
inputs)``, the student's is ``call(student_fn, inputs)``; both pass through the JSON codec
(:mod:`minseg.grading.codec`) before :attr:`Task.compare` sees them, so the self-check
(:func:`minseg.grading.check`) and the grader judge exactly the same values.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from minseg.grading.codec import Opaque

Comparator = Callable[[Any, Any], "str | None"]


@dataclass(frozen=True)
class Case:
    """One test input: keyword arguments for ``call`` and a short human description.
    ``secret`` stays in the grader's process (a challenge's held-out masks): a task with a
    ``score`` judges the output against it instead of against the reference's output."""

    inputs: dict
    note: str
    secret: Any = None


def call_kwargs(fn: Callable, inputs: dict) -> Any:
    """The default way to apply a function to a case: ``fn(**inputs)``."""
    return fn(**inputs)


@dataclass(frozen=True)
class Task:
    """One graded function of an exercise.

    * ``id``: ``"exNN.name"``, unique; ``function``: the name the notebook must define;
    * ``prompt``: one line saying what to implement (release puts it into the
      ``NotImplementedError``; feedback repeats it);
    * ``cases(seed)``: a list of :class:`Case` built from ``seed`` (deterministic);
    * ``reference``: a correct implementation, called exactly like the student's function;
    * ``call(fn, inputs)``: applies a function to one case (default ``fn(**inputs)``). It runs
      in the student's kernel too, so it must be a module-level function of the checks module
      and return plain data (tensors, numbers, tuples, dicts), never a module or a closure;
    * ``compare(expected, got)``: ``None`` when ``got`` is right, else the reason;
    * ``forbid`` / ``allow``: dotted minseg names to block while the student's function runs,
      beyond / exempt from those the reference calls directly (see :mod:`minseg.grading.guard`);
    * ``score(secret, got) -> (share, feedback)``: a graded-by-bands task (a training
      challenge, :mod:`minseg.grading.challenge`): the points are ``share`` of ``points`` and
      the reference is not run at grading time; ``timeout_s`` its own per-call time limit.
    """

    id: str
    function: str
    points: int
    prompt: str
    cases: Callable[[int], list[Case]]
    reference: Callable
    call: Callable[[Callable, dict], Any] = call_kwargs
    compare: Comparator = field(default_factory=lambda: close())
    hint: str = ""
    forbid: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    score: Callable[[Any, Any], tuple[float, str]] | None = None
    timeout_s: float | None = None

    @property
    def exercise(self) -> str:
        return self.id.split(".")[0]


def reference_outputs(task: Task, cases: list[Case]) -> tuple[list[Any], list[str]]:
    """The reference's output for each case (through the codec, as the comparator sees it) and
    the minseg names the student's function may not call: those the reference called directly,
    plus ``task.forbid``, minus ``task.allow`` (a name or anything under it)."""
    from minseg.grading.codec import roundtrip
    from minseg.grading.guard import reference_calls

    if task.score is not None:      # judged against the secrets; the reference is not run
        return [c.secret for c in cases], list(task.forbid)
    outputs: list[Any] = []

    def run(reference: Callable) -> None:
        for c in cases:
            outputs.append(roundtrip(task.call(reference, copy.deepcopy(c.inputs))))

    called = reference_calls(task.reference, run)
    allowed = lambda n: any(n == a or n.startswith(a + ".") for a in task.allow)
    names = [n for n in called if not allowed(n)]
    names += [n for n in task.forbid if n not in names]
    return outputs, names


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread for a while: the cases are tiny, and on a busy machine the
    synchronisation of a thread pool costs far more than it saves."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------
# comparators
# ------------------------------------------------------------------------------------------
def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _as_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if _is_number(x) or isinstance(x, bool):
        return torch.tensor(x)
    return None


def _kind(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, Opaque):
        return f"a {x.type_name}"
    return f"a {type(x).__name__}"


def _compare_tensors(exp: torch.Tensor, got: Any, rtol: float, atol: float, path: str) -> str | None:
    g = _as_tensor(got)
    if g is None:
        return f"{path}expected a tensor of shape {tuple(exp.shape)}, got {_kind(got)}"
    if g.shape != exp.shape:
        if g.numel() == 1 and exp.numel() == 1:
            g = g.reshape(exp.shape)
        else:
            return f"{path}shape: expected {tuple(exp.shape)}, got {tuple(g.shape)}"
    if g.is_complex():
        return f"{path}expected real values, got a complex tensor"
    exact = not exp.is_floating_point()
    e64, g64 = exp.double(), g.double()
    if exact:
        bad = e64 != g64
    else:
        nan_e, nan_g = torch.isnan(e64), torch.isnan(g64)
        diff = (e64 - g64).abs()
        ok = (diff <= atol + rtol * e64.abs()) | (nan_e & nan_g) | (e64 == g64)
        bad = ~ok
    if not bool(bad.any()):
        return None
    first = tuple(int(i) for i in bad.nonzero()[0].tolist())
    where = f" first at index {first}" if first else ""
    ev, gv = e64[first].item() if first else e64.item(), g64[first].item() if first else g64.item()
    return (f"{path}values differ at {int(bad.sum())} of {bad.numel()} positions,{where}: "
            f"expected {ev:.6g}, got {gv:.6g}")


def _compare(exp: Any, got: Any, rtol: float, atol: float, path: str) -> str | None:
    if isinstance(got, Opaque):
        return f"{path}expected {_kind(exp)}, got {got!r}"
    if isinstance(exp, torch.Tensor):
        return _compare_tensors(exp, got, rtol, atol, path)
    if isinstance(exp, bool):
        if got is exp or (isinstance(got, torch.Tensor) and got.numel() == 1 and bool(got) == exp):
            return None
        return f"{path}expected {exp}, got {got!r}"
    if _is_number(exp):
        g = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
        if not _is_number(g):
            return f"{path}expected a number, got {_kind(got)}"
        if isinstance(exp, int) and isinstance(g, int):
            return None if g == exp else f"{path}expected {exp}, got {g}"
        if math.isnan(exp) and math.isnan(g):
            return None
        if math.isnan(exp) or math.isnan(g) or abs(exp - g) > atol + rtol * abs(exp):
            return f"{path}expected {exp:.6g}, got {g:.6g}"
        return None
    if isinstance(exp, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"{path}expected a {type(exp).__name__} of {len(exp)} items, got {_kind(got)}"
        if len(got) != len(exp):
            return f"{path}expected {len(exp)} items, got {len(got)}"
        for i, (e, g) in enumerate(zip(exp, got)):
            reason = _compare(e, g, rtol, atol, f"{path}[{i}] ")
            if reason:
                return reason
        return None
    if isinstance(exp, dict):
        if not isinstance(got, dict):
            return f"{path}expected a dict, got {_kind(got)}"
        if set(got) != set(exp):
            return f"{path}keys: expected {sorted(map(str, exp))}, got {sorted(map(str, got))}"
        for k in exp:
            reason = _compare(exp[k], got[k], rtol, atol, f"{path}[{k!r}] ")
            if reason:
                return reason
        return None
    return None if exp == got else f"{path}expected {exp!r}, got {got!r}"


def close(rtol: float = 1e-4, atol: float = 1e-5) -> Comparator:
    """Structural comparison: same nesting, same shapes, integers and bools exactly equal,
    floats within ``atol + rtol * |expected|`` (NaN matches NaN). A Python number and a
    one-element tensor count as the same; dtypes are not compared (values are)."""
    def compare(expected: Any, got: Any) -> str | None:
        return _compare(expected, got, rtol, atol, "")
    return compare


def exact() -> Comparator:
    """Like :func:`close` with zero tolerance."""
    return close(rtol=0.0, atol=0.0)


# ------------------------------------------------------------------------------------------
# describing values and cases in feedback
# ------------------------------------------------------------------------------------------
def describe(x: Any, limit: int = 300) -> str:
    """A short, readable form of a value for feedback (tensors with shape and dtype)."""
    if isinstance(x, torch.Tensor):
        with _print_options():
            body = repr(x)
        text = f"{body}  # shape {tuple(x.shape)}, {str(x.dtype).replace('torch.', '')}"
    elif isinstance(x, float):
        text = f"{x:.6g}"
    elif isinstance(x, (tuple, list)):
        inner = ", ".join(describe(v, limit) for v in x)
        text = f"({inner})" if isinstance(x, tuple) else f"[{inner}]"
    elif isinstance(x, dict):
        text = "{" + ", ".join(f"{k!r}: {describe(v, limit)}" for k, v in x.items()) + "}"
    else:
        text = repr(x)
    return text if len(text) <= limit else text[:limit - 5] + " ..."


class _print_options:
    def __enter__(self) -> None:
        self.old = torch._tensor_str.PRINT_OPTS.__dict__.copy()
        torch.set_printoptions(precision=4, threshold=40, edgeitems=2, linewidth=90, sci_mode=False)

    def __exit__(self, *exc: Any) -> None:
        torch._tensor_str.PRINT_OPTS.__dict__.update(self.old)

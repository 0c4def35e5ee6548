"""The delegation guard: a task's reference answer raises while the student's function runs."""
from __future__ import annotations

import contextlib
import io
import sys
import types

import pytest
import torch

import minseg.metrics
from minseg.grading import check
from minseg.grading.checks import all_exercises
from minseg.grading.guard import DelegationError, forbidden, reference_calls
from minseg.grading.tasks import reference_outputs
from minseg.metrics import confusion_matrix as aliased   # bound before any guard is active

CM = "minseg.metrics.confusion_matrix"


def _quiet_check(task_id, fn) -> tuple[bool, str]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        ok = check(task_id, fn)
    return ok, out.getvalue()


def test_reference_calls_lists_the_direct_minseg_calls():
    names = reference_calls(lambda m: minseg.metrics.scores_from_confusion(m)["miou"],
                            lambda ref: ref(torch.eye(3, dtype=torch.long)))
    assert names == ["minseg.metrics.scores_from_confusion"]      # not what it calls inside
    assert reference_calls(lambda m: m.sum(), lambda ref: ref(torch.eye(2))) == []
    task = next(t for ex in all_exercises() for t in ex.tasks if t.id == "ex06.confusion_matrix")
    values, blocked = reference_outputs(task, task.cases(0))
    assert blocked == [CM] and len(values) == len(task.cases(0))


def test_forbidden_blocks_every_alias_and_restores_them():
    p, t = torch.tensor([[0, 1]]), torch.tensor([[0, 255]])
    before = aliased(p, t, 2)
    with forbidden([CM], "confusion_matrix"):
        for fn in (aliased, minseg.metrics.confusion_matrix):
            with pytest.raises(DelegationError, match="write `confusion_matrix` yourself"):
                fn(p, t, 2)
        # the rest of minseg stays usable
        assert minseg.metrics.scores_from_confusion(torch.eye(2, dtype=torch.long))["miou"] == 1.0
    assert torch.equal(aliased(p, t, 2), before)
    with pytest.raises(ZeroDivisionError), forbidden([CM], "confusion_matrix"):
        1 / 0
    assert torch.equal(minseg.metrics.confusion_matrix(p, t, 2), before)   # restored after an error


def test_forbidden_classes_closures_and_unknown_names(monkeypatch):
    mod = types.ModuleType("minseg._guard_probe")
    exec("def make():\n    k = 3\n    def f(x):\n        return x * k\n    return f\n"
         "class Block:\n    def __init__(self, n):\n        self.n = n\n"
         "anon = lambda x: x + 1\n", mod.__dict__)
    mod.times3 = mod.make()
    monkeypatch.setitem(sys.modules, "minseg._guard_probe", mod)

    class Mine(mod.Block):                     # a student's subclass delegating to the reference
        def __init__(self):
            super().__init__(1)

    with forbidden(["minseg._guard_probe.times3", "minseg._guard_probe.Block", "minseg.nope.gone",
                    "minseg._guard_probe.anon"], "x"):
        with pytest.raises(DelegationError):
            mod.times3(2)                       # a function with a closure
        with pytest.raises(DelegationError):
            mod.anon(1)                         # a lambda (no usable name of its own)
        with pytest.raises(DelegationError):
            Mine()
    assert mod.times3(2) == 6 and Mine().n == 1 and mod.anon(1) == 2


def test_check_rejects_delegation_with_a_clear_message():
    ok, out = _quiet_check("ex06.confusion_matrix", lambda pred, target, num_classes: aliased(
        pred, target, num_classes))
    assert not ok and "this task asks you to write `confusion_matrix` yourself" in out
    ok, out = _quiet_check("ex06.miou", lambda mat: float(minseg.metrics.scores_from_confusion(mat)["miou"]))
    assert not ok and "write `miou` yourself" in out


@pytest.mark.parametrize("ex", all_exercises(), ids=lambda e: e.id)
def test_every_reference_as_a_submission_scores_zero(ex):
    """Handing in the reference itself (which calls minseg) must fail every task that has a
    minseg answer to copy; tasks answered with plain torch have nothing to delegate to."""
    for task in ex.tasks:
        _, blocked = reference_outputs(task, task.cases(0))
        if blocked:
            ok, out = _quiet_check(task.id, task.reference)
            assert not ok and "yourself" in out, (task.id, blocked, out)

"""Numeric quiz items of topics 01, 14, 16, 18 and 19: each answer recomputed by another path
(float64 loops over pixels and pairs, the direct formula), the inputs shown in the question,
``check`` accepting the right answer (as displayed, and as worked by hand from the rounded
values the question gives) and rejecting the typical wrong one."""
from __future__ import annotations

import math

import numpy as np
import pytest

from minseg.cost import LABEL_COSTS
from minseg.quiz.numeric import DESCRIPTIONS, GENERATORS, generate

SEEDS = range(8)


# ------------------------------------------------------------------------------------------
# independent recomputations from item.params
# ------------------------------------------------------------------------------------------
def _pixel_acc_void(P: dict) -> float:
    pairs = [(t, p) for rt, rp in zip(P["target"], P["pred"]) for t, p in zip(rt, rp) if t != 255]
    return sum(t == p for t, p in pairs) / len(pairs)


# what each priced kind counts, written out here rather than read from LabelCost.unit
_COUNT = {"full_mask": lambda P: P["n"], "point": lambda P: P["n"],
          "polygon": lambda P: P["objects"], "box_drawn": lambda P: P["objects"],
          "box_extreme": lambda P: P["objects"], "tags": lambda P: P["n"] * P["classes"]}


def _hours(kind: str, P: dict) -> float:
    return LABEL_COSTS[kind].seconds * _COUNT[kind](P) / 3600


def _potts(P: dict, neighbours_only: bool = False, decimals: int | None = None) -> float:
    """sum over pixel pairs i < j of w exp(-d^2 / (2 theta^2)) [l_i != l_j], by brute force."""
    cells = [(y, x, P["labels"][y][x]) for y in range(3) for x in range(3)]
    total = np.float64(0.0)
    for a in range(9):
        for b in range(a + 1, 9):
            (yi, xi, li), (yj, xj, lj) = cells[a], cells[b]
            d2 = np.float64((yi - yj) ** 2 + (xi - xj) ** 2)
            if li == lj or (neighbours_only and d2 > 1):
                continue
            k = np.exp(-d2 / (2 * np.float64(P["theta"]) ** 2))
            total += P["w"] * (round(float(k), decimals) if decimals else k)
    return float(total)


def _line(P: dict) -> tuple[float, float]:
    """Slope and intercept of mIoU against log2(images) through the two given points."""
    slope, intercept = np.polyfit(np.log2([P["n1"], P["n2"]]), [P["m1"], P["m2"]], 1)
    return float(slope), float(intercept)


def _curve_miou(P: dict) -> float:
    slope, intercept = _line(P)
    return intercept + slope * math.log2(P["n3"])


def _images_for(P: dict) -> float:
    slope, intercept = _line(P)
    return 2 ** ((P["target"] - intercept) / slope)


def _curve_hours(P: dict) -> float:
    return (_images_for(P) - P["n2"]) * LABEL_COSTS["full_mask"].seconds / 3600


def _keys(P: dict) -> int:
    return math.ceil(P["h"] / P["r"]) * math.ceil(P["w"] / P["r"])


RECOMPUTE = {
    "pixel_acc_void": _pixel_acc_void,
    "label_hours": lambda P: _hours(P["kind"], P),
    "label_ratio": lambda P: _hours(P["full"], P) / _hours(P["weak"], P),
    "crf_potts_energy": _potts,
    "learning_curve_miou": _curve_miou,
    "learning_curve_hours": _curve_hours,
    "attention_macs": lambda P: P["h"] * P["w"] * _keys(P) * P["c"] / 1e6,
    "attention_memory": lambda P: P["heads"] * P["h"] * P["w"] * _keys(P) * 4 / 2 ** 20,
}


def _linear_in_n(P: dict) -> float:
    return P["m1"] + (P["m2"] - P["m1"]) / (P["n2"] - P["n1"]) * (P["n3"] - P["n1"])


def _void_as_errors(P: dict) -> float:
    cells = [v for row in P["target"] for v in row]
    return _pixel_acc_void(P) * sum(v != 255 for v in cells) / len(cells)


# the mistake each question is built to catch
WRONG = {
    "pixel_acc_void": _void_as_errors,
    "label_hours": lambda P: _hours(P["kind"], P) * 60,  # seconds / 60 read as hours
    "label_ratio": lambda P: LABEL_COSTS[P["full"]].seconds / LABEL_COSTS[P["weak"]].seconds,
    "crf_potts_energy": lambda P: _potts(P, neighbours_only=True),  # a grid CRF
    "learning_curve_miou": _linear_in_n,  # linear in n instead of log n
    "learning_curve_hours": lambda P: _images_for(P) * LABEL_COSTS["full_mask"].seconds / 3600,
    "attention_macs": lambda P: P["h"] * P["w"] * P["h"] * P["w"] * P["c"] / 1e6,  # no reduction
    "attention_memory": lambda P: P["heads"] * P["h"] * P["w"] * _keys(P) * 4 / 1e6,  # MB, not MiB
}

NEW_KINDS = sorted(RECOMPUTE)


def test_new_kinds_are_registered_and_described():
    assert set(NEW_KINDS) <= set(GENERATORS)
    assert all(DESCRIPTIONS[k].strip() for k in NEW_KINDS)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_answer_equals_independent_computation(kind):
    questions = set()
    for seed in SEEDS:
        item = generate(kind, seed, "xx")
        expected = RECOMPUTE[kind](item.params)
        assert item.answer == pytest.approx(expected, rel=1e-9, abs=1e-9), (seed, item.params)
        assert item.check(item.answer_text) and item.check(expected) and item.check(str(expected))
        assert not item.check(expected * 1.1 + 1) and not item.check(expected * 0.9 - 1)
        assert item.explanation.strip() and item.answer_text in item.question + item.explanation
        again = generate(kind, seed, "xx")
        assert (again.question, again.answer) == (item.question, item.answer)
        assert again.params == item.params
        questions.add(item.question)
    assert len(questions) >= len(SEEDS) // 2  # the seed varies the inputs


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_typical_mistake_is_rejected(kind):
    rejected = 0
    for seed in SEEDS:
        item = generate(kind, seed)
        wrong = WRONG[kind](item.params)
        if abs(wrong - item.answer) > 3 * (item.abs_tol + item.rel_tol * abs(item.answer)):
            assert not item.check(wrong), (seed, wrong, item.answer)
            rejected += 1
    # the mistake changes the answer for most draws (label_ratio: where the two units differ)
    assert rejected >= len(SEEDS) // 4


# ------------------------------------------------------------------------------------------
# the question shows everything the answer needs
# ------------------------------------------------------------------------------------------
def _shown(question: str, *values) -> None:
    for v in values:
        assert str(v) in question, (v, question)


@pytest.mark.parametrize("seed", SEEDS)
def test_questions_show_their_inputs(seed):
    it = generate("pixel_acc_void", seed)
    sym = lambda v: "x" if v == 255 else str(v)  # noqa: E731
    _shown(it.question, *(" ".join(map(sym, row)) for row in it.params["target"]),
           *(" ".join(map(str, row)) for row in it.params["pred"]), "void")

    for kind in ("label_hours", "label_ratio"):
        it = generate(kind, seed)
        P = it.params
        _shown(it.question, f"{P['n']} images", f"{P['objects']} objects",
               f"{P['classes']} classes", *(f"{k}: {LABEL_COSTS[k].seconds:g} s" for k in _COUNT))
        _shown(it.question, *([P["kind"]] if kind == "label_hours" else [P["full"], P["weak"]]))

    it = generate("crf_potts_energy", seed)
    P = it.params
    _shown(it.question, *(" ".join(map(str, row)) for row in P["labels"]), f"w = {P['w']}",
           f"theta = {P['theta']:g}", "36 pixel pairs",
           *(f"{d2}: {math.exp(-d2 / (2 * P['theta'] ** 2)):.4f}" for d2 in (1, 2, 4, 5, 8)))

    it = generate("learning_curve_miou", seed)
    P = it.params
    _shown(it.question, f"{P['m1']:.1f} mIoU with {P['n1']}", f"{P['m2']:.1f} with {P['n2']}",
           f"with {P['n3']} images", "log2")
    it = generate("learning_curve_hours", seed)
    P = it.params
    _shown(it.question, f"{P['m1']:.1f} mIoU with {P['n1']}", f"{P['m2']:.1f} with {P['n2']}",
           f"{P['target']:.1f} mIoU", f"{LABEL_COSTS['full_mask'].seconds:g} s per image")

    for kind in ("attention_macs", "attention_memory"):
        it = generate(kind, seed)
        P = it.params
        _shown(it.question, f"{P['h']}x{P['w']} tokens", f"C = {P['c']}", f"{P['heads']} head",
               f"R = {P['r']}")


# ------------------------------------------------------------------------------------------
# worked by hand from the rounded values in the question
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(30))
def test_crf_energy_from_the_rounded_kernel_values_is_accepted(seed):
    item = generate("crf_potts_energy", seed)
    by_hand = round(_potts(item.params, decimals=4), 2)
    assert item.check(f"{by_hand:.2f}")


def test_hours_rounded_to_three_significant_digits_are_accepted():
    for seed in range(30):
        for kind in ("label_hours", "learning_curve_hours", "attention_macs", "attention_memory"):
            item = generate(kind, seed)
            assert item.check(f"{item.answer:.3g}"), (kind, seed, item.answer)


def test_learning_curve_targets_are_whole_doublings():
    for seed in range(30):
        P = generate("learning_curve_hours", seed).params
        doublings = math.log2(_images_for(P) / P["n2"])
        assert doublings == pytest.approx(round(doublings)) and round(doublings) >= 1
        P = generate("learning_curve_miou", seed).params
        assert 0 < P["m1"] < P["m2"] < _curve_miou(P) < 100

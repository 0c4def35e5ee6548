"""From card to lesson: every question of the bank names the notebook section that answers it,
the section exists (a renamed heading fails here), the drill shows the reference after each
answer, and the cheat sheet lists each topic's main reference."""
from __future__ import annotations

import copy
import io
import json
import random

import pytest

from minseg.quiz import load_bank
from minseg.quiz.bank import (REPO_ROOT, LessonRef, lesson_ref_problem, lesson_ref_problems,
                              load_raw, notebook_headings, validate)
from minseg.quiz.cards import (KINDS, LETTERS, card_by_id, card_ids, mcq_card, numeric_card,
                               open_cards)
from minseg.quiz.drill import Console, run_cards


# ------------------------------------------------------------------------------------------
# every item has a reference, and every reference resolves
# ------------------------------------------------------------------------------------------
def test_every_item_of_the_bank_has_a_reference():
    for t in load_raw()["topics"]:
        assert "lesson" in t, t["id"]
        assert all("lesson" in f for f in t["follow_ups"]), t["id"]
        assert all("lesson" in m for m in t["mcqs"]), t["id"]
        assert set(t["numeric_lessons"]) == set(t["numeric"]), t["id"]
    bank = load_bank()
    refs = dict(bank.lesson_refs())
    assert set(refs) == set(card_ids(bank, KINDS))  # one reference per card, none left over
    assert all(isinstance(r, LessonRef) for r in refs.values())


def test_every_reference_names_an_existing_heading():
    assert lesson_ref_problems(load_bank()) == []


def test_a_renamed_or_invented_heading_is_rejected(tmp_path):
    real = LessonRef("06_miou.ipynb", "1. IoU of one class")
    assert lesson_ref_problem(real) is None
    # the same helper as above rejects a heading the notebook does not have ...
    fake = LessonRef("06_miou.ipynb", "3. Computing mIoU correctly")
    assert "has no heading '3. Computing mIoU correctly'" in lesson_ref_problem(fake)
    # ... the notebook's title (level 1), a near miss and a missing notebook
    title = notebook_headings(REPO_ROOT / "notebooks/06_miou.ipynb", min_level=1)[0]
    assert title.startswith("06") and lesson_ref_problem(LessonRef("06_miou.ipynb", title))
    assert lesson_ref_problem(LessonRef("06_miou.ipynb", "1. IoU of one class."))
    assert "does not exist" in lesson_ref_problem(LessonRef("99_nothing.ipynb", "Pitfalls"))
    # rename the heading in a copy of the notebook: the reference stops resolving
    nb = json.loads((REPO_ROOT / real.path).read_text(encoding="utf-8"))
    renamed = 0
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "markdown" and "## 1. IoU of one class" in src:
            cell["source"] = src.replace("## 1. IoU of one class", "## 1. The IoU of a class")
            renamed += 1
    assert renamed == 1
    (tmp_path / "notebooks").mkdir()
    (tmp_path / real.path).write_text(json.dumps(nb), encoding="utf-8")
    assert "has no heading" in lesson_ref_problem(real, root=tmp_path)
    moved = LessonRef("06_miou.ipynb", "1. The IoU of a class")
    assert lesson_ref_problem(moved, root=tmp_path) is None


def test_headings_in_code_fences_and_code_cells_do_not_count(tmp_path):
    md = ["## Real\n", "```bash\n", "# not one\n", "```\n", "#not one either\n"]
    nb = {"cells": [{"cell_type": "markdown", "source": md},
                    {"cell_type": "code", "source": "# also not one\n"}]}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    assert notebook_headings(path) == ["Real"]
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot read the notebook"):
        notebook_headings(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["topics"][5].pop("lesson"), "keys must be"),
    (lambda r: r["topics"][5]["follow_ups"][0].pop("lesson"), "{q, a, lesson}"),
    (lambda r: r["topics"][5]["mcqs"][1].pop("lesson"),
     "keys must be q, options, answer, explanation, lesson"),
    (lambda r: r["topics"][5]["mcqs"][1].update(lesson={"notebook": "06_miou.ipynb"}),
     "a lesson reference {notebook, heading} is required"),
    (lambda r: r["topics"][5].update(lesson={"notebook": "6_miou.ipynb", "heading": "Pitfalls"}),
     "one of the lesson notebooks"),
    (lambda r: r["topics"][5]["follow_ups"][1]["lesson"].update(heading="## In an interview"),
     "without the leading #'s"),
    (lambda r: r["topics"][5]["numeric_lessons"].pop("iou"),
     "no reference for the numeric kind(s) ['iou']"),
    (lambda r: r["topics"][0]["numeric_lessons"].update(
        iou={"notebook": "06_miou.ipynb", "heading": "1. IoU of one class"}),
     "not in the topic's numeric list"),
])
def test_validator_rejects_missing_or_malformed_references(mutate, message):
    raw = copy.deepcopy(load_raw())
    mutate(raw)
    assert any(message in e for e in validate(raw)), validate(raw)


def test_adding_a_numeric_kind_takes_one_reference():
    raw = copy.deepcopy(load_raw())
    t = raw["topics"][0]
    t["numeric"].append("iou")  # a kind that exists, asked in topic 01 too
    assert any("no reference for the numeric kind(s) ['iou']" in e for e in validate(raw))
    t["numeric_lessons"]["iou"] = {"notebook": "06_miou.ipynb", "heading": "1. IoU of one class"}
    assert validate(raw) == []


def test_cards_carry_their_reference():
    bank = load_bank()
    t = bank.topic("12")
    assert [c.lesson for c in open_cards(t)] == [t.lesson_ref] + [f.lesson for f in t.follow_ups]
    aux = t.follow_ups[1]  # PSPNet's auxiliary loss: answered in lesson 09
    fixes = "6. Three more fixes: deep supervision, a full-resolution branch, larger crops"
    assert aux.lesson == LessonRef("09_boundaries.ipynb", fixes)
    assert mcq_card(t.mcqs[0], t, random.Random(0)).lesson == t.mcqs[0].lesson
    assert numeric_card("params_ppm", t, 0).lesson == t.numeric_lessons["params_ppm"]
    assert card_by_id(bank, "06.n.iou", None).lesson.text == \
        "lesson 06 · 1. IoU of one class (notebooks/06_miou.ipynb)"
    with pytest.raises(ValueError, match="no lesson reference"):
        t.numeric_lesson("iou")


# ------------------------------------------------------------------------------------------
# the drill shows the reference after the answer; the cheat sheet lists the main ones
# ------------------------------------------------------------------------------------------
def test_scripted_drill_shows_the_reference_after_each_answer():
    t = load_bank().topic("06")
    mcq = mcq_card(t.mcqs[1], t, random.Random(3))
    num = numeric_card("miou", t, seed=5)
    main, follow = open_cards(t)[:2]
    cards = [mcq, num, main, follow]
    # right letter, a wrong number, Enter then "yes", Enter then "partly"
    script = f"{LETTERS[mcq.correct]}\n{num.numeric.answer + 1000}\n\ny\n\np\n"
    out = io.StringIO()
    score = run_cards(Console(io.StringIO(script), out, echo=True), cards)
    assert score.answered == 4 and score.points == 2.5
    lines = out.getvalue().splitlines()
    start = 0
    for card in cards:
        line = f"  read more: {card.lesson.text}"  # one line, never wrapped
        end = lines.index(line, start)
        block = lines[start:end]
        # the verdict and explanation (mcq, numeric) or the model answer (open) come first
        assert any(card.explanation.split()[0:3] == b.split()[0:3] for b in block), card.id
        if card.kind == "open":
            assert "model answer:" in block
        else:
            assert any(b.startswith(("correct.", "wrong:")) for b in block)
        start = end + 1
    assert "  read more: lesson 06 · In an interview (notebooks/06_miou.ipynb)" in lines


def test_cheat_sheet_names_each_topic_main_reference():
    from minseg.quiz import cheatsheet

    text = cheatsheet.render()
    assert "## Where each interview question is answered" in text
    for t in load_bank().topics:
        r = t.lesson_ref
        where = f"lesson {r.lesson_id} · {r.heading} ([{r.path}]({r.path}))"
        assert f"- {t.id} {t.title} -> {where}" in text
    assert cheatsheet.is_current(), "run: python -m minseg.quiz.cheatsheet"

"""Spaced repetition with FSRS (minseg.quiz.progress), the migration of Leitner files, and the
Anki export (minseg.quiz.anki)."""
from __future__ import annotations

import datetime as dt
import io
import json
import random
import sqlite3
import zipfile

import pytest
from fsrs import Card as FsrsCard, Rating, Scheduler, State

from minseg.quiz.anki import export, to_anki_html
from minseg.quiz.bank import load_bank
from minseg.quiz.cli import main, review_cards
from minseg.quiz.progress import FORMAT, load_progress, migrate_leitner, rating_for
from test_quiz import _correct, _run, _wrong   # the scripted-session helpers


def session(path, day: dt.date, grades: list[int], topic="07", kinds="mcq"):
    """One review session on ``day``, answering right (1) or wrong (0) in order."""
    cards, _, _ = review_cards(load_bank(), load_progress(path), topic, tuple(kinds.split(",")),
                               10, day, random.Random(1))
    answers = [_correct(c) if g else _wrong(c) for c, g in zip(cards, grades)]
    code, out = _run(["--review", "--topic", topic, "--kind", kinds, "--progress", str(path),
                      "--seed", "1", "--today", day.isoformat()], "\n".join(answers) + "\n")
    assert code == 0, out
    return [c.id for c in cards], out, json.loads(path.read_text())["items"]


def test_review_schedules_with_fsrs_exactly_as_the_package_does(tmp_path):
    path = tmp_path / "p.json"
    day1 = dt.date(2026, 3, 1)
    ids, out, items = session(path, day1, [1, 0, 1])
    assert "0 due and 3 new card(s)" in out and "score: 2/3" in out
    # the reference: py-fsrs itself, same scheduler settings, the same ratings at the same time
    ref = Scheduler(learning_steps=(dt.timedelta(minutes=10),),
                    relearning_steps=(dt.timedelta(minutes=10),), enable_fuzzing=False)
    noon = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)
    for i, rating in zip(ids, (Rating.Good, Rating.Again, Rating.Good)):
        expected, _ = ref.review_card(FsrsCard(card_id=0, due=noon), rating, review_datetime=noon)
        got = FsrsCard.from_dict(items[i]["card"])
        assert (got.due, got.state, got.stability, got.difficulty) == \
            (expected.due, expected.state, expected.stability, expected.difficulty)
        assert items[i]["log"] == [{"rating": int(rating), "at": noon.isoformat()}]
    # a right first answer graduates (due in days); a miss is due again later the same day
    assert FsrsCard.from_dict(items[ids[0]]["card"]).due.date() > day1
    assert FsrsCard.from_dict(items[ids[1]]["card"]).due.date() == day1
    again, out, items = session(path, day1, [1])
    assert again == [ids[1]] and "1 due and 0 new" in out and "score: 1/1" in out
    assert items[ids[1]]["seen"] == 2 and items[ids[1]]["correct"] == 1
    # a week later everything is due; right answers push the next reviews further out
    before = {i: FsrsCard.from_dict(items[i]["card"]).stability for i in ids}
    _, out, items = session(path, day1 + dt.timedelta(days=7), [1, 1, 1])
    assert "3 due and 0 new" in out
    assert all(FsrsCard.from_dict(items[i]["card"]).stability > before[i] for i in ids)
    assert "cards: learning 0, review 3, relearning 0" in out
    _, out, _ = session(path, day1 + dt.timedelta(days=7), [])
    assert "nothing due today (2026-03-08); next review on" in out


def test_ratings():
    assert (rating_for(1), rating_for(0.5), rating_for(0)) == (Rating.Good, Rating.Hard, Rating.Again)


def test_a_leitner_file_is_migrated_with_its_history(tmp_path):
    path = tmp_path / "progress.json"
    old = {"format": 1, "items": {
        "07.m1": {"box": 4, "due": "2026-03-10", "seen": 5, "correct": 5},
        "07.m2": {"box": 1, "due": "2026-03-01", "seen": 3, "correct": 1}}}
    path.write_text(json.dumps(old))
    said: list[str] = []
    load_progress(path, say=said.append)          # one line, the old file kept, the new saved
    assert len(said) == 1 and "migrated its 2 card(s) to FSRS" in said[0]
    assert json.loads((tmp_path / "progress.json.leitner").read_text()) == old
    load_progress(path, say=said.append)          # already migrated: nothing more to say
    assert len(said) == 1
    ids, out, items = session(path, dt.date(2026, 3, 1), [1])
    # the box-1 card is due today and reviewed first; the box-4 card keeps its due date
    assert ids[0] == "07.m2" and "1 due" in out
    kept = FsrsCard.from_dict(items["07.m1"]["card"])
    assert kept.state == State.Review and kept.stability == 7.0 and kept.due.date() == dt.date(2026, 3, 10)
    assert kept.difficulty == pytest.approx(1.0)                    # always right
    assert items["07.m1"]["leitner"] == {"box": 4, "due": "2026-03-10"}
    assert items["07.m2"]["seen"] == 4 and items["07.m2"]["correct"] == 2   # history kept
    assert json.loads(path.read_text())["format"] == FORMAT
    m = migrate_leitner({"x": {"box": 1, "due": "2026-01-01", "seen": 0, "correct": 0}})
    assert FsrsCard.from_dict(m["x"]["card"]).difficulty == 10.0


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"format": 1, "items": {"07.m1": {"box": 9}}}',
                                     b'{"format": 2, "items": {"07.m1": {"card": {}}}}',
                                     b"\xff\xfe\x00garbage"])
def test_corrupted_progress_file_is_reported_and_recreated(tmp_path, content):
    path = tmp_path / "progress.json"
    path.write_bytes(content)
    code, out = _run(["--review", "--topic", "07", "--kind", "mcq", "--random", "1",
                      "--progress", str(path), "--today", "2026-03-01"], "\n")
    assert code == 0
    warnings = [line for line in out.splitlines() if "is corrupted" in line]
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert (tmp_path / "progress.json.corrupt").read_bytes() == content
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and len(data["items"]) == 1  # recreated, then this session saved
    assert "score: 0/1" in out


# ------------------------------------------------------------------------------------------
# Anki
# ------------------------------------------------------------------------------------------
def _collection(apkg, tmp_path):
    with zipfile.ZipFile(apkg) as z:
        z.extract("collection.anki2", tmp_path)
    return sqlite3.connect(tmp_path / "collection.anki2")


def test_anki_deck_has_both_note_types_every_question_and_numeric_variants(tmp_path):
    bank = load_bank()
    counts = export(tmp_path / "minseg.apkg", bank)
    n_open = sum(1 + len(t.follow_ups) for t in bank.topics)
    n_mcq = sum(len(t.mcqs) for t in bank.topics)
    n_num = sum(len(t.numeric) for t in bank.topics) * 3
    assert counts == {"notes": n_open + n_mcq + n_num, "cards": n_open + n_mcq + n_num, "decks": 20}
    db = _collection(tmp_path / "minseg.apkg", tmp_path)
    models = json.loads(db.execute("select models from col").fetchone()[0])
    names = {m["name"]: mid for mid, m in models.items()}
    assert set(names) == {"minseg open question", "minseg multiple choice"}
    per_model = dict(db.execute("select mid, count(*) from notes group by mid").fetchall())
    assert per_model[int(names["minseg multiple choice"])] == n_mcq
    assert per_model[int(names["minseg open question"])] == n_open + n_num
    flds = [r[0] for r in db.execute("select flds from notes").fetchall()]
    assert not any("$$" in f for f in flds)                     # no TeX left in dollars
    # numeric variants differ (other numbers), and the same export gives the same note ids
    guids = [r[0] for r in db.execute("select guid from notes").fetchall()]
    assert len(set(guids)) == len(guids)
    export(tmp_path / "again.apkg", bank)
    (tmp_path / "x").mkdir()
    db2 = _collection(tmp_path / "again.apkg", tmp_path / "x")
    assert sorted(r[0] for r in db2.execute("select guid from notes")) == sorted(guids)


def test_anki_export_bad_input(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        export(tmp_path / "missing" / "deck.apkg")
    with pytest.raises(ValueError, match=".apkg"):
        export(tmp_path / "deck.txt")
    code, out = _run(["--export-anki", str(tmp_path / "t.apkg"), "--topic", "06"], "")
    assert code == 0 and "1 topic deck(s)" in out
    assert main(["--export-anki", str(tmp_path / "nope" / "t.apkg")], stdout=io.StringIO()) == 2
    assert main(["--export-anki", str(tmp_path / "t.apkg"), "--topic", "99"],
                stdout=io.StringIO()) == 2


def test_latex_becomes_anki_mathjax():
    html = to_anki_html("IoU is $|A \\cap B| / |A \\cup B|$ and\n\n$$x < y$$")
    assert "\\(|A \\cap B| / |A \\cup B|\\)" in html and "\\[x &lt; y\\]" in html
    assert to_anki_html("    0 1\n    1 1").startswith("<pre>")

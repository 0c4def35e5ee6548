"""The question bank as an Anki deck: ``python -m minseg quiz --export-anki minseg.apkg``.

People who prepare for interviews keep their cards in Anki, whose scheduler (FSRS) is the one
``--review`` uses. The deck is written with the maintained ``genanki`` package and has two note
types:

* **minseg open question**: the interview question or a follow-up, the model answer, the
  topic's follow-ups (on the main question's note) and the lesson section that answers it.
  Numeric questions are notes of this type too, each in several seeded variants (the same
  kind with other numbers), their worked solution as the answer;
* **minseg multiple choice**: the question, the options (bank order, lettered), the right
  option and its explanation.

One sub-deck per topic (``minseg::06 ...``), tags for the topic, the kind and the difficulty.
LaTeX written ``$...$`` / ``$$...$$`` in the bank becomes Anki's MathJax ``\\(...\\)`` /
``\\[...\\]``. Model, deck and note ids are derived from stable names, so importing a newer
deck updates the notes already in a collection instead of duplicating them.
"""
from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

import genanki

from minseg.quiz.bank import Bank, LessonRef, Topic, load_bank
from minseg.quiz.cards import LETTERS, open_cards
from minseg.quiz.numeric import generate

NUMERIC_VARIANTS = 3
_CSS = """.card { font-family: sans-serif; font-size: 18px; text-align: left; max-width: 46em;
margin: auto; } .small { font-size: 14px; color: #555; } pre { font-size: 15px; }
ol.options { list-style-type: upper-alpha; }"""


def _id(name: str) -> int:
    """A stable 31-bit id for a model or deck name (Anki wants ids in that range)."""
    return int(hashlib.sha1(f"minseg/{name}".encode()).hexdigest()[:8], 16) >> 1


OPEN_MODEL = genanki.Model(
    _id("model/open"), "minseg open question",
    fields=[{"name": "Question"}, {"name": "Answer"}, {"name": "FollowUps"},
            {"name": "Lesson"}, {"name": "Topic"}],
    templates=[{"name": "Answer aloud",
                "qfmt": '<div class="small">{{Topic}}</div>{{Question}}',
                "afmt": '{{FrontSide}}<hr id="answer">{{Answer}}'
                        '{{#FollowUps}}<h4>Follow-ups</h4>{{FollowUps}}{{/FollowUps}}'
                        '<p class="small">{{Lesson}}</p>'}],
    css=_CSS)

MCQ_MODEL = genanki.Model(
    _id("model/mcq"), "minseg multiple choice",
    fields=[{"name": "Question"}, {"name": "Options"}, {"name": "Answer"},
            {"name": "Explanation"}, {"name": "Lesson"}, {"name": "Topic"}],
    templates=[{"name": "Choose",
                "qfmt": '<div class="small">{{Topic}}</div>{{Question}}{{Options}}',
                "afmt": '{{FrontSide}}<hr id="answer"><b>{{Answer}}</b><p>{{Explanation}}</p>'
                        '<p class="small">{{Lesson}}</p>'}],
    css=_CSS)

_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$])\$(?!\$)(.+?)(?<![\\$])\$")


def to_anki_html(text: str) -> str:
    """Bank text as Anki HTML: escaped, math as MathJax delimiters, line breaks kept, and text
    laid out with four leading spaces (masks, tables) in a ``<pre>`` block."""
    out = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if all(line.startswith("    ") or not line.strip() for line in lines):
            out.append("<pre>" + html.escape(block) + "</pre>")
            continue
        body = html.escape(block, quote=False)
        body = _DISPLAY.sub(lambda m: r"\[" + m.group(1) + r"\]", body)
        body = _INLINE.sub(lambda m: r"\(" + m.group(1) + r"\)", body)
        out.append("<p>" + body.replace("\n", "<br>") + "</p>")
    return "".join(out)


def _read_more(ref: LessonRef) -> str:
    """The lesson section that answers a question (notebook and heading)."""
    return "read more: " + html.escape(ref.text)


def _topic_label(topic: Topic) -> str:
    return html.escape(f"{topic.id} · {topic.title}")


def _tags(topic: Topic, kind: str) -> list[str]:
    return [f"minseg::topic{topic.id}", f"minseg::{kind}", f"minseg::{topic.difficulty}"]


def topic_notes(topic: Topic, variants: int = NUMERIC_VARIANTS) -> list[genanki.Note]:
    """Every note of one topic: open questions, multiple choice, numeric variants."""
    notes = []
    main, *follow = open_cards(topic)
    follow_html = "".join(f"<p><b>{to_anki_html(f.question)}</b>{to_anki_html(f.explanation)}</p>"
                          for f in follow)
    for card, extra in [(main, follow_html)] + [(f, "") for f in follow]:
        notes.append(genanki.Note(
            model=OPEN_MODEL, guid=genanki.guid_for("minseg", card.id), tags=_tags(topic, "open"),
            fields=[to_anki_html(card.question), to_anki_html(card.explanation), extra,
                    _read_more(card.lesson), _topic_label(topic)]))
    for m in topic.mcqs:
        options = "<ol class=\"options\">" + "".join(
            f"<li>{to_anki_html(o)}</li>" for o in m.options) + "</ol>"
        answer = f"{LETTERS[m.answer]}) {html.escape(m.options[m.answer])}"
        notes.append(genanki.Note(
            model=MCQ_MODEL, guid=genanki.guid_for("minseg", m.id), tags=_tags(topic, "mcq"),
            fields=[to_anki_html(m.question), options, answer, to_anki_html(m.explanation),
                    _read_more(m.lesson), _topic_label(topic)]))
    for kind in topic.numeric:
        for seed in range(variants):
            item = generate(kind, seed, topic.id)
            answer = f"<b>{html.escape(item.answer_text)}</b>" + to_anki_html(item.explanation)
            notes.append(genanki.Note(
                model=OPEN_MODEL, guid=genanki.guid_for("minseg", item.id, seed),
                tags=_tags(topic, "numeric") + [f"minseg::variant{seed + 1}"],
                fields=[to_anki_html(item.question), answer, "",
                        _read_more(topic.numeric_lesson(kind)), _topic_label(topic)]))
    return notes


def build_package(bank: Bank | None = None, topic: str | None = None,
                  variants: int = NUMERIC_VARIANTS) -> genanki.Package:
    """The deck of the whole bank (or one topic): one sub-deck per topic."""
    bank = bank or load_bank()
    decks = []
    for t in bank.select(topic):
        deck = genanki.Deck(_id(f"deck/{t.id}"), f"minseg::{t.id} {t.title}")
        for note in topic_notes(t, variants):
            deck.add_note(note)
        decks.append(deck)
    return genanki.Package(decks)


def export(path: str | Path, bank: Bank | None = None, topic: str | None = None,
           variants: int = NUMERIC_VARIANTS) -> dict[str, int]:
    """Write the deck to ``path`` (``.apkg``); returns ``{"notes", "cards", "decks"}``.
    A folder that does not exist or a name without ``.apkg`` is an error, not a guess."""
    path = Path(path).expanduser()
    if path.suffix != ".apkg":
        raise ValueError(f"the Anki deck must be a .apkg file, got {str(path)!r}")
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: the folder {path.parent} does not exist")
    package = build_package(bank, topic, variants)
    package.write_to_file(str(path))
    notes = [n for d in package.decks for n in d.notes]
    return {"notes": len(notes), "cards": sum(len(n.cards) for n in notes),
            "decks": len(package.decks)}

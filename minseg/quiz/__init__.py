"""The interview drill: a question bank on the 20 lessons, a quiz, and a cheat sheet.

In a notebook::

    from minseg import quiz
    quiz.ask("06")                        # shows a question of lesson 06 and reads an answer
    quiz.ask("06", index=1, answer="C")   # shows the second MCQ and checks "C"
    r = quiz.ask("06", kind="numeric", seed=0)   # a question computed with minseg
    r.check("0.4")                        # check later, in another cell
    quiz.show_topic("06")                 # the interview question, model answer, follow-ups

In a terminal: ``python -m minseg quiz --help``. The bank is data (``bank.json``);
``CHEATSHEET.md`` is generated from it by ``python -m minseg.quiz.cheatsheet``.
"""
from __future__ import annotations

import html
import random
from dataclasses import dataclass

from minseg.quiz.bank import MCQ, Bank, FollowUp, Topic, load_bank
from minseg.quiz.cards import AUTO_KINDS, LETTERS, Card, card_by_id, card_ids
from minseg.quiz.numeric import GENERATORS, NumericItem, generate

__all__ = ["load_bank", "ask", "show_topic", "AskResult", "Bank", "Topic", "MCQ", "FollowUp",
           "NumericItem", "Card", "generate", "GENERATORS"]


@dataclass
class AskResult:
    """What :func:`ask` showed and how it was answered (``correct`` is ``None`` until checked)."""

    card: Card
    given: str | None = None
    correct: bool | None = None

    def check(self, answer: str | float | int) -> bool:
        """Check an answer (a letter for MCQs, a number for numeric questions) and show the
        verdict with the explanation."""
        ok = self.card.check(str(answer))
        self.given, self.correct = str(answer), bool(ok)
        _display(_verdict_text(self), _verdict_html(self))
        return self.correct

    def __bool__(self) -> bool:
        return bool(self.correct)

    def __repr__(self) -> str:
        state = {None: "not answered", True: "correct", False: "wrong"}[self.correct]
        return f"<quiz {self.card.id}: {state}>"


def ask(topic: str | int | None = None, answer: str | float | int | None = None, *,
        kind: str | None = None, index: int | None = None, seed: int | None = None) -> AskResult:
    """Show one question and check an answer.

    ``topic``: ``"06"``, ``6`` or a slug (``None``: any topic). ``kind``: ``"mcq"`` or
    ``"numeric"`` (default: either). ``index`` picks the n-th question of that selection
    (stable), otherwise one is drawn with ``seed``; ``seed`` also fixes the numbers of a
    numeric question and shuffles MCQ options (without it, options keep the bank order).

    ``answer`` given: checked at once. Otherwise ``input()`` is tried (Jupyter shows an input
    box); where no input is possible (a notebook run headless, a test) the question is only
    shown: call ``.check(answer)`` on the result. Returns an :class:`AskResult`.
    """
    card = _pick(load_bank(), topic, kind, index, seed)
    result = AskResult(card)
    _display(_card_text(card), _card_html(card))
    if answer is None:
        try:
            answer = input("answer: ")
        except Exception:  # no stdin: StdinNotImplementedError, EOFError, captured streams
            return result
        if not answer.strip():
            return result
    result.check(answer)
    return result


def show_topic(topic: str | int, answers: bool = True) -> None:
    """Show a topic's interview question and, with ``answers``, the model answer and the
    follow-ups with their answers (the "in an interview" recap of a lesson)."""
    t = load_bank().topic(topic)
    lines = [f"{t.id} {t.title} ({t.difficulty}) - {t.lesson}", f"Q: {t.question}"]
    parts = [f"<b>{html.escape(t.id)} {html.escape(t.title)}</b> <i>({t.difficulty})</i>",
             f"<p><b>Q:</b> {html.escape(t.question)}</p>"]
    if answers:
        lines.append(f"A: {t.answer}")
        parts.append(f"<p><b>A:</b> {html.escape(t.answer)}</p><p>Follow-ups:</p><ul>")
        for f in t.follow_ups:
            lines += [f"  - {f.question}", f"    {f.answer}"]
            parts.append(f"<li><b>{html.escape(f.question)}</b><br>{html.escape(f.answer)}</li>")
        parts.append("</ul>")
    _display("\n".join(lines), _box("".join(parts)))


def _pick(bank: Bank, topic, kind: str | None, index: int | None, seed: int | None) -> Card:
    if kind is not None and kind not in AUTO_KINDS:
        raise ValueError(f"kind must be one of {AUTO_KINDS} or None, got {kind!r}")
    rng = random.Random(seed) if seed is not None else None
    ids = card_ids(bank, (kind,) if kind else AUTO_KINDS, None if topic is None else bank.topic(topic).id)
    if not ids:
        raise ValueError(f"topic {topic} has no {kind} questions")
    if index is not None:
        if not 0 <= index < len(ids):
            raise ValueError(f"index must be in 0..{len(ids) - 1}, got {index}")
        return card_by_id(bank, ids[index], rng)
    return card_by_id(bank, (rng or random.Random()).choice(ids), rng)


# --------------------------------------------------------------------------------------------
# rendering: plain text everywhere, HTML inside a Jupyter kernel
# --------------------------------------------------------------------------------------------
def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _display(text: str, html_text: str) -> None:
    if _in_kernel():
        from IPython.display import display

        display({"text/plain": text, "text/html": html_text}, raw=True)
    else:
        print(text)


def _card_text(card: Card) -> str:
    lines = [card.label, card.question]
    lines += [f"{LETTERS[i]}) {o}" for i, o in enumerate(card.options)]
    return "\n".join(lines)


def _box(inner: str) -> str:
    return f'<div style="border-left:4px solid #4a7ebb;padding:4px 10px;margin:4px 0">{inner}</div>'


def _card_html(card: Card) -> str:
    first, _, rest = card.question.partition("\n")
    body = f"<p>{html.escape(first)}</p>"
    if rest:
        body += f"<pre>{html.escape(rest)}</pre>"
    if card.options:
        body += '<ol type="A">' + "".join(f"<li>{html.escape(o)}</li>" for o in card.options) + "</ol>"
    return _box(f"<b>{html.escape(card.label)}</b>{body}")


def _verdict_text(r: AskResult) -> str:
    head = "correct." if r.correct else f"wrong: the answer is {r.card.expected}"
    return f"{head}\n  {r.card.explanation}\n  read more: {r.card.lesson.text}"


def _verdict_html(r: AskResult) -> str:
    head = ('<b style="color:#2a7d2a">correct.</b>' if r.correct else
            f'<b style="color:#b03030">wrong:</b> the answer is {html.escape(r.card.expected)}')
    return _box(f"{head}<br>{html.escape(r.card.explanation)}<br><small>read more: "
                f"{html.escape(r.card.lesson.text)}</small>")

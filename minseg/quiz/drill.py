"""Running a quiz session on a console: questions, answers, explanations and a score.

Everything reads and writes through :class:`Console`, so a session works the same on a
terminal, through a pipe (``printf 'b\\n' | python -m minseg quiz ...``) and in tests with
``io.StringIO`` streams.
"""
from __future__ import annotations

import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, TextIO

from minseg.quiz.cards import LETTERS, Card

WIDTH = 96
QUIT = {"q", "quit", "exit"}


class Console:
    """Line-based input and output. ``echo`` repeats each answer read from a non-terminal
    stream, so piped sessions leave a readable transcript (default: echo unless a tty)."""

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None,
                 echo: bool | None = None):
        self.stdin = stdin if stdin is not None else sys.stdin
        self.stdout = stdout if stdout is not None else sys.stdout
        self.interactive = _isatty(self.stdin)
        self.echo = (not self.interactive) if echo is None else echo

    def say(self, text: str = "") -> None:
        print(text, file=self.stdout, flush=True)

    def wrap(self, text: str, indent: str = "", hang: str | None = None) -> None:
        """Print prose wrapped to the console width, continuation lines indented by ``hang``
        (default ``indent``); lines already laid out (masks, tables: they start with four
        spaces) are kept as they are."""
        for para in text.split("\n"):
            if para.startswith("    ") or not para.strip():
                self.say(para)
            else:
                self.say(textwrap.fill(para, WIDTH, initial_indent=indent,
                                       subsequent_indent=indent if hang is None else hang))

    def read(self, prompt: str) -> str | None:
        """One line without its newline, or ``None`` at end of input."""
        if self.interactive and self.stdin is sys.stdin and self.stdout is sys.stdout:
            try:
                return input(prompt)  # line editing on a real terminal
            except EOFError:
                self.say()
                return None
        self.stdout.write(prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        if not line:
            self.say()
            return None
        line = line.rstrip("\r\n")
        if self.echo:
            self.say(line)
        return line


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class Score:
    """Points out of the questions answered (self-grades count 1, 0.5 or 0)."""

    points: float = 0.0
    answered: int = 0
    planned: int = 0
    missed: list[str] = field(default_factory=list)
    overtime: int = 0  # mock interviews: answers that took longer than their limit

    def add(self, card: Card, value: float) -> None:
        self.points += value
        self.answered += 1
        if value < 1:
            self.missed.append(card.id)

    def summary(self) -> str:
        pct = f" ({100 * self.points / self.answered:.0f}%)" if self.answered else ""
        pts = f"{self.points:g}"
        line = f"score: {pts}/{self.answered}{pct}"
        if self.answered < self.planned:
            line += f", stopped after {self.answered} of {self.planned} questions"
        if self.overtime:
            line += f", {self.overtime} over time"
        return line


def show_card(con: Console, card: Card, number: str = "") -> None:
    """Print a card's header, question and options."""
    con.say()
    con.say(f"{number}{card.label}")
    con.wrap(card.question)
    for i, option in enumerate(card.options):
        con.wrap(f"{LETTERS[i]}) {option}", hang="   ")


def read_more(card: Card) -> str:
    """The line that points to the lesson section answering ``card``, e.g.
    ``read more: lesson 06 · 1. IoU of one class (notebooks/06_miou.ipynb)``."""
    return f"read more: {card.lesson.text}" if card.lesson else f"read more: {card.topic.lesson}"


def ask_card(con: Console, card: Card) -> float | None:
    """Ask one mcq/numeric card until the answer is valid; print the verdict, the explanation
    and the lesson section to read. Returns 1.0, 0.0 (wrong or skipped with an empty line) or
    ``None`` to quit."""
    prompt = "answer (letter)> " if card.kind == "mcq" else "answer (number)> "
    while True:
        text = con.read(prompt)
        if text is None or text.strip().lower() in QUIT:
            return None
        if not text.strip():
            con.wrap(f"skipped: the answer is {card.expected}", hang="  ")
            ok = False
            break
        ok = card.check(text)
        if ok is not None:
            con.wrap("correct." if ok else f"wrong: the answer is {card.expected}", hang="  ")
            break
        con.say(f"'{text.strip()}' is not " + ("one of the letters shown" if card.kind == "mcq"
                                               else "a number (0.4, 2/5 and 40% work)")
                + "; try again, press Enter to skip or q to stop.")
    con.wrap(card.explanation, indent="  ")
    con.say(f"  {read_more(card)}")
    return 1.0 if ok else 0.0


GRADES = {"y": 1.0, "yes": 1.0, "p": 0.5, "partly": 0.5, "n": 0.0, "no": 0.0}


def self_grade(con: Console) -> float | None:
    """Ask y/p/n until valid; ``None`` to quit."""
    while True:
        text = con.read("did your answer cover it? [y]es / [p]artly / [n]o > ")
        if text is None or text.strip().lower() in QUIT:
            return None
        if text.strip().lower() in GRADES:
            return GRADES[text.strip().lower()]
        con.say("please type y, p or n (q to stop).")


def ask_open(con: Console, card: Card, limit_s: float | None = None,
             clock: Callable[[], float] = time.monotonic) -> tuple[float | None, float]:
    """An open card: wait for Enter (timed when ``limit_s`` is set), reveal the model answer and
    the lesson section to read, then self-grade. Returns ``(grade or None to quit, seconds until
    Enter)``."""
    start = clock()
    text = con.read("answer aloud or on paper, then press Enter to see the model answer > ")
    took = clock() - start
    if text is None or text.strip().lower() in QUIT:
        return None, took
    if limit_s is not None:
        over = " - over time" if took > limit_s else ""
        con.say(f"time: {took:.0f} s of {limit_s:.0f} s{over}")
    con.say("model answer:")
    con.wrap(card.explanation, indent="  ")
    con.say(f"  {read_more(card)}")
    return self_grade(con), took


def run_cards(con: Console, cards: list[Card],
              on_result: Callable[[Card, float], None] | None = None) -> Score:
    """Ask every card in turn (open cards are self-graded); ``on_result`` sees each grade."""
    score = Score(planned=len(cards))
    for i, card in enumerate(cards, 1):
        show_card(con, card, f"[{i}/{len(cards)}] ")
        value = ask_open(con, card)[0] if card.kind == "open" else ask_card(con, card)
        if value is None:
            break
        score.add(card, value)
        if on_result is not None:
            on_result(card, value)
    return score


def run_mock(con: Console, rounds: Iterable[list[Card]], limit_s: float,
             clock: Callable[[], float] = time.monotonic) -> Score:
    """A mock interview: each round is a main question and its follow-ups, each timed
    (follow-ups get half the time), answered aloud and self-graded."""
    rounds = list(rounds)
    score = Score(planned=sum(len(r) for r in rounds))
    start = clock()
    for i, cards in enumerate(rounds, 1):
        for j, card in enumerate(cards):
            limit = limit_s if j == 0 else limit_s / 2
            show_card(con, card, f"[{i}/{len(rounds)}{'' if j == 0 else ' follow-up'}] ")
            value, took = ask_open(con, card, limit, clock)
            if value is None:
                return score
            score.overtime += took > limit
            score.add(card, value)
    con.say()
    con.say(f"mock interview done in {clock() - start:.0f} s.")
    return score

"""Spaced repetition with FSRS, kept in a small JSON file.

Each card carries an FSRS memory state (Ye et al., "A Stochastic Shortest Path Algorithm for
Optimizing Spaced Repetition Scheduling", KDD 2022; the Free Spaced Repetition Scheduler that
Anki uses by default): its *stability* ``S`` (days until the probability of recalling it falls
to 90 %) and *difficulty* ``D`` (1-10). After every answer the scheduler updates both and sets
the next review where the predicted recall drops to the desired retention (0.9), so a card
answered well comes back after days, then weeks, and a missed one within minutes. The
scheduler is the maintained ``fsrs`` package (py-fsrs) with its default parameters and no
interval fuzz, so a session replays exactly.

Answers map to FSRS ratings: right = Good, partly right (self-graded 0.5) = Hard, wrong =
Again. The file (default ``~/.minseg/quiz_progress.json``)::

    {"format": 2, "scheduler": "fsrs", "items": {"06.m2": {
        "card": {...FSRS card: state, step, stability, difficulty, due, last_review...},
        "seen": 4, "correct": 3, "log": [{"rating": 3, "at": "2026-05-01T12:00:00+00:00"}]}}}

Older files (format 1, Leitner boxes) are migrated on load without losing their history (see
:func:`migrate_leitner`), with one line saying so; the old file is kept as ``<name>.leitner``.
A file that cannot be read is reported in one line, kept as ``<name>.corrupt`` and replaced by
a fresh one: a broken file never stops the drill.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fsrs import Card, Rating, Scheduler, State

FORMAT = 2
DEFAULT_PATH = Path("~/.minseg/quiz_progress.json")
# The Leitner intervals of format 1 (box -> days), needed to migrate its files.
LEITNER_INTERVAL_DAYS = {1: 0, 2: 1, 3: 3, 4: 7, 5: 14}
# Reviews happen "on a day"; a session at a given date is placed at noon UTC of that day.
REVIEW_HOUR = 12


def scheduler() -> Scheduler:
    """The FSRS scheduler of the drill: default parameters, retention 0.9, no fuzz, and one
    10-minute (re)learning step: a drill session shows a card once, so a card answered right
    the first time graduates at once, and a missed one is due again the same day."""
    step = (dt.timedelta(minutes=10),)
    return Scheduler(desired_retention=0.9, learning_steps=step, relearning_steps=step,
                     enable_fuzzing=False)


def review_time(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, REVIEW_HOUR, tzinfo=dt.timezone.utc)


def rating_for(grade: float) -> Rating:
    """1 (right) -> Good, 0.5 (partly) -> Hard, 0 (wrong) -> Again."""
    return Rating.Good if grade >= 1 else (Rating.Again if grade <= 0 else Rating.Hard)


@dataclass
class Progress:
    """The FSRS state of every card reviewed so far, and where it is saved."""

    path: Path | None  # None: not saved (the file could not be replaced)
    items: dict[str, dict] = field(default_factory=dict)
    fsrs: Scheduler = field(default_factory=scheduler)

    def card(self, card_id: str) -> Card | None:
        entry = self.items.get(card_id)
        return Card.from_dict(entry["card"]) if entry else None

    def due_date(self, card_id: str) -> dt.date:
        return self.card(card_id).due.date()

    def retrievability(self, card_id: str, day: dt.date) -> float:
        """Predicted probability of recalling the card at noon of ``day`` (FSRS)."""
        return self.fsrs.get_card_retrievability(self.card(card_id), review_time(day))

    def plan(self, ids: list[str], n: int, today: dt.date, rng: random.Random) -> tuple[list[str], int]:
        """Up to ``n`` ids to review today: due cards first, the least likely to be recalled
        first, then new ones in random order. Returns ``(ids, number of due cards among them)``."""
        order = {i: rng.random() for i in ids}
        due = sorted((i for i in ids if i in self.items and self.due_date(i) <= today),
                     key=lambda i: (self.retrievability(i, today), order[i]))
        new = sorted((i for i in ids if i not in self.items), key=order.__getitem__)
        chosen = due[:n]
        return chosen + new[:n - len(chosen)], len(chosen)

    def next_due(self, ids: list[str]) -> dt.date | None:
        dates = [self.due_date(i) for i in ids if i in self.items]
        return min(dates) if dates else None

    def record(self, card_id: str, grade: float, today: dt.date) -> Card:
        """Update a card after a review (grade 1 right, 0.5 partly, 0 wrong) and return its
        new FSRS state (``due``, ``stability``, ``difficulty``)."""
        entry = self.items.setdefault(card_id, {"seen": 0, "correct": 0, "log": []})
        card = Card.from_dict(entry["card"]) if "card" in entry else Card(card_id=0)
        when = review_time(today)
        if card.last_review is None:
            card.due = when   # a new card is due at its first review
        rating = rating_for(grade)
        card, _ = self.fsrs.review_card(card, rating, review_datetime=when)
        entry.update(card=card.to_dict(), seen=entry["seen"] + 1,
                     correct=entry["correct"] + (grade >= 1))
        entry["log"].append({"rating": int(rating), "at": when.isoformat()})
        return card

    def counts(self) -> dict[str, int]:
        """Number of cards per FSRS state (learning, review, relearning)."""
        out = {s.name.lower(): 0 for s in State}
        for entry in self.items.values():
            out[State(entry["card"]["state"]).name.lower()] += 1
        return out

    def save(self) -> None:
        """Write atomically (a temporary file, then a rename); no-op without a path."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        doc = {"format": FORMAT, "scheduler": "fsrs", "items": self.items}
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _check_leitner(raw: dict) -> str | None:
    for key, e in raw["items"].items():
        ok = (isinstance(e, dict) and type(e.get("box")) is int and 1 <= e["box"] <= 5
              and all(type(e.get(k)) is int and e[k] >= 0 for k in ("seen", "correct"))
              and isinstance(e.get("due"), str))
        if ok:
            try:
                _date(e["due"])
            except ValueError:
                ok = False
        if not ok:
            return f"bad entry for {key!r}"
    return None


def _check(raw: object) -> str | None:
    """Why ``raw`` is not a valid progress document (format 1 or 2), or ``None`` if it is."""
    if not isinstance(raw, dict) or raw.get("format") not in (1, FORMAT) \
            or not isinstance(raw.get("items"), dict):
        return f'expected {{"format": {FORMAT}, "items": {{...}}}}'
    if raw["format"] == 1:
        return _check_leitner(raw)
    for key, e in raw["items"].items():
        try:
            Card.from_dict(e["card"])
            ok = all(type(e.get(k)) is int and e[k] >= 0 for k in ("seen", "correct")) \
                and isinstance(e.get("log"), list)
        except (KeyError, TypeError, ValueError, AttributeError):
            ok = False
        if not ok:
            return f"bad entry for {key!r}"
    return None


def migrate_leitner(items: dict[str, dict]) -> dict[str, dict]:
    """Format-1 (Leitner) entries as FSRS entries, history kept.

    A card in box ``b`` had proved it could wait ``LEITNER_INTERVAL_DAYS[b]`` days, so it
    becomes a Review card whose stability is that interval (by definition of stability, the
    interval at 90 % recall), last reviewed that many days before its due date, which is kept.
    Box 1 (just missed) becomes a Relearning card due on its date. Difficulty follows the
    card's record: ``D = 10 - 9 * correct / seen`` (1 for a card always right, 10 for one
    never right). ``seen``, ``correct`` and the old box and due date are kept.
    """
    out = {}
    for key, e in items.items():
        due = review_time(_date(e["due"]))
        days = LEITNER_INTERVAL_DAYS[e["box"]]
        difficulty = 10.0 - 9.0 * (e["correct"] / e["seen"] if e["seen"] else 0.0)
        if e["box"] == 1:
            card = Card(card_id=0, state=State.Relearning, step=0, stability=0.5,
                        difficulty=difficulty, due=due, last_review=due)
        else:
            card = Card(card_id=0, state=State.Review, stability=float(days),
                        difficulty=difficulty, due=due,
                        last_review=due - dt.timedelta(days=days))
        out[key] = {"card": card.to_dict(), "seen": e["seen"], "correct": e["correct"],
                    "log": [], "leitner": {"box": e["box"], "due": e["due"]}}
    return out


def load_progress(path: str | Path | None = None, say: Callable[[str], None] = print) -> Progress:
    """Read the progress file (a missing file is an empty start). A format-1 (Leitner) file is
    migrated (one line through ``say``; the old file kept as ``<name>.leitner``); a corrupted
    one is reported with one line, moved to ``<name>.corrupt`` and recreated empty."""
    p = Path(path or DEFAULT_PATH).expanduser()
    if not p.exists():
        return Progress(p)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        problem = _check(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raw, problem = None, f"{type(e).__name__}: {e}"
    if problem is None and raw["format"] == FORMAT:
        return Progress(p, raw["items"])
    if problem is None:   # format 1: Leitner boxes
        progress = Progress(p, migrate_leitner(raw["items"]))
        return _replace(p, ".leitner", progress, say,
                        f"note: progress file {p} used Leitner boxes (format 1); migrated its "
                        f"{len(raw['items'])} card(s) to FSRS, the old file kept as "
                        f"{p.name}.leitner.",
                        f"note: progress file {p} uses Leitner boxes; migrated in memory but")
    return _replace(p, ".corrupt", Progress(p), say,
                    f"warning: progress file {p} is corrupted ({problem}); kept it as "
                    f"{p.name}.corrupt and started a new one.",
                    f"warning: progress file {p} is corrupted ({problem}) and")


def _replace(p: Path, suffix: str, progress: Progress, say: Callable[[str], None], done: str,
             failed: str) -> Progress:
    """Keep the old file as ``<name><suffix>``, save ``progress`` in its place and say ``done``
    in one line; if the file cannot be moved or written, say so and keep going unsaved."""
    try:
        os.replace(p, p.with_name(p.name + suffix))
        progress.save()
        say(done)
    except OSError as e:
        say(f"{failed} could not be replaced ({e}); this session's progress will not be saved.")
        progress.path = None
    return progress

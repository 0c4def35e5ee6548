"""Spaced repetition with Leitner boxes, kept in a small JSON file.

Every card lives in one of five boxes. A right answer moves it up one box, a wrong one back to
box 1, a partial self-grade keeps it where it is; a card in box ``b`` is due again
``INTERVAL_DAYS[b]`` days after its last review, so well-known cards come back rarely and
missed ones at the next session. The file (default ``~/.minseg/quiz_progress.json``)::

    {"format": 1, "items": {"06.m2": {"box": 3, "due": "2026-05-04", "seen": 4, "correct": 3}}}

A file that cannot be read as such is reported in one line, kept as ``<name>.corrupt`` and
replaced by a fresh one: a broken file never stops the drill.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

FORMAT = 1
BOXES = 5
INTERVAL_DAYS = {1: 0, 2: 1, 3: 3, 4: 7, 5: 14}
DEFAULT_PATH = Path("~/.minseg/quiz_progress.json")


@dataclass
class Progress:
    """Leitner state of every card reviewed so far, and where it is saved."""

    path: Path | None  # None: not saved (the file could not be replaced)
    items: dict[str, dict] = field(default_factory=dict)

    def box(self, card_id: str) -> int:
        return self.items.get(card_id, {}).get("box", 0)  # 0: never seen

    def plan(self, ids: list[str], n: int, today: dt.date, rng: random.Random) -> tuple[list[str], int]:
        """Up to ``n`` ids to review today: due cards first (lowest box, oldest due date),
        then new ones in random order. Returns ``(ids, number of due cards among them)``."""
        order = {i: rng.random() for i in ids}
        due = sorted((i for i in ids if i in self.items and _date(self.items[i]["due"]) <= today),
                     key=lambda i: (self.items[i]["box"], self.items[i]["due"], order[i]))
        new = sorted((i for i in ids if i not in self.items), key=order.__getitem__)
        chosen = due[:n]
        return chosen + new[:n - len(chosen)], len(chosen)

    def next_due(self, ids: list[str]) -> dt.date | None:
        dates = [_date(self.items[i]["due"]) for i in ids if i in self.items]
        return min(dates) if dates else None

    def record(self, card_id: str, grade: float, today: dt.date) -> tuple[int, int, dt.date]:
        """Update a card after a review (grade 1 right, 0.5 partly, 0 wrong); returns
        ``(old box, new box, next due date)``, old box 0 for a card never seen."""
        old = self.box(card_id)
        entry = self.items.setdefault(card_id, {"box": 1, "due": today.isoformat(), "seen": 0, "correct": 0})
        new = min(max(old, 1) + 1, BOXES) if grade >= 1 else (1 if grade <= 0 else max(old, 1))
        due = today + dt.timedelta(days=INTERVAL_DAYS[new] if grade > 0 else 0)
        entry.update(box=new, due=due.isoformat(), seen=entry["seen"] + 1,
                     correct=entry["correct"] + (grade >= 1))
        return old, new, due

    def counts(self) -> dict[int, int]:
        """Number of cards per box."""
        out = {b: 0 for b in range(1, BOXES + 1)}
        for entry in self.items.values():
            out[entry["box"]] += 1
        return out

    def save(self) -> None:
        """Write atomically (a temporary file, then a rename); no-op without a path."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "items": self.items}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _check(raw: object) -> str | None:
    """Why ``raw`` is not a valid progress document, or ``None`` if it is."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("items"), dict):
        return f'expected {{"format": {FORMAT}, "items": {{...}}}}'
    for key, e in raw["items"].items():
        ok = (isinstance(e, dict) and type(e.get("box")) is int and 1 <= e["box"] <= BOXES
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


def load_progress(path: str | Path | None = None, say: Callable[[str], None] = print) -> Progress:
    """Read the progress file (a missing file is an empty start). A corrupted one is reported
    with one line through ``say``, moved to ``<name>.corrupt`` and recreated empty."""
    p = Path(path or DEFAULT_PATH).expanduser()
    if not p.exists():
        return Progress(p)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        problem = _check(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raw, problem = None, f"{type(e).__name__}: {e}"
    if problem is None:
        return Progress(p, raw["items"])
    backup = p.with_name(p.name + ".corrupt")
    progress = Progress(p)
    try:
        os.replace(p, backup)
        progress.save()
        say(f"warning: progress file {p} is corrupted ({problem}); kept it as {backup.name} "
            f"and started a new one.")
    except OSError as e:
        say(f"warning: progress file {p} is corrupted ({problem}) and could not be replaced "
            f"({e}); this session's progress will not be saved.")
        progress.path = None
    return progress

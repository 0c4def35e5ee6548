"""The interview drill in a terminal: ``python -m minseg quiz``.

Modes (one per run):

* default: multiple-choice and numeric questions, from one topic (``--topic 06``) or at random
  (``--random N``, 10 by default), with the explanation after every answer and a score;
* ``--mock``: a timed mock interview: the open question, then a follow-up, answered aloud,
  the model answer revealed on Enter, self-graded;
* ``--review``: spaced repetition scheduled by FSRS over every card, progress kept in a small
  JSON file (``--progress PATH``, default ``~/.minseg/quiz_progress.json``);
* ``--export-anki FILE.apkg``: the whole bank as an Anki deck.

It reads plain lines from stdin, so it can be scripted:
``printf 'b\\n0.4\\n' | python -m minseg quiz --topic 06 --random 2 --seed 1``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
from typing import TextIO

from minseg.quiz.bank import Bank, load_bank
from minseg.quiz.cards import AUTO_KINDS, KINDS, Card, card_by_id, card_ids, open_cards
from minseg.quiz.drill import Console, run_cards, run_mock
from minseg.quiz.progress import DEFAULT_PATH, Progress, load_progress

DEFAULT_RANDOM = 10
DEFAULT_MOCK = 3


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"kinds are a comma-separated subset of {', '.join(KINDS)}")
    return kinds


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the quiz options to ``p`` (shared by the subcommand and :func:`main`)."""
    p.add_argument("--topic", metavar="NN", default=None,
                   help="one topic: 01..20 or a slug such as miou (default: all topics)")
    p.add_argument("--random", metavar="N", type=_positive, default=None,
                   help=f"N questions drawn at random (default {DEFAULT_RANDOM} without --topic; "
                        f"with --topic, every question of the topic; --mock: N topics, default "
                        f"{DEFAULT_MOCK}; --review: at most N cards, default {DEFAULT_RANDOM})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--mock", action="store_true",
                      help="timed mock interview: open questions answered aloud, model answer "
                           "revealed after Enter, self-graded")
    mode.add_argument("--review", action="store_true",
                      help="spaced repetition (FSRS): due cards first, then new ones")
    mode.add_argument("--list", action="store_true", help="list the topics and their questions")
    mode.add_argument("--export-anki", metavar="FILE.apkg", default=None,
                      help="write the bank (or --topic) as an Anki deck: open questions with "
                           "model answers and follow-ups, multiple choice with explanations, "
                           "numeric questions in several seeded variants")
    p.add_argument("--kind", type=_kinds, default=None, metavar="KINDS",
                   help="comma-separated kinds: mcq, numeric, open (default: mcq,numeric; "
                        "--review: all three)")
    p.add_argument("--time", dest="time_s", type=float, default=120.0, metavar="SECONDS",
                   help="--mock: seconds per main question (follow-ups get half; default 120)")
    p.add_argument("--progress", metavar="PATH", default=None,
                   help=f"--review: progress file (default {DEFAULT_PATH})")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for the choice of questions, option order and numbers (default: "
                        "random, printed so that a session can be replayed)")
    p.add_argument("--today", type=dt.date.fromisoformat, default=None, help=argparse.SUPPRESS)
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``quiz`` subcommand to ``python -m minseg``'s subparsers."""
    p = subparsers.add_parser(
        "quiz", help="interview drill: by topic, random, mock interview, spaced repetition",
        description="The interview drill: multiple-choice and numeric questions by topic or at "
                    "random, a timed mock interview, or spaced repetition. Answers are read line "
                    "by line from stdin, so sessions can be scripted.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m minseg quiz --topic 06\n  python -m minseg quiz --random 5\n"
               "  python -m minseg quiz --mock --random 2 --time 90\n  python -m minseg quiz --review\n"
               "  python -m minseg quiz --export-anki minseg.apkg")
    configure(p)
    p.set_defaults(func=run)
    return p


def drill_cards(bank: Bank, topic: str | None, n: int | None, kinds: tuple[str, ...],
                rng: random.Random) -> list[Card]:
    """The cards of a default-mode session (deterministic given ``rng``'s state): every card
    of ``topic`` in bank order, or ``n`` drawn at random (only those are generated)."""
    ids = card_ids(bank, kinds, topic)
    if n is None and topic is None:
        n = DEFAULT_RANDOM
    if n is not None:
        ids = rng.sample(ids, min(n, len(ids)))
    return [card_by_id(bank, i, rng) for i in ids]


def mock_rounds(bank: Bank, topic: str | None, n: int | None, rng: random.Random) -> list[list[Card]]:
    """Rounds of a mock interview: with ``topic``, its question and every follow-up; else
    ``n`` random topics, each with its question and one random follow-up."""
    if topic is not None:
        return [open_cards(bank.topic(topic))]
    rounds = []
    for t in rng.sample(bank.topics, min(n or DEFAULT_MOCK, len(bank.topics))):
        main, *follow = open_cards(t)
        rounds.append([main, rng.choice(follow)] if follow else [main])
    return rounds


def run(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Run the session described by parsed ``args``; returns the exit status."""
    con = Console(stdin, stdout)
    bank = load_bank()
    if args.topic is not None:
        args.topic = bank.topic(args.topic).id  # ValueError for an unknown topic
    if args.list:
        return _list(con, bank)
    if args.export_anki:
        from minseg.quiz.anki import export

        counts = export(args.export_anki, bank, args.topic)
        con.say(f"wrote {args.export_anki}: {counts['notes']} notes, {counts['cards']} cards in "
                f"{counts['decks']} topic deck(s); import it in Anki with File > Import.")
        return 0
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    rng = random.Random(seed)
    scope = f"topic {args.topic} ({bank.topic(args.topic).title})" if args.topic else "all topics"
    if args.mock:
        rounds = mock_rounds(bank, args.topic, args.random, rng)
        con.say(f"mock interview: {len(rounds)} question(s) from {scope}, {args.time_s:.0f} s each "
                f"(follow-ups {args.time_s / 2:.0f} s), seed {seed}.")
        con.say("Answer aloud or on paper as in an interview; press Enter to see the model answer, "
                "then grade yourself. Type q to stop.")
        score = run_mock(con, rounds, args.time_s)
    elif args.review:
        score = _review(con, bank, args, rng, seed)
        if score is None:
            return 0
    else:
        cards = drill_cards(bank, args.topic, args.random, args.kind or AUTO_KINDS, rng)
        con.say(f"minseg quiz: {len(cards)} question(s) from {scope}, seed {seed}. Type a letter "
                f"or a number, Enter to skip, q to stop.")
        score = run_cards(con, cards)
    con.say()
    con.say(score.summary())
    if score.missed:
        con.say("to revisit: " + ", ".join(score.missed))
    return 0


def review_cards(bank: Bank, progress: Progress, topic: str | None, kinds: tuple[str, ...],
                 n: int, today: dt.date, rng: random.Random) -> tuple[list[Card], int, list[str]]:
    """The cards of a review session: ``(cards, how many of them are due, all card ids)``."""
    ids = card_ids(bank, kinds, topic)
    chosen, n_due = progress.plan(ids, n, today, rng)
    return [card_by_id(bank, i, rng) for i in chosen], n_due, ids


def _review(con: Console, bank: Bank, args: argparse.Namespace, rng: random.Random, seed: int):
    today = args.today or dt.date.today()
    progress = load_progress(args.progress, say=con.say)
    chosen, n_due, ids = review_cards(bank, progress, args.topic, args.kind or KINDS,
                                      args.random or DEFAULT_RANDOM, today, rng)
    if not chosen:
        nxt = progress.next_due(ids)
        con.say(f"nothing due today ({today}); next review on {nxt}." if nxt else "no cards to review.")
        return None
    con.say(f"review: {n_due} due and {len(chosen) - n_due} new card(s), seed {seed}, "
            f"progress in {progress.path}.")

    failed: list[OSError] = []

    def record(card: Card, grade: float) -> None:
        state = progress.record(card.id, grade, today)
        days = (state.due.date() - today).days
        when = "later today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
        con.say(f"  next review {state.due.date()} ({when}; stability {state.stability:.1f} d, "
                f"difficulty {state.difficulty:.1f})")
        try:  # after every answer, so that an interrupted session keeps what it did
            progress.save()
        except OSError as e:
            if not failed:
                con.say(f"warning: could not save progress to {progress.path}: {e}")
            failed.append(e)

    score = run_cards(con, chosen, on_result=record)
    counts = progress.counts()
    con.say("cards: " + ", ".join(f"{k} {n}" for k, n in counts.items())
            + f" (FSRS states; {sum(counts.values())} of {len(ids)} cards seen)")
    return score


def _list(con: Console, bank: Bank) -> int:
    from minseg.quiz.numeric import DESCRIPTIONS

    for t in bank.topics:
        con.say(f"{t.id} {t.title} [{t.difficulty}]: {len(t.mcqs)} mcq, {len(t.numeric)} numeric, "
                f"{1 + len(t.follow_ups)} open  -> {t.lesson}")
        for k in t.numeric:
            con.say(f"     numeric {k}: {DESCRIPTIONS[k]}")
    return 0


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Entry point for direct use: ``main(["--topic", "06"], stdin=..., stdout=...)``."""
    parser = configure(argparse.ArgumentParser(prog="python -m minseg quiz", description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    try:
        return run(args, stdin, stdout)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

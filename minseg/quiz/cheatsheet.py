"""Generate ``CHEATSHEET.md`` (repository root) from the question bank.

    python -m minseg.quiz.cheatsheet            # write it
    python -m minseg.quiz.cheatsheet --check    # exit 1 if it is out of date

One page: each topic's ``cheat`` lines under its section (the task, architectures, metrics,
losses, context modules, inference tricks), then every topic's pitfalls; each line links to
its lesson. A last section names, per topic, the lesson section that answers its interview
question (the topic's ``lesson`` reference in the bank). Edit ``bank.json``, never the
generated file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minseg.quiz.bank import Bank, Topic, load_bank

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "CHEATSHEET.md"
HEADER = ("<!-- Generated from minseg/quiz/bank.json by `python -m minseg.quiz.cheatsheet`; "
          "edit the bank, not this file. -->")


def _ref(topic: Topic) -> str:
    return f"[{topic.id}]({topic.lesson})"


def _answered_in(topic: Topic) -> str:
    r = topic.lesson_ref
    where = f"lesson {r.lesson_id} · {r.heading} ([{r.path}]({r.path}))"
    return f"- {topic.id} {topic.title} -> {where}"


def render(bank: Bank | None = None) -> str:
    """The cheat sheet as Markdown."""
    bank = bank or load_bank()
    out = [HEADER, "", "# Semantic segmentation cheat sheet", "",
           "One page to revise before an interview. The number after each line is the lesson that "
           "measures the claim; the last section says where each interview question is answered. "
           "Drill yourself with `python -m minseg quiz`."]
    for sid, title in bank.sections:
        topics = [t for t in bank.topics if t.section == sid]
        if not topics:
            continue
        out += ["", f"## {title}", ""]
        out += [f"- {line} {_ref(t)}" for t in topics for line in t.cheat]
    pitfalls = [f"- {line} {_ref(t)}" for t in bank.topics for line in t.pitfalls]
    if pitfalls:
        out += ["", "## Pitfalls", ""] + pitfalls
    out += ["", "## Where each interview question is answered", ""]
    out += [_answered_in(t) for t in bank.topics]
    out.append("")
    return "\n".join(out)


def is_current(path: str | Path = DEFAULT_PATH) -> bool:
    """Whether the file at ``path`` is exactly what :func:`render` produces now."""
    p = Path(path)
    return p.exists() and p.read_text(encoding="utf-8") == render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minseg.quiz.cheatsheet",
                                     description="Write CHEATSHEET.md from the question bank.")
    parser.add_argument("--output", type=Path, default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file differs from the bank")
    args = parser.parse_args(argv)
    if args.check:
        if is_current(args.output):
            print(f"{args.output} is up to date")
            return 0
        print(f"{args.output} is out of date: run python -m minseg.quiz.cheatsheet", file=sys.stderr)
        return 1
    args.output.write_text(render(), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

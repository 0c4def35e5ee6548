"""``python -m minseg release`` and ``python -m minseg grade``."""
from __future__ import annotations

import argparse
import os


def cmd_release(args) -> int:
    from minseg.grading.release import release

    lessons = args.lessons if args.lessons is not None else ("notebooks" if os.path.isdir("notebooks") else None)
    changed = release(args.src, args.dst, check=args.check, checks=args.checks,
                      lessons=lessons or None)
    if args.check:
        for p in changed:
            print(f"out of date: {p}")
        if changed:
            print(f"run `python -m minseg release {args.src} {args.dst}` to regenerate "
                  "(exercises and the lessons' exercise sections)")
        return 1 if changed else 0
    print(f"released {args.src} -> {args.dst}: {len(changed)} notebook(s) updated")
    return 0


def cmd_grade(args) -> int:
    from minseg.grading.gradebook import DEFAULT_SEED, grade

    seed = DEFAULT_SEED if args.seed is None else args.seed
    book = grade(args.paths, timeout=args.timeout, jobs=args.jobs, out=args.out,
                 cell_timeout=args.cell_timeout, memory_mb=args.memory_mb, seed=seed,
                 checks=args.checks, verbose=not args.quiet)
    print(book.table())
    print(f"\n{len(book.results)} notebook(s), {len(book.students())} student(s) in "
          f"{book.seconds:.1f}s; gradebook: {os.path.join(args.out, 'gradebook.csv')} and "
          f"gradebook.json")
    return 0


def add_parsers(sub) -> None:
    """Add the ``release`` and ``grade`` subcommands to an ``add_subparsers()`` object."""
    from minseg.grading.runner import DEFAULT_CELL_TIMEOUT_S, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S

    p = sub.add_parser("release", help="write exercise notebooks from solution notebooks",
                       description="Replace every ### BEGIN SOLUTION ... ### END SOLUTION region "
                                   "of the solution notebooks by raise NotImplementedError(...) "
                                   "and clear outputs. --check only reports notebooks that are "
                                   "out of date (exit 1), for CI.")
    p.add_argument("src", nargs="?", default="solutions", help="solution notebooks (default: solutions)")
    p.add_argument("dst", nargs="?", default="exercises", help="output folder (default: exercises)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if dst is out of date")
    p.add_argument("--lessons", default=None, metavar="DIR",
                   help="lesson notebooks whose '## Exercise' sections are written from the checks "
                        "modules (default: notebooks/ when it exists; '' for none)")
    p.add_argument("--checks", action="append", default=None, metavar="DIR",
                   help="extra folder of exNN_*.py checks modules (repeatable)")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("grade", help="grade exercise notebooks (one, a folder, or a class)",
                       description="Run each notebook in its own process with time and memory "
                                   "limits, call its graded functions on fresh random inputs, "
                                   "compare with the minseg reference, print a table and write "
                                   "gradebook.csv / gradebook.json. A class is a folder "
                                   "submissions/<student>/*.ipynb.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="notebooks, folders or class trees")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds per notebook, wall clock (default {DEFAULT_TIMEOUT_S:.0f})")
    p.add_argument("--cell-timeout", type=float, default=DEFAULT_CELL_TIMEOUT_S,
                   help=f"seconds per cell and per graded function (default {DEFAULT_CELL_TIMEOUT_S:.0f})")
    p.add_argument("--jobs", type=int, default=1, help="notebooks graded in parallel (default 1)")
    p.add_argument("--out", default="grades", help="folder for the gradebook (default: grades)")
    p.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                   help=f"address-space limit per notebook in MiB (default {DEFAULT_MEMORY_MB})")
    p.add_argument("--seed", type=int, default=None, help="seed of the graded cases")
    p.add_argument("--checks", action="append", default=None, metavar="DIR",
                   help="extra folder of exNN_*.py checks modules (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_grade)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minseg.grading.cli")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)

"""Strip outputs from notebooks before a commit; keep them on ``# NBVAL_CHECK_OUTPUT`` cells.

    python tools/strip_notebooks.py [--check] [PATH ...]     (default: notebooks solutions exercises)

nbval compares the stored output of cells marked ``# NBVAL_CHECK_OUTPUT`` with a fresh run, so
those cells keep their outputs *and* their execution count (nbval 0.11 refuses a checked cell
that has outputs but no execution count). Every other cell loses outputs and execution count,
and notebook metadata is reduced to the kernel spec and language info. ``--check`` changes
nothing and exits 1 listing the notebooks that are not clean (the test suite runs it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEEP_META = ("kernelspec", "language_info")
MARK = "NBVAL_CHECK_OUTPUT"


def clean(nb: dict) -> dict:
    """The notebook with stray outputs, counts and metadata removed."""
    for cell in nb.get("cells", []):
        cell.get("metadata", {}).pop("execution", None)
        if cell.get("cell_type") != "code":
            continue
        if MARK in "".join(cell.get("source", "")):
            continue
        cell["outputs"] = []
        cell["execution_count"] = None
    nb["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k in KEEP_META}
    nb["metadata"].setdefault("kernelspec", {"display_name": "Python 3", "language": "python",
                                             "name": "python3"})
    return nb


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def notebooks(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(p.rglob("*.ipynb"))
        elif p.exists():
            out.append(p)
    return [p for p in out if ".ipynb_checkpoints" not in p.parts]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=["notebooks", "solutions", "exercises"])
    ap.add_argument("--check", action="store_true", help="report, do not write")
    args = ap.parse_args(argv)
    dirty = []
    for path in notebooks(args.paths):
        text = path.read_text(encoding="utf-8")
        new = _dump(clean(json.loads(text)))
        if new != text:
            dirty.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "not clean" if args.check else "stripped"
    for p in dirty:
        print(f"{verb}: {p}")
    return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main())

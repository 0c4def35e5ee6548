"""``release``: student notebooks from solution notebooks.

In every code cell, each region from a ``### BEGIN SOLUTION`` line to the next
``### END SOLUTION`` line (inclusive) becomes one line, at the indentation of the BEGIN
marker::

    raise NotImplementedError("ex06.miou: <the task's prompt>")

The task is the one whose ``function`` is the ``def`` enclosing the region (looked up in the
exercise's checks module); a region outside any graded function gets a generic message. In
markdown cells a region becomes ``*Your answer here.*``. Outputs, execution counts and
notebook metadata (except kernelspec and language info) are removed, the same way
``tools/strip_notebooks.py`` cleans notebooks. Deterministic and idempotent: releasing a
released notebook changes nothing.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
KEEP_META = ("kernelspec", "language_info")
_DEF = re.compile(r"^(\s*)(?:async\s+)?def\s+(\w+)\s*\(")


class ReleaseError(ValueError):
    """A solution notebook with unbalanced markers."""


def _lines(source) -> list[str]:
    text = "".join(source) if isinstance(source, list) else str(source)
    return text.splitlines(keepends=True)


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip())]


def _enclosing_def(lines: list[str], indent: str) -> str | None:
    for line in reversed(lines):
        m = _DEF.match(line)
        if m and len(m.group(1)) < len(indent):
            return m.group(2)
    return None


def strip_regions(source, messages: dict[str, str], default: str, markdown: bool = False,
                  where: str = "") -> list[str]:
    """The cell source with every solution region replaced (see the module docstring)."""
    lines, out, i = _lines(source), [], 0
    while i < len(lines):
        line, stripped = lines[i], lines[i].strip()
        if stripped.startswith(END):
            raise ReleaseError(f"{where}: '{END}' without '{BEGIN}'")
        if not stripped.startswith(BEGIN):
            out.append(line)
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(END):
            if lines[j].strip().startswith(BEGIN):
                raise ReleaseError(f"{where}: nested '{BEGIN}'")
            j += 1
        if j == len(lines):
            raise ReleaseError(f"{where}: '{BEGIN}' without '{END}'")
        indent = _indent(line)
        if markdown:
            out.append(f"{indent}*Your answer here.*\n")
        else:
            name = _enclosing_def(out, indent)
            msg = messages.get(name, default) if name else default
            out.append(f"{indent}raise NotImplementedError({json.dumps(msg, ensure_ascii=False)})\n")
        i = j + 1
    if out and lines and not lines[-1].endswith("\n"):
        out[-1] = out[-1].rstrip("\n")
    return out


def release_notebook(nb: dict, exercise: str | None, messages: dict[str, str], where: str = "") -> dict:
    """The student version of one notebook (a new dict)."""
    nb = json.loads(json.dumps(nb))
    default = f"{exercise or 'exercise'}: replace this line with your code"
    for k, cell in enumerate(nb.get("cells", [])):
        cell.get("metadata", {}).pop("execution", None)
        kind = cell.get("cell_type")
        if kind in ("code", "markdown"):
            cell["source"] = strip_regions(cell.get("source", ""), messages, default,
                                           markdown=kind == "markdown", where=f"{where} cell {k + 1}")
        if kind == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    meta = {k: v for k, v in nb.get("metadata", {}).items() if k in KEEP_META}
    meta.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    nb["metadata"] = meta
    return nb


def dumps(nb: dict) -> str:
    """Notebook JSON exactly as ``tools/strip_notebooks.py`` writes it."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def _messages(exercise: str | None, checks) -> dict[str, str]:
    if exercise is None:
        return {}
    from minseg.grading.checks import get_exercise

    return {t.function: f"{t.id}: {t.prompt}" for t in get_exercise(exercise, checks).tasks}


def released_text(path: str | os.PathLike, checks=None) -> str:
    """The released form of the notebook at ``path``, as text."""
    from minseg.grading.checks import exercise_for_notebook

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    ex = exercise_for_notebook(path, text, checks)
    return dumps(release_notebook(json.loads(text), ex, _messages(ex, checks), where=str(path)))


# ------------------------------------------------------------------------------------------
# the lesson's "## Exercise" section, written from the checks module
# ------------------------------------------------------------------------------------------
EXERCISE_HEADING = "## Exercise"


def exercise_section(exercise_id: str, checks=None) -> str:
    """The ``## Exercise`` section of a lesson: a link to the exercise notebook and exactly its
    graded tasks (function, points, what it must do), from the checks module, which is the one
    source of truth, so that a lesson cannot promise a task the exercise does not have."""
    from minseg.grading.checks import get_exercise

    ex = get_exercise(exercise_id, checks)
    lines = [EXERCISE_HEADING, "",
             f"[`exercises/{ex.notebook}`](../exercises/{ex.notebook}), {len(ex.tasks)} graded tasks, "
             f"{ex.points} points. Write each function yourself: `minseg.grading.check` under it "
             "gives feedback as you go, and a function that calls the `minseg` answer scores 0.", ""]
    for k, t in enumerate(ex.tasks, 1):
        prompt = t.prompt.rstrip(".")
        lines.append(f"{k}. `{t.function}` ({t.points} point{'s' if t.points != 1 else ''}): {prompt}.")
    return "\n".join(lines)


def with_exercise_section(nb: dict, section: str, where: str = "") -> dict:
    """``nb`` (a new dict) whose markdown cell holding ``## Exercise`` has that section, up to
    the next ``## `` heading of the cell or its end, replaced by ``section``."""
    nb = json.loads(json.dumps(nb))
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "markdown"
             and any(line.startswith(EXERCISE_HEADING) for line in _lines(c.get("source", "")))]
    if len(cells) != 1:
        raise ReleaseError(f"{where}: expected one markdown cell with a '{EXERCISE_HEADING}' "
                           f"heading, found {len(cells)}")
    lines = _lines(cells[0]["source"])
    start = next(i for i, line in enumerate(lines) if line.startswith(EXERCISE_HEADING))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = lines[end:]
    body = section.splitlines(keepends=True)
    if tail:
        body[-1] = body[-1].rstrip("\n") + "\n"
        body.append("\n")
    cells[0]["source"] = lines[:start] + body + tail
    return nb


def _update(path: Path, old: str | None, text: str, check: bool, verbose: bool) -> bool:
    """Write ``text`` to ``path`` when it differs from ``old`` (never with ``check``); say so
    when ``verbose``. Returns whether it differed."""
    differs = old != text
    if differs and not check:
        path.write_text(text, encoding="utf-8")
    if verbose:
        print(f"{'differs' if check and differs else 'wrote' if differs else 'same'}: {path}")
    return differs


def sync_lessons(lessons: str | os.PathLike, *, check: bool = False, checks=None,
                 verbose: bool = False) -> list[Path]:
    """Write each lesson's ``## Exercise`` section from its exercise's checks module (lessons
    without an exercise are left alone). Returns the lessons that were (or, with ``check``,
    would be) rewritten."""
    from minseg.grading.checks import exercise_for_notebook

    changed = []
    for p in sorted(Path(lessons).glob("*.ipynb")):
        old = p.read_text(encoding="utf-8")
        ex = exercise_for_notebook(p, old, checks)
        if ex is None:
            continue
        text = dumps(with_exercise_section(json.loads(old), exercise_section(ex, checks), str(p)))
        if _update(p, old, text, check, verbose):
            changed.append(p)
    return changed


def release(src: str | os.PathLike = "solutions", dst: str | os.PathLike = "exercises", *,
            check: bool = False, checks=None, verbose: bool = False,
            lessons: str | os.PathLike | None = None) -> list[Path]:
    """Release every ``src/*.ipynb`` into ``dst`` (same file names), and with ``lessons`` (a
    folder of lesson notebooks) write their exercise sections (:func:`sync_lessons`).

    Returns the notebooks of ``dst`` that were (``check=False``) or would be (``check=True``)
    written because they differed, plus, with ``check=True``, notebooks in ``dst`` that have no
    source in ``src``, plus the lessons rewritten. Files are only rewritten when their text
    changes.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"no solutions folder {src}")
    sources = sorted(p for p in src.glob("*.ipynb"))
    changed: list[Path] = []
    if not check:
        dst.mkdir(parents=True, exist_ok=True)
    for p in sources:
        target = dst / p.name
        text = released_text(p, checks)
        old = target.read_text(encoding="utf-8") if target.exists() else None
        if _update(target, old, text, check, verbose):
            changed.append(target)
    names = {p.name for p in sources}
    extra = [p for p in sorted(dst.glob("*.ipynb")) if p.name not in names] if dst.is_dir() else []
    if check:
        changed += extra
    elif extra and verbose:
        for p in extra:
            print(f"warning: {p} has no source in {src} (not removed)")
    if lessons is not None:
        changed += sync_lessons(lessons, check=check, checks=checks, verbose=verbose)
    return changed

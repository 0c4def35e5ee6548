"""Build the course as a static HTML book: the 20 lessons executed, with their outputs, figures
and LaTeX, a contents page following the 20 questions, search, and on every page the run that
produced it (profile, steps, seeds, wall time) and its rows of the evidence table.

    python tools/build_book.py                     # cpu profile (`make book`)
    python tools/build_book.py --profile smoke     # what CI builds, in seconds per lesson
    python -m http.server -d book/_build/html      # or open book/_build/html/index.html

**Executed once.** A lesson is not run again when ``runs/<profile>/NN_topic.ipynb`` already
holds an execution of its current source (same cells, same profile): the copies written by
``tools/run_notebooks.py``, or by the test suite, which keeps the lessons nbval executed
(``conftest.py``). Missing or stale lessons are executed here, one at a time, through
``tools/run_notebooks.py``.

**Failures are loud.** A lesson whose execution raised stops the build with its name and the
cell's error; ``--keep-going`` builds anyway and puts a red "failed" box at the top of its page.

The site is rendered by Sphinx with myst-nb (chosen over MkDocs + mkdocs-jupyter: 10 s instead
of 35 s for the 20 executed lessons here, and the math is rendered offline), the furo theme and
MathJax 3 served from the book itself, so ``file://`` works without a network.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
RUN_CARD_CLASS = "minseg-run"
FAILED_CLASS = "minseg-failed"
WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json",)


class LessonFailed(RuntimeError):
    """A lesson's execution raised: the message names the lesson, the cell and the error."""


# ------------------------------------------------------------------------------------------
# executed copies: reuse when fresh, execute when not
# ------------------------------------------------------------------------------------------
def _sources(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def is_fresh(source: Path, executed: Path, profile: str) -> bool:
    """True when ``executed`` is an execution of ``source``'s current cells in ``profile``."""
    if not executed.is_file():
        return False
    src, ex = nbformat.read(source, as_version=4), nbformat.read(executed, as_version=4)
    meta = ex.metadata.get("minseg", {})
    return _sources(src) == _sources(ex) and meta.get("profile") == profile


def execute(sources: list[Path], runs: Path, profile: str, timeout: int) -> None:
    """Execute lessons with ``tools/run_notebooks.py`` (one at a time, fresh kernels); its
    executed copies, timings and evidence rows land in ``runs``. The repository's
    ``EVIDENCE.md`` is left alone (the book shows this profile's rows)."""
    cmd = [sys.executable, str(ROOT / "tools" / "run_notebooks.py"), "--profile", profile,
           "--out", str(runs), "--update", "--timeout", str(timeout),
           "--evidence", str(runs / "EVIDENCE.md"), *map(str, sources)]
    subprocess.run(cmd, cwd=ROOT, check=False)   # a failing lesson is reported below, per lesson


def first_error(nb) -> tuple[int, str] | None:
    """``(cell index, "Name: message")`` of the first error output, or ``None``."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return i, f"{out.get('ename', 'Error')}: {out.get('evalue', '')}".strip()
    return None


# ------------------------------------------------------------------------------------------
# one page per lesson
# ------------------------------------------------------------------------------------------
def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if str(ROOT / "tools") not in sys.path:   # run_notebooks owns the format of run times
        sys.path.insert(0, str(ROOT / "tools"))
    from run_notebooks import minutes

    return minutes(seconds)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def _cell_text(x) -> str:
    return str(x).replace("|", "/").replace("\n", " ")


def evidence_rows(runs: Path, lesson: str) -> list[dict]:
    path = runs / "evidence" / f"{lesson}.json"
    return json.loads(path.read_text()) if path.is_file() else []


def run_card(meta: dict, rows: list[dict], source: Path, profile: str) -> str:
    """The box under a lesson's title: which run produced this page, and its claims' rows."""
    from minseg.experiment import evidence_effect

    steps = sorted({r["steps"] for r in rows if r.get("steps")})
    samples = sorted({_count(r["n"], r.get("unit") or "seeds") for r in rows if r.get("n")})
    facts = [f"profile **{profile}**"]
    if steps:
        facts.append(f"{', '.join(map(str, steps))} optimizer steps per run")
    if samples:
        facts.append(", ".join(samples))
    facts.append(f"wall time {_minutes(meta.get('wall_s'))}"
                 + (f" (load {meta['load']:.2f})" if meta.get("load") is not None else ""))
    if meta.get("executed"):
        facts.append(f"executed {meta['executed']}"
                     + (f" with torch {meta['torch']}, {meta.get('threads', '?')} threads"
                        + (f" on {meta['cpu']}" if meta.get("cpu") else "")
                        if meta.get("torch") else ""))
    lines = [":::{admonition} How this page was made", f":class: {RUN_CARD_CLASS}", "",
             " · ".join(facts) + ".",
             f"Reproduce it: `python tools/run_notebooks.py --profile {profile} --update "
             f"notebooks/{source.name}`.", ""]
    if rows:
        lines += ["| claim | comparison | effect (95 % CI) | status |", "|---|---|---|---|"]
        lines += [f"| {_cell_text(r['claim'])} | {_cell_text(r.get('comparison', ''))} | "
                  f"{_cell_text(evidence_effect(r))} | {r['status']} |" for r in rows]
    else:
        lines.append("This run recorded no claim for the evidence table.")
    lines.append(":::")
    return "\n".join(lines)


def failed_box(name: str, cell: int, error: str) -> str:
    return "\n".join([":::{error} This lesson failed to execute", f":class: {FAILED_CLASS}", "",
                      f"`{name}`: cell {cell} raised `{error}`. The outputs below stop there; "
                      "the page was built with `--keep-going`.", ":::"])


def strip_widgets(nb) -> None:
    """Progress-bar widgets need a live kernel (and a CDN); keep their text form only."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data:
                for mime in WIDGET_MIMES:
                    data.pop(mime, None)


def lesson_page(source: Path, executed: Path, runs: Path, profile: str, keep_going: bool):
    """The executed notebook with its run card under the title (and a failed box on top)."""
    nb = nbformat.read(executed, as_version=4)
    err = first_error(nb)
    if err is not None and not keep_going:
        raise LessonFailed(f"lesson {source.stem} failed to execute: cell {err[0]} raised "
                           f"{err[1]} (rerun with --keep-going to build the other pages)")
    page = copy.deepcopy(nb)
    strip_widgets(page)
    meta = nb.metadata.get("minseg", {})
    card = nbformat.v4.new_markdown_cell(run_card(meta, evidence_rows(runs, source.stem[:2]),
                                                  source, profile))
    title = next((i for i, c in enumerate(page.cells)
                  if c.cell_type == "markdown" and c.source.lstrip().startswith("# ")), -1)
    page.cells.insert(title + 1, card)
    if err is not None:
        page.cells.insert(0, nbformat.v4.new_markdown_cell(failed_box(source.stem, *err)))
    page.nbformat_minor = max(page.nbformat_minor, 5)   # cell ids (nbformat 4.5)
    for i, cell in enumerate(page.cells):
        cell.setdefault("id", f"minseg-{i}")
    return page, err


# ------------------------------------------------------------------------------------------
# the site
# ------------------------------------------------------------------------------------------
def contents_page(lessons: list[Path], failed: dict[str, str], profile: str) -> str:
    lines = ["# minseg: semantic segmentation, one interview question at a time", "",
             "Twenty lessons, each answering a classic question with a small experiment that runs "
             "on a laptop. Every page below was executed in the "
             f"**{profile}** profile; the box under each title says how (steps, seeds, wall "
             "time) and what the experiment measured, with its 95 % confidence interval.", ""]
    if failed:
        lines += [f"**{len(failed)} lesson(s) failed to execute** and are marked in red: "
                  + ", ".join(sorted(failed)) + ".", ""]
    lines += ["```{toctree}", ":maxdepth: 1", ":caption: The 20 questions", ""]
    lines += [f"lessons/{p.stem}" for p in lessons]
    lines += ["```", "", "```{toctree}", ":maxdepth: 1", ":caption: Reference", "",
              "evidence", "cheatsheet", "```", ""]
    return "\n".join(lines)


def evidence_page(lessons: list[Path], runs: Path, profile: str) -> str:
    from minseg.experiment import evidence_effect

    lines = ["# Evidence", "",
             f"What each lesson's experiment measured in the **{profile}** profile, as recorded by "
             "`minseg.experiment.evidence` while the pages of this book were executed. *confirmed*: "
             "the 95 % interval excludes 0 in the claimed direction; *not separated*: it includes 0.",
             "", "| lesson | claim | effect (95 % CI) | status | steps |", "|---|---|---|---|---:|"]
    for p in lessons:
        for r in evidence_rows(runs, p.stem[:2]):
            lines.append(f"| [{p.stem[:2]}](lessons/{p.stem}) | {_cell_text(r['claim'])} | "
                         f"{_cell_text(evidence_effect(r))} | {r['status']} | "
                         f"{r.get('steps') or ''} |")
    return "\n".join(lines) + "\n"


def mathjax_file() -> Path:
    """MathJax 3 (TeX input, SVG output: no web fonts to load) from the sphinx-mathjax-offline
    package, so that math renders without a network."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the book needs its extra dependencies: pip install -e '.[book]'")
    return Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "tex-svg-full.js"


def build(profile: str = "cpu", *, notebooks: Path = ROOT / "notebooks", runs: Path | None = None,
          out: Path = BOOK / "_build", keep_going: bool = False, execute_missing: bool = True,
          timeout: int = 1800, quiet: bool = False) -> Path:
    """Build the book and return the path of its ``index.html``."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    runs = runs or ROOT / "runs" / profile
    lessons = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    if not lessons:
        raise SystemExit(f"no lessons (NN_topic.ipynb) in {notebooks}")
    t0 = time.perf_counter()
    stale = [p for p in lessons if not is_fresh(p, runs / p.name, profile)]
    say(f"{len(lessons) - len(stale)} of {len(lessons)} lessons already executed in {runs}")
    if stale:
        if not execute_missing:
            raise SystemExit("not executed (or changed since): " + ", ".join(p.stem for p in stale))
        say(f"executing {len(stale)} lesson(s) in the {profile} profile ...")
        execute(stale, runs, profile, timeout)
        missing = [p.stem for p in stale if not (runs / p.name).is_file()]
        if missing:
            raise LessonFailed(f"lesson(s) {', '.join(missing)} produced no executed copy")
    t_exec = time.perf_counter() - t0

    src, html = out / "src", out / "html"
    shutil.rmtree(src, ignore_errors=True)
    (src / "lessons").mkdir(parents=True)
    shutil.copytree(BOOK / "_static", src / "_static")
    shutil.copy(BOOK / "conf.py", src / "conf.py")
    shutil.copy(mathjax_file(), src / "_static" / "mathjax.js")
    failed: dict[str, str] = {}
    for p in lessons:
        page, err = lesson_page(p, runs / p.name, runs, profile, keep_going)
        if err is not None:
            failed[p.stem] = err[1]
        nbformat.write(page, src / "lessons" / p.name)
    (src / "index.md").write_text(contents_page(lessons, failed, profile))
    (src / "evidence.md").write_text(evidence_page(lessons, runs, profile))
    shutil.copy(ROOT / "CHEATSHEET.md", src / "cheatsheet.md")
    shutil.rmtree(html, ignore_errors=True)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", str(src), str(html)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"sphinx failed:\n{res.stdout}\n{res.stderr}")
    size = sum(f.stat().st_size for f in html.rglob("*") if f.is_file())
    say(f"book: {html / 'index.html'} ({len(lessons)} lessons, {len(failed)} failed; "
        f"{size / 2**20:.1f} MiB; executing {t_exec:.0f} s, rendering "
        f"{time.perf_counter() - t0 - t_exec:.0f} s)")
    return html / "index.html"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "gpu"))
    p.add_argument("--runs", type=Path, default=None, help="executed copies (default runs/<profile>)")
    p.add_argument("--out", type=Path, default=BOOK / "_build")
    p.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    p.add_argument("--keep-going", action="store_true",
                   help="build even when a lesson fails; its page is marked failed in red")
    p.add_argument("--no-execute", action="store_true",
                   help="fail instead of executing lessons that have no fresh executed copy")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell when executing")
    args = p.parse_args(argv)
    try:
        build(args.profile, notebooks=args.notebooks, runs=args.runs, out=args.out,
              keep_going=args.keep_going, execute_missing=not args.no_execute,
              timeout=args.timeout)
    except LessonFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

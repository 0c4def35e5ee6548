"""Execute lesson notebooks under a profile, keep the executed copies and print a timing table.

    python tools/run_notebooks.py --profile cpu --out runs/cpu            # all 20 lessons
    python tools/run_notebooks.py --profile cpu --out runs/cpu notebooks/04_*.ipynb
    python tools/run_notebooks.py --profile cpu --update notebooks/09_*.ipynb   # re-run one, merge

Each notebook runs top to bottom on a fresh kernel (nbclient), one after the other so that
no two notebooks share the cores (their times would mean nothing). The executed notebook is written
to ``OUT/NN_topic.ipynb`` (outputs kept, for reading the numbers), and a Markdown table of
wall time, 1-minute load average at the end and status (an error, or a
run cut short by a time cap) to ``OUT/times.md``.

Every lesson records its claim with :func:`minseg.experiment.evidence`; the rows land in
``OUT/evidence/NN.json`` and the runner assembles them, with each lesson's steps, seeds and
wall time, into ``OUT/EVIDENCE.md``, and into the repository's ``EVIDENCE.md`` when all 20 lessons
ran in the ``cpu`` profile (``--evidence PATH`` to choose). CI does not run this; it is how the
``cpu``/``gpu`` evidence is produced.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import json
import platform

import torch

from minseg.cost import load_average
from minseg.experiment import EVIDENCE_ENV, evidence_effect
from minseg.train import CUT_SHORT

ROOT = Path(__file__).resolve().parents[1]


def run_one(path: Path, out: Path, timeout: int) -> tuple[float, str]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    status = "ok"
    try:
        client.execute()
    except CellExecutionError as e:
        status = f"error: {e.ename}: {e.evalue}"[:120].replace("|", "/").replace("\n", " ")
    elapsed = time.perf_counter() - t0
    # what produced these outputs, for the book's run card (tools/build_book.py)
    nb.metadata["minseg"] = run_metadata(elapsed, status)
    nbformat.write(nb, out / path.name)
    # fit warns when its time cap stops a run before its step budget: the lesson's numbers are
    # then not the profile's, so the table says so
    texts = (o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    if status == "ok" and any(CUT_SHORT in t for t in texts):
        status = "cut short by the time cap"
    return elapsed, status


def cpu_description() -> str:
    """The CPU model and the instruction set torch's kernels use (e.g. ``AMD EPYC, AVX512``).
    Step budgets give the same numbers on the same kind of CPU only: another instruction set
    (AVX2 vs AVX512) or vendor changes float rounding in the kernels, and so the trained weights."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.backends.cpu.get_cpu_capability()}"


def run_metadata(wall_s: float, status: str, executor: str = "tools/run_notebooks.py") -> dict:
    """How an executed lesson was produced: profile, wall time, load, status, versions."""
    return {"profile": os.environ.get("MINSEG_PROFILE", "cpu"), "wall_s": round(wall_s, 1),
            "load": round(load_average(), 2), "status": status, "executor": executor,
            "executed": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": cpu_description()}


def minutes(seconds: float) -> str:
    """``m:ss`` of a duration (the book's run cards use it too)."""
    s = round(seconds)   # round first: 59.6 s is 1:00, not 0:60
    return f"{s // 60}:{s % 60:02d}"


def _read_times(path: Path) -> dict[str, tuple[float, float, str]]:
    """The lessons of an earlier ``times.md``: ``{stem: (seconds, load after, status)}``."""
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 4 and cells[0][:2].isdigit() and ":" in cells[1]:
                m, s = cells[1].split(":")
                out[cells[0]] = (60 * float(m) + float(s), float(cells[2] or 0), cells[3])
    return out


def evidence_table(ev_dir: Path, times: dict[str, float], profile: str, loads: list[float],
                   rerun: list[str] | None = None) -> str:
    """``EVIDENCE.md``: one row per recorded claim, lessons in order, with a summary. ``rerun``
    names the lessons of the latest run when the others come from an earlier one (``--update``)."""
    lines = [
        "# Evidence: what each lesson's experiment measured",
        "",
        f"Generated by `python tools/run_notebooks.py --profile {profile}` on "
        f"{time.strftime('%Y-%m-%d')} (torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, {platform.machine()}, {cpu_description()}; 1-minute load average after each lesson "
        f"{min(loads, default=0):.2f} to {max(loads, default=0):.2f}). Each effect is given in the "
        "claim's direction with its 95 % confidence interval: Student's t over paired seeds, or "
        "a paired bootstrap over validation images where one trained model is evaluated two "
        "ways. *confirmed*: the interval excludes 0 in the claimed direction; *not separated*: "
        "it includes 0; *reversed*: it excludes 0 the other way. Exact checks state what they "
        "compared."
        + (f" Lessons {', '.join(r[:2] for r in rerun)} were re-run on {time.strftime('%Y-%m-%d')} "
           "with `--update`; the others come from the earlier run in the same folder."
           if rerun else ""),
        "",
        "| lesson | claim | comparison | effect (95 % CI) | status | steps | time |",
        "|---|---|---|---|---|---:|---:|",
    ]
    good, lessons = 0, 0
    for stem in sorted(times):
        path = ev_dir / f"{stem[:2]}.json"
        rows = json.loads(path.read_text()) if path.is_file() else []
        lessons += 1
        if rows and all(r["status"] in ("confirmed", "check passed") for r in rows):
            good += 1
        if not rows:
            rows = [{"claim": "(no claim recorded: the lesson failed or does not call evidence)",
                     "status": "missing"}]
        for r in rows:
            cell = lambda x: str(x).replace("|", "/").replace("\n", " ")  # noqa: E731
            lines.append(f"| {stem} | {cell(r['claim'])} | {cell(r.get('comparison', ''))} | "
                         f"{cell(evidence_effect(r) if 'lesson' in r else '')} | "
                         f"{r['status']} | {r.get('steps') or ''} | {minutes(times[stem])} |")
    lines += ["", f"{good} of {lessons} lessons confirm every claim they make (or pass their "
                  f"exact check); all {lessons} ran in {minutes(sum(times.values()))}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", type=Path)
    p.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "gpu"))
    p.add_argument("--out", type=Path, default=None, help="default: runs/<profile>")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    p.add_argument("--update", action="store_true",
                   help="merge this run's lessons into OUT's earlier results (times.md, evidence/) "
                        "and, once all 20 lessons have a result there in the cpu profile, rewrite "
                        "EVIDENCE.md; the table names the lessons re-run")
    p.add_argument("--evidence", type=Path, default=None,
                   help="where to write the evidence table (default: OUT/EVIDENCE.md, and "
                        "EVIDENCE.md at the repository root after all lessons in the cpu profile)")
    args = p.parse_args(argv)

    os.environ["MINSEG_PROFILE"] = args.profile
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    out = args.out or ROOT / "runs" / args.profile
    out.mkdir(parents=True, exist_ok=True)
    ev_dir = out / "evidence"
    ev_dir.mkdir(exist_ok=True)
    os.environ[EVIDENCE_ENV] = str(ev_dir)
    times: dict[str, float] = {}
    loads: list[float] = []
    earlier = _read_times(out / "times.md") if args.update else {}
    lines = [f"| notebook | {args.profile} time | load after | status |", "|---|---:|---:|---|"]
    total = 0.0
    for path in paths:
        (ev_dir / f"{path.stem[:2]}.json").unlink(missing_ok=True)   # this run's rows only
        elapsed, status = run_one(path.resolve(), out, args.timeout)
        total += elapsed
        times[path.stem] = elapsed
        load = load_average()
        loads.append(load)
        lines.append(f"| {path.stem} | {minutes(elapsed)} | {load:.2f} | {status} |")
        print(lines[-1], flush=True)
        (out / "times.md").write_text("\n".join(lines) + "\n")
    lines.append(f"| all {len(paths)} | {minutes(total)} | | |")
    (out / "times.md").write_text("\n".join(lines) + "\n")
    print(lines[-1])
    rerun = sorted(times)
    if args.update:  # the earlier run's lessons that this run did not repeat
        for stem, (seconds, load, status) in earlier.items():
            if stem not in times:
                times[stem] = seconds
                loads.append(load)
                lines.insert(-1, f"| {stem} | {minutes(seconds)} | {load:.2f} | {status} |")
        lines[2:-1] = sorted(lines[2:-1])
        (out / "times.md").write_text("\n".join(lines) + "\n")
    table = evidence_table(ev_dir, times, args.profile, loads,
                           rerun=rerun if args.update and len(rerun) < len(times) else None)
    targets = [out / "EVIDENCE.md"]
    all_lessons = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    if args.evidence:
        if args.evidence.resolve() != targets[0].resolve():
            targets.append(args.evidence)
    elif args.profile == "cpu" and (not args.notebooks or (args.update and all_lessons <= set(times))):
        targets.append(ROOT / "EVIDENCE.md")
    for t in targets:
        t.write_text(table)
    print(table.splitlines()[-2])
    print("evidence table:", ", ".join(map(str, targets)))
    return 0 if all("| ok |" in line for line in lines[2:-1]) else 1


if __name__ == "__main__":
    sys.exit(main())

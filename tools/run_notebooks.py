"""Execute lesson notebooks under a profile, keep the executed copies and print a timing table.

    python tools/run_notebooks.py --profile cpu --out runs/cpu            # all 20 lessons
    python tools/run_notebooks.py --profile cpu --out runs/cpu notebooks/04_*.ipynb

Each notebook runs top to bottom on a fresh kernel (nbclient), one after the other so that
no two notebooks share the cores (their times would mean nothing). The executed notebook is written
to ``OUT/NN_topic.ipynb`` (outputs kept, for reading the numbers), and a Markdown table of
wall time, 1-minute load average at the end and status (an error, or a
run cut short by a time cap) to ``OUT/times.md``. CI does not run this; it is how the ``cpu``/``gpu``
profile evidence in the closing notes is produced.
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

from minseg.cost import load_average
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
    nbformat.write(nb, out / path.name)
    # fit warns when its time cap stops a run before its step budget: the lesson's numbers are
    # then not the profile's, so the table says so
    texts = (o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    if status == "ok" and any(CUT_SHORT in t for t in texts):
        status = "cut short by the time cap"
    return elapsed, status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", type=Path)
    p.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "gpu"))
    p.add_argument("--out", type=Path, default=None, help="default: runs/<profile>")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = p.parse_args(argv)

    os.environ["MINSEG_PROFILE"] = args.profile
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    out = args.out or ROOT / "runs" / args.profile
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"| notebook | {args.profile} time | load after | status |", "|---|---:|---:|---|"]
    total = 0.0
    for path in paths:
        elapsed, status = run_one(path.resolve(), out, args.timeout)
        total += elapsed
        load = load_average()
        lines.append(f"| {path.stem} | {elapsed // 60:.0f}:{elapsed % 60:02.0f} | {load:.2f} | "
                     f"{status} |")
        print(lines[-1], flush=True)
        (out / "times.md").write_text("\n".join(lines) + "\n")
    lines.append(f"| all {len(paths)} | {total // 60:.0f}:{total % 60:02.0f} | | |")
    (out / "times.md").write_text("\n".join(lines) + "\n")
    print(lines[-1])
    return 0 if all("| ok |" in line for line in lines[2:-1]) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The grading worker: runs one notebook in a fresh Jupyter kernel, then collects its functions.

Started by :mod:`minseg.grading.runner` as ``python worker.py JOB.json`` in a new session
(its own process group), *by path*, so it imports neither torch nor :mod:`minseg`. It

* limits its own address space, file size and core dumps (``resource.setrlimit``); the
  kernel it starts inherits the limits, so a notebook that allocates too much gets a
  ``MemoryError`` (or dies) instead of taking the machine down;
* becomes a *child subreaper* (Linux ``prctl``), so processes the notebook starts and
  orphans (double forks, ``setsid``) stay in its process tree, where the grader kills them;
* imports the exercise's ``PRELOAD`` modules (torch, minseg) first, without a tight time
  limit, so that the per-cell limit measures the student's code, not library imports;
* executes the notebook's code cells one by one with nbclient (``allow_errors``; cells that
  only call ``check(...)`` are skipped). A cell over the per-cell time limit is interrupted;
  if the kernel does not recover, or dies (``os._exit``, a crash), the kernel is restarted and
  the notebook re-run without that cell, so only what depends on it is lost;
* then runs one collector cell per task (``collect.py``), which writes the outputs of the
  student's function on the grader's inputs into the grader's folder;
* writes what happened (cell errors, time-outs, restarts) to ``events.jsonl``: notes for the
  feedback, never a source of points.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

CHECK_LINE = re.compile(r"^\s*(?:minseg\.grading\.)?check\(.*\)\s*;?\s*(?:#.*)?$")
PROBE_TIMEOUT_S = 10.0
PRELOAD_TIMEOUT_S = 300.0


# ------------------------------------------------------------------------------------------
# process control (also used by the grader to kill a worker's tree)
# ------------------------------------------------------------------------------------------
def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from ``/proc``; psutil when available)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:
        pass
    children: dict[int, list[int]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(pid: int, include_self: bool = True, rounds: int = 5) -> None:
    """SIGKILL ``pid``'s descendants (repeatedly: they may fork meanwhile), their process
    groups, and ``pid`` itself."""
    for _ in range(rounds):
        found = descendants(pid)
        if not found:
            break
        for p in found:
            for kill in (os.kill, os.killpg):
                try:
                    kill(p, signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass
        time.sleep(0.05)
    if include_self:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def _limit(resource_id: int, nbytes: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource_id)
    if hard != resource.RLIM_INFINITY:
        nbytes = min(nbytes, hard)
    try:
        resource.setrlimit(resource_id, (nbytes, hard))
    except (ValueError, OSError):
        pass


def _become_subreaper() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except Exception:
            pass


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


# ------------------------------------------------------------------------------------------
# running the notebook
# ------------------------------------------------------------------------------------------
class Restart(Exception):
    """The kernel died or stopped answering: start a fresh one."""


def is_check_cell(source: str) -> bool:
    """A cell whose every statement line is a ``check(...)`` call (a self-check)."""
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return bool(lines) and all(CHECK_LINE.match(ln) for ln in lines)


class Worker:
    def __init__(self, job: dict) -> None:
        self.job = job
        self.t0 = time.monotonic()
        self.deadline = self.t0 + float(job["time_limit_s"])
        self.events_path = Path(job["events"])
        self.skip: set[int] = set()  # notebook cells that killed or hung the kernel
        self.pending: list[str] = list(job["tasks"])

    def event(self, kind: str, **info) -> None:
        info = {"kind": kind, "t": round(time.monotonic() - self.t0, 2), **info}
        with self.events_path.open("a") as f:
            f.write(json.dumps(info) + "\n")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run_cell(self, client, cell, index: int, timeout: float) -> str:
        """Execute one cell: ``"ok"``, ``"error"``, ``"timeout"`` (kernel recovered) or raise
        :class:`Restart`."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        client.timeout = max(1, int(min(timeout, self.remaining())))
        try:
            client.execute_cell(cell, index)
        except CellTimeoutError:
            from jupyter_core.utils import run_sync

            run_sync(client.km.interrupt_kernel)()
            wait = int(max(3.0, min(PROBE_TIMEOUT_S, self.job["cell_timeout_s"])))
            try:
                # nbclient's channels lose IOPub messages after a time-out (every later cell
                # would then wait iopub_timeout): reconnect; waiting for the kernel to be
                # ready is also the test that the interrupt worked.
                client.kc.stop_channels()
                client.kc, client.startup_timeout, client.timeout = None, wait, wait
                client.start_new_kernel_client()
                client.execute_cell(self.probe_cell, self.probe_index)
            except Exception:
                raise Restart("the kernel did not respond after an interrupt") from None
            return "timeout"
        except DeadKernelError:
            raise Restart("the kernel died") from None
        except Exception as e:  # a broken channel, a zmq error: treat the kernel as lost
            raise Restart(f"{type(e).__name__}: {e}") from None
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        cell["outputs"] = []
        if errors:
            self.last_error = f"{errors[0].get('ename', '')}: {str(errors[0].get('evalue', ''))[:300]}"
            return "error"
        return "ok"

    def attempt(self, nb, code_cells: list[int]) -> None:
        from nbclient import NotebookClient

        client = NotebookClient(
            nb, kernel_name=self.job["kernel_name"], allow_errors=True, timeout=60,
            interrupt_on_timeout=False, shutdown_kernel="immediate", startup_timeout=120,
            iopub_timeout=4, resources={"metadata": {"path": self.job["scratch"]}})
        client.km = client.create_kernel_manager()
        try:
            client.start_new_kernel()
            client.start_new_kernel_client()
            if self.job.get("preload") and self.run_cell(
                    client, self.preload_cell, self.preload_index, PRELOAD_TIMEOUT_S) != "ok":
                self.event("preload_failed", detail=getattr(self, "last_error", ""))
            for i in code_cells:
                if i in self.skip:
                    continue
                if self.remaining() <= 0:
                    self.event("time_limit", cell=i)
                    self.pending.clear()
                    return
                try:
                    status = self.run_cell(client, nb.cells[i], i, self.job["cell_timeout_s"])
                except Restart as e:
                    self.skip.add(i)
                    self.event("kernel_lost", cell=i, detail=str(e))
                    raise
                if status == "error":
                    self.event("cell_error", cell=i, detail=self.last_error)
                elif status == "timeout":  # it would time out again on a re-run: skip it then
                    self.skip.add(i)
                    self.event("cell_timeout", cell=i, limit_s=self.job["cell_timeout_s"])
            if self.run_cell(client, self.setup_cell, self.setup_index, 120) != "ok":
                self.event("collector_failed", detail=getattr(self, "last_error", ""))
                self.pending.clear()
                return
            while self.pending:
                task = self.pending.pop(0)
                cell = self.task_cells[task]
                if self.remaining() <= 0:
                    self.event("time_limit", task=task)
                    self.pending.clear()
                    return
                limit = self.job.get("task_timeouts", {}).get(task, self.job["cell_timeout_s"])
                try:
                    status = self.run_cell(client, cell, self.task_index[task], limit)
                except Restart as e:
                    self.event("kernel_lost", task=task, detail=str(e))
                    raise
                if status == "timeout":
                    self.event("task_timeout", task=task, limit_s=limit)
                elif status == "error":
                    self.event("collector_error", task=task, detail=self.last_error)
        finally:
            self.shutdown(client)

    @staticmethod
    def shutdown(client) -> None:
        from jupyter_core.utils import run_sync

        try:
            if client.kc is not None:
                client.kc.stop_channels()
            if client.km is not None:
                run_sync(client.km.shutdown_kernel)(now=True)
        except Exception:
            pass
        kill_tree(os.getpid(), include_self=False)
        _reap()

    def main(self) -> int:
        import nbformat

        try:
            nb = nbformat.read(self.job["notebook"], as_version=4)
        except Exception as e:
            self.event("unreadable", detail=f"{type(e).__name__}: {str(e)[:300]}")
            return 0
        code_cells = [i for i, c in enumerate(nb.cells)
                      if c.cell_type == "code" and not is_check_cell(c.source)]
        for c in nb.cells:
            if c.cell_type == "code":
                c.outputs = []
        collect = json.dumps(self.job["collect_py"])
        request = json.dumps(self.job["request"])
        setup = (f"import importlib.util as _u\n"
                 f"_s = _u.spec_from_file_location('_minseg_collect', {collect})\n"
                 f"_m = _u.module_from_spec(_s); _s.loader.exec_module(_m)\n"
                 f"__minseg_collector__ = _m.Collector({request}, globals())\n"
                 f"del _u, _s, _m")
        preload = "".join(f"__import__('importlib').import_module({json.dumps(m)});\n"
                          for m in self.job.get("preload", []))
        extra = [nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell(setup),
                 nbformat.v4.new_code_cell(preload)]
        extra += [nbformat.v4.new_code_cell(f"__minseg_collector__.run({json.dumps(t)})")
                  for t in self.job["tasks"]]
        base = len(nb.cells)
        nb.cells.extend(extra)
        self.probe_index, self.setup_index = base, base + 1
        self.probe_cell, self.setup_cell = nb.cells[base], nb.cells[base + 1]
        self.preload_index, self.preload_cell = base + 2, nb.cells[base + 2]
        self.task_index = {t: base + 3 + k for k, t in enumerate(self.job["tasks"])}
        self.task_cells = {t: nb.cells[i] for t, i in self.task_index.items()}
        for _ in range(len(self.job["tasks"]) + 4):
            if not self.pending or self.remaining() <= 0:
                break
            try:
                self.attempt(nb, code_cells)
            except Restart:
                self.event("restart")
                continue
            except Exception as e:  # the kernel failed to start, ...
                self.event("worker_error", detail=f"{type(e).__name__}: {str(e)[:300]}")
                break
        return 0


def main(argv: list[str]) -> int:
    # nbformat imports jsonschema, whose optional RFC 3987 format checker builds a parser at
    # import time (over a second of CPU per notebook); notebooks never need it.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    job = json.loads(Path(argv[1]).read_text())
    mb = 1 << 20
    import resource

    _limit(resource.RLIMIT_AS, int(job["memory_mb"]) * mb)
    _limit(resource.RLIMIT_FSIZE, int(job["file_size_mb"]) * mb)
    _limit(resource.RLIMIT_CORE, 0)
    _become_subreaper()
    try:
        return Worker(job).main()
    finally:
        kill_tree(os.getpid(), include_self=False)
        _reap()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

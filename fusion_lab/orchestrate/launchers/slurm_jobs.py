"""What the slurm launcher asks SLURM and submitit, and how it says it: one folder per
submission, sbatch's refusal as one line, a task's end (state and the last lines of its
own error), the state of queued jobs (``squeue``, then ``sacct``), and submitit's log
lines on stderr (stdout is for tables and job ids)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import logging
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
          "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT")


def submission_folder(base: Path) -> Path:
    """A new folder for one submission under ``base``: submitit names its files by job id
    alone, and a cluster whose ids restarted would otherwise hand a new job an old job's
    result file."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return base / f"{stamp}-{secrets.token_hex(3)}"


class _ToStderr(logging.Handler):
    """Writes to the current ``sys.stderr`` (click's, under a test's capture too)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # noqa: BLE001 (logging must never raise)
            self.handleError(record)


def logs_to_stderr() -> None:
    """submitit's logger writes to stdout (and warnings twice); send it all to stderr once."""
    log = logging.getLogger("submitit")
    if any(isinstance(h, _ToStderr) for h in log.handlers):
        return
    for h in list(log.handlers):
        if isinstance(h, logging.StreamHandler):
            log.removeHandler(h)
    handler = _ToStderr()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s (%(asctime)s) - %(message)s"))
    log.addHandler(handler)
    log.propagate = False


@contextlib.contextmanager
def quiet_submitit() -> Iterator[None]:
    """When sbatch refuses, submitit logs an error of its own and copies sbatch's stderr to
    ours: the refusal is said once, by the caller. Anything else passes through."""
    # an optional package (the [slurm] extra), imported when the launcher is used
    from submitit.core.utils import FailedJobError

    log = logging.getLogger("submitit")
    level, buf = log.level, io.StringIO()
    log.setLevel(logging.CRITICAL + 1)
    try:
        with contextlib.redirect_stderr(buf):
            yield
    except FailedJobError:
        raise
    except BaseException:
        sys.stderr.write(buf.getvalue())
        raise
    else:
        sys.stderr.write(buf.getvalue())
    finally:
        log.setLevel(level)


def refusal(error: BaseException) -> str:
    """sbatch's reason from submitit's ``FailedJobError`` (its stderr), on one line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    said = [re.sub(r"^sbatch: error:\s*", "", ln) for ln in lines if ln.startswith("sbatch:")]
    said = [s for s in said if s] or lines[-1:] or [type(error).__name__]
    return "; ".join(dict.fromkeys(said))


def wait_all(jobs: list, first_s: float = 1.0, most_s: float = 15.0) -> None:
    """Wait until every task has ended: a result file ends a task at once; one sacct call
    per poll (every 1 s, growing to 15 s) tells the tasks that ended without one (failed,
    cancelled), which submitit alone notices only minutes later."""
    delay = first_s
    while True:
        left = [j for j in jobs if not j.done()]
        if not left:
            break
        left[0].done(force_check=True)  # one sacct call refreshes every task's state
        if all(j.done() for j in left):
            break
        time.sleep(delay)
        delay = min(most_s, delay * 1.5)
    _results_grace(jobs)


def _results_grace(jobs: list) -> None:
    """submitit waits up to 15 s for each missing result file (a shared filesystem may show
    it late), one task after the other: wait once, for all, and only for tasks that SLURM
    says completed (one that failed or was cancelled is said as such, with its stderr)."""
    def missing() -> list:
        return [j for j in jobs if not j.paths.result_pickle.exists()
                and task_state(j).split()[0] in ("COMPLETED", "UNKNOWN", "FINISHED")]

    grace = max((getattr(j, "_results_timeout_s", 0) for j in jobs), default=0)
    deadline = time.monotonic() + grace
    while missing() and time.monotonic() < deadline:
        time.sleep(0.5)
    for j in jobs:
        j._results_timeout_s = 0


def task_state(job: Any) -> str:
    """The task's state as SLURM (or submitit's local executor) tells it; UNKNOWN if not."""
    try:
        return str(job.state) or "UNKNOWN"
    except Exception:  # noqa: BLE001 (sacct may fail: the state is a courtesy)
        return "UNKNOWN"


def error_tail(path: Path, lines: int = 6) -> list[str]:
    """The last lines of a task's own stderr, without submitit's log lines."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    keep = [ln.rstrip() for ln in text.splitlines()
            if ln.strip() and not ln.startswith("submitit ")]
    return keep[-lines:]


def report_task(job: Any, label: str) -> None:
    """One task that ended without a result: its state and the last lines of its error."""
    state = task_state(job)
    try:
        tail = error_tail(job.paths.stderr)
    except Exception:  # noqa: BLE001
        tail = []
    how = "" if tail else " before it wrote anything"
    about = f" ({label})" if label else ""
    click.echo(f"task {job.job_id}{about} ended {state}{how}"
               + (":" if tail else ""), err=True)
    for ln in tail:
        click.echo(f"  | {ln}", err=True)


_RANGE = re.compile(r"^(\d+)_\[([^\]]+)\]$")


def _expand(job_id: str) -> list[str]:
    """``7_[0-2,5%4]`` (sacct's and squeue's pending array) -> 7_0, 7_1, 7_2, 7_5."""
    m = _RANGE.match(job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        a, _, b = part.partition("-")
        if a.isdigit() and (not b or b.isdigit()):
            out += [f"{m.group(1)}_{i}" for i in range(int(a), int(b or a) + 1)]
    return out


def _table(cmd: list[str]) -> dict[str, str] | None:
    """``ID|STATE`` lines of a SLURM command, ranges expanded; None when it cannot answer."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    out: dict[str, str] = {}
    for line in res.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        for one in _expand(jid):
            out[one] = state.split()[0] if state else "UNKNOWN"
    return out


def job_states(job_ids: list[str]) -> dict[str, str]:
    """The state of each job (``123`` or an array task ``123_4``) that SLURM knows:
    squeue for jobs in the queue, sacct for the others; ``GONE`` for a job that neither
    knows while squeue answers. Empty when SLURM cannot be asked (no squeue here)."""
    queue = _table(["squeue", "-h", "-r", "-o", "%i|%T"])
    if queue is None:
        return {}
    states = {j: queue[j] for j in job_ids if j in queue}
    rest = sorted({j.split("_")[0] for j in job_ids if j not in states})
    if rest:
        acct = _table(["sacct", "-n", "-X", "-P", "-j", ",".join(rest),
                       "-o", "JobID,State"]) or {}
        for j in job_ids:
            if j not in states:
                states[j] = acct.get(j) or acct.get(j.split("_")[0]) or "GONE"
    return states


def is_active(state: str) -> bool:
    return state in ACTIVE

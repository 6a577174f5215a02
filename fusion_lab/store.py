"""The results store: where things are stored, run identity, atomic writes, claims and
run status (no torch).

Every path and file name of the results folder is spelled here and only here:
``results/<study>/study.json`` and ``cost.json``, and per run
``results/<study>/<run id>/`` with ``config.json``, ``metrics.jsonl``, ``summary.json``,
``checkpoint.pt``, ``error.log`` and ``claim``. The format is documented in
docs/results-format.md.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"

# In a study's folder
STUDY_JSON = "study.json"  # the plan: rows, run ids, seeds, baseline, reference
COST_JSON = "cost.json"  # fusionlab bench's cost profile
# In a run's folder
CONFIG_JSON = "config.json"  # identity and resolved config, written before training
METRICS_JSONL = "metrics.jsonl"  # one line per finished epoch
SUMMARY_JSON = "summary.json"  # status and result, written last
CHECKPOINT = "checkpoint.pt"  # the last finished epoch's state (torch.save)
BEST_WEIGHTS = "best.pt"  # weights of the best-validation epoch (with a validation split)
ERROR_LOG = "error.log"  # the traceback of a failed run
CLAIM = "claim"  # the process training the run


def study_dir(results: str | Path, study: str) -> Path:
    """The folder of a study's results: ``results/<study>``."""
    return Path(results) / study


def run_dir(results: str | Path, study: str, run_id: str) -> Path:
    """The folder of one run: ``results/<study>/<run id>``."""
    return Path(results) / study / run_id


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def digest(obj: Any) -> str:
    """Full-length SHA-256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def run_ids(result_config: dict[str, Any]) -> tuple[str, str]:
    """(run_id, group_id) of a config dict already stripped of non-result keys."""
    without_seed = {k: v for k, v in result_config.items() if k != "seed"}
    return digest(result_config), digest(without_seed)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically: temp file in the same folder, fsync, rename."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def append_jsonl(path: str | Path, obj: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json(path: str | Path) -> Any | None:
    """The parsed file, or None if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: str | Path) -> list[dict]:
    """Every complete line of a JSON-lines file (a torn last line is ignored)."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_is_live(claim: dict | None) -> bool:
    """A claim is live if its process still runs (or it was made on another host)."""
    if not claim:
        return False
    if claim.get("host") != socket.gethostname():
        return True  # cannot check another machine's processes: assume it runs
    pid = claim.get("pid")
    return isinstance(pid, int) and _pid_alive(pid)


def try_claim(run_dir: str | Path) -> bool:
    """Atomically claim a run folder for this process; False if a live process holds it.

    The claim is a file created with O_EXCL; a stale claim (its process is gone) is
    replaced, by renaming it away first so that two processes cannot both take it over.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM
    body = canonical_json({"pid": os.getpid(), "host": socket.gethostname(), "time": now()})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
            existing = read_json(path)
            if existing is None:
                # Another process is between creating and writing the claim: it is live
                # unless the file has been empty for a while (a crash right at claim time).
                try:
                    age = _dt.datetime.now().timestamp() - path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < 10:
                    return False
            elif claim_is_live(existing):
                return False
            stale = run_dir / f".claim.stale.{os.getpid()}"
            try:
                os.rename(path, stale)  # only one process wins this rename
            except FileNotFoundError:
                continue
            stale.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(body)
        return True
    return False


def release_claim(run_dir: str | Path) -> None:
    path = Path(run_dir) / CLAIM
    claim = read_json(path)
    if claim and claim.get("pid") == os.getpid() and claim.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def run_status(run_dir: str | Path) -> str:
    """done | failed | running | pending (see docs/results-format.md)."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / SUMMARY_JSON)
    if summary and summary.get("status") in (DONE, FAILED):
        return summary["status"]
    if claim_is_live(read_json(run_dir / CLAIM)):
        return RUNNING
    return PENDING

"""The results store: where things are stored, run identity, atomic writes, claims
(leases) and run status. This package imports only the standard library and
``fusion_lab.errors`` (no torch); its ``lease`` module keeps a claim alive.

Every path and file name of the results folder is spelled here and only here:
``results/<study>/study.json`` and ``cost.json``, and per run
``results/<study>/<run id>/`` with ``config.json``, ``metrics.jsonl``, ``summary.json``,
``checkpoint.pt``, ``error.log``, ``claim`` and the claim holder's ``.beat-<token>``.

A claim is a lease: it names its host, pid, start time, a random token and the lease
length; the process holding it refreshes a heartbeat file (see ``fusion_lab.store.lease``). A
claim whose heartbeat is older than its lease (plus an allowance for clock skew between
nodes) is stale on any host; on its own host a dead pid is stale at once. The format is
documented in docs/results-format.md.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"
INTERRUPTED = "interrupted"  # stopped by SIGTERM/SIGINT (or a scheduler); resumes on rerun

LEASE_S = 300.0  # a claim whose heartbeat is older than this is stale, on any host
HEARTBEAT_S = 30.0  # how often the training process refreshes its heartbeat
CLOCK_SKEW_S = 60.0  # allowance for clocks that differ between the nodes of a cluster


class ClaimLost(Exception):
    """This process no longer holds its run's claim (another process took it over)."""


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
CLAIM = "claim"  # the process training the run (a lease)
QUEUED_JSON = "queued.json"  # a cluster task submitted for the run and not started yet


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


def _ts(value: Any) -> float | None:
    """Seconds since the epoch from a float or an ISO time; None if neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return _dt.datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def beat_path(run_dir: str | Path, token: str) -> Path:
    return Path(run_dir) / f".beat-{token}"


def read_claim(run_dir: str | Path) -> dict | None:
    """The claim of a run folder with ``beat`` (its last heartbeat, epoch seconds) filled in."""
    claim = read_json(Path(run_dir) / CLAIM)
    if not isinstance(claim, dict):
        return claim
    beats = [_ts(claim.get("ts")), _ts(claim.get("time"))]
    if isinstance(claim.get("token"), str):
        beat = read_json(beat_path(run_dir, claim["token"]))
        if isinstance(beat, dict):
            beats.append(_ts(beat.get("ts")))
    known = [b for b in beats if b is not None]
    claim["beat"] = max(known) if known else None
    return claim


def claim_is_live(claim: dict | None, now: float | None = None,
                  skew_s: float = CLOCK_SKEW_S) -> bool:
    """Whether a claim (from ``read_claim``) still holds its run.

    On this host a dead pid makes it stale at once. On any host, a heartbeat older than the
    claim's lease (``lease_s``; claims written before leases existed get ``LEASE_S`` and are
    judged by their start time when made on another host) plus ``skew_s`` makes it stale.
    """
    if not claim:
        return False
    lease = claim.get("lease_s")
    if claim.get("host") == socket.gethostname():
        pid = claim.get("pid")
        if not (isinstance(pid, int) and _pid_alive(pid)):
            return False
        if lease is None:
            return True  # an old-style claim of a live local process
    elif lease is None:
        lease = LEASE_S
    beat = claim.get("beat", _ts(claim.get("time")))
    if beat is None:
        return claim.get("host") == socket.gethostname()
    age = (time.time() if now is None else now) - beat
    return age <= float(lease) + skew_s


def try_claim(run_dir: str | Path, lease_s: float = LEASE_S) -> str | None:
    """Atomically claim a run folder for this process: its token, or None if a live claim holds it.

    The claim is a file created with O_EXCL; a stale claim (dead process, or heartbeat
    older than its lease) is replaced, by renaming it away first so that two processes
    cannot both take it over.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM
    token = uuid.uuid4().hex
    body = canonical_json({"pid": os.getpid(), "host": socket.gethostname(), "time": now(),
                           "ts": time.time(), "token": token, "lease_s": float(lease_s)})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
            existing = read_claim(run_dir)
            if existing is None:
                # Another process is between creating and writing the claim: it is live
                # unless the file has been empty for a while (a crash right at claim time).
                try:
                    age = _dt.datetime.now().timestamp() - path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < 10:
                    return None
            elif claim_is_live(existing):
                return None
            stale = run_dir / f".claim.stale.{os.getpid()}"
            try:
                os.rename(path, stale)  # only one process wins this rename
            except FileNotFoundError:
                continue
            old = read_json(stale)
            if isinstance(old, dict) and isinstance(old.get("token"), str):
                beat_path(run_dir, old["token"]).unlink(missing_ok=True)
            stale.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        return token
    return None


def owns_claim(run_dir: str | Path, token: str) -> bool:
    claim = read_json(Path(run_dir) / CLAIM)
    return isinstance(claim, dict) and claim.get("token") == token


def release_claim(run_dir: str | Path, token: str | None = None) -> None:
    """Remove this process's claim (the one with ``token``); never another process's."""
    path = Path(run_dir) / CLAIM
    claim = read_json(path)
    if token is not None:
        beat_path(run_dir, token).unlink(missing_ok=True)
        if isinstance(claim, dict) and claim.get("token") == token:
            path.unlink(missing_ok=True)
        return
    if claim and claim.get("pid") == os.getpid() and claim.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def run_status(run_dir: str | Path) -> str:
    """done | failed | running | interrupted | pending (see docs/results-format.md)."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / SUMMARY_JSON)
    if summary and summary.get("status") in (DONE, FAILED):
        return summary["status"]
    if claim_is_live(read_claim(run_dir)):
        return RUNNING
    if summary and summary.get("status") == INTERRUPTED:
        return INTERRUPTED
    return PENDING


def needs_training(status: str, retry_failed: bool = False) -> bool:
    """Whether a run with this ``run_status`` is one to train: anything not done, except a
    failed run unless ``retry_failed`` (``--retry-failed``). A running run counts: its claim
    decides, under the claim, who trains it."""
    return status != DONE and (status != FAILED or retry_failed)

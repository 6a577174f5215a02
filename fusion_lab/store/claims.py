"""Claims (leases) on run folders: taking, judging, taking over and releasing them (no torch).

A claim is a file created with O_EXCL and never rewritten; its holder refreshes a heartbeat
file beside it (``fusion_lab.store.lease``). Every name here is re-exported by
``fusion_lab.store``; call them as ``store.try_claim(...)`` etc.

Taking over a stale claim is a compare-and-swap on the claim's exact bytes: the process
that creates the takeover lock ``.claim.takeover.<digest of the stale claim>.<n>`` (O_EXCL,
so one process per stale claim) checks that the claim file still holds those bytes, renames
it to a unique name, and only then creates its own claim with O_EXCL. A process that judged
the same claim stale a moment later finds the lock, or finds other bytes, and backs off; it
never removes the claim that replaced the stale one. A lock left by a process that died
mid-takeover (older than ``TAKEOVER_S``) is passed over by creating lock ``n + 1``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from fusion_lab.errors import FusionLabWarning
from fusion_lab.store import (
    CLAIM,
    CLAIM_TAKEOVER,
    CLOCK_SKEW_S,
    LEASE_S,
    canonical_json,
    now,
    read_json,
)

TAKEOVER_S = 30.0  # a takeover lock this old belongs to a process that died mid-takeover
_BEING_WRITTEN_S = 10.0  # an empty/unparsable claim younger than this is being written


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


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def beat_path(run_dir: str | Path, token: str) -> Path:
    return Path(run_dir) / f".beat-{token}"


def _parse_claim(run_dir: Path, raw: bytes | None) -> dict | None:
    """A claim from its bytes: None while unreadable (missing, empty, torn), {} if corrupt."""
    try:
        claim = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if raw is not None and not isinstance(claim, dict):
        warnings.warn(FusionLabWarning(
            f"{run_dir / CLAIM} is not a claim (JSON but not an object): treated as a stale "
            "claim, which the next `fusionlab run` replaces"), stacklevel=2)
        return {}
    if claim is None:
        return None
    beats = [_ts(claim.get("ts")), _ts(claim.get("time"))]
    beat_file = None
    if isinstance(claim.get("token"), str):
        beat_file = beat_path(run_dir, claim["token"])
        beat = read_json(beat_file)
        if isinstance(beat, dict):
            beats.append(_ts(beat.get("ts")))
    known = [b for b in beats if b is not None]
    claim["beat"] = max(known) if known else None
    # this host's file system's word on the last heartbeat, for a beat written by a fast clock
    mtimes = [m for m in (_mtime(run_dir / CLAIM), beat_file and _mtime(beat_file)) if m]
    claim["beat_mtime"] = max(mtimes) if mtimes else None
    return claim


def read_claim(run_dir: str | Path) -> dict | None:
    """The claim of a run folder with ``beat`` (its last heartbeat, epoch seconds) filled in.

    None when there is no readable claim; ``{}`` (stale, with a warning) when the file holds
    JSON that is not an object. ``beat_mtime`` is the heartbeat file's (else the claim's)
    modification time.
    """
    return _parse_claim(Path(run_dir), _read_bytes(Path(run_dir) / CLAIM))


def claim_is_live(claim: dict | None, now: float | None = None,
                  skew_s: float = CLOCK_SKEW_S) -> bool:
    """Whether a claim (from ``read_claim``) still holds its run.

    On this host a dead pid makes it stale at once. On any host, a heartbeat older than the
    claim's lease (``lease_s``; claims written before leases existed get ``LEASE_S`` and are
    judged by their start time when made on another host) plus ``skew_s`` makes it stale.
    A heartbeat more than ``skew_s`` in the future (a node whose clock ran ahead) is not
    believed: the heartbeat file's modification time on this host's file system is used.
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
    now = time.time() if now is None else now
    if beat > now + skew_s and claim.get("beat_mtime") is not None:
        beat = claim["beat_mtime"]
    return now - beat <= float(lease) + skew_s


def _take_over(run_dir: Path, raw: bytes) -> bool:
    """Remove the stale claim whose bytes are ``raw``; False if another process is at it.

    True means: try to create the claim again (it is gone, or it changed under us).
    """
    key = hashlib.sha256(raw).hexdigest()[:32]
    for n in range(100):
        lock = run_dir / f"{CLAIM_TAKEOVER}.{key}.{n}"
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            break
        except FileExistsError:
            age = time.time() - (_mtime(lock) or time.time())
            if age < TAKEOVER_S:
                return False  # another process is taking this claim over right now
    else:
        return False
    path = run_dir / CLAIM
    try:
        if _read_bytes(path) != raw:
            return True  # no longer the claim judged stale: judge again
        moved = run_dir / f".claim.stale.{uuid.uuid4().hex}"
        try:
            os.rename(path, moved)
        except FileNotFoundError:
            return True
        old = _parse_claim(run_dir, _read_bytes(moved)) if raw else None
        if old and isinstance(old.get("token"), str):
            beat_path(run_dir, old["token"]).unlink(missing_ok=True)
        moved.unlink(missing_ok=True)
        return True
    finally:
        lock.unlink(missing_ok=True)


def try_claim(run_dir: str | Path, lease_s: float = LEASE_S) -> str | None:
    """Atomically claim a run folder for this process: its token, or None if a live claim holds it.

    The claim is a file created with O_EXCL; a stale claim (dead process, heartbeat older
    than its lease, or not a claim at all) is taken over as the module docstring says, so
    that exactly one of the processes that judged it stale gets the run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM
    token = uuid.uuid4().hex
    body = canonical_json({"pid": os.getpid(), "host": socket.gethostname(), "time": now(),
                           "ts": time.time(), "token": token, "lease_s": float(lease_s)})
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
            raw = _read_bytes(path)
            if raw is None:
                continue  # released meanwhile
            existing = _parse_claim(run_dir, raw)
            if existing is None:
                # Another process is between creating and writing the claim: it is live
                # unless the file has been unreadable for a while (a crash at claim time).
                age = time.time() - (_mtime(path) or time.time())
                if age < _BEING_WRITTEN_S:
                    return None
            elif claim_is_live(existing):
                return None
            if not _take_over(run_dir, raw):
                return None
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
    if (isinstance(claim, dict) and claim.get("pid") == os.getpid()
            and claim.get("host") == socket.gethostname()):
        path.unlink(missing_ok=True)

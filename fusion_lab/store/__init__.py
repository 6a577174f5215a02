"""The results store: where things are stored, run identity, atomic writes, claims
(leases) and run status. This package imports only the standard library and
``fusion_lab.errors`` (no torch); its ``lease`` module keeps a claim alive.

Every path and file name of the results folder is spelled here and only here:
``results/<study>/study.json`` and ``cost.json``, a tag's namespace
``results/<study>/tags/<tag>/`` (laid out as a study's own folder), and per run
``results/<study>/<run id>/`` with ``config.json``, ``metrics.jsonl``, ``summary.json``,
``checkpoint.pt`` (and ``checkpoint.prev.pt`` while it is replaced), ``error.log``,
``claim``, the claim holder's ``.beat-<token>`` and ``.claim.takeover.*`` while a stale claim
is taken over (see ``fusion_lab.store.claims``).

A claim is a lease: it names its host, pid, start time, a random token and the lease
length; the process holding it refreshes a heartbeat file (see ``fusion_lab.store.lease``). A
claim whose heartbeat is older than its lease (plus an allowance for clock skew between
nodes) is stale on any host; on its own host a dead pid is stale at once. The format is
documented in docs/results-format.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fusion_lab.errors import FusionLabError, FusionLabWarning

DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"
INTERRUPTED = "interrupted"  # stopped by SIGTERM/SIGINT (or a scheduler); resumes on rerun

LEASE_S = 300.0  # a claim whose heartbeat is older than this is stale, on any host
HEARTBEAT_S = 30.0  # how often the training process refreshes its heartbeat
CLOCK_SKEW_S = 60.0  # allowance for clocks that differ between the nodes of a cluster


class ClaimLost(Exception):
    """This process no longer holds its run's claim (another process took it over)."""


class StorageError(FusionLabError, OSError):
    """A write the file system refused: full, read-only, no permission (one ``error:``
    line; an ``OSError`` too, for the code that tolerates a failed write)."""


# what each storage errno means for a user
STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EROFS: "the file system is read-only",
                  errno.EACCES: "no permission to write there",
                  errno.EPERM: "no permission to write there"}


def storage_error(e: BaseException, path: str | Path | None = None) -> StorageError | None:
    """``e`` as a ``StorageError`` (one line: the path, what is wrong, what to do) if it is
    a storage fault (``STORAGE_ERRNOS``), else None."""
    if isinstance(e, StorageError):
        return e
    if not isinstance(e, OSError) or e.errno not in STORAGE_ERRNOS:
        return None
    err = StorageError(
        f"cannot write {path or e.filename or 'the results folder'}: "
        f"{STORAGE_ERRNOS[e.errno]} ({e.strerror}); free space or make it writable (or "
        "use --results elsewhere), then rerun: results already written are kept and an "
        "unfinished run resumes")
    err.errno = e.errno
    return err


# In a study's folder
STUDY_JSON = "study.json"  # the plan: rows, run ids, seeds, baseline, reference
COST_JSON = "cost.json"  # fusionlab bench's cost profile
# In a run's folder
CONFIG_JSON = "config.json"  # identity and resolved config, written before training
METRICS_JSONL = "metrics.jsonl"  # one line per finished epoch
SUMMARY_JSON = "summary.json"  # status and result, written last
CHECKPOINT = "checkpoint.pt"  # the last finished epoch's state (torch.save)
CHECKPOINT_PREV = "checkpoint.prev.pt"  # the one before, kept while checkpoint.pt is replaced
BEST_WEIGHTS = "best.pt"  # weights of the best-validation epoch (with a validation split)
ERROR_LOG = "error.log"  # the traceback of a failed run
CLAIM = "claim"  # the process training the run (a lease)
CLAIM_TAKEOVER = ".claim.takeover"  # <name>.<digest>.<n>: a stale claim being taken over
QUEUED_JSON = "queued.json"  # a cluster task submitted for the run and not started yet


# A study's tags: results/<study>/tags/<tag>/, each laid out as a study's own folder (its
# study.json, its run folders), for runs that must not mix with the study's own table
TAGS = "tags"
SCRATCH_TAG = "scratch"  # where `run --set` puts runs that are not the study's as written
TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


def tag_problem(tag: str) -> str | None:
    """Why ``tag`` is no tag name (letters, digits, ``-``, ``_``, ``.``; up to 40, starting
    with a letter or digit), or None."""
    if isinstance(tag, str) and TAG_PATTERN.fullmatch(tag):
        return None
    return (f"--tag {tag!r} is not a tag name: use up to 40 letters, digits, '-', '_' or "
            "'.', starting with a letter or digit (e.g. --tag smoke)")


def tagged_name(study: str, tag: str | None) -> str:
    """The name of a study's tag, ``<study>/tags/<tag>`` (its folder under the results
    folder); the study's own name without a tag."""
    return f"{study}/{TAGS}/{tag}" if tag else study


def study_tags(study_folder: str | Path) -> list[tuple[str, int]]:
    """The tags of a study (its results folder): each tag holding a study.json, with how
    many run folders it holds, by name."""
    out = []
    for plan in sorted(Path(study_folder).glob(f"{TAGS}/*/{STUDY_JSON}")):
        runs = sum(1 for p in plan.parent.iterdir() if (p / CONFIG_JSON).is_file())
        out.append((plan.parent.name, runs))
    return out


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


def write_text(path: str | Path, text: str, errors: str = "strict") -> None:
    """Write text atomically (UTF-8; ``errors`` as ``open``'s: "backslashreplace" for text
    that may hold undecodable file names); the file's mode follows the umask (0666 &
    ~umask), as open's."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    with temp_file_for(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8", errors=errors) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


@contextlib.contextmanager
def temp_file_for(path: Path, tmp: Path) -> Iterator[None]:
    """Writing ``path`` through ``tmp``: on any error the temp file is removed, and a full
    or read-only disk (``storage_error``) is raised as one ``StorageError``."""
    try:
        yield
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        stored = storage_error(e, path)
        if stored is not None and stored is not e:
            raise stored from e
        raise


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one JSON line (a line torn by a failed write is ignored by ``read_jsonl``)."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        stored = storage_error(e, path)
        if stored is not None and stored is not e:
            raise stored from e
        raise


def read_json(path: str | Path) -> Any | None:
    """The parsed file, or None if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: str | Path) -> list[dict]:
    """Every JSON-object line of a JSON-lines file.

    A torn last line (a process killed while appending) is ignored; any other line that is
    not a JSON object is skipped with one warning for the file, and the lines after it kept.
    """
    rows: list[dict] = []
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return rows
    lines = text.splitlines()
    bad = 0
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif line.strip() and not (i == len(lines) - 1 and not text.endswith("\n")):
            bad += 1
    if bad:
        warnings.warn(FusionLabWarning(
            f"{path}: skipped {bad} unreadable line(s) (not a JSON object); the other "
            f"{len(rows)} lines are kept"), stacklevel=2)
    return rows


# The claim code lives in ``claims``, which uses the names above; re-exported here.
from fusion_lab.store.claims import (  # noqa: E402
    beat_path,
    claim_is_live,
    owns_claim,
    read_claim,
    release_claim,
    try_claim,
)

__all__ = ["beat_path", "claim_is_live", "owns_claim", "read_claim", "release_claim",
           "try_claim"]


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

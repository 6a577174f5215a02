"""How a run that trained is recorded when it did not simply finish: interrupted (a
signal), failed (an error: error.log and the summary), or stopped by the disk (full or
read-only: a ``store.StorageError``). Recording never fails itself: a file name that is not
UTF-8 is spelled with backslashes (``printable``), a file that cannot be written is a
warning or leaves the run resumable.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import click

from fusion_lab import store
from fusion_lab.errors import FusionLabError
from fusion_lab.store.lease import Lease, RunInterrupted


def record_interrupted(d: Path, lease: Lease, summary: dict[str, Any],
                       e: BaseException) -> None:
    """Record a run stopped by a signal as interrupted (if its claim is still this one's).

    SystemExit: submitit's requeue on the scheduler's signal exits this way; its
    UncompletedJobError: the signal came but the task is not requeued.
    """
    if lease.lost or not store.owns_claim(d, lease.token):
        return
    last = store.read_jsonl(d / store.METRICS_JSONL)
    why = (str(e) if isinstance(e, RunInterrupted) else
           "interrupted by SIGINT" if isinstance(e, KeyboardInterrupt) else
           "stopped by the scheduler (requeued)" if isinstance(e, SystemExit)
           else f"stopped by the scheduler, not requeued: {e}")
    summary.update(status=store.INTERRUPTED, error=why, final=None, best_val=None,
                   last_epoch=last[-1] if last else None, finished=store.now(),
                   trained_by=who())
    store.write_json(d / store.SUMMARY_JSON, summary)


def record_failure(d: Path, summary: dict[str, Any], msg: str, log: str) -> None:
    """A failed run's error.log and summary fields (the summary is written by the caller).
    Never fails: a file name that is not UTF-8 is spelled with backslashes, and an
    error.log that cannot be written is one warning (the summary says why the run failed)."""
    try:
        store.write_text(d / store.ERROR_LOG, printable(log), errors="backslashreplace")
    except (OSError, FusionLabError) as e:
        click.echo(f"warning: could not write {d / store.ERROR_LOG}: {e}", err=True)
    last = store.read_jsonl(d / store.METRICS_JSONL)
    summary.update(status=store.FAILED, error=msg, final=None, best_val=None,
                   last_epoch=last[-1] if last else None)


def record_storage_fault(d: Path, lease: Lease, summary: dict[str, Any],
                         e: store.StorageError) -> None:
    """A run stopped by a full or read-only disk: its temp files removed, recorded as
    failed if its summary can still be written (else left resumable); no error.log (the
    one line says it all). The study then stops: every following run would fail too."""
    for tmp in d.glob(".*.tmp"):  # ours: the claim keeps others out of this folder
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    last = store.read_jsonl(d / store.METRICS_JSONL)
    summary.update(status=store.FAILED, error=str(e), final=None, best_val=None,
                   last_epoch=last[-1] if last else None, finished=store.now(),
                   trained_by=who())
    try:
        write_summary(d, lease, summary)
    except OSError:
        pass  # no room even for the summary: the run stays resumable


def write_summary(d: Path, lease: Lease, summary: dict[str, Any]) -> None:
    """Write the run's summary, unless another process took its claim over meanwhile."""
    try:
        lease.check()
    except store.ClaimLost as e:
        click.echo(f"warning: {e}", err=True)
        return
    store.write_json(d / store.SUMMARY_JSON, summary)


def who() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": platform.node()}


def error_message(e: BaseException) -> str:
    # here, not at the top: a cluster task records a refusal before anything imports torch
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        return ("OutOfMemoryError: the GPU ran out of memory; lower train.batch_size or "
                "train.image_size, or use train.amp=bf16")
    return printable(f"{type(e).__name__}: {e}".strip())


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot spell (a file name's undecodable bytes, which Python
    holds as surrogates) spelled with backslashes: b"bad\\xff.jpg" reads bad\\xff.jpg."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an undecodable byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")

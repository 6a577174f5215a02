"""Run a study's planned runs: train what is missing, failed or interrupted, in this process
or in one worker process per GPU (planning is in ``fusion_lab.plan.planning``, training in
``fusion_lab.training.train``, the results folder's layout in ``fusion_lab.store``, other places to
train in ``fusion_lab.orchestrate.launchers``).

Every run folder is claimed atomically (a lease, kept alive by a heartbeat) before
training, so several ``fusionlab run`` processes, on one host or many sharing a results
folder, never train the same run. A failing run is recorded and the study goes on.
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fusion_lab import store
from fusion_lab.config import to_dict
from fusion_lab.errors import FusionLabError
from fusion_lab.plan.study import PlannedRun, Study, study_plan
from fusion_lab.store.lease import Lease, RunInterrupted, ignored, interrupts
from fusion_lab.training.provenance import plugin_files, record


@dataclass
class Outcome:
    trained: list[PlannedRun] = field(default_factory=list)
    failed: list[tuple[PlannedRun, str]] = field(default_factory=list)
    skipped: list[tuple[PlannedRun, str]] = field(default_factory=list)
    train_s: float = 0.0  # time inside runs' setup and epochs (the work itself)
    wall_s: float = 0.0


def run_dir(results: Path, study: Study, r: PlannedRun) -> Path:
    return store.run_dir(results, study.name, r.run_id)


def identity(study: Study, r: PlannedRun) -> dict[str, Any]:
    return {"run_id": r.run_id, "group_id": r.group_id, "study": study.name, "label": r.label,
            "grid": r.grid, "seed": r.seed}


def train_study(study: Study, runs: list[PlannedRun], results: Path, device: str = "auto",
                fail_fast: bool = False, retry_failed: bool = False,
                progress: Any = None, lease_s: float = store.LEASE_S,
                only: set[str] | None = None) -> Outcome:
    """Train every run that is not done (nor failed, unless ``retry_failed``) in this process
    (``only``: of these run ids; the study's plan still lists every run).

    Each run is trained under a lease (``fusion_lab.store.lease``). SIGTERM/SIGINT record the run
    as interrupted, release its claim and propagate (``RunInterrupted``); a run whose claim
    was taken over by another process stops without writing anything more.
    """
    t0 = time.perf_counter()
    out = Outcome()
    from fusion_lab.training import ddp

    group = ddp.current()
    if group.main:
        store.write_json(store.study_dir(results, study.name) / store.STUDY_JSON,
                         study_plan(study, runs))
    todo = []
    for r in runs if only is None else [r for r in runs if r.run_id in only]:
        status = store.run_status(run_dir(results, study, r))
        if status == store.DONE or (status == store.FAILED and not retry_failed):
            out.skipped.append((r, status))
        else:
            todo.append(r)
    if group.active:  # every process works through process 0's list
        ids = set(ddp.broadcast([r.run_id for r in todo], group))
        todo = [r for r in runs if r.run_id in ids]
    if progress is not None:
        progress.start_study(study.name, len(runs), len(todo))
    plugins = plugin_files(study.plugins, study.path.parent if study.path else None)
    for r in todo:
        train_one(study, r, results, out, device=device, retry_failed=retry_failed,
                  progress=progress, lease_s=lease_s, plugins=plugins)
        if ddp.broadcast(bool(out.failed and fail_fast), group):
            break
    out.wall_s = time.perf_counter() - t0
    return out


def train_one(study: Study, r: PlannedRun, results: Path, out: Outcome, device: str = "auto",
              retry_failed: bool = False, progress: Any = None, lease_s: float = store.LEASE_S,
              plugins: list[Path] | None = None) -> None:
    """Claim, train and record one run (its outcome goes into ``out``)."""
    from fusion_lab.training import ddp
    from fusion_lab.training.train import train_run

    group = ddp.current()
    d = run_dir(results, study, r)
    if not group.main:  # DDP: process 0 claims, records and decides; this one trains along
        if ddp.broadcast(None, group):
            try:
                with ignored():  # process 0 handles SIGTERM/SIGINT for the group
                    train_run(d, r.config, r.run_id, device=device)
            except (store.ClaimLost, FusionLabError):
                pass  # process 0 records what happened
        return
    token = store.try_claim(d, lease_s=lease_s)
    if not token:
        ddp.broadcast(False, group)
        out.skipped.append((r, store.RUNNING))
        return
    lease = Lease(d, token, interval_s=min(store.HEARTBEAT_S, lease_s / 4))
    try:
        with lease, interrupts():
            status = store.run_status(d)  # re-read under the claim: another process may have won
            if status == store.DONE or (status == store.FAILED and not retry_failed):
                ddp.broadcast(False, group)
                out.skipped.append((r, status))
                return
            ddp.broadcast(True, group)
            (d / store.SUMMARY_JSON).unlink(missing_ok=True)
            store.write_json(d / store.CONFIG_JSON, {**identity(study, r), "config": to_dict(r.config)})
            if progress is not None:
                progress.start_run(r)
            summary = {**identity(study, r), "status": store.DONE, "error": None}
            try:
                result = train_run(d, r.config, r.run_id, device=device, progress=progress,
                                   before_write=lease.check)
            except (RunInterrupted, KeyboardInterrupt, SystemExit, _NotRequeued) as e:
                # SystemExit: submitit's requeue on the scheduler's signal exits this way;
                # its UncompletedJobError: the signal came but the task is not requeued
                if not lease.lost and store.owns_claim(d, token):
                    last = store.read_jsonl(d / store.METRICS_JSONL)
                    why = (str(e) if isinstance(e, RunInterrupted) else
                           "interrupted by SIGINT" if isinstance(e, KeyboardInterrupt) else
                           "stopped by the scheduler (requeued)" if isinstance(e, SystemExit)
                           else f"stopped by the scheduler, not requeued: {e}")
                    summary.update(status=store.INTERRUPTED, error=why, final=None, best_val=None,
                                   last_epoch=last[-1] if last else None,
                                   finished=store.now(), trained_by=_who())
                    store.write_json(d / store.SUMMARY_JSON, summary)
                raise
            except store.ClaimLost as e:
                out.skipped.append((r, "lost"))
                click.echo(f"warning: {e}", err=True)
                return
            except Exception as e:  # recorded, and the study goes on
                msg = _error_message(e)
                (d / store.ERROR_LOG).write_text(traceback.format_exc())
                last = store.read_jsonl(d / store.METRICS_JSONL)
                summary.update(status=store.FAILED, error=msg, final=None, best_val=None,
                               last_epoch=last[-1] if last else None)
                out.failed.append((r, msg))
                if progress is not None:
                    progress.end_run(r, None, msg)
            else:
                summary.update(result)
                out.trained.append(r)
                out.train_s += result["setup_s"] + result["train_time_s"]
                if progress is not None:
                    progress.end_run(r, result, None)
            summary.update(record(plugins or []), finished=store.now(), trained_by=_who())
            try:
                lease.check()
            except store.ClaimLost as e:
                click.echo(f"warning: {e}", err=True)
                return
            store.write_json(d / store.SUMMARY_JSON, summary)
    finally:
        store.release_claim(d, token)


try:  # raised by submitit's signal handler when a timed-out task is not requeued
    from submitit.core.utils import UncompletedJobError as _NotRequeued
except ImportError:
    class _NotRequeued(Exception):  # type: ignore[no-redef]
        """Stands in for submitit's UncompletedJobError when submitit is absent."""


def _who() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": platform.node()}


def _error_message(e: BaseException) -> str:
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        return ("OutOfMemoryError: the GPU ran out of memory; lower train.batch_size or "
                "train.image_size, or use train.amp=bf16")
    return f"{type(e).__name__}: {e}".strip()

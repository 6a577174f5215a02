"""Train a study's planned runs in this process: what is missing, failed or interrupted
(``store.needs_training``), after the one rule for where runs may train (``check_device``).
The orchestrator is ``fusion_lab.orchestrate.study_run``, planning is in
``fusion_lab.plan.planning``, training in ``fusion_lab.training.train``, the results
folder's layout in ``fusion_lab.store``, other places to train in
``fusion_lab.orchestrate.launchers`` (whose cluster tasks train through ``train_one`` too).

Every run folder is claimed atomically (a lease, kept alive by a heartbeat) before
training, so several ``fusionlab run`` processes, on one host or many sharing a results
folder, never train the same run. A failing run is recorded and the study goes on.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fusion_lab import store
from fusion_lab.config import to_dict
from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.orchestrate.pruning import stop_hook
from fusion_lab.orchestrate.recording import (
    error_message,
    record_failure,
    record_interrupted,
    record_storage_fault,
    who,
    write_summary,
)
from fusion_lab.plan.study import PlannedRun, Study, study_plan
from fusion_lab.store.lease import Lease, RunInterrupted, ignored, interrupts
from fusion_lab.training import ddp, train
from fusion_lab.training.device import resolve_device
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


def write_plan(results: Path, study: Study, runs: list[PlannedRun]) -> None:
    """The study's plan, ``results/<study>/study.json`` (rows, run ids, seeds, baseline):
    the one function that writes it (``run_study`` before it launches). A folder that
    cannot be written is no error when it already holds this plan."""
    path = store.study_dir(results, study.name) / store.STUDY_JSON
    plan = study_plan(study, runs)
    try:
        store.write_json(path, plan)
    except store.StorageError:
        old = store.read_json(path)  # a read-only folder holding this plan is no error
        if not (isinstance(old, dict) and _same_plan(old, json.loads(json.dumps(plan)))):
            raise


def _same_plan(a: dict, b: dict) -> bool:
    """The same plan but for when it was written."""
    return {k: v for k, v in a.items() if k != "updated"} == \
        {k: v for k, v in b.items() if k != "updated"}


def check_device(runs: list[PlannedRun], device: str) -> Any:
    """The one rule for where runs may train, applied where they train (``train_runs`` in
    this process, ``train_task`` in a cluster task), before anything trains: ``device``
    must exist here (``--device cuda`` needs CUDA) and ``dataset.decode: gpu`` needs a CUDA
    device. Returns the torch device; a refusal is one ``FusionLabError`` line."""
    dev = resolve_device(device)
    if dev.type != "cuda" and any(r.config.dataset.decode == "gpu" for r in runs):
        raise ConfigError(f"dataset.decode: gpu needs a CUDA device, and this run is on "
                          f"{dev}; use --device cuda or dataset.decode: cpu")
    return dev


def train_study(study: Study, runs: list[PlannedRun], results: Path, device: str = "auto",
                fail_fast: bool = False, retry_failed: bool = False,
                progress: Any = None, lease_s: float = store.LEASE_S,
                only: set[str] | None = None) -> Outcome:
    """Write the plan, then ``train_runs``: a study trained in this process with one call
    (tests, notebooks). ``fusionlab run`` goes through ``study_run.run_study``, which
    writes the plan itself before it launches."""
    if ddp.current().main:
        write_plan(results, study, runs)
    return train_runs(study, runs, results, device=device, fail_fast=fail_fast,
                      retry_failed=retry_failed, progress=progress, lease_s=lease_s, only=only)


def train_runs(study: Study, runs: list[PlannedRun], results: Path, device: str = "auto",
               fail_fast: bool = False, retry_failed: bool = False,
               progress: Any = None, lease_s: float = store.LEASE_S,
               only: set[str] | None = None) -> Outcome:
    """Train every run that needs it (``store.needs_training``) in this process (``only``:
    of these run ids), after ``check_device`` has accepted them.

    Each run is trained under a lease (``fusion_lab.store.lease``). SIGTERM/SIGINT record the run
    as interrupted, release its claim and propagate (``RunInterrupted``); a run whose claim
    was taken over by another process stops without writing anything more.
    """
    t0 = time.perf_counter()
    out = Outcome()
    group = ddp.current()
    todo = []
    for r in runs if only is None else [r for r in runs if r.run_id in only]:
        status = store.run_status(run_dir(results, study, r))
        if store.needs_training(status, retry_failed):
            todo.append(r)
        else:
            out.skipped.append((r, status))
    if group.active:  # every process works through process 0's list
        ids = set(ddp.broadcast([r.run_id for r in todo], group))
        todo = [r for r in runs if r.run_id in ids]
    check_device(todo, device)
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
    group = ddp.current()
    d = run_dir(results, study, r)
    if not group.main:  # DDP: process 0 claims, records and decides; this one trains along
        _train_along(d, r, device, group)
        return
    token = _claim(d, lease_s)
    if not token:
        ddp.broadcast(False, group)
        out.skipped.append((r, store.RUNNING))
        return
    lease = Lease(d, token, interval_s=min(store.HEARTBEAT_S, lease_s / 4))
    try:
        with lease, interrupts():
            status = store.run_status(d)  # re-read under the claim: another process may have won
            if not ddp.broadcast(store.needs_training(status, retry_failed), group):
                out.skipped.append((r, status))
                return
            summary = _train_claimed(study, r, d, lease, out, device, progress,
                                     stop_hook(results, study, r))
            if summary is not None:
                summary.update(record(plugins or []), finished=store.now(), trained_by=who())
                write_summary(d, lease, summary)
    finally:
        store.release_claim(d, token)


def _claim(d: Path, lease_s: float) -> str | None:
    """``store.try_claim``; a folder that cannot be written is a ``StorageError``."""
    try:
        return store.try_claim(d, lease_s=lease_s)
    except OSError as e:
        stored = store.storage_error(e, d)
        if stored is None or stored is e:
            raise
        raise stored from e


def _train_along(d: Path, r: PlannedRun, device: str, group: Any) -> None:
    """A DDP process other than 0: train the run with process 0 when it says so (process 0
    records what happened, and handles SIGTERM/SIGINT for the group)."""
    if ddp.broadcast(None, group):
        try:
            with ignored():
                train.train_run(d, r.config, r.run_id, device=device)
        except (store.ClaimLost, FusionLabError):
            pass  # process 0 records what happened


def _begin(study: Study, r: PlannedRun, d: Path) -> dict[str, Any]:
    """Start a claimed run's record: no old summary, its config.json; the summary to fill."""
    (d / store.SUMMARY_JSON).unlink(missing_ok=True)
    store.write_json(d / store.CONFIG_JSON, {**identity(study, r), "config": to_dict(r.config)})
    return {**identity(study, r), "status": store.DONE, "error": None}


def _train_claimed(study: Study, r: PlannedRun, d: Path, lease: Lease, out: Outcome,
                   device: str, progress: Any, should_stop: Any = None
                   ) -> dict[str, Any] | None:
    """Train a claimed run and put its outcome into ``out``; the summary to write, or None
    when the claim was lost (nothing more is written). An interruption is recorded and
    raised; any other failure is recorded and the study goes on. A tuning trial that its
    pruner stopped (``should_stop``: ``orchestrate.pruning``) is done, with ``pruned``."""
    summary = _begin(study, r, d)
    if progress is not None:
        progress.start_run(r)
    try:
        result = train.train_run(d, r.config, r.run_id, device=device, progress=progress,
                                 before_write=lease.check,
                                 **({"should_stop": should_stop} if should_stop else {}))
    except (RunInterrupted, KeyboardInterrupt, SystemExit, _NotRequeued) as e:
        record_interrupted(d, lease, summary, e)
        raise
    except store.ClaimLost as e:
        out.skipped.append((r, "lost"))
        click.echo(f"warning: {e}", err=True)
        return None
    except Exception as e:  # recorded, and the study goes on (unless the disk is at fault)
        stored = store.storage_error(e)
        if stored is not None:
            record_storage_fault(d, lease, summary, stored)
            out.failed.append((r, str(stored)))
            raise stored from (None if stored is e else e)
        msg = error_message(e)
        record_failure(d, summary, msg, traceback.format_exc())
        out.failed.append((r, msg))
        if progress is not None:
            progress.end_run(r, None, msg)
    else:
        summary.update(result, **({"pruned": True} if result.get("stopped_early") else {}))
        out.trained.append(r)
        out.train_s += result["setup_s"] + result["train_time_s"]
        if progress is not None:
            progress.end_run(r, result, None)
    return summary


def record_refusal(study: Study, r: PlannedRun, results: Path, e: FusionLabError,
                   retry_failed: bool = False, lease_s: float = store.LEASE_S,
                   plugins: list[Path] | None = None) -> bool:
    """Record a run that may not train where it was sent (``check_device``) as failed, the
    way a run whose training failed is (config.json, error.log, summary.json with the
    error), so ``--dry-run``, the table and the failed-runs list show it and
    ``--retry-failed`` trains it again. Nothing is written for a run that needs no training
    or that another process holds; returns whether it was recorded."""
    d = run_dir(results, study, r)
    token = store.try_claim(d, lease_s=lease_s)
    if not token:
        return False
    try:
        if not store.needs_training(store.run_status(d), retry_failed):
            return False
        summary = _begin(study, r, d)
        msg = error_message(e)
        record_failure(d, summary, msg, msg + "\n")
        summary.update(record(plugins or []), finished=store.now(), trained_by=who())
        store.write_json(d / store.SUMMARY_JSON, summary)
        return True
    finally:
        store.release_claim(d, token)


try:  # raised by submitit's signal handler when a timed-out task is not requeued
    from submitit.core.utils import UncompletedJobError as _NotRequeued
except ImportError:
    class _NotRequeued(Exception):  # type: ignore[no-redef]
        """Stands in for submitit's UncompletedJobError when submitit is absent."""



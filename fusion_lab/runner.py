"""Run a study's planned runs: train what is missing or failed, in this process or in one
worker process per GPU (planning is in ``fusion_lab.planning``, training in
``fusion_lab.train``, the results folder's layout in ``fusion_lab.store``).

Every run folder is claimed atomically before training, so several ``fusionlab run``
processes (or one per GPU with ``--gpus``) can share one results folder without ever
training the same run. A failing run is recorded and the study goes on.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fusion_lab import __version__, store
from fusion_lab.config import to_dict
from fusion_lab.study import PlannedRun, Study, study_plan


@dataclass
class Outcome:
    trained: list[PlannedRun] = field(default_factory=list)
    failed: list[tuple[PlannedRun, str]] = field(default_factory=list)
    skipped: list[tuple[PlannedRun, str]] = field(default_factory=list)
    train_s: float = 0.0  # time inside runs' setup and epochs (the work itself)
    wall_s: float = 0.0


def versions() -> dict[str, str]:
    import timm
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__, "fusion_lab": __version__}


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists() or shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def identity(study: Study, r: PlannedRun) -> dict[str, Any]:
    return {"run_id": r.run_id, "group_id": r.group_id, "study": study.name, "label": r.label,
            "grid": r.grid, "seed": r.seed}


def train_study(study: Study, runs: list[PlannedRun], results: Path, device: str = "auto",
                fail_fast: bool = False, retry_failed: bool = False,
                progress: Any = None) -> Outcome:
    """Train every run that is not done (nor failed, unless ``retry_failed``) in this process."""
    from fusion_lab.train import train_run

    t0 = time.perf_counter()
    out = Outcome()
    store.write_json(store.study_dir(results, study.name) / store.STUDY_JSON,
                     study_plan(study, runs))
    todo = []
    for r in runs:
        status = store.run_status(store.run_dir(results, study.name, r.run_id))
        if status == store.DONE or (status == store.FAILED and not retry_failed):
            out.skipped.append((r, status))
        else:
            todo.append(r)
    if progress is not None:
        progress.start_study(study.name, len(runs), len(todo))
    for r in todo:
        d = store.run_dir(results, study.name, r.run_id)
        if not store.try_claim(d):
            out.skipped.append((r, store.RUNNING))
            continue
        try:
            status = store.run_status(d)  # re-read under the claim: another process may have won
            if status == store.DONE or (status == store.FAILED and not retry_failed):
                out.skipped.append((r, status))
                continue
            (d / store.SUMMARY_JSON).unlink(missing_ok=True)
            store.write_json(d / store.CONFIG_JSON,
                             {**identity(study, r), "config": to_dict(r.config)})
            if progress is not None:
                progress.start_run(r)
            summary = {**identity(study, r), "status": store.DONE, "error": None}
            try:
                result = train_run(d, r.config, r.run_id, device=device, progress=progress)
            except Exception as e:  # recorded, and the study goes on (Ctrl-C is not one)
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
            summary.update(versions=versions(), git_commit=git_commit(), finished=store.now(),
                           trained_by={"pid": os.getpid(), "host": platform.node()})
            store.write_json(d / store.SUMMARY_JSON, summary)
            if out.failed and fail_fast:
                break
        finally:
            store.release_claim(d)
    out.wall_s = time.perf_counter() - t0
    return out


def _error_message(e: BaseException) -> str:
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        return ("OutOfMemoryError: the GPU ran out of memory; lower train.batch_size or "
                "train.image_size, or use train.amp=bf16")
    return f"{type(e).__name__}: {e}".strip()


def launch_workers(study_path: str, overrides: list[str], results: Path, gpus: list[str],
                   fail_fast: bool, retry_failed: bool) -> int:
    """One worker process per GPU, each with its own CUDA_VISIBLE_DEVICES.

    The workers share the results folder; claims keep them off each other's runs.
    """
    procs = []
    for gpu in gpus:
        cmd = [sys.executable, "-m", "fusion_lab", "run", study_path, "--results",
               str(results), "--device", "cuda", "--no-table", "--progress", "plain"]
        for o in overrides:
            cmd += ["--set", o]
        if fail_fast:
            cmd.append("--fail-fast")
        if retry_failed:
            cmd.append("--retry-failed")
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        click.echo(f"worker on GPU {gpu}: started", err=True)
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    return max(codes) if codes else 0

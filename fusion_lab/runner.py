"""Run a study: validate, plan, then train what is missing or failed.

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

from fusion_lab import __version__
from fusion_lab import store as S
from fusion_lab.config import to_dict
from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.study import PlannedRun, Study, expand, load_study, study_plan


@dataclass
class Outcome:
    trained: list[PlannedRun] = field(default_factory=list)
    failed: list[tuple[PlannedRun, str]] = field(default_factory=list)
    skipped: list[tuple[PlannedRun, str]] = field(default_factory=list)
    train_s: float = 0.0  # time inside runs' setup and epochs (the work itself)
    wall_s: float = 0.0


def prepare(study_path: str | Path, overrides: list[str] | None = None
            ) -> tuple[Study, list[PlannedRun]]:
    """Load a study, import its plugins, expand and validate every run (all problems at once)."""
    from fusion_lab.registries import PRESETS, load_plugins

    study = load_study(study_path, overrides)
    load_plugins(study.plugins, base_dir=study.path.parent if study.path else None)
    presets = {name: PRESETS.get(name) for name in PRESETS.list()}
    runs = expand(study, presets)
    problems = validate(runs)
    if problems:
        raise ConfigError(problems, source=str(study.path))
    return study, runs


def validate(runs: list[PlannedRun]) -> list[str]:
    """Component, argument and dataset problems of the planned runs, each reported once."""
    from fusion_lab.model import check_model_config

    problems: list[str] = []
    seen: set[str] = set()
    for r in runs:
        found = [f"model: {p}" for p in check_model_config(r.config.model)]
        found += [f"dataset: {p}" for p in dataset_problems(r.config.dataset)]
        for p in found:
            if p not in seen:
                seen.add(p)
                problems.append(p)
    return problems


def dataset_problems(cfg) -> list[str]:
    """A dataset name that is not registered, or a root folder that is not there."""
    from fusion_lab.registries import DATASETS

    if cfg.name not in DATASETS:
        return [DATASETS.unknown_message(cfg.name)]
    if not 0 <= cfg.val_fraction < 1:
        return [f"val_fraction must be in [0, 1), got {cfg.val_fraction}"]
    cls = DATASETS.get(cfg.name)
    if not getattr(cls, "needs_root", True):  # generated in memory: nothing to look for
        return []
    if cfg.root is None or not Path(cfg.root).expanduser().is_dir():
        url = getattr(cls, "url", None)
        where = f" (published at {url})" if url else ""
        return [f"{cfg.name}: root folder {cfg.root!r} not found; download the dataset{where} "
                f"and set dataset.root (e.g. --set dataset.root=/data/...); "
                f"`fusionlab data check {cfg.name} ROOT` checks a folder"]
    from fusion_lab.data import open_source  # reads the index files only, no image
    from fusion_lab.errors import DatasetError

    try:
        open_source(cfg.name, str(Path(cfg.root).expanduser()), cfg.options)
    except DatasetError as e:
        return [str(e)]
    return []


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


def run_dir(results: Path, study: Study, r: PlannedRun) -> Path:
    return results / study.name / r.run_id


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
    S.write_json(results / study.name / "study.json", study_plan(study, runs))
    todo = []
    for r in runs:
        status = S.run_status(run_dir(results, study, r))
        if status == S.DONE or (status == S.FAILED and not retry_failed):
            out.skipped.append((r, status))
        else:
            todo.append(r)
    if progress is not None:
        progress.start_study(study.name, len(runs), len(todo))
    for r in todo:
        d = run_dir(results, study, r)
        if not S.try_claim(d):
            out.skipped.append((r, S.RUNNING))
            continue
        try:
            status = S.run_status(d)  # re-read under the claim: another process may have won
            if status == S.DONE or (status == S.FAILED and not retry_failed):
                out.skipped.append((r, status))
                continue
            (d / "summary.json").unlink(missing_ok=True)
            S.write_json(d / "config.json", {**identity(study, r), "config": to_dict(r.config)})
            if progress is not None:
                progress.start_run(r)
            summary = {**identity(study, r), "status": S.DONE, "error": None}
            try:
                result = train_run(d, r.config, r.run_id, device=device, progress=progress)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # recorded, and the study goes on
                msg = _error_message(e)
                (d / "error.log").write_text(traceback.format_exc())
                last = S.read_jsonl(d / "metrics.jsonl")
                summary.update(status=S.FAILED, error=msg, final=None, best_val=None,
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
            summary.update(versions=versions(), git_commit=git_commit(), finished=S.now(),
                           trained_by={"pid": os.getpid(), "host": platform.node()})
            S.write_json(d / "summary.json", summary)
            if out.failed and fail_fast:
                break
        finally:
            S.release_claim(d)
    out.wall_s = time.perf_counter() - t0
    return out


def _error_message(e: BaseException) -> str:
    import torch

    if isinstance(e, torch.cuda.OutOfMemoryError):
        return ("OutOfMemoryError: the GPU ran out of memory; lower train.batch_size or "
                "train.image_size, or use train.amp=bf16")
    if isinstance(e, FusionLabError):
        return f"{type(e).__name__}: {e}"
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

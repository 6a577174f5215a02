"""The ``local`` launcher: train in this process, or in worker processes that train several
runs at once (``gpus``: one per GPU; ``jobs``: N on the CPU, or N per GPU)."""

from __future__ import annotations

import os
import time

import click

from fusion_lab.errors import FusionLabError
from fusion_lab.orchestrate import spawn
from fusion_lab.orchestrate.launchers import Launcher, LaunchJob
from fusion_lab.orchestrate.runner import check_device, train_runs
from fusion_lab.plan.study import PlannedRun
from fusion_lab.registries import LAUNCHERS
from fusion_lab.training.progress import Progress

NEEDS_THREADS = ("--jobs needs a fixed thread count per run: set train.threads (e.g. --set "
                 "train.threads=1 or in the study's base)")


@LAUNCHERS.register("local")
class LocalLauncher(Launcher):
    """This machine: one process, one worker per GPU with gpus=0,1,.., or N runs at once
    with jobs=N (N workers on the CPU, or N per GPU)."""

    OPTIONS = {"gpus": (None, "GPUs to use, one worker process each, e.g. 0,1,2,3 (--gpus)"),
               "jobs": (1, "runs trained at once (--jobs): N worker processes on the CPU, "
                           "or N per GPU with gpus; the CPU needs train.threads set")}
    trains_here = True  # --nproc and torchrun decide each run's processes
    waits = True

    def __init__(self, **options):
        super().__init__(**options)
        if not isinstance(self.jobs, int) or isinstance(self.jobs, bool) or self.jobs < 1:
            raise FusionLabError(f"launcher option jobs must be a whole number >= 1, got "
                                 f"{self.jobs!r}")
        if spawn.in_worker():  # a worker of a pool trains in its own process
            self.gpus, self.jobs = None, 1

    def gpu_list(self) -> list[str] | None:
        if self.gpus is None:
            return None
        return [g.strip() for g in str(self.gpus).split(",") if g.strip()]

    def check_runs(self, runs: list[PlannedRun], device: str, world_size: int) -> None:
        """With jobs > 1: each run on one process; on the CPU (no gpus, no --device cuda)
        every run with its own fixed ``train.threads``, so that its result does not depend
        on the machine's cores; a warning when the workers' threads exceed the cores."""
        if self.jobs == 1:
            return
        if world_size > 1:
            raise FusionLabError("--jobs trains several runs at once, one process each: leave "
                                 "out --nproc (and torchrun)")
        if self.gpus is None and device != "cuda" and any(
                r.config.train.threads is None for r in runs):
            raise FusionLabError(NEEDS_THREADS)
        threads = max((r.config.train.threads or 0 for r in runs), default=0)
        workers = min(len(spawn.placement(self.gpu_list(), self.jobs)), len(runs))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
        if workers * threads > cores:
            click.echo(f"warning: {workers} workers x train.threads {threads} = "
                       f"{workers * threads} threads on {cores} cores: the runs slow each "
                       "other down (their results do not change)", err=True)

    def launch(self, job: LaunchJob) -> int:
        if self.gpus is not None or self.jobs > 1:
            if self.gpus is None:  # the workers train on this device: one refusal, here
                check_device(job.runs, job.device)
            return spawn.launch_workers(
                str(job.study_file), job.overrides, job.results, self.gpu_list(),
                job.fail_fast, job.retry_failed, lease_s=job.lease_s,
                device="cuda" if self.gpus is not None else job.device,
                only=sorted(job.extra.get("only") or []), jobs=self.jobs,
                limit=len(job.pending) if self.jobs > 1 else None)  # no idle workers

        t_start = job.extra.get("t_start", time.perf_counter())
        progress = Progress(job.progress) if job.progress != "off" else None
        try:  # train_runs refuses runs this process cannot train (check_device) first
            out = train_runs(job.study, job.runs, job.results, device=job.device,
                             fail_fast=job.fail_fast, retry_failed=job.retry_failed,
                             progress=progress, lease_s=job.lease_s,
                             only=job.extra.get("only"))
        finally:
            if progress is not None:
                progress.close()
        wall = time.perf_counter() - t_start
        if out.trained:
            overhead = wall - out.train_s
            click.echo(f"trained {len(out.trained)} runs in {wall:.1f}s; runner overhead "
                       f"(process start-up, expansion, checkpoints, results) {overhead:.1f}s = "
                       f"{100 * overhead / wall:.1f}%", err=True)
        return 0

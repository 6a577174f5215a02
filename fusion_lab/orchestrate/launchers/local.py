"""The ``local`` launcher: train in this process, or one worker process per GPU (``gpus``)."""

from __future__ import annotations

import time

import click

from fusion_lab.orchestrate.launchers import Launcher, LaunchJob
from fusion_lab.orchestrate.runner import train_runs
from fusion_lab.orchestrate.spawn import launch_workers
from fusion_lab.registries import LAUNCHERS
from fusion_lab.training.progress import Progress


@LAUNCHERS.register("local")
class LocalLauncher(Launcher):
    """This machine: one process, or one worker per GPU with gpus=0,1,.. (today's behaviour)."""

    OPTIONS = {"gpus": (None, "GPUs to use, one worker process each, e.g. 0,1,2,3 (--gpus)")}
    trains_here = True  # --nproc and torchrun decide each run's processes
    waits = True

    def launch(self, job: LaunchJob) -> int:
        if self.gpus is not None:
            gpus = [g.strip() for g in str(self.gpus).split(",") if g.strip()]
            return launch_workers(str(job.study_file), job.overrides, job.results, gpus,
                                  job.fail_fast, job.retry_failed, lease_s=job.lease_s,
                                  only=sorted(job.extra.get("only") or []))

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

"""The ``ray`` launcher: each pending run is a Ray task (an optional extra: ``[ray]``)."""

from __future__ import annotations

import signal
from typing import Any

import click

from fusion_lab.errors import FusionLabError
from fusion_lab.orchestrate.launchers import Launcher, LaunchJob, check_nproc, train_task
from fusion_lab.registries import LAUNCHERS

INSTALL = "pip install 'fusion_lab[ray]' (or: pip install 'ray[default]')"


@LAUNCHERS.register("ray")
class RayLauncher(Launcher):
    """A Ray cluster (or a local Ray instance): one task per pending run with its GPU/CPU request."""

    OPTIONS = {
        "address": (None, "Ray cluster to join: auto (a running cluster) or ray://host:port; "
                          "default: start a local instance"),
        "gpus": (1, "GPUs per run (0 on a CPU-only cluster; at least nproc otherwise)"),
        "nproc": (1, "processes per run: N > 1 trains each run with DDP on N processes of "
                     "one node (torchrun in the task; one GPU each, gloo on CPUs)"),
        "cpus": (4, "CPUs per run"),
    }

    waits = True  # Ray tasks live with this driver: launch waits for them

    @property
    def processes_per_run(self) -> int:
        return self.nproc

    def __init__(self, **options: Any):
        super().__init__(**options)
        try:
            import ray  # noqa: F401
        except ImportError:
            raise FusionLabError(f"--launcher ray needs Ray, which is not installed: "
                                 f"{INSTALL}") from None
        check_nproc(self.nproc, self.gpus)

    def launch(self, job: LaunchJob) -> int:
        import ray

        if not job.pending:
            click.echo(f"study {job.study.name}: nothing to run (every run is done)", err=True)
            return 0
        # ray.init installs its own SIGTERM handler in this process and leaves it there after
        # ray.shutdown: put back whatever was installed before once the launch is over
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(num_gpus=self.gpus, num_cpus=self.cpus, max_retries=0)(train_task)
        refs = [remote.remote(str(job.study_file), job.overrides, str(job.results), r.run_id,
                              job.device, job.retry_failed, job.lease_s, self.nproc)
                for r in job.pending]
        click.echo(f"started {len(refs)} Ray task(s) of study {job.study.name}", err=True)
        try:
            for ref in refs:  # Ray tasks live with this driver: always wait
                try:
                    ray.get(ref)
                except Exception as e:  # the run's summary.json has the details
                    first = str(e).strip().splitlines()
                    click.echo(f"a Ray task ended with an error: "
                               f"{first[-1] if first else type(e).__name__}", err=True)
        finally:
            if self.address is None:  # the local instance we started
                ray.shutdown()
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        return 0

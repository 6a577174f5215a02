"""The ``ray`` launcher: each pending run is a Ray task (an optional extra: ``[ray]``)."""

from __future__ import annotations

import signal
from typing import Any

import click

from fusion_lab.errors import FusionLabError
from fusion_lab.orchestrate.launchers import Launcher, LaunchJob, check_nproc, train_task
from fusion_lab.registries import LAUNCHERS
from fusion_lab.store.lease import RunInterrupted

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
        # an optional package (the [ray] extra), imported when the launcher is used
        import ray

        if not job.pending:
            click.echo(f"study {job.study.name}: nothing to run (every run is done)", err=True)
            return 0
        # ray.init installs its own SIGTERM handlers in this process (Python's, which it
        # leaves after ray.shutdown, and a native one that prints a stack dump): while the
        # tasks run ours are in charge (``run_tasks``), and afterwards the earlier ones
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.join()
            self.check_fits()
            return self.run_tasks(job)
        finally:
            ray.shutdown()  # the local instance we started stops; a cluster is only left
            for sig, handler in saved.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def join(self) -> None:
        """Start a local instance, or join the cluster at ``address`` (one line if not)."""
        # an optional package (the [ray] extra), imported when the launcher is used
        import ray

        try:
            # "local": a new instance of our own, never a cluster that `ray start` left
            ray.init(address=self.address or "local", ignore_reinit_error=True,
                     log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            said = str(e).strip().splitlines()
            raise FusionLabError(f"could not join the Ray cluster at {self.address}: "
                                 f"{said[0] if said else type(e).__name__}") from None

    def check_fits(self) -> None:
        """Refuse a request no node of the cluster can ever meet (Ray would wait forever)."""
        # an optional package (the [ray] extra), imported when the launcher is used
        import ray

        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(n.get("CPU", 0) >= self.cpus and n.get("GPU", 0) >= self.gpus for n in nodes):
            return
        where = f"the Ray cluster at {self.address}" if self.address else "the local Ray instance"
        sizes = sorted({(int(n.get("CPU", 0)), int(n.get("GPU", 0))) for n in nodes}, reverse=True)
        have = ", ".join(f"{c} CPUs and {g} GPUs" for c, g in sizes) or "no live node"
        raise FusionLabError(
            f"no node of {where} can run a task asking for {self.cpus} CPUs and {self.gpus} "
            f"GPUs (its nodes have: {have}); lower --launcher-opt cpus=N / gpus=N "
            f"(gpus=0 on a cluster without GPUs)")

    def run_tasks(self, job: LaunchJob) -> int:
        """One task per pending run; waits for them all. 1 if a task ended with an error
        (said with the last lines of its error). SIGTERM/SIGINT cancel the tasks still
        running (their runs are recorded as interrupted) and raise ``RunInterrupted``
        (the CLI's one line and exit 128 + signal): never raised inside ``ray.wait``,
        which turns an exception from a signal handler into a SystemError."""
        # an optional package (the [ray] extra), imported when the launcher is used
        import ray

        remote = ray.remote(num_gpus=self.gpus, num_cpus=self.cpus, max_retries=0)(train_task)
        refs = [remote.remote(str(job.study_file), job.overrides, str(job.results), r.run_id,
                              job.device, job.retry_failed, job.lease_s, self.nproc)
                for r in job.pending]
        runs = dict(zip(refs, job.pending))
        click.echo(f"started {len(refs)} Ray task(s) of study {job.study.name}", err=True)
        code, left, stop = 0, list(refs), []
        for sig in (signal.SIGTERM, signal.SIGINT):  # noted here, acted on between waits
            signal.signal(sig, lambda signum, frame: stop.append(signum))
        while left and not stop:  # short waits: a signal is acted on between them
            done, left = ray.wait(left, num_returns=1, timeout=0.5)
            for ref in done:
                try:
                    ray.get(ref)
                except Exception as e:  # noqa: BLE001 (said, with the task's own error)
                    code = 1
                    _report(runs[ref], e)
        if stop:
            _cancel(left)
            raise RunInterrupted(stop[0])
        return code


def _report(run, error: BaseException) -> None:
    r = run
    lines = [ln.rstrip() for ln in str(error).splitlines() if ln.strip()]
    click.echo(f"the Ray task of run {r.run_id[:12]} ({r.display} seed {r.seed}) ended with "
               f"an error" + (":" if lines else f": {type(error).__name__}"), err=True)
    for ln in lines[-6:]:
        click.echo(f"  | {ln}", err=True)


def _cancel(refs: list, timeout_s: float = 60.0) -> None:
    """Cancel running tasks (KeyboardInterrupt in each: its run is recorded interrupted and
    its claim released) and wait for them to end."""
    # an optional package (the [ray] extra), imported when the launcher is used
    import ray

    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception:  # noqa: BLE001 (a task that has just ended)
            pass
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)

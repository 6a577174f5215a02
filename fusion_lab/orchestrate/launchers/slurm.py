"""The ``slurm`` launcher: one SLURM job array through submitit, one task per pending run.

Each task loads the study again and trains its run through the ordinary run-folder path
(claim, checkpoints, summary). On time-out or pre-emption SLURM sends the warning signal
(``--signal=USR2@signal_delay_s``); submitit's handler for it calls ``TrainTask.checkpoint``,
requeues the task and exits, which the runner records as ``interrupted`` (the claim is
released); the requeued task resumes from the last finished epoch's checkpoint. SIGTERM
(pre-emption without the warning, ``scancel``) is ours while a run trains: the run is
recorded as interrupted and the task exits non-zero; the next ``fusionlab run`` resumes it.

With ``nproc=N`` each task trains its run with DDP on N processes of its node (torchrun
inside the task, one GPU each). The warning signal then reaches the task process, whose
checkpoint hook first stops torchrun with SIGTERM and waits until process 0 has recorded the
run as interrupted and released its claim; the training processes ignore SIGUSR2.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path
from typing import Any

import click

from fusion_lab import store
from fusion_lab.errors import FusionLabError
from fusion_lab.orchestrate.launchers import (
    Launcher,
    LaunchJob,
    check_nproc,
    slurm_jobs,
    stop_task_processes,
    train_task,
)
from fusion_lab.orchestrate.spawn import Nodes
from fusion_lab.registries import LAUNCHERS

INSTALL = "pip install 'fusion_lab[slurm]' (or: pip install submitit)"

try:
    from submitit.helpers import Checkpointable
except ImportError:  # the launcher says how to install it when chosen
    Checkpointable = object  # type: ignore[assignment,misc]


class TrainTask(Checkpointable):
    """One array task: train one run. Requeued as is on time-out (the checkpoint resumes it).
    With ``nodes`` N > 1 it runs on each of the job's N nodes (SLURM starts it once per
    node), each starting torchrun with its node rank."""

    def __init__(self, nodes: int = 1):
        self.nodes = nodes

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        if getattr(self, "nodes", 1) > 1:
            kwargs["nodes"] = slurm_nodes(self.nodes)
        return train_task(*args, **kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on the time-limit signal: stop the task's DDP processes (if any)
        so that the run is recorded and released before the task is requeued."""
        stop_task_processes(timeout_s=60.0)
        return super().checkpoint(*args, **kwargs)


def slurm_nodes(count: int, env: dict[str, str] | None = None) -> Any:
    """This node of a ``nodes=N`` task: its rank (``SLURM_NODEID``) and the rendezvous at
    the job's first node (of ``SLURM_JOB_NODELIST``), on a port chosen by the job id."""

    env = dict(os.environ if env is None else env)
    first = re.match(r"([^,\[]+)(?:\[(\d+))?", env["SLURM_JOB_NODELIST"])
    host = first.group(1) + (first.group(2) or "")
    port = 20000 + int(env.get("SLURM_JOB_ID") or 0) % 20000  # an array task's own id
    return Nodes(count, int(env["SLURM_NODEID"]), f"{host}:{port}")


@LAUNCHERS.register("slurm")
class SlurmLauncher(Launcher):
    """A SLURM job array through submitit; tasks requeue and resume on time-out/pre-emption."""

    OPTIONS = {
        "partition": (None, "SLURM partition"),
        "account": (None, "SLURM account"),
        "gpus": (1, "GPUs per task (one run each; at least nproc, or 0 on CPU nodes)"),
        "nproc": (1, "processes per run: N > 1 trains each run with DDP on N processes of "
                     "one node (torchrun in the task; one GPU each, gloo on CPU nodes)"),
        "nodes": (1, "nodes per run: N > 1 trains each run on nproc processes of each of N "
                     "nodes (torchrun on each node, meeting at the job's first node)"),
        "cpus": (8, "CPUs per task (data loading: train.workers + 1 or more)"),
        "mem_gb": (None, "memory per task, GB"),
        "time": (1440, "time limit per task, minutes (a longer run is requeued and resumes)"),
        "array_parallelism": (64, "tasks of the array running at once"),
        "sbatch": ({}, "extra sbatch flags, e.g. {qos: high, constraint: a100}"),
        "setup": ([], "shell lines run before each task, e.g. ['module load cuda']"),
        "signal_delay_s": (120, "seconds before the time limit at which USR2 is sent"),
        "max_requeues": (3, "time-outs after which a task is not requeued again"),
        "folder": (None, "submitit's logs and pickles (default RESULTS/STUDY/.submitit)"),
        "cluster": ("slurm", "slurm | local (submitit's local executor, to try it on one box)"),
    }

    waits = False  # submits and returns; waits with --wait (LaunchJob.wait)

    @property
    def processes_per_run(self) -> int:
        return self.nproc * self.nodes

    def __init__(self, **options: Any):
        super().__init__(**options)
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise FusionLabError(f"--launcher slurm needs submitit, which is not installed: "
                                 f"{INSTALL}") from None
        if self.cluster not in ("slurm", "local"):
            raise FusionLabError(f"launcher option cluster must be slurm or local, "
                                 f"got {self.cluster!r}")
        check_nproc(self.nproc, self.gpus)
        if not isinstance(self.nodes, int) or isinstance(self.nodes, bool) or self.nodes < 1 \
                or (self.nodes > 1 and self.cluster == "local"):
            raise FusionLabError(f"launcher option nodes must be a whole number >= 1 (1 with "
                                 f"cluster=local), got {self.nodes!r}")
        if not isinstance(self.sbatch, dict):
            raise FusionLabError("launcher option sbatch must be a mapping, e.g. "
                                 "--launcher-opt 'sbatch={qos: high}'")
        slurm_jobs.logs_to_stderr()  # stdout is for tables and job ids
        self.jobs: list = []
        self.labels: list[str] = []  # what each task trains, for the messages
        self.submission: Path | None = None  # this submission's folder (``executor``)

    def executor(self, job: LaunchJob):
        # an optional package (the [slurm] extra), imported when the launcher is used
        import submitit

        base = Path(self.folder or job.results / job.study.name / ".submitit")
        self.submission = slurm_jobs.submission_folder(base)  # job ids may repeat
        folder = self.submission / "%j"
        if self.cluster == "local":
            ex = submitit.LocalExecutor(folder=folder, max_num_timeout=self.max_requeues)
            ex.update_parameters(timeout_min=self.time, signal_delay_s=self.signal_delay_s,
                                 gpus_per_node=self.gpus)
            return ex
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.max_requeues)
        params = {"job_name": f"fusionlab-{job.study.name}", "time": self.time,
                  "gpus_per_node": self.gpus, "cpus_per_task": self.cpus, "ntasks_per_node": 1,
                  "nodes": self.nodes,
                  "array_parallelism": self.array_parallelism,
                  "signal_delay_s": self.signal_delay_s,
                  "additional_parameters": dict(self.sbatch), "setup": list(self.setup)}
        if self.partition:
            params["partition"] = self.partition
        if self.account:
            params["account"] = self.account
        if self.mem_gb:
            params["mem"] = f"{self.mem_gb}GB"
        ex.update_parameters(**params)
        return ex

    def launch(self, job: LaunchJob) -> int:
        if not job.pending:
            click.echo(f"study {job.study.name}: nothing to submit (every run is done)", err=True)
            return 0
        self.jobs = self.submit(job)
        when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for r, j in zip(job.pending, self.jobs):
            store.write_json(store.run_dir(job.results, job.study.name, r.run_id) / store.QUEUED_JSON,
                         {"launcher": "slurm", "job_id": str(j.job_id), "submitted": when,
                          "folder": str(self.submission)})
        self.labels = [f"run {r.run_id[:12]}, {r.display} seed {r.seed}" for r in job.pending]
        ids = sorted({str(j.job_id).split("_")[0] for j in self.jobs})
        click.echo(f"submitted {len(self.jobs)} task(s) of study {job.study.name}: "
                   f"job {', '.join(ids)}" + ("" if job.wait else
                   "; `fusionlab run STUDY --dry-run` shows their progress"), err=True)
        for j in self.jobs:
            click.echo(str(j.job_id))
        return self.wait() if job.wait else 0

    def submit(self, job: LaunchJob) -> list:
        """The job array, one task per pending run; a request SLURM refuses (sbatch's
        reason: no GPUs on the partition, more CPUs than a node has) is one error."""
        # an optional package (the [slurm] extra), imported when the launcher is used
        from submitit.core.utils import FailedJobError

        ex = self.executor(job)
        task = TrainTask(self.nodes)
        args = [(str(job.study_file), job.overrides, str(job.results), r.run_id, job.device,
                 job.retry_failed, job.lease_s, self.nproc) for r in job.pending]
        try:
            with slurm_jobs.quiet_submitit(), ex.batch():
                jobs = [ex.submit(task, *a) for a in args]
        except FailedJobError as e:
            raise FusionLabError(
                f"SLURM refused the job array of study {job.study.name}: "
                f"{slurm_jobs.refusal(e)} (asked per task: gpus={self.gpus}, cpus={self.cpus}"
                + (f", mem_gb={self.mem_gb}" if self.mem_gb else "") + f", time={self.time}"
                + (f", partition={self.partition}" if self.partition else "") + ")") from None
        return jobs

    def wait(self) -> int:
        """Wait for every task: 0 when each returned, else 1, with each task that ended
        without a result (FAILED, CANCELLED, TIMEOUT...) said with the last lines of its
        own error. A run that failed while training is recorded in its summary (and the
        task returned)."""
        slurm_jobs.wait_all(self.jobs)
        code = 0
        for i, j in enumerate(self.jobs):
            try:
                j.result()
            except Exception:  # noqa: BLE001 (said below, with the task's own error)
                code = 1
                slurm_jobs.report_task(j, self.labels[i] if i < len(self.labels) else "")
        return code

    @staticmethod
    def ended_jobs(job_ids: list[str]) -> dict[str, str]:
        return {j: s for j, s in slurm_jobs.job_states(job_ids).items()
                if not slurm_jobs.is_active(s)}

"""Launchers: where each pending run of a study trains (a registry kind, ``LAUNCHERS``).

Planning is shared: ``fusion_lab.orchestrate.study_run.run_study`` (behind ``fusionlab
run``) loads, expands and validates the study and finds the runs that are not done
(``LaunchJob``); a launcher only decides where ``train_run`` executes. Every launcher trains
through the same run-folder path (claims, checkpoints, summaries), so launchers can be
mixed on one results folder.

A launcher is a class registered with ``@LAUNCHERS.register(name)``; ``OPTIONS`` maps each
option (``--launcher-opt KEY=VALUE``, or the study's ``launcher:`` section) to its default
and a help line; ``launch(job)`` returns the command's exit status. What the orchestrator
needs to know about a launcher it reads from the attributes ``Launcher`` documents
(``trains_here``, ``processes_per_run``, ``waits``), never from its name.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fusion_lab import store
from fusion_lab.errors import FusionLabError
from fusion_lab.orchestrate import spawn, tuning
from fusion_lab.orchestrate.runner import (
    Outcome,
    check_device,
    record_refusal,
    run_dir,
    train_one,
)
from fusion_lab.orchestrate.spawn import signal_children
from fusion_lab.plan.planning import prepare
from fusion_lab.plan.study import PlannedRun, Study, parse_override
from fusion_lab.registries import LAUNCHERS
from fusion_lab.training.provenance import plugin_files


@dataclass
class LaunchJob:
    """What a launcher is given: the study, its runs, and the ones left to train."""

    study_file: Path  # absolute: remote tasks load the study again from it
    overrides: list[str]  # --set, with train.world_size and tag=NAME: tasks plan with them
    results: Path  # absolute
    study: Study
    runs: list[PlannedRun]
    pending: list[PlannedRun]  # not done (and not failed unless retry_failed)
    device: str = "auto"
    fail_fast: bool = False
    retry_failed: bool = False
    progress: str = "auto"
    lease_s: float = 300.0
    wait: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Launcher:
    """Base class: options checked against ``OPTIONS``, defaults filled in.

    A launcher declares what it needs with three attributes (class attributes, or
    properties where an option decides):

    ``trains_here``
        The runs train in this command's own processes, on this machine (the local
        launcher: in this process, or one worker per GPU). Only such a launcher goes with
        ``--gpus``, ``--nproc`` and a command started by torchrun, whose process count is
        then each run's ``train.world_size``. False (the default): the runs train in tasks
        elsewhere, each loading the study again (``train_task``), as slurm and ray do.
    ``processes_per_run``
        For a launcher that does not train here: the processes each run's task trains on
        (its ``nproc`` option; N > 1 is DDP, and the runs get ``train.world_size: N``).
        1 by default.
    ``waits``
        ``launch`` returns only once every run has finished, so their results can be read
        (the table, the failed runs): True by default (local, ray). False: ``launch``
        submits and returns, and waits only when the job asks (``LaunchJob.wait``,
        ``--wait``), as slurm does.
    """

    OPTIONS: dict[str, tuple[Any, str]] = {}
    trains_here: bool = False
    processes_per_run: int = 1
    waits: bool = True

    def __init__(self, **options: Any):
        for key, (default, _) in self.OPTIONS.items():
            setattr(self, key, options.get(key, default))

    def launch(self, job: LaunchJob) -> int:
        raise NotImplementedError

    def check_runs(self, runs: list[PlannedRun], device: str, world_size: int) -> None:
        """Refuse runs this launcher cannot train as its options ask (one-line
        ``FusionLabError``), before anything is written; called once per command with the
        runs' world size (the local launcher's ``jobs``). Nothing by default."""

    @staticmethod
    def ended_jobs(job_ids: list[str]) -> dict[str, str]:
        """Of the jobs this launcher submitted (``queued.json``'s ``job_id``), those that
        have left the scheduler's queue, each with how it ended (e.g. CANCELLED); a job
        still queued or running, or one the scheduler cannot be asked about, is left out."""
        return {}


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["partition=gpu", "gpus=2"]`` -> {"partition": "gpu", "gpus": 2} (values as YAML)."""
    out = {}
    for text in pairs:
        if "=" not in text:
            raise FusionLabError(f"--launcher-opt {text!r} must look like KEY=VALUE, "
                                 "e.g. --launcher-opt partition=gpu")
        key, value = parse_override(text)
        out[key] = value
    return out


def make_launcher(name: str, options: dict[str, Any]) -> Launcher:
    """The launcher ``name`` with ``options``; an unknown name or option is one clear error."""
    cls = LAUNCHERS.get(name)
    unknown = sorted(set(options) - set(cls.OPTIONS))
    if unknown:
        valid = ", ".join(f"{k} (default {d!r})" for k, (d, _) in cls.OPTIONS.items()) or "none"
        raise FusionLabError(f"unknown option(s) {', '.join(map(repr, unknown))} for launcher "
                             f"{name!r}; valid options: {valid}")
    return cls(**options)


def launcher_name(study: Study, name: str | None) -> str:
    """The launcher a run asks for: ``--launcher``, else the study's ``launcher:`` section's
    ``name``, else local."""
    return name or (study.launcher or {}).get("name") or "local"


def choose(study: Study, name: str | None, pairs: list[str]) -> tuple[str, Launcher]:
    """The launcher for a run: ``--launcher`` over the study's ``launcher:`` section, and
    ``--launcher-opt`` over the section's options (which apply only to the launcher they name)."""
    section = dict(study.launcher or {})
    section_name = section.pop("name", None) or "local"
    name = launcher_name(study, name)
    options = section if name == section_name else {}
    options.update(parse_options(pairs))
    return name, make_launcher(name, options)


def ended_states(queued: list[dict[str, Any]]) -> list[str | None]:
    """For each queued task (a run's ``queued.json``, written at submission and removed
    when the task starts): how its job ended if it left the queue before starting (e.g.
    cancelled while pending), else None (still queued, or the scheduler cannot be asked).
    The scheduler is asked once per launcher."""
    by_launcher: dict[str, list[str]] = {}
    for q in queued:
        by_launcher.setdefault(str(q.get("launcher")), []).append(str(q.get("job_id")))
    states: dict[tuple[str, str], str] = {}
    for name, ids in by_launcher.items():
        cls = LAUNCHERS.get(name) if name in LAUNCHERS else None
        if cls is not None:
            states.update({(name, j): s for j, s in cls.ended_jobs(ids).items()})
    return [states.get((str(q.get("launcher")), str(q.get("job_id")))) for q in queued]


def check_nproc(nproc: Any, gpus: Any) -> None:
    """A cluster launcher's ``nproc`` (processes per run) against its ``gpus`` per run."""
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise FusionLabError(f"launcher option nproc must be a whole number >= 1, got {nproc!r}")
    if nproc > 1 and isinstance(gpus, int) and 0 < gpus < nproc:
        raise FusionLabError(f"launcher option gpus ({gpus}) must be 0 (CPU nodes, gloo) or at "
                             f"least nproc ({nproc}): each DDP process takes one GPU")


def train_task(study_file: str, overrides: list[str], results: str, run_id: str,
               device: str = "auto", retry_failed: bool = False,
               lease_s: float = 300.0, nproc: int = 1, nodes: Any = None) -> str:
    """Train one run of a study, as a remote task does; returns its status.

    The study is loaded again (plugins imported) from its file, so a task needs only the
    shared filesystem and the same installation. ``nproc`` 1: in this process; N > 1: on N
    DDP processes that torchrun starts on this node (``--only`` this run), which a signal
    handler of the task stops with ``stop_task_processes``. ``nodes`` (a ``spawn.Nodes``):
    the run trains on ``nproc`` processes of each of several nodes, this task being one.

    A run that may not train on this node (``runner.check_device``: e.g.
    ``dataset.decode: gpu`` without CUDA) is recorded as failed with that one-line reason,
    and the ``FusionLabError`` is raised: the task refuses before training.
    """
    study, runs = prepare(study_file, overrides)
    study, run = find_task_run(study, runs, Path(results), run_id)
    if run is None:
        raise FusionLabError(f"run {run_id} is no longer part of study {study_file} "
                             "(the study file changed after submission)")
    d = run_dir(Path(results), study, run)
    (d / store.QUEUED_JSON).unlink(missing_ok=True)
    plugins = plugin_files(study.plugins, study.path.parent if study.path else None)
    try:
        check_device([run], device)  # the run trains on this node: the rule applies here
    except FusionLabError as e:
        record_refusal(study, run, Path(results), e, retry_failed=retry_failed,
                       lease_s=lease_s, plugins=plugins)
        raise
    if nproc > 1 or nodes is not None:
        cmd = spawn.torchrun_command(nproc, study_file, overrides, results, device, "plain",
                                     lease_s, retry_failed=retry_failed, only=[run_id],
                                     nodes=nodes or spawn.ONE_NODE)
        _TASK_RUN[:] = [d]
        try:
            spawn.run_forwarding([(cmd, spawn.torchrun_env())])
        finally:
            _TASK_RUN.clear()
        return store.run_status(d)
    train_one(study, run, Path(results), Outcome(), device=device, retry_failed=retry_failed,
              lease_s=lease_s, plugins=plugins)
    return store.run_status(d)


def find_task_run(study: Study, runs: list[PlannedRun], results: Path, run_id: str
                  ) -> tuple[Study, PlannedRun | None]:
    """The run ``run_id`` of the study and the study it runs under (``task_runs``)."""
    return task_runs(study, runs, results).get(run_id, (study, None))


def task_runs(study: Study, runs: list[PlannedRun], results: Path
              ) -> dict[str, tuple[Study, PlannedRun]]:
    """Every run a task may be given, by id, with the study it runs under (its folder). A
    tuned study's runs are its phases' (``tuning.plan_phases``: trials under
    ``<study>/trials``, the shared recipe's under ``<study>/shared``, the final runs,
    planned from the trials' results, under the study), not the study as written: a task
    planning only those would not find a trial. The phases are planned once."""
    if study.tune is None:
        return {r.run_id: (study, r) for r in runs}
    _, first, final_runs = tuning.plan_phases(study, runs, results)
    found: dict[str, tuple[Study, PlannedRun]] = {}
    for phase in [*first, tuning.Phase("final", study, final_runs or [])]:
        for r in phase.runs:
            found.setdefault(r.run_id, (phase.study, r))
    return found


_TASK_RUN: list[Path] = []  # the run folder a task's DDP processes are training


def stop_task_processes(timeout_s: float = 120.0) -> None:
    """Stop a task's DDP processes (SIGTERM to torchrun) and wait until process 0 has
    recorded the run as interrupted and released its claim, so that a requeued task can
    claim it at once. Safe in a signal handler: it waits on the run folder, not on the
    process, which the task's main thread is waiting for."""

    if not _TASK_RUN:
        return
    signal_children(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while (_TASK_RUN[0] / "claim").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if store.run_status(_TASK_RUN[0]) == store.RUNNING:
        click.echo(f"warning: the DDP processes of run {_TASK_RUN[0].name[:12]} did not "
                   f"release its claim within {timeout_s:.0f} s; it is taken over once its "
                   "lease runs out", err=True)

from fusion_lab.orchestrate.launchers import local, ray_launcher, slurm  # noqa: E402,F401  (registers them)

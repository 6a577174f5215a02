"""Running a study: the one orchestrator, behind ``fusionlab run`` (a thin CLI over it).

``run_study(RunOptions) -> Report`` plans the study (``plan.planning.prepare``), picks the
launcher, decides each run's world size once (``world_size``), checks the runs once
(``training.ddp.check_runs``), writes the plan (study.json) once, launches, and says what
happened: the exit status, whether the runs have finished (so that a table makes sense)
and which of them failed. It prints no table: ``fusion_lab.analysis`` is not below it,
the CLI prints. What it needs to know about a launcher it reads from the launcher's
attributes (``trains_here``, ``processes_per_run``, ``waits``), never from its name.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from fusion_lab import store
from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.orchestrate import spawn
from fusion_lab.orchestrate.launchers import (
    Launcher,
    LaunchJob,
    choose,
    launcher_name,
    task_runs,
)
from fusion_lab.orchestrate.runner import run_dir, write_plan
from fusion_lab.orchestrate.selection import select, set_aside
from fusion_lab.orchestrate.spawn import Nodes, die_with_parent
from fusion_lab.orchestrate.tuning import set_aside_tuned, tuned_report
from fusion_lab.plan.planning import prepare
from fusion_lab.plan.study import PlannedRun, Study, parse_study
from fusion_lab.plan.tags import (
    SCRATCH,
    changes_plan,
    check_tag,
    scratch_note,
    tag_override,
    tagged,
)
from fusion_lab.registries import LAUNCHERS, load_plugins
from fusion_lab.training import ddp


@dataclass
class RunOptions:
    """What ``fusionlab run`` takes (every option but ``--table``), as a library call."""

    study_file: str | Path
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE
    results: str | Path = "results"
    device: str = "auto"  # auto | cpu | cuda
    gpus: str | None = None  # "0,1": one local worker process per GPU
    jobs: int | None = None  # N: N runs at once here, N workers on the CPU or N per GPU
    launcher: str | None = None  # None: the study's launcher: section, else local
    launcher_opts: list[str] = field(default_factory=list)  # --launcher-opt KEY=VALUE
    nproc: int | None = None  # N > 1: each run on N DDP processes under torchrun, here
    nnodes: int = 1  # M > 1: and as many on each of M nodes (one `fusionlab run` per node)
    node_rank: int = 0  # this node's place among them (0: the one that records and reports)
    rdzv: str | None = None  # HOST:PORT of node 0, where the nodes meet
    wait: bool = False  # a launcher that submits (waits False): wait for the runs
    dry_run: bool = False  # plan and check, launch nothing (the CLI lists the runs)
    fail_fast: bool = False
    retry_failed: bool = False
    progress: str = "auto"  # auto | bars | plain | off
    lease_s: float = store.LEASE_S
    only: list[str] = field(default_factory=list)  # run ids, row labels or LABEL:SEED
    rerun: bool = False  # the selected runs train again from scratch (old ones set aside)
    t_start: float | None = None  # time.perf_counter() at the command's start (None: now)
    tag: str | None = None  # --tag: the runs go to results/<study>/tags/<tag>/ (plan.tags)


@dataclass
class Report:
    """What ``run_study`` did."""

    study: Study
    runs: list[PlannedRun]  # every run of the study (its plan)
    selected: list[PlannedRun]  # the runs asked for (``only``), else every run
    code: int = 0  # the exit status: the launcher's, or 1 when a finished run failed
    finished: bool = False  # the selected runs have finished: their results can be read
    failed: list[tuple[PlannedRun, str | None]] = field(default_factory=list)  # and why
    dry_run: bool = False  # nothing was launched
    main: bool = True  # False: a DDP process other than 0, which leaves reports to process 0
    phases: list = field(default_factory=list)  # a tuned study's (orchestrate.tuning.Phase)
    notes: list[str] = field(default_factory=list)  # to say once it is done (stderr)


@dataclass
class Plan:
    """A study planned for one call: its runs, with their world size, and the launcher."""

    study: Study
    runs: list[PlannedRun]  # every run of the study
    selected: list[PlannedRun]  # the runs asked for (``only``), else every run
    overrides: list[str]  # the options' --set, the tag, and the world size of DDP runs
    launcher: Launcher
    notes: list[str] = field(default_factory=list)  # lines for the user (the scratch tag)


def run_study(opts: RunOptions) -> Report:
    """Plan, check and launch a study's runs; what happened (see the module's docstring).

    A ``FusionLabError`` (a study that cannot run as asked) is raised before anything is
    written or started.
    """
    die_with_parent()  # a worker or torchrun process: stop (SIGTERM) if the parent dies
    t_start = time.perf_counter() if opts.t_start is None else opts.t_start
    plan = plan_study(opts)
    report = Report(plan.study, plan.runs, plan.selected, dry_run=opts.dry_run,
                    notes=plan.notes)
    results = Path(opts.results)
    if opts.rerun and not opts.dry_run and opts.node_rank == 0:
        lines = (set_aside_tuned(plan.study, plan.runs, results, opts.only)
                 if plan.study.tune is not None
                 else set_aside(results, plan.study, plan.selected))
        for line in lines:
            click.echo(line, err=True)
    tuned_phase = plan.study.tune is not None and ddp.env_world_size() > 1
    if tuned_phase:  # a torchrun process of one phase of a tuned study (its parent plans)
        plan = _tuned_phase(plan, results, opts.only)
    elif plan.study.tune is not None:  # trials, then final runs (orchestrate.tuning)
        return tuned_report(opts, plan, report, _tuned_launch(opts, plan, results, t_start))
    if opts.dry_run:
        return report
    if (opts.nproc or 1) * opts.nnodes > 1:  # torchrun's processes run this again

        nodes = spawn.Nodes(opts.nnodes, opts.node_rank, opts.rdzv)
        code = spawn.start_torchrun(opts.nproc or 1, str(opts.study_file), plan.overrides,
                                    results, opts.device, opts.fail_fast, opts.retry_failed,
                                    opts.progress, opts.lease_s, nodes=nodes,
                                    only=[r.run_id for r in plan.selected] if opts.only else [])
        report.main = opts.node_rank == 0  # node 0's process 0 records; node 0 reports
        return _finish(report, results, code)
    group = ddp.init(opts.device) if ddp.env_world_size() > 1 else ddp.current()
    report.main = group.main
    job = _job(opts, plan, results, group.main, t_start)
    if group.main and not tuned_phase:  # a tuned study's parent writes its plan
        write_plan(results, plan.study, plan.runs)
    if group.active:
        code = _launch_ddp(plan.launcher, job)
        if not group.main or tuned_phase:
            report.code, report.main = code, False
            return report  # process 0 reports (a tuned study's phase: its parent does)
    else:
        code = plan.launcher.launch(job)
    if plan.launcher.waits or opts.wait:  # launch returned once the runs had finished
        return _finish(report, results, code)
    report.code = code
    return report


def plan_study(opts: RunOptions) -> Plan:
    """The launcher, then each run's world size (decided once, ``world_size``), then the
    runs (``prepare``: loaded, expanded, validated), checked once for what stops them from
    training on that many processes (``ddp.check_runs``; a dry run skips the count).
    ``--tag``, or ``--set``s that change the study's plan (``plan.tags``), put the runs
    in a tag of the study, which the overrides passed on to other processes name."""
    check_tag(opts.tag)
    Nodes(opts.nnodes, opts.node_rank, opts.rdzv).check()
    name, launcher = pick_launcher(opts)
    world = world_size(ddp.env_world_size(), opts.nproc, opts.gpus, name, launcher,
                       opts.nnodes)
    fixed = [f"train.world_size={world}"] if world > 1 else []  # a DDP run is its own run
    tag = [tag_override(opts.tag)] if opts.tag is not None else []
    overrides = [*opts.overrides, *tag, *fixed]
    study, runs = prepare(opts.study_file, overrides)
    note = None
    if study.tag is None and opts.overrides and changes_plan(opts.study_file, study, runs,
                                                             opts.overrides, fixed):
        study = tagged(study, SCRATCH)  # not the study's runs: kept apart from its table
        overrides.append(tag_override(SCRATCH))  # and so in every process and task
        note = scratch_note(study, opts.results)
    how = ("fusionlab run --nproc {}" if launcher.trains_here
           else f"--launcher {name} --launcher-opt nproc={{}}")
    problems = ddp.check_runs(runs, opts.device, None if opts.dry_run else world, how)
    if problems:
        raise ConfigError(problems, source=str(opts.study_file))
    launcher.check_runs(runs, opts.device, world)  # e.g. --jobs without train.threads
    return Plan(study, runs, _selected(runs, opts, study), overrides, launcher,
                [note] if note else [])


def pick_launcher(opts: RunOptions) -> tuple[str, Launcher]:
    """The launcher and its name: ``--launcher`` over the study's ``launcher:`` section
    (whose plugins are imported first: one of them may register it)."""
    study, problems = parse_study(opts.study_file, opts.overrides)
    if problems:  # a broken study: every problem of it in one round, as prepare says them
        prepare(opts.study_file, opts.overrides)
    load_plugins(study.plugins, base_dir=study.path.parent if study.path else None)
    if opts.gpus and not LAUNCHERS.get(launcher_name(study, opts.launcher)).trains_here:
        raise FusionLabError("--gpus is the local launcher's option; with another launcher "
                             "use --launcher-opt gpus=N (GPUs per run)")
    if (opts.jobs or 1) > 1 and not LAUNCHERS.get(launcher_name(study, opts.launcher)).trains_here:
        raise FusionLabError("--jobs is the local launcher's option (runs at once on this "
                             "machine); other launchers train each pending run in its own "
                             "task: size it with --launcher-opt cpus=N and train.threads")
    pairs = list(opts.launcher_opts) + ([f"gpus={opts.gpus}"] if opts.gpus else []) \
        + ([f"jobs={opts.jobs}"] if opts.jobs else [])
    return choose(study, opts.launcher, pairs)


def world_size(env_world: int, nproc: int | None, gpus: str | None, name: str,
               launcher: Launcher, nnodes: int = 1) -> int:
    """The processes each run trains on (its ``train.world_size``), decided once.

    With a launcher that trains here, the processes of this command: torchrun's
    (``env_world``, when torchrun started it) or the ones ``--nproc`` starts on each of
    ``nnodes`` nodes (``--nnodes``); with another,
    its ``processes_per_run`` (a cluster launcher's ``nproc`` option), and then this
    command must be one process.
    """
    if env_world > 1 and (nproc or 1) * nnodes > 1:
        raise FusionLabError("--nproc starts torchrun itself; inside torchrun leave it out "
                             "(and --nnodes)")
    here = env_world if env_world > 1 else (nproc or 1) * nnodes
    if here > 1 and not launcher.trains_here:
        raise FusionLabError(
            f"--nproc and torchrun train on this machine, with the local launcher; with the "
            f"{name} launcher use --launcher-opt nproc=N (processes per run, in each task)")
    if (nproc or 1) * nnodes > 1 and gpus:
        raise FusionLabError("--nproc trains on this machine: use it with the local "
                             "launcher and without --gpus (and so does --nnodes)")
    return here if launcher.trains_here else int(launcher.processes_per_run)


def pending(study: Study, runs: list[PlannedRun], results: Path,
            retry_failed: bool) -> list[PlannedRun]:
    """The runs that need training (``store.needs_training``)."""
    return [r for r in runs
            if store.needs_training(store.run_status(run_dir(results, study, r)), retry_failed)]


def failed_runs(study: Study, runs: list[PlannedRun],
                results: Path) -> list[tuple[PlannedRun, str | None]]:
    """The runs recorded as failed, each with its summary's error."""
    out = []
    for r in runs:
        d = run_dir(results, study, r)
        if store.run_status(d) == store.FAILED:
            out.append((r, (store.read_json(d / store.SUMMARY_JSON) or {}).get("error")))
    return out


def _selected(runs: list[PlannedRun], opts: RunOptions, study: Study) -> list[PlannedRun]:
    if study.tune is not None and ddp.env_world_size() > 1:
        return runs  # a tuned phase's torchrun process: --only names its runs (_tuned_phase)
    return select(runs, list(opts.only), opts.study_file)


def _tuned_launch(opts: RunOptions, plan: Plan, results: Path, t_start: float):
    """How a tuned study's phase is launched: through the study's launcher, or with
    ``--nproc N`` on N DDP processes under torchrun (``--only`` the phase's runs)."""
    if (opts.nproc or 1) > 1:
        return lambda study, runs: spawn.start_torchrun(
            opts.nproc, str(opts.study_file), plan.overrides, results, opts.device,
            opts.fail_fast, opts.retry_failed, opts.progress, opts.lease_s,
            only=[r.run_id for r in runs])
    started = [t_start]  # the first phase from the command's start, later ones from theirs

    def launch(study: Study, runs: list[PlannedRun]) -> int:
        job = _job(opts, Plan(study, runs, runs, plan.overrides, plan.launcher), results,
                   True, started.pop() if started else time.perf_counter())
        return plan.launcher.launch(job)
    return launch


def _tuned_phase(plan: Plan, results: Path, ids: list[str]) -> Plan:
    """A torchrun process of a tuned study's phase: the runs ``ids`` (the parent's
    ``--only``) under the folder of the phase they belong to (trials, shared, final)."""
    known = task_runs(plan.study, plan.runs, results)  # the phases, planned once
    missing = [i for i in ids if i not in known]
    if not ids or missing:
        raise FusionLabError(f"runs {', '.join(missing) or '(none given)'} are not part of "
                             f"tuned study {plan.study.name} (the study changed?)")
    runs = [known[i][1] for i in ids]
    return Plan(known[ids[0]][0], runs, runs, plan.overrides, plan.launcher)


def _finish(report: Report, results: Path, code: int) -> Report:
    """The report of runs that have finished: which failed, and the exit status."""
    report.finished = True
    report.failed = failed_runs(report.study, report.selected, results)
    report.code = max(code, 1 if report.failed else 0)
    return report


def _job(opts: RunOptions, plan: Plan, results: Path, main: bool,
         t_start: float) -> LaunchJob:
    """What the launcher is given (a DDP process other than 0 shows no progress)."""
    return LaunchJob(study_file=Path(opts.study_file).resolve(), overrides=plan.overrides,
                     results=results.resolve(), study=plan.study, runs=plan.runs,
                     pending=pending(plan.study, plan.selected, results, opts.retry_failed),
                     device=opts.device, fail_fast=opts.fail_fast,
                     retry_failed=opts.retry_failed,
                     progress=opts.progress if main else "off", lease_s=opts.lease_s,
                     wait=opts.wait,
                     extra={"t_start": t_start,
                            "only": {r.run_id for r in plan.selected} if opts.only else None})


def _launch_ddp(launcher: Launcher, job: LaunchJob) -> int:
    """Launch as one of torchrun's processes, then leave the process group. A process
    other than 0 whose process 0 has stopped (and says why) stops too, with one line."""
    main = ddp.current().main
    try:
        code = launcher.launch(job)
    except BaseException as e:
        ddp.finish(clean=False)
        if not main and ddp.peer_gone(e):
            click.echo(f"process {os.environ.get('RANK')}: process 0 has stopped; "
                       "this one stops too", err=True)
            return 1
        raise
    ddp.finish()
    return code

"""`fusionlab run STUDY`: train (or submit, with a cluster launcher) every run not done yet."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click


@click.command("run")
@click.argument("study_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key for every run, e.g. --set train.epochs=1.")
@click.option("--results", default="results", show_default=True, type=click.Path(),
              help="Results folder.")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]), help="Where to train.")
@click.option("--gpus", default=None, metavar="0,1,..",
              help="Train several runs at once, one process per GPU (local launcher).")
@click.option("--launcher", default=None,
              help="Where runs train: local (default), slurm, ray; `fusionlab list launchers`.")
@click.option("--launcher-opt", "launcher_opts", multiple=True, metavar="KEY=VALUE",
              help="A launcher option, e.g. --launcher-opt partition=gpu (overrides the "
                   "study's launcher: section).")
@click.option("--nproc", type=click.IntRange(1), default=None, metavar="N",
              help="Train each run on N processes with DistributedDataParallel (started "
                   "through torchrun; on CUDA one GPU each, on the CPU the gloo backend).")
@click.option("--wait", is_flag=True,
              help="With a cluster launcher: wait for the runs, then print the table.")
@click.option("--dry-run", is_flag=True, help="Print every run with its id and status; train nothing.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed run.")
@click.option("--retry-failed", is_flag=True, help="Train failed runs again (from their last checkpoint).")
@click.option("--progress", "progress_mode", default="auto", show_default=True,
              type=click.Choice(["auto", "bars", "plain", "off"]))
@click.option("--table/--no-table", "show_table", default=True, help="Print the table at the end.")
@click.option("--lease", "lease_s", default=300.0, show_default=True, type=click.FloatRange(1),
              help="Seconds without a heartbeat after which other processes, on any host, "
                   "take a claimed run over.")
@click.option("--only", "only", multiple=True, hidden=True, metavar="RUN_ID",
              help="Train only these runs (a cluster task's DDP processes are started so).")
def run(study_file: str, overrides: tuple[str, ...], results: str, device: str,
        gpus: str | None, launcher: str | None, launcher_opts: tuple[str, ...],
        nproc: int | None, wait: bool,
        dry_run: bool, fail_fast: bool, retry_failed: bool, progress_mode: str,
        show_table: bool, lease_s: float, only: tuple[str, ...]) -> None:
    """Train every run of STUDY_FILE that is not done; print the table at the end.

    A rerun trains nothing that is done; growing a study trains only the new runs; a
    killed or interrupted run resumes from its last checkpoint. Exits 1 if any run failed.
    """
    from fusion_lab import store
    from fusion_lab.errors import ConfigError, FusionLabError
    from fusion_lab.orchestrate import spawn
    from fusion_lab.orchestrate.launchers import LaunchJob, choose
    from fusion_lab.orchestrate.runner import run_dir
    from fusion_lab.plan.planning import prepare
    from fusion_lab.training import ddp

    t_start = time.perf_counter() - _process_age()
    world = ddp.env_world_size()  # > 1: this is one of torchrun's processes
    overrides = list(overrides)
    if (nproc or 1) > 1 and world > 1:
        raise FusionLabError("--nproc starts torchrun itself; inside torchrun leave it out")
    if world > 1 or (nproc or 1) > 1:  # a DDP run is its own run (its id says so)
        overrides.append(f"train.world_size={world if world > 1 else nproc}")
    study, runs = prepare(study_file, overrides)
    results_dir = Path(results)
    problems = ddp.check_runs(runs, device)
    if problems:
        raise ConfigError(problems, source=study_file)
    if gpus and (launcher or (study.launcher or {}).get("name") or "local") != "local":
        raise FusionLabError("--gpus is the local launcher's option; with another launcher "
                             "use --launcher-opt gpus=N (GPUs per run)")
    opts = list(launcher_opts) + ([f"gpus={gpus}"] if gpus else [])
    name, chosen = choose(study, launcher, opts)
    per_run = int(getattr(chosen, "nproc", 1) or 1) if name != "local" else 1
    if per_run > 1:  # a cluster launcher's DDP runs: ids with their world size
        overrides.append(f"train.world_size={per_run}")
        study, runs = prepare(study_file, overrides)
    if only:
        missing = sorted(set(only) - {r.run_id for r in runs})
        if missing:
            raise FusionLabError(f"run(s) {', '.join(missing)} are no longer part of study "
                                 f"{study_file} (the study file changed after submission)")
        shown = [r for r in runs if r.run_id in only]
    else:
        shown = runs
    if dry_run:
        _dry_run(study, runs, results_dir)
        return
    _check_processes(runs, name, world if world > 1 else (nproc or 1), per_run)
    if (nproc or 1) > 1:
        if gpus:  # (another launcher was refused by _check_processes)
            raise FusionLabError("--nproc trains on this machine: use it with the local "
                                 "launcher and without --gpus")
        code = spawn.start_torchrun(nproc, study_file, overrides, results_dir, device,
                                  fail_fast, retry_failed, progress_mode, lease_s,
                                  only=list(only))
        failed = _finish(study, shown, results_dir, show_table)
        code = max(code, 1 if failed else 0)
        if code:
            sys.exit(code)
        return
    if world > 1:
        group = ddp.init(device)
        if not group.main:
            progress_mode, show_table = "off", False
    pending = []
    for r in shown:
        status = store.run_status(run_dir(results_dir, study, r))
        if status != store.DONE and (status != store.FAILED or retry_failed):
            pending.append(r)
    job = LaunchJob(study_file=Path(study_file).resolve(), overrides=list(overrides),
                    results=results_dir.resolve(), study=study, runs=runs, pending=pending,
                    device=device, fail_fast=fail_fast, retry_failed=retry_failed,
                    progress=progress_mode, lease_s=lease_s, wait=wait,
                    extra={"t_start": t_start, "only": set(only) or None})
    if name != "local":  # the local launcher's train_study writes it
        from fusion_lab.plan.study import study_plan

        store.write_json(store.study_dir(results_dir, study.name) / store.STUDY_JSON,
                     study_plan(study, runs))
    if world > 1:
        main = ddp.current().main
        try:
            code = chosen.launch(job)
        except BaseException as e:
            ddp.finish(clean=False)
            if not main and ddp.peer_gone(e):  # process 0 stopped (and says why): no traceback
                click.echo(f"process {os.environ.get('RANK')}: process 0 has stopped; "
                           "this one stops too", err=True)
                sys.exit(1)
            raise
        ddp.finish()
        if not main:
            return  # process 0 reports
    else:
        code = chosen.launch(job)
    if name in ("local", "ray") or wait:
        failed = _finish(study, shown, results_dir, show_table)
        code = max(code, 1 if failed else 0)
    if code:
        sys.exit(code)


def _check_processes(runs, launcher: str, procs: int, per_run: int) -> None:
    """Refuse, before anything starts, runs that this many processes cannot train.

    A DDP run (``train.world_size`` N > 1) trains on N processes: started here by
    ``--nproc N`` or torchrun with the local launcher, or inside each task of a cluster
    launcher by its option ``nproc=N`` (``per_run``).
    """
    from fusion_lab.errors import FusionLabError

    sizes = sorted({r.config.train.world_size for r in runs})
    if launcher != "local" and procs > 1:
        raise FusionLabError(
            f"--nproc and torchrun train on this machine, with the local launcher; with the "
            f"{launcher} launcher use --launcher-opt nproc=N (processes per run, in each task)")
    need = per_run if launcher != "local" else procs
    if sizes != [need]:
        how = ("fusionlab run --nproc {}" if launcher == "local"
               else f"--launcher {launcher} --launcher-opt nproc={{}}")
        raise FusionLabError(
            f"the study's runs have train.world_size {', '.join(map(str, sizes))} but this "
            f"is {need} process(es) per run: train them with "
            + ", ".join(how.format(n) for n in sizes)
            + (" (one call each)" if len(sizes) > 1 else ""))


def _dry_run(study, runs, results_dir: Path) -> None:
    """Every run with its id and status; for a claim or a queued task, whose and how old."""
    import time as _time

    from fusion_lab import store
    from fusion_lab.orchestrate.runner import run_dir

    counts: dict[str, int] = {}
    about = f" - {study.describe}" if study.describe else ""
    click.echo(f"study {study.name}: {len(runs)} runs{about}")
    for r in runs:
        d = run_dir(results_dir, study, r)
        status = store.run_status(d)
        note = ""
        claim = store.read_claim(d) if status in (store.RUNNING, store.PENDING, store.INTERRUPTED) else None
        queued = store.read_json(d / store.QUEUED_JSON)
        if claim:
            beat = claim.get("beat")
            age = f", last heartbeat {_time.time() - beat:.0f}s ago" if beat else ""
            kind = "claim" if status == store.RUNNING else "stale claim"
            note = f"  ({kind}: {claim.get('host')} pid {claim.get('pid')}{age})"
            if status == store.PENDING:
                status = "stale"
        elif status == store.PENDING and isinstance(queued, dict):
            status = "queued"
            note = f"  ({queued.get('launcher')} job {queued.get('job_id')}, " \
                   f"submitted {queued.get('submitted')})"
        counts[status] = counts.get(status, 0) + 1
        click.echo(f"{r.run_id}  {status:<8} seed {r.seed:<3} {r.display}{note}")
    click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def _process_age() -> float:
    """Seconds since this process started (interpreter start-up included), 0 if unknown."""
    try:
        import os

        ticks = os.sysconf("SC_CLK_TCK")
        start = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - start)
    except (OSError, ValueError, IndexError):
        return 0.0


def _finish(study, runs, results_dir: Path, show_table: bool) -> list[str]:
    from fusion_lab import store

    if show_table:
        from fusion_lab.cli.table import table

        try:
            table.main(args=[study.name, "--results", str(results_dir)], standalone_mode=False)
        except Exception as e:  # the table is a courtesy here; the runs are stored
            click.echo(f"(could not print the table: {e})", err=True)
    failed = []
    for r in runs:
        d = store.run_dir(results_dir, study.name, r.run_id)
        if store.run_status(d) == store.FAILED:
            err = (store.read_json(d / store.SUMMARY_JSON) or {}).get("error")
            failed.append(f"{r.run_id[:12]} {r.display} seed {r.seed}: {err}")
    if failed:
        click.echo(f"{len(failed)} run(s) failed (see their summary.json and error.log; "
                   "--retry-failed trains them again):", err=True)
        for line in failed:
            click.echo(f"  {line}", err=True)
    return failed

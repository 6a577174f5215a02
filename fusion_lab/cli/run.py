"""`fusionlab run STUDY`: train (or submit, with a cluster launcher) every run not done yet."""

from __future__ import annotations

import os
import sys
import time
import time as _time
from pathlib import Path

import click

from fusion_lab import store
from fusion_lab.orchestrate.launchers import ended_states
from fusion_lab.orchestrate.runner import run_dir
from fusion_lab.orchestrate.study_run import RunOptions, run_study


@click.command("run")
@click.argument("study_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key for every run, e.g. --set train.epochs=1.")
@click.option("--tag", default=None, metavar="NAME",
              help="Run into the study's tag NAME, results/<study>/tags/NAME/ (e.g. a smoke "
                   "run), never the study's own table: `fusionlab table STUDY --tag NAME`. "
                   "--set that changes the study's runs goes to the tag scratch unless named.")
@click.option("--results", default="results", show_default=True, type=click.Path(),
              help="Results folder.")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]), help="Where to train.")
@click.option("--gpus", default=None, metavar="0,1,..",
              help="Train several runs at once, one process per GPU (local launcher).")
@click.option("--jobs", type=click.IntRange(1), default=None, metavar="N",
              help="Train N runs at once (local launcher): N worker processes on the CPU, "
                   "each run with its train.threads (required), or N per GPU with --gpus.")
@click.option("--launcher", default=None,
              help="Where runs train: local (default), slurm, ray; `fusionlab list launchers`.")
@click.option("--launcher-opt", "launcher_opts", multiple=True, metavar="KEY=VALUE",
              help="A launcher option, e.g. --launcher-opt partition=gpu (overrides the "
                   "study's launcher: section).")
@click.option("--nproc", type=click.IntRange(1), default=None, metavar="N",
              help="Train each run on N processes with DistributedDataParallel (started "
                   "through torchrun; on CUDA one GPU each, on the CPU the gloo backend).")
@click.option("--nnodes", type=click.IntRange(1), default=1, show_default=True, metavar="M",
              help="Train each run on M nodes (--nproc processes on each): run the same "
                   "command on every node, each with its --node-rank and the same --rdzv.")
@click.option("--node-rank", type=click.IntRange(0), default=0, show_default=True,
              metavar="R", help="This node's rank, 0..M-1 (node 0 records and reports).")
@click.option("--rdzv", default=None, metavar="HOST:PORT",
              help="With --nnodes: node 0's address and a free port, where the nodes meet.")
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
@click.option("--only", "only", multiple=True, metavar="RUN",
              help="Only these runs: a run id (or a prefix of 6+ digits), a row label (every "
                   "seed) or LABEL:SEED; repeatable.")
@click.option("--rerun", is_flag=True,
              help="Train the selected runs (--only; default every run) again from scratch, "
                   "done ones too (e.g. after editing a plugin); their old folders move to "
                   "results/<study>/.replaced/.")
def run(study_file: str, overrides: tuple[str, ...], tag: str | None, results: str,
        device: str, gpus: str | None, jobs: int | None, launcher: str | None,
        launcher_opts: tuple[str, ...],
        nproc: int | None, nnodes: int, node_rank: int, rdzv: str | None, wait: bool,
        dry_run: bool, fail_fast: bool, retry_failed: bool, progress_mode: str,
        show_table: bool, lease_s: float, only: tuple[str, ...], rerun: bool) -> None:
    """Train every run of STUDY_FILE that is not done; print the table at the end.

    A rerun trains nothing that is done; growing a study trains only the new runs; a
    killed or interrupted run resumes from its last checkpoint. Exits 1 if any run failed.
    """
    t_start = time.perf_counter() - _process_age()
    report = run_study(RunOptions(
        study_file=study_file, overrides=list(overrides), results=results, device=device,
        gpus=gpus, jobs=jobs, launcher=launcher, launcher_opts=list(launcher_opts), nproc=nproc,
        nnodes=nnodes, node_rank=node_rank, rdzv=rdzv,
        wait=wait, dry_run=dry_run, fail_fast=fail_fast, retry_failed=retry_failed,
        progress=progress_mode, lease_s=lease_s, only=list(only), rerun=rerun, tag=tag,
        t_start=t_start))
    if report.dry_run:
        for phase in report.phases or [None]:  # a tuned study: its phases, each listed
            if phase is not None:
                click.echo(f"[{phase.title}]")
            _dry_run(*((phase.study, phase.runs) if phase else (report.study, report.selected)),
                     Path(results))
        if report.phases and report.phases[-1].title != "final":
            click.echo("[final] planned once every trial has finished")
        _notes(report.notes)
        return
    if report.main and report.finished:
        if show_table:
            _table(report.study.name, results, report.study.tag)
        _failed(report.failed)
    if report.main:
        _notes(report.notes)
    if report.code:
        sys.exit(report.code)


def _dry_run(study, runs, results_dir: Path) -> None:
    """Every run with its id and status; for a claim or a queued task, whose and how old.
    A task the scheduler no longer has (cancelled while pending) is not shown queued."""

    counts: dict[str, int] = {}
    about = f" - {study.describe}" if study.describe else ""
    click.echo(f"study {study.name}: {len(runs)} runs{about}")
    rows = [(r, run_dir(results_dir, study, r)) for r in runs]
    statuses = [store.run_status(d) for _, d in rows]
    queued = [store.read_json(d / store.QUEUED_JSON) if s == store.PENDING else None
              for (_, d), s in zip(rows, statuses)]
    asked = [q for q in queued if isinstance(q, dict)]
    ended = dict(zip(map(id, asked), ended_states(asked)))
    for (r, d), status, q in zip(rows, statuses, queued):
        note = ""
        claim = store.read_claim(d) if status in (store.RUNNING, store.PENDING, store.INTERRUPTED) else None
        if claim:
            beat = claim.get("beat")
            age = f", last heartbeat {_time.time() - beat:.0f}s ago" if beat else ""
            kind = "claim" if status == store.RUNNING else "stale claim"
            note = f"  ({kind}: {claim.get('host')} pid {claim.get('pid')}{age})"
            if status == store.PENDING:
                status = "stale"
        elif isinstance(q, dict):
            status, note = _queued(q, ended.get(id(q)))
        counts[status] = counts.get(status, 0) + 1
        click.echo(f"{r.run_id}  {status:<8} seed {r.seed:<3} {r.display}{note}")
    click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def _queued(q: dict, ended: str | None) -> tuple[str, str]:
    """A pending run's status and note: its queued.json, unless its job has ended."""
    job = f"{q.get('launcher')} job {q.get('job_id')}"
    if ended is None:
        return "queued", f"  ({job}, submitted {q.get('submitted')})"
    how = "is no longer known to the scheduler" if ended == "GONE" else f"ended {ended}"
    return "pending", f"  ({job} {how} before the run started)"


def _process_age() -> float:
    """Seconds since this process started (interpreter start-up included), 0 if unknown."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - start)
    except (OSError, ValueError, IndexError):
        return 0.0


def _table(study: str, results: str, tag: str | None = None) -> None:
    """The study's table, as `fusionlab table STUDY --results RESULTS [--tag TAG]` prints
    it (``study``: the name it ran under, a tag's ``<study>/tags/<tag>``)."""
    # here, not at the top: the table (pandas) only once runs have finished
    from fusion_lab.analysis.table import tables

    if tag is not None:
        study = study.removesuffix(f"/{store.TAGS}/{tag}")
    try:
        out = tables([study], results=results, tag=tag)
    except Exception as e:  # the table is a courtesy here; the runs are stored
        click.echo(f"(could not print the table: {e})", err=True)
        return
    click.echo(out.text)
    for warning in out.warnings:
        click.echo(warning, err=True)


def _notes(notes: list[str]) -> None:
    """What the user should know about where the runs went, on stderr."""
    for line in notes:
        click.echo(line, err=True)


def _failed(failed) -> None:
    """The failed runs, one line each, on stderr."""
    if not failed:
        return
    click.echo(f"{len(failed)} run(s) failed (see their summary.json and error.log; "
               "--retry-failed trains them again):", err=True)
    for r, err in failed:
        click.echo(f"  {r.run_id[:12]} {r.display} seed {r.seed}: {err}", err=True)

"""`fusionlab run STUDY`: train every run of a study that is missing or failed."""

from __future__ import annotations

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
              help="Train several runs at once, one process per GPU.")
@click.option("--dry-run", is_flag=True, help="Print every run with its id and status; train nothing.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed run.")
@click.option("--retry-failed", is_flag=True, help="Train failed runs again (from their last checkpoint).")
@click.option("--progress", "progress_mode", default="auto", show_default=True,
              type=click.Choice(["auto", "bars", "plain", "off"]))
@click.option("--table/--no-table", "show_table", default=True, help="Print the table at the end.")
@click.option("--lease", "lease_s", default=300.0, show_default=True, type=click.FloatRange(1),
              help="Seconds without a heartbeat after which other processes, on any host, "
                   "take a claimed run over.")
def run(study_file: str, overrides: tuple[str, ...], results: str, device: str,
        gpus: str | None, dry_run: bool, fail_fast: bool, retry_failed: bool,
        progress_mode: str, show_table: bool, lease_s: float) -> None:
    """Train every run of STUDY_FILE that is not done; print the table at the end.

    A rerun trains nothing that is done; growing a study trains only the new runs; a
    killed run resumes from its last checkpoint. Exits 1 if any run failed.
    """
    from fusion_lab import store as S
    from fusion_lab.runner import launch_workers, prepare, run_dir, train_study

    t_start = time.perf_counter() - _process_age()
    study, runs = prepare(study_file, list(overrides))
    results_dir = Path(results)
    if dry_run:
        counts: dict[str, int] = {}
        about = f" - {study.describe}" if study.describe else ""
        click.echo(f"study {study.name}: {len(runs)} runs{about}")
        for r in runs:
            status = S.run_status(run_dir(results_dir, study, r))
            counts[status] = counts.get(status, 0) + 1
            click.echo(f"{r.run_id}  {status:<8} seed {r.seed:<3} {r.display}")
        click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        return
    if gpus:
        code = launch_workers(study_file, list(overrides), results_dir,
                              [g.strip() for g in gpus.split(",") if g.strip()],
                              fail_fast, retry_failed)
        _finish(study, runs, results_dir, show_table)
        sys.exit(code)
    from fusion_lab.progress import Progress
    from fusion_lab.train import resolve_device

    resolve_device(device)  # --device cuda without CUDA: one error before anything trains
    progress = Progress(progress_mode) if progress_mode != "off" else None
    try:
        out = train_study(study, runs, results_dir, device=device, fail_fast=fail_fast,
                          retry_failed=retry_failed, progress=progress, lease_s=lease_s)
    finally:
        if progress is not None:
            progress.close()
    wall = time.perf_counter() - t_start
    if out.trained:
        overhead = wall - out.train_s
        click.echo(f"trained {len(out.trained)} runs in {wall:.1f}s; runner overhead "
                   f"(process start-up, expansion, checkpoints, results) {overhead:.1f}s = "
                   f"{100 * overhead / wall:.1f}%", err=True)
    failed = _finish(study, runs, results_dir, show_table)
    if failed:
        sys.exit(1)


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
    from fusion_lab import store as S
    from fusion_lab.runner import run_dir

    if show_table:
        from fusion_lab.cli.table import table

        try:
            table.main(args=[study.name, "--results", str(results_dir)], standalone_mode=False)
        except Exception as e:  # the table is a courtesy here; the runs are stored
            click.echo(f"(could not print the table: {e})", err=True)
    failed = []
    for r in runs:
        d = run_dir(results_dir, study, r)
        if S.run_status(d) == S.FAILED:
            err = (S.read_json(d / "summary.json") or {}).get("error")
            failed.append(f"{r.run_id[:12]} {r.display} seed {r.seed}: {err}")
    if failed:
        click.echo(f"{len(failed)} run(s) failed (see their summary.json and error.log; "
                   "--retry-failed trains them again):", err=True)
        for line in failed:
            click.echo(f"  {line}", err=True)
    return failed

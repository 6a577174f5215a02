"""Running a tuned study (a ``tune:`` block) in two phases, each through the study's
launcher like any runs: the trials (and the shared recipe's runs, ``tune.shared``), then,
once every trial has settled, the final runs at each row's chosen point.

The QMC trials are planned in advance (``plan.tuning.expand_trials``), so a rerun trains
nothing that is done and several runners share them through the runs' leases; TPE's are
asked step by step from a recorded sequence (``tuning_tpe``); a pruner stops trials in
the process that trains them (``pruning``, from ``trials/pruning.json``). The final runs
are planned from the recorded trials, the same way by every runner. What was tried and
chosen is written to ``results/<study>/tuning.json`` after each phase.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fusion_lab import store
from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.orchestrate.runner import run_dir, write_plan
from fusion_lab.orchestrate.selection import set_aside
from fusion_lab.orchestrate.tuning_record import (
    Phase,
    drop_sequences,
    settled,
    trial_result,
    write_pruning,
)
from fusion_lab.orchestrate.tuning_tpe import run_sequence, sequence_phase
from fusion_lab.plan.planning import presets, validate
from fusion_lab.plan.study import PlannedRun, Study
from fusion_lab.plan.tune_prune import rungs
from fusion_lab.plan.tuning import (
    Cell,
    choose,
    expand_finals,
    expand_trials,
    shared_study,
    trial_runs,
    trials_study,
)

TUNING_JSON = "tuning.json"
POLL_S = 2.0  # how often a runner looks at trials another runner is training


def plan_phases(study: Study, shared: list[PlannedRun], results: Path
                ) -> tuple[list[Cell], list[Phase], list[PlannedRun] | None]:
    """The cells with their trials (TPE: those asked so far), the first phase's runs
    (validated) and the final runs (None until every trial has settled)."""
    problems = pruner_problems(study, shared)
    if problems:
        raise ConfigError(problems, source=str(study.path))
    if study.tune.sampler == "tpe":
        cells, trials = sequence_phase(study, results, presets())
    else:
        cells = expand_trials(study, presets())
        trials = Phase("trials", trials_study(study), trial_runs(cells))
    first = [trials]
    if study.tune.shared:
        first.append(Phase("shared recipe", shared_study(study), shared))
    found = validate([(r.display, r.config) for r in (trials.runs or shared)])
    problems = list(dict.fromkeys(f"{row}: {p}" for row, p in found))
    if problems:
        raise ConfigError(problems, source=str(study.path))
    return cells, first, finals(study, cells, results)


def pruner_problems(study: Study, runs: list[PlannedRun]) -> list[str]:
    """A pruner needs a rung before the last epoch: tune.min_epochs below every row's
    train.epochs (``runs``: the study as written)."""
    spec = study.tune
    if spec.pruner == "none":
        return []
    short = sorted({r.config.train.epochs for r in runs
                    if not rungs(spec.min_epochs, spec.reduction, r.config.train.epochs)})
    if not short:
        return []
    return [f"tune.min_epochs ({spec.min_epochs}) must be below train.epochs ({short[0]}): "
            "a trial can be stopped only before its last epoch"]


def chosen_points(study: Study, cells: list[Cell], results: Path
                  ) -> dict[str, dict[str, Any]] | None:
    """Each cell's chosen point, or None while a trial has not settled (or a cell has no
    result at all)."""
    out = {}
    for c in cells:
        res = [(t.number, trial_result(study, t.run, results)) for t in c.trials]
        if len(res) < study.tune.trials or not all(settled(x["status"]) for _, x in res):
            return None
        number = choose([(n, x["val_acc"], x["val_size"]) for n, x in res])
        if number is None:
            return None
        out[c.key] = next(t.params for t in c.trials if t.number == number)
    return out


def finals(study: Study, cells: list[Cell], results: Path) -> list[PlannedRun] | None:
    chosen = chosen_points(study, cells, results)
    return None if chosen is None else expand_finals(study, chosen, presets())


def write_tuning(study: Study, cells: list[Cell], shared: list[PlannedRun],
                 final_runs: list[PlannedRun] | None, results: Path) -> None:
    """results/<study>/tuning.json: the space, every trial with its point and result,
    each row's choice, and the run ids of its shared-recipe and final runs."""
    chosen = chosen_points(study, cells, results) or {}
    rows = []
    for c in cells:
        trials = [{"number": t.number, "run_id": t.run.run_id, "params": t.params,
                   **{k: v for k, v in trial_result(study, t.run, results).items()
                      if k != "curve"}} for t in c.trials]
        pick = next((t["number"] for t in trials if c.key in chosen
                     and t["params"] == chosen[c.key]), None)
        rows.append({"label": c.label, "grid": c.grid, "trials": trials, "chosen": pick,
                     "pruned": sum(t["pruned"] for t in trials),
                     "epochs": sum(t["epochs"] for t in trials),
                     "chosen_params": chosen.get(c.key),
                     "shared_run_ids": [r.run_id for r in shared
                                        if (r.label, r.grid) == (c.label, c.grid)],
                     "final_run_ids": [r.run_id for r in final_runs or []
                                       if (r.label, r.grid) == (c.label, c.grid)]})
    store.write_json(store.study_dir(results, study.name) / TUNING_JSON,
                     {"name": study.name, "baseline": study.baseline, "seeds": study.seeds,
                      "tune": study.tune.as_dict(), "rows": rows, "updated": store.now()})


def run_phase(phase: Phase, launch: Callable[[Study, list[PlannedRun]], int],
              results: Path, waits: bool) -> int:
    """Launch a phase's runs until every one has settled: runs another runner is training
    are waited for (polling their status), runs left interrupted or stale are launched
    again. A launcher that does not wait launches once."""
    code, before = 0, None
    while True:
        code = max(code, launch(phase.study, phase.runs))
        if not waits:
            return code
        statuses = [store.run_status(run_dir(results, phase.study, r)) for r in phase.runs]
        if all(settled(s) for s in statuses) or statuses == before:
            return code  # settled, or a launch that changed nothing (it said why)
        while any(s == store.RUNNING for s in statuses):
            time.sleep(POLL_S)
            statuses = [store.run_status(run_dir(results, phase.study, r)) for r in phase.runs]
        before = statuses


def run_tuned(study: Study, shared: list[PlannedRun], results: Path,
              launch: Callable[[Study, list[PlannedRun]], int], waits: bool
              ) -> tuple[int, list[PlannedRun] | None]:
    """Both phases; (exit status, the final runs, None when the trials have not all
    settled: a launcher that does not wait, rerun once they have)."""
    cells, first, final_runs = plan_phases(study, shared, results)
    write_tuning(study, cells, shared, final_runs, results)
    code = 0
    if study.tune.sampler == "tpe":  # asked step by step, each step a phase of its own
        code, cells = run_sequence(study, results, presets(), lambda phase: run_phase(
            phase, launch, results, waits))
        first = first[1:]
    else:
        write_pruning(results, study, cells)
    for phase in first:
        code = max(code, run_phase(phase, launch, results, waits))
    final_runs = finals(study, cells, results)
    write_tuning(study, cells, shared, final_runs, results)
    if final_runs is None:
        click.echo(f"{study.name}: the trials have not all finished; run again once they "
                   "have to plan the final runs", err=True)
        return code, None
    write_plan(results, study, final_runs)
    code = max(code, run_phase(Phase("final", study, final_runs), launch, results, waits))
    write_tuning(study, cells, shared, final_runs, results)
    return code, final_runs


def set_aside_tuned(study: Study, shared: list[PlannedRun], results: Path,
                    only: list[str]) -> list[str]:
    """``--rerun`` on a tuned study: the rows ``only`` names (labels; every row without
    it) are tuned again from scratch: their trials, shared-recipe runs and final runs (which
    the trials chose) move to ``.replaced/`` as ``selection.set_aside`` does, and a TPE
    row's recorded sequence is forgotten. One line per run moved."""
    labels = {r.label for r in shared}
    unknown = [x for x in only if x not in labels]
    if unknown:
        raise FusionLabError(f"--only {', '.join(map(repr, unknown))} with --rerun on a tuned "
                             f"study: give row labels ({', '.join(sorted(labels))})")
    keep = set(only) or labels
    cells, first, final_runs = plan_phases(study, shared, results)
    lines = []
    for phase in [*first, Phase("final", study, final_runs or [])]:
        lines += set_aside(results, phase.study, [r for r in phase.runs if r.label in keep])
    if study.tune.sampler == "tpe":
        drop_sequences(results, study, [c.key for c in cells if c.label in keep])
    return lines


def tuned_report(opts: Any, plan: Any, report: Any,
                 launch: Callable[[Study, list[PlannedRun]], int]) -> Any:
    """``run_study`` for a tuned study: ``report`` (a ``study_run.Report``) filled in; a
    dry run only lists the phases."""
    if (opts.nproc or 1) > 1 and plan.study.tune.pruner != "none":
        raise ConfigError("a trial that a pruner may stop trains on one process: leave out "
                          "--nproc or tune.pruner", source=str(opts.study_file))
    if opts.nnodes > 1:
        raise ConfigError("a tuned study trains on one node: leave out --nnodes",
                          source=str(opts.study_file))
    results = Path(opts.results)
    study = plan.study
    cells, first, final_runs = plan_phases(study, plan.runs, results)
    if opts.dry_run:
        report.phases = first + ([Phase("final", study, final_runs)] if final_runs else [])
        report.runs = report.selected = final_runs or []
        return report
    code, final_runs = run_tuned(study, plan.runs, results, launch,
                                 plan.launcher.waits or opts.wait)
    report.runs = report.selected = final_runs or []
    report.code = code
    if final_runs is not None:
        report.finished = plan.launcher.waits or opts.wait
        report.failed = [(r, (store.read_json(run_dir(results, study, r) / store.SUMMARY_JSON)
                              or {}).get("error")) for r in final_runs
                         if store.run_status(run_dir(results, study, r)) == store.FAILED]
        report.code = max(code, 1 if report.failed else 0)
    return report

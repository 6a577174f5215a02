"""A tuned study's runs (no torch): its trials, planned in advance from the QMC points
(``expand_trials``) or one step at a time from TPE's recorded sequence
(``sequence_cells``), and its final runs, planned from the trials' results.

Every (variant, grid cell) is a *cell* with ``tune.trials`` trials (the same space, the
same number of trials, the same epochs: one budget for every row): QMC's points are the
same for every cell, TPE's follow each cell's own results. A trial is an ordinary run
whose config carries its point (and ``train.pruner`` when a pruner is set), trained with
``tune.seed``; its run id is its config's, like any run's. Trials live in ``results/<study>/trials/``, the shared recipe's
runs (``tune.shared``) in ``results/<study>/shared/``, the final runs (the chosen point,
the study's seeds) in ``results/<study>/`` where the table reads them.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from fusion_lab.plan.dotted import deep_merge, set_dotted
from fusion_lab.plan.study import PlannedRun, Study, expand
from fusion_lab.plan.tune_space import PRUNER_KEY, TuneSpec, points
from fusion_lab.store import canonical_json


@dataclass
class Trial:
    number: int  # its place in the sampler's sequence (0-based)
    params: dict[str, Any]
    run: PlannedRun


@dataclass
class Cell:
    """One row being tuned: a variant in one grid cell, and its trials."""

    label: str
    grid: dict[str, Any]  # as the table shows it
    trials: list[Trial] = field(default_factory=list)

    @property
    def key(self) -> str:
        return cell_key(self.label, self.grid)


def cell_key(label: str, grid: dict[str, Any]) -> str:
    return f"{label} {canonical_json(grid)}"


def trials_study(study: Study) -> Study:
    """The study its trials are run under (their folder: results/<study>/trials)."""
    return dataclasses.replace(study, name=f"{study.name}/trials", tune=None,
                               seeds=[study.tune.seed])


def shared_study(study: Study) -> Study:
    """The study as written, tuned for none of its rows (results/<study>/shared)."""
    return dataclasses.replace(study, name=f"{study.name}/shared", tune=None)


def nested(params: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in params.items():
        set_dotted(out, key, value)
    return out


def trial_patch(spec: TuneSpec, params: dict[str, Any]) -> dict:
    """What a trial adds to its variant: its point, and the pruner (``train.pruner``, only
    when one is set: the trials of a study without one keep their ids)."""
    tag = spec.pruner_tag()
    return nested({**params, **({PRUNER_KEY: tag} if tag != "none" else {})})


def expand_trials(study: Study, presets: dict[str, dict] | None = None) -> list[Cell]:
    """Every cell with its trials, in study order (variants x grid cells), each with the
    same points in the same order (the QMC sampler's, known in advance)."""
    cells: dict[str, Cell] = {}
    for number, params in enumerate(points(study.tune)):
        variants = [deep_merge(v, trial_patch(study.tune, params)) for v in study.variants]
        runs = expand(dataclasses.replace(trials_study(study), variants=variants), presets)
        for r in runs:
            cell = cells.setdefault(cell_key(r.label, r.grid), Cell(r.label, r.grid))
            cell.trials.append(Trial(number, params, r))
    return list(cells.values())


@dataclass
class SequenceCell:
    """A cell whose points are asked one at a time (TPE): its one-cell, one-seed trials
    study, and its trials so far (from the recorded sequence)."""

    cell: Cell
    study: Study

    def trial(self, number: int, params: dict[str, Any], spec: TuneSpec,
              presets: dict[str, dict] | None = None) -> Trial:
        variant = deep_merge(self.study.variants[0], trial_patch(spec, params))
        run = expand(dataclasses.replace(self.study, variants=[variant]), presets)[0]
        return Trial(number, params, run)


def sequence_cells(study: Study, record: dict[str, list[dict[str, Any]]],
                   presets: dict[str, dict] | None = None) -> list[SequenceCell]:
    """Every cell in study order, with the trials of its recorded points (``record``: cell
    key -> points in trial order; at most ``tune.trials`` of them)."""
    out = []
    for variant, grid in _cells(study):
        one = dataclasses.replace(trials_study(study), variants=[variant], grid=grid)
        probe = expand(one, presets)[0]
        seq = SequenceCell(Cell(probe.label, probe.grid), one)
        for number, params in enumerate(record.get(seq.cell.key, [])[:study.tune.trials]):
            seq.cell.trials.append(seq.trial(number, params, study.tune, presets))
        out.append(seq)
    return out


def _cells(study: Study) -> list[tuple[dict, dict[str, list]]]:
    """(variant, one-cell grid) of every cell, in study order."""
    axes = list(study.grid)
    return [(variant, {a: [v] for a, v in zip(axes, values)})
            for variant in study.variants
            for values in (itertools.product(*study.grid.values()) if axes else [()])]


def trial_runs(cells: list[Cell]) -> list[PlannedRun]:
    """The distinct runs of the trials (two trials at one point are one run)."""
    seen: dict[str, PlannedRun] = {}
    for c in cells:
        for t in c.trials:
            seen.setdefault(t.run.run_id, t.run)
    return list(seen.values())


def choose(results: list[tuple[int, float | None, int | None]]) -> int | None:
    """The trial number chosen from (number, validation accuracy %, validation size):
    the best accuracy; trials within one validation image of it are tied, and the lowest
    number among them wins (``tune_space.TIE_RULE``). None when no trial has a result."""
    scored = [(n, acc, size) for n, acc, size in results if acc is not None]
    if not scored:
        return None
    best = max(acc for _, acc, _ in scored)
    size = max((s for _, _, s in scored if s), default=0)
    tol = 100.0 / size if size else 0.0
    return min(n for n, acc, _ in scored if best - acc <= tol * (1 + 1e-9))


def expand_finals(study: Study, chosen: dict[str, dict[str, Any]],
                  presets: dict[str, dict] | None = None) -> list[PlannedRun]:
    """The final runs: each cell at its chosen point (``chosen``: cell key -> params), for
    the study's seeds, in study order."""
    runs: list[PlannedRun] = []
    for variant, grid in _cells(study):
        one = dataclasses.replace(study, variants=[variant], grid=grid, tune=None)
        probe = expand(dataclasses.replace(one, seeds=one.seeds[:1]), presets)[0]
        params = chosen[cell_key(probe.label, probe.grid)]
        runs += expand(dataclasses.replace(
            one, variants=[deep_merge(variant, nested(params))]), presets)
    return runs

"""The trials of a TPE-tuned study (``tune.sampler: tpe``; no torch): asked one step at a
time, each step recorded before it trains (``tuning_record``'s ``sequence.json``).

Step k asks trial k of every cell whose trials 0..k-1 have settled (one lock held for
the step: read the record, ask what is missing, append it, rewrite ``pruning.json``),
then trains the step's trials as one phase (cells train side by side; a cell's own
trials one after the other, since each point depends on the results before it). A rerun
replays the record: nothing asked twice, nothing done trained again, and the same points
as an uninterrupted run (the sampler is seeded per step and told the same history). A
launcher that does not wait stops after the step it submitted: rerun once it has run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fusion_lab.orchestrate.tuning_record import (
    Phase,
    append_point,
    read_sequence,
    sequence_lock,
    settled,
    told,
    trial_result,
    write_pruning,
)
from fusion_lab.plan.study import Study
from fusion_lab.plan.tune_tpe import tpe_point
from fusion_lab.plan.tuning import Cell, SequenceCell, sequence_cells, trial_runs, trials_study


def sequence_phase(study: Study, results: Path, presets: dict) -> tuple[list[Cell], Phase]:
    """The cells with the trials recorded so far, and those trials as a phase whose title
    says how many remain to be asked (what ``--dry-run`` lists)."""
    cells = [s.cell for s in sequence_cells(study, read_sequence(results, study), presets)]
    asked = sum(len(c.trials) for c in cells)
    total = len(cells) * study.tune.trials
    title = "trials" if asked == total else (
        f"trials (tpe: {asked} of {total} asked; {total - asked} remain to be asked, each "
        "from the results before it)")
    return cells, Phase(title, trials_study(study), trial_runs(cells))


def ask_step(study: Study, results: Path, presets: dict, step: int
             ) -> tuple[list[SequenceCell], bool]:
    """Every cell with trial ``step`` asked and recorded where it was missing and the
    cell's earlier trials have settled; and whether every cell has it now."""
    spec = study.tune
    with sequence_lock(results, study):
        seqs = sequence_cells(study, read_sequence(results, study), presets)
        ready = True
        for seq in seqs:
            trials = seq.cell.trials
            if len(trials) > step:
                continue
            res = [trial_result(study, t.run, results) for t in trials]
            if len(trials) < step or not all(settled(x["status"]) for x in res):
                ready = False
                continue
            params = tpe_point(spec, [told(t.params, x) for t, x in zip(trials, res)], step)
            append_point(results, study, seq.cell.key, params)  # before it trains
            trials.append(seq.trial(step, params, spec, presets))
        write_pruning(results, study, [s.cell for s in seqs])
    return seqs, ready


def run_sequence(study: Study, results: Path, presets: dict,
                 run: Callable[[Phase], int]) -> tuple[int, list[Cell]]:
    """Ask and train the steps in order (``run`` trains a phase until it has settled);
    the exit status and the cells with their trials."""
    code, cells = 0, []
    for step in range(study.tune.trials):
        seqs, ready = ask_step(study, results, presets, step)
        cells = [s.cell for s in seqs]
        step_cells = [Cell(c.label, c.grid, c.trials[step:step + 1]) for c in cells]
        runs = trial_runs(step_cells)
        if runs:
            code = max(code, run(Phase(f"trials, step {step + 1}", trials_study(study),
                                       runs)))
        if not ready:
            break
    return code, cells

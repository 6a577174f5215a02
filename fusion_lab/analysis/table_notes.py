"""The text printed under an ablation table: legend, footnotes, Δ intervals, runs not done.

``table_notes`` is what ``fusion_lab.analysis.table`` prints below each study's table (and
as warnings in CSV / JSON output). No torch.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fusion_lab.analysis.aggregate import BATCH_MARK, StudyResults, not_done
from fusion_lab.analysis.stats import CONFIDENCE, MAX_SEEDS, POWER, pooled_sd, seeds_needed
from fusion_lab.analysis.table_formats import FEW, UNKNOWN, WITHIN, cost_conditions

ZERO_DELTA = 1e-9  # |Δ| below this is a zero difference (two equal means)


def table_notes(res: StudyResults, cost: bool, pivot: bool = False) -> list[str]:
    """Legend, footnotes and the runs that are not done, printed under the table."""
    rows, notes = res.rows, []
    notes.append("Acc: mean ± sample standard deviation (ddof=1) over seeds; "
                 "n: finished seeds.")
    if len(rows) and (rows.n < rows.n_expected).any():
        notes.append(f"{FEW} fewer finished seeds than the study asks for (n = finished/asked).")
    no_delta = pivot or res.study.get("baseline") is None
    notes.append("" if no_delta else f"Δ: against the baseline row of the same grid cell; {WITHIN} within noise: "
                 f"its {CONFIDENCE:.0%} interval contains 0 (Student t over seeds, paired "
                 "where both rows ran the same seeds; binomial SE of the test accuracy "
                 "where a row has one seed; docs/tables.md).")
    if not no_delta:
        notes += interval_notes(rows)
    if not pivot and len(rows) and (rows.delta.notna() & rows.within_noise.isna()).any():
        notes.append(f"{UNKNOWN} noise not assessed: summary.json has no test_size.")
    if len(rows) and not rows.in_plan.all():
        notes.append("‡ not in the current study.json (the study was edited since these ran); "
                     "[...] is the group id where two rows share a label.")
    if len(rows) and rows.batch_dependent.any():
        sizes = sorted({b for bs in rows.test_batch_sizes for b in bs})
        size = f" (tested in batches of {', '.join(map(str, sizes))}, unshuffled)" if sizes else ""
        notes.append(f"{BATCH_MARK} predictions depend on the test batch{size}: an image's "
                     "prediction depends on the images before it in its batch.")
    if res.study.get("baseline") is None:
        notes.append("the study names no `baseline:` row, so there are no deltas.")
    elif not pivot and len(rows) and (rows.n > 0).any() and not rows.is_baseline.any():
        notes.append(f"no finished baseline row ({res.study.get('baseline')!r}): no deltas.")
    if cost and res.cost is None:
        notes.append(f"no cost profile: run fusionlab bench {res.name}")
    elif cost:
        notes.append(f"Cost measured on {cost_conditions(res.cost)}. img/s: median "
                     "[min-max] over the rounds; ×: throughput against the baseline row of "
                     "the same grid cell (ratio of medians [per-round range]).")
        missing = [g for g in rows.group_id if g not in (res.cost.get("rows") or {})]
        if missing:
            notes.append(f"{len(missing)} row(s) missing from cost.json (older profile): "
                         f"run fusionlab bench {res.name}")
    notes = [n for n in notes if n] + res.notes
    bad = not_done(res.runs)
    if len(bad):
        notes.append(f"Not done ({len(bad)} run(s), not counted):")
        width = max(len(str(lab)) for lab in bad.label)
        for r in bad.itertuples():
            seed = "-" if r.seed is None or pd.isna(r.seed) else int(r.seed)
            err = f": {r.error}" if r.status == "failed" and r.error else ""
            notes.append(f"  {str(r.run_id)[:8]}  {str(r.label):<{width}}  seed {seed:<3} "
                         f"{r.status}{err}")
    return notes


def interval_notes(rows: pd.DataFrame) -> list[str]:
    """Which interval each Δ used, and how many seeds would resolve the smallest Δ."""
    compared = rows[rows.in_plan & rows.noise_basis.notna()] if len(rows) else rows
    if not len(compared):
        return []
    kinds = {"paired": "paired t", "welch": "Welch t", "binomial1": "binomial (one seed)",
             "binomial0": "binomial (no seed spread)"}
    basis = [_basis(r, rows) for r in compared.itertuples()]
    used = []
    for kind, text in kinds.items():
        names = [d for d, b in zip(compared.display, basis) if b == kind]
        if names:
            used.append(f"{text}: " + (", ".join(names) if len(names) <= 6
                                       else f"{len(names)} rows"))
    return ["Δ intervals: " + "; ".join(used) + ".", planning_note(rows, compared)]


def _basis(r: Any, rows: pd.DataFrame) -> str:
    """The row's interval kind; a binomial one says why: a row with one seed, or none with
    spread (both rows ran 2 or more seeds, every seed alike)."""
    if r.noise_basis != "binomial":
        return r.noise_basis
    base = rows[rows.is_baseline & rows.grid.map(lambda g: g == r.grid)]
    n_base = int(base.n.iloc[0]) if len(base) else 0
    return "binomial1" if min(r.n, n_base) < 2 else "binomial0"


def planning_note(rows: pd.DataFrame, compared: pd.DataFrame) -> str:
    """Seeds per row to detect the smallest non-zero Δ, from the pooled spread of the rows
    whose seeds vary (a zero spread is no estimate: the intervals refuse it too)."""
    planned = rows[rows.in_plan]
    sd, df = pooled_sd([list(r.by_seed.values()) for r in planned.itertuples()])
    if not sd > 0:
        return ("Planning: no seed spread yet (one seed per row, or identical seeds): "
                "run at least 2 seeds per row to estimate how many are needed.")
    zero = compared[compared.delta.abs() < ZERO_DELTA]
    nonzero = compared[compared.delta.abs() >= ZERO_DELTA]
    if not len(nonzero):
        return ("Planning: every Δ shown is 0 (the rows equal their baseline): no number "
                "of seeds detects a zero difference.")
    smallest = nonzero.loc[nonzero.delta.abs().idxmin()]
    n = seeds_needed(smallest.delta, sd)
    need = f"about {n}" if n else f"more than {MAX_SEEDS}"
    left = (f" A Δ of 0 ({', '.join(zero.display)}) is left out: no number of seeds "
            "detects it." if len(zero) else "")
    return (f"Planning: with the pooled seed spread s = {sd:.2f} (df {df}) of the rows "
            f"whose seeds vary, {need} seeds per row would detect the smallest non-zero Δ shown "
            f"({smallest.delta:+.2f}, {smallest.display}) with {POWER:.0%} power at the "
            f"{1 - CONFIDENCE:.0%} level (two-sample t test; docs/tables.md).{left}")


def plugin_warnings(res: StudyResults) -> list[str]:
    """One line per plugin file that changed on disk since finished runs were trained with it."""
    runs = res.runs
    if not len(runs) or "plugins_changed" not in runs:
        return []
    by_file: dict[str, int] = {}
    for changed in runs.plugins_changed:
        for path in changed or []:
            by_file[path] = by_file.get(path, 0) + 1
    return [f"warning: {res.name}: plugin file {path} has changed since {n} finished run(s) "
            "were trained with it (its SHA-256 differs from the one in their summary.json); "
            "their results may not be what the file computes now"
            for path, n in sorted(by_file.items())]

"""TPE (``tune.sampler: tpe``): the next point of one cell's sequence, from the points
asked before it and their results (no torch; Optuna is imported when a point is asked).

Optuna's TPESampler is rebuilt for every step: a fresh in-memory study is told the cell's
recorded trials in order (``add_trial``: complete with its last-epoch validation accuracy,
pruned with its epochs' accuracies, failed), and asked once. Its seed is the tune seed
and the step's number (``step_seed``), so a step's point depends only on what was told:
a rerun that replays the record asks the same point an uninterrupted run asked, and every
cell draws the same random startup points.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from fusion_lab.plan.tune_space import Dim, TuneSpec, _distribution

COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"  # a told trial's state


def step_seed(seed: int, step: int) -> int:
    """The sampler's seed for ``step`` of a sequence tuned with ``seed``."""
    return (seed * 1_000_003 + step * 7919 + 1) % 2**31


def tpe_point(spec: TuneSpec, history: list[dict[str, Any]], step: int) -> dict[str, Any]:
    """The point of trial ``step`` of a cell: ``history`` holds the cell's trials before it,
    each ``{"params", "state": complete|pruned|failed, "value", "values": {epoch: acc}}``.
    Floats are rounded to 6 significant digits, within the range (they name run ids)."""
    # here, not at the top: optuna (a slow import) only for a study with a tune: block
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=step_seed(spec.seed, step),
                                         n_startup_trials=spec.startup())
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dists = {d.key: _distribution(d) for d in spec.space}
    states = {COMPLETE: TrialState.COMPLETE, PRUNED: TrialState.PRUNED,
              FAILED: TrialState.FAIL}
    for h in history:
        state = h["state"] if h["state"] in states else FAILED
        value = h.get("value")
        if state == COMPLETE and (value is None or not math.isfinite(value)):
            state = FAILED
        values = {int(k): float(v) for k, v in (h.get("values") or {}).items()
                  if v is not None and math.isfinite(v)}
        study.add_trial(create_trial(
            params=h["params"], distributions=dists, state=states[state],
            value=value if state == COMPLETE else None,
            intermediate_values=values if state == PRUNED else None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        trial = study.ask(dists)
    return {d.key: _rounded(d, trial.params[d.key]) for d in spec.space}


def _rounded(d: Dim, v: Any) -> Any:
    if d.kind in ("choice", "int") or not isinstance(v, float):
        return v
    return min(max(float(f"{v:.6g}"), d.low), d.high)

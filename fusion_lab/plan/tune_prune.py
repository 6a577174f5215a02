"""Successive halving (``tune.pruner: asha``): whether a trial stops at an epoch (no
torch; Optuna is imported when asked).

Rungs are at ``min_epochs * reduction**k`` epochs below ``train.epochs`` (a trial that
reached its last epoch is complete, never pruned). At a rung a trial goes on when its
validation accuracy there is among the best ``max(1, n // reduction)`` of the n values at
that rung: its own and those of the trials of its cell numbered before it (including the
ones stopped there). Comparing with lower-numbered trials only makes the decision
independent of timing and of how many runners train the cell. The decision is Optuna's
``SuccessiveHalvingPruner`` (bootstrap 0, min_early_stopping_rate 0), replayed on an
in-memory study told the earlier trials' epochs in number order.
"""

from __future__ import annotations

from typing import Any


def rungs(min_epochs: int, reduction: int, epochs: int) -> list[int]:
    """The epochs at which a trial of ``epochs`` epochs may be stopped."""
    out, e = [], min_epochs
    while e < epochs:
        out.append(e)
        e *= reduction
    return out


def prunes(min_epochs: int, reduction: int, lower: list[dict[int, float]],
           own: dict[int, float]) -> bool:
    """Whether the trial with per-epoch validation accuracies ``own`` (its last epoch: the
    one being decided) stops there, given the earlier trials' accuracies ``lower``."""
    # here, not at the top: optuna (a slow import) only for a study with a pruner
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=min_epochs, reduction_factor=reduction, min_early_stopping_rate=0,
        bootstrap_count=0)
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for values in lower:
        _replay(study.ask(), values)  # left running: only their rung values count
    return _replay(study.ask(), own)


def _replay(trial: Any, values: dict[int, float]) -> bool:
    """Report ``values`` epoch by epoch, asking the pruner after each; True if it stopped
    the trial (at the last epoch reported)."""
    for epoch in sorted(values):
        trial.report(float(values[epoch]), int(epoch))
        if trial.should_prune():
            return True
    return False

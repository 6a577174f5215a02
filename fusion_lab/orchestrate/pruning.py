"""Stopping a tuning trial early (``tune.pruner``), in the process that trains it, under
any launcher (no torch).

The orchestrator writes ``results/<study>/trials/pruning.json`` (``tuning_record``):
the pruner's settings and each cell's trial run ids in trial order. ``stop_hook`` gives
the runner, for a trial listed there whose ``train.pruner`` names those settings, the
``should_stop`` that ``train_run`` asks after each epoch: at a rung epoch
(``plan.tune_prune.rungs``) it reads the per-epoch validation accuracies of the cell's
lower-numbered trials (``metrics.jsonl``), waiting while one of them is still being
trained (or is queued) and has not reached that epoch, and lets
``plan.tune_prune.prunes`` decide. One runner trains a cell's trials in trial order and
never waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fusion_lab import store
from fusion_lab.plan.study import PlannedRun, Study
from fusion_lab.plan.tune_prune import prunes, rungs

PRUNING_JSON = "pruning.json"
POLL_S = 2.0  # how often a waiting trial looks at a lower-numbered one


def stop_hook(results: Path, study: Study, r: PlannedRun
              ) -> Callable[[dict], bool] | None:
    """The trial's ``should_stop``, or None (not a trial with a pruner)."""
    if r.config.train.pruner == "none":
        return None
    folder = store.study_dir(results, study.name)
    doc = store.read_json(folder / PRUNING_JSON)
    if not isinstance(doc, dict) or doc.get("tag") != r.config.train.pruner:
        return None
    ids = next((c for c in (doc.get("cells") or {}).values() if r.run_id in c), None)
    if ids is None:
        return None
    lower = list(dict.fromkeys(x for x in ids[:ids.index(r.run_id)] if x != r.run_id))
    steps = rungs(doc["min_epochs"], doc["reduction"], r.config.train.epochs)

    def should_stop(record: dict) -> bool:
        epoch = int(record.get("epoch") or 0)
        if epoch not in steps:
            return False
        before = [_curve(folder / rid, epoch) for rid in lower]
        return prunes(doc["min_epochs"], doc["reduction"], before,
                      _curve(folder / r.run_id, epoch))

    return should_stop


def _curve(d: Path, epoch: int) -> dict[int, float]:
    """A trial's validation accuracy per epoch up to ``epoch``, once it has reached that
    epoch or will not: it has settled, or nobody trains it or has it queued."""
    while True:
        rows = store.read_jsonl(d / store.METRICS_JSONL)
        status = store.run_status(d)
        queued = status == store.PENDING and (d / store.QUEUED_JSON).is_file()
        if len(rows) >= epoch or not (status == store.RUNNING or queued):
            return {int(x["epoch"]): float(x["val_acc"]) for x in rows
                    if x.get("epoch") is not None and x.get("val_acc") is not None
                    and int(x["epoch"]) <= epoch}
        time.sleep(POLL_S)

"""What a tuned study records besides its runs (no torch), in ``results/<study>/trials/``:

``sequence.json``
    TPE's points per cell, in trial order (``tune.sampler: tpe``), one sequence per
    ``signature`` (space, seed, startup points, pruner), so a changed tune: block starts a
    sequence of its own and a grown ``trials`` continues the one there. A point is appended
    (atomically, under ``sequence_lock``) before its trial trains: a rerun after a kill
    replays the record and asks only what is missing, and two runners never ask one step
    twice.
``pruning.json``
    For the pruner (``tune.pruner``): its settings and each cell's trial run ids in trial
    order, read by the process that trains a trial (``orchestrate.pruning``), under any
    launcher.

And a trial's result as the tuning reads it (``trial_result``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fusion_lab import store
from fusion_lab.orchestrate.pruning import PRUNING_JSON
from fusion_lab.orchestrate.runner import run_dir
from fusion_lab.plan.study import PlannedRun, Study
from fusion_lab.plan.tune_tpe import COMPLETE, FAILED, PRUNED
from fusion_lab.plan.tuning import Cell, trials_study

SEQUENCE_JSON = "sequence.json"
LOCK = ".sequence.lock"  # a folder whose claim is held while a step is asked and recorded
LOCK_LEASE_S = 60.0


@dataclasses.dataclass
class Phase:
    title: str
    study: Study  # the study its runs are under (their folder)
    runs: list[PlannedRun]


def trial_result(study: Study, r: PlannedRun, results: Path) -> dict[str, Any]:
    """A trial's status, last-epoch validation accuracy (None unless it finished all its
    epochs: a pruned trial has none and is never chosen), validation size, epochs
    consumed, whether it was pruned, and each epoch's validation accuracy."""
    d = run_dir(results, trials_study(study), r)
    status = store.run_status(d)
    rows = store.read_jsonl(d / store.METRICS_JSONL) if (d / store.METRICS_JSONL).is_file() else []
    summary = store.read_json(d / store.SUMMARY_JSON) or {}
    pruned = status == store.DONE and bool(summary.get("pruned"))
    done = status == store.DONE and rows and not pruned
    return {"status": status, "val_acc": rows[-1].get("val_acc") if done else None,
            "val_size": summary.get("val_size"), "epochs": len(rows), "pruned": pruned,
            "curve": {int(x["epoch"]): x.get("val_acc") for x in rows if "epoch" in x}}


def settled(status: str) -> bool:
    return status in (store.DONE, store.FAILED)


def told(params: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    """A settled trial as TPE is told it (``plan.tune_tpe.tpe_point``'s history)."""
    state = PRUNED if res["pruned"] else COMPLETE if res["val_acc"] is not None else FAILED
    return {"params": params, "state": state, "value": res["val_acc"],
            "values": res["curve"]}


def signature(study: Study) -> dict[str, Any]:
    spec = study.tune
    return {"space": {d.key: d.as_dict() for d in spec.space}, "seed": spec.seed,
            "sampler": spec.sampler, "tpe_startup": spec.startup(),
            "pruner": spec.pruner_tag()}


def _folder(results: Path, study: Study) -> Path:
    return store.study_dir(results, trials_study(study).name)


def read_sequence(results: Path, study: Study) -> dict[str, list[dict[str, Any]]]:
    """The recorded points per cell key (empty when nothing was asked yet)."""
    doc = store.read_json(_folder(results, study) / SEQUENCE_JSON)
    seqs = doc.get("sequences") if isinstance(doc, dict) else None
    seq = (seqs or {}).get(store.digest(signature(study))[:16]) or {}
    return dict(seq.get("cells") or {})


def append_point(results: Path, study: Study, key: str, params: dict[str, Any]) -> None:
    """Append ``params`` to cell ``key``'s sequence (call it under ``sequence_lock``)."""
    path = _folder(results, study) / SEQUENCE_JSON
    doc = store.read_json(path)
    doc = doc if isinstance(doc, dict) and isinstance(doc.get("sequences"), dict) else {
        "sequences": {}}
    sig = signature(study)
    seq = doc["sequences"].setdefault(store.digest(sig)[:16], {"signature": sig, "cells": {}})
    seq["cells"].setdefault(key, []).append(params)
    seq["updated"] = store.now()
    store.write_json(path, doc)


def drop_sequences(results: Path, study: Study, keys: list[str]) -> None:
    """Forget the recorded points of cells ``keys`` (``--rerun``: their TPE sequence
    starts again); under ``sequence_lock``."""
    path = _folder(results, study) / SEQUENCE_JSON
    with sequence_lock(results, study):
        doc = store.read_json(path)
        seq = ((doc or {}).get("sequences") or {}).get(store.digest(signature(study))[:16])
        if not isinstance(seq, dict) or not any(k in (seq.get("cells") or {}) for k in keys):
            return
        seq["cells"] = {k: v for k, v in seq["cells"].items() if k not in keys}
        seq["updated"] = store.now()
        store.write_json(path, doc)


@contextlib.contextmanager
def sequence_lock(results: Path, study: Study, poll_s: float = 0.05) -> Iterator[None]:
    """Held while a runner reads the record, asks a point and appends it: a claim (lease)
    on ``trials/.sequence.lock``, so a runner that died holding it does not block."""
    lock = _folder(results, study) / LOCK
    token = store.try_claim(lock, lease_s=LOCK_LEASE_S)
    while not token:
        time.sleep(poll_s)
        token = store.try_claim(lock, lease_s=LOCK_LEASE_S)
    try:
        yield
    finally:
        store.release_claim(lock, token)


def write_pruning(results: Path, study: Study, cells: list[Cell]) -> None:
    """``trials/pruning.json``: the pruner's settings and each cell's trial run ids in
    trial order (nothing without a pruner)."""
    spec = study.tune
    if spec.pruner == "none":
        return
    store.write_json(_folder(results, study) / PRUNING_JSON, {
        "pruner": spec.pruner, "tag": spec.pruner_tag(), "min_epochs": spec.min_epochs,
        "reduction": spec.reduction,
        "cells": {c.key: [t.run.run_id for t in c.trials] for c in cells}})

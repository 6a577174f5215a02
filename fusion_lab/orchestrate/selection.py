"""Which runs of a study a command means (``--only``), and setting runs aside to train
them again (``--rerun``).

``--only`` takes run ids (or a unique prefix of at least 6 hex digits), row labels (every
seed of the row) and ``LABEL:SEED`` (one seed of a row). ``--rerun`` trains the selected
runs again from scratch even when they are done or failed (a plugin edited after its runs
is the usual reason): each one's folder moves to ``results/<study>/.replaced/<run id>-<UTC
time>/`` first, so nothing written is lost and the table no longer reads it.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from fusion_lab import store
from fusion_lab.errors import FusionLabError
from fusion_lab.plan.study import PlannedRun, Study

REPLACED = ".replaced"  # in a study's results folder: runs set aside by --rerun
_HEX = re.compile(r"[0-9a-f]{6,64}")


def select(runs: list[PlannedRun], specs: list[str], study_file: str | Path) -> list[PlannedRun]:
    """The runs ``specs`` name, in the study's order; every spec must name one or more."""
    if not specs:
        return runs
    chosen: set[str] = set()
    unknown = []
    for spec in specs:
        found = _matches(runs, spec)
        if not found:
            unknown.append(spec)
        chosen.update(r.run_id for r in found)
    if unknown:
        labels = ", ".join(dict.fromkeys(r.label for r in runs))
        raise FusionLabError(
            f"--only {', '.join(map(repr, unknown))}: no run of study {study_file}: give run "
            f"ids, row labels ({labels}) or LABEL:SEED; run ids not found are no longer "
            "part of study: the study file changed after submission")
    return [r for r in runs if r.run_id in chosen]


def _matches(runs: list[PlannedRun], spec: str) -> list[PlannedRun]:
    exact = [r for r in runs if r.run_id == spec]
    if exact:
        return exact
    label, _, seed = spec.rpartition(":") if re.search(r":-?\d+$", spec) else (spec, "", "")
    by_label = [r for r in runs if r.label == label and (not seed or r.seed == int(seed))]
    if by_label:
        return by_label
    if _HEX.fullmatch(spec):
        prefixed = [r for r in runs if r.run_id.startswith(spec)]
        if len(prefixed) > 1:
            raise FusionLabError(f"--only {spec!r} matches {len(prefixed)} runs; give more digits")
        return prefixed
    return []


def set_aside(results: Path, study: Study, runs: list[PlannedRun]) -> list[str]:
    """Move the folders of ``runs`` (those that exist) to the study's ``.replaced/`` folder
    so that they train again from scratch; a run another process is training is refused.
    Returns one line per run moved."""
    busy = [r for r in runs if store.run_status(store.run_dir(results, study.name, r.run_id))
            == store.RUNNING]
    if busy:
        raise FusionLabError(f"--rerun: {len(busy)} run(s) are being trained right now "
                             f"({', '.join(r.run_id[:12] for r in busy)}); wait for them or "
                             "leave them out with --only")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    lines = []
    for r in runs:
        d = store.run_dir(results, study.name, r.run_id)
        if not d.exists():
            continue
        dest = store.study_dir(results, study.name) / REPLACED / f"{r.run_id}-{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(d), str(dest))
        lines.append(f"{r.run_id[:12]} {r.display} seed {r.seed}: set aside in {dest}")
    return lines

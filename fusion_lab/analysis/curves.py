"""Learning curves of a study: per-epoch metrics of every run, and their band over seeds (no torch).

Reads ``metrics.jsonl`` of each run (docs/results-format.md). A row's curve at an epoch is
the mean over the seeds that reached that epoch, with the sample standard deviation
(ddof=1) as its band; unfinished runs contribute the epochs they have finished.

The training loss is the sum of the heads' cross-entropies (one head for a baseline, four
for CN-CNN): ``train_loss_head`` divides it by the run's number of heads (the heads of
``test_heads``), so that rows with different heads compare; where a line names no heads
the recorded loss is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fusion_lab.store import METRICS_JSONL, read_jsonl

CURVE_METRICS = ("test_acc", "train_loss")
PER_HEAD = "train_loss_head"  # train_loss / number of heads


def load_curves(study_dir: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """One record per (run, epoch) with the curve metrics.

    Args:
        study_dir: results/<study>.
        runs: run records from ``fusion_lab.analysis.aggregate.load_runs``.
    Returns:
        Columns group_id, run_id, seed, epoch, CURVE_METRICS (NaN where missing), heads
        (0 when unknown) and PER_HEAD.
    """
    records = []
    for r in runs.itertuples():
        for line in read_jsonl(Path(study_dir) / str(r.run_id) / METRICS_JSONL):
            if "epoch" not in line:
                continue
            records.append({"group_id": r.group_id, "run_id": r.run_id, "seed": r.seed,
                            "epoch": int(line["epoch"]),
                            "heads": len(line.get("test_heads") or {}),
                            **{m: line.get(m) for m in CURVE_METRICS}})
    cols = ["group_id", "run_id", "seed", "epoch", "heads", *CURVE_METRICS]
    frame = pd.DataFrame.from_records(records, columns=cols)
    for m in CURVE_METRICS:
        frame[m] = pd.to_numeric(frame[m], errors="coerce")
    heads = frame.heads.where(frame.heads > 0, 1).astype(float)
    frame[PER_HEAD] = frame.train_loss / heads
    return frame


def bands(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed) and n over seeds, per group and epoch.

    Args:
        curves: from ``load_curves``.
        metric: one of CURVE_METRICS or PER_HEAD.
    Returns:
        Columns group_id, epoch, mean, std, n; sorted by group and epoch.
    """
    ok = curves[curves[metric].notna()]
    out = ok.groupby(["group_id", "epoch"])[metric].agg(["mean", "std", "count"])
    return out.rename(columns={"count": "n"}).reset_index().sort_values(["group_id", "epoch"])


def cell_key(grid: dict | None) -> str:
    """A grid cell as text (the same for every row of the cell)."""
    return json.dumps(grid or {}, sort_keys=True)

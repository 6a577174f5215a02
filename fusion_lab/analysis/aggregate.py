"""Load a study's results store into pandas and aggregate seeds into table rows (no torch).

One table row is one ``group_id`` (one configuration, every seed of it): rows are never
merged across configurations, even when two share a label. Deltas are taken against the
study's baseline row with the same grid values, and marked when within noise
(t intervals from fusion_lab.analysis.stats; the rule is in docs/tables.md). The store format is docs/results-format.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fusion_lab.analysis.stats import difference_interval
from fusion_lab.config import flatten
from fusion_lab.errors import FusionLabError, FusionLabWarning
from fusion_lab.store import (
    CONFIG_JSON,
    COST_JSON,
    DONE,
    FAILED,
    INTERRUPTED,
    PENDING,
    RUNNING,
    STUDY_JSON,
    SUMMARY_JSON,
    read_json,
    run_status,
)
from fusion_lab.training.provenance import plugin_changes

METRICS = ("final", "best_val")
COST_KEYS = ("params", "gflops", "train_ips", "infer_ips", "train_ratio", "infer_ratio",
             "peak_mem_mb", "train_ips_range", "infer_ips_range", "train_ratio_range",
             "infer_ratio_range")  # ranges: [min, max] over rounds (absent in older files)
BATCH_MARK = "§"  # a row whose predictions depend on the test batch


@dataclass
class StudyResults:
    """One study's results: its plan, one record per run and one aggregated row per group."""

    name: str
    study: dict
    runs: pd.DataFrame  # one row per run, including pending runs named in study.json
    rows: pd.DataFrame  # one row per group_id, in study order
    metric: str
    notes: list[str] = field(default_factory=list)  # facts to print under the table
    cost: dict | None = None  # cost.json, when asked for and present


def _run_record(run_dir: Path, metric: str, known: dict | None = None) -> dict:
    """One run as a flat record (the study.json row fills in what a missing folder lacks)."""
    cfg = read_json(run_dir / CONFIG_JSON) or {}
    summary = read_json(run_dir / SUMMARY_JSON) or {}
    rec: dict[str, Any] = dict(known or {})
    for key in ("run_id", "group_id", "label", "grid", "seed"):
        if cfg.get(key) is not None:
            rec[key] = cfg[key]
    rec.setdefault("run_id", run_dir.name)
    rec["grid"] = rec.get("grid") or {}
    conf = cfg.get("config") or {}
    rec["config"] = flatten(conf)
    rec["backbone"] = (conf.get("model") or {}).get("backbone")
    rec["dataset"] = (conf.get("dataset") or {}).get("name")
    rec["status"] = run_status(run_dir)
    rec["error"] = summary.get("error")
    rec["test_size"] = summary.get("test_size")
    # predictions that depend on the test batch (e.g. a ConvLSTM over the minibatch)
    rec["batch_dependent"] = bool(summary.get("batch_dependent"))
    rec["test_batch_size"] = summary.get("test_batch_size")
    result = summary.get(metric) if rec["status"] == DONE else None
    rec["acc"] = (result or {}).get("acc")
    rec["heads"] = (result or {}).get("heads") or {}
    rec["no_metric"] = rec["status"] == DONE and rec["acc"] is None
    rec["plugins_changed"] = plugin_changes(summary) if rec["status"] == DONE else []
    return rec


def load_runs(study_dir: Path, metric: str = "final") -> tuple[dict, pd.DataFrame]:
    """Every run of a study: those named in study.json, then any other run folder.

    Args:
        study_dir: results/<study>.
        metric: "final" (last epoch) or "best_val" (test accuracy at the best-val epoch).
    Returns:
        (the study.json dict, one record per run).
    """
    study = read_json(study_dir / STUDY_JSON)
    if not isinstance(study, dict):
        raise FusionLabError(f"{study_dir}/study.json is unreadable: rerun `fusionlab run`")
    seeds = study.get("seeds") or []
    records, seen = [], set()
    for order, row in enumerate(study.get("rows") or []):
        for i, run_id in enumerate(row.get("run_ids") or []):
            known = {"run_id": run_id, "group_id": row.get("group_id"),
                     "label": row.get("label"), "grid": row.get("grid") or {},
                     "seed": seeds[i] if i < len(seeds) else None}
            rec = _run_record(study_dir / run_id, metric, known)
            rec["order"] = order
            records.append(rec)
            seen.add(run_id)
    # Run folders the current plan does not name: other seeds, or rows of an edited study.
    for run_dir in _other_run_folders(study_dir, seen):
        rec = _run_record(run_dir, metric)
        rec["order"] = math.inf
        records.append(rec)
    return study, pd.DataFrame.from_records(records)


def _other_run_folders(study_dir: Path, seen: set[str]) -> list[Path]:
    """The run folders of ``study_dir`` not in ``seen``.

    A folder whose name is not its config.json's run id (a backup copy such as
    ``<run id>.bak``) is not a run: it is left out, with a warning naming it, so that it
    never counts as one more seed.
    """
    found = []
    for p in sorted(study_dir.iterdir()):
        if p.name in seen or not (p / CONFIG_JSON).is_file():
            continue
        cfg = read_json(p / CONFIG_JSON)
        run_id = cfg.get("run_id") if isinstance(cfg, dict) else None
        if run_id is not None and run_id != p.name:
            warnings.warn(FusionLabWarning(
                f"{p} is a copy of run {str(run_id)[:12]} (its folder name is not its run id): "
                f"left out of the table; move it out of {study_dir}/"), stacklevel=3)
            continue
        found.append(p)
    return found


def aggregate(study: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per group_id: mean, sample std (ddof=1) and n of the finished seeds.

    Args:
        study: the study.json dict (rows, seeds, reference).
        runs: records from ``load_runs``.
    Returns:
        Rows in study order; groups outside the current plan come last (``in_plan`` False).
    """
    planned = {r.get("group_id"): r for r in study.get("rows") or []}
    n_seeds = len(study.get("seeds") or [])
    ok = runs[(runs.status == DONE) & runs.acc.notna()] if len(runs) else runs
    stats = ok.groupby("group_id")["acc"].agg(["mean", "std", "count"]) if len(ok) else None
    rows = []
    for gid, grp in runs.groupby("group_id", sort=False):
        first = grp.iloc[0]
        plan = planned.get(gid)
        has_cfg = grp[grp.backbone.notna() | grp.dataset.notna()]
        src = has_cfg.iloc[0] if len(has_cfg) else first
        row = {"group_id": gid, "label": first.label, "grid": first.grid,
               "order": grp.order.min(), "in_plan": plan is not None,
               "n_expected": len(plan.get("run_ids") or []) if plan else n_seeds,
               "backbone": src.backbone or (first.grid or {}).get("model.backbone"),
               "dataset": src.dataset or (first.grid or {}).get("dataset.name"),
               "config": src.config, "mean": math.nan, "std": math.nan, "n": 0}
        if stats is not None and gid in stats.index:
            s = stats.loc[gid]
            row.update(mean=s["mean"], std=s["std"], n=int(s["count"]))
        done = grp[grp.index.isin(ok.index)]
        sizes = done.test_size.dropna()
        row["test_size"] = float(sizes.mean()) if len(sizes) else math.nan
        dep = done[done.batch_dependent]
        row["batch_dependent"] = bool(len(dep))
        row["test_batch_sizes"] = sorted({int(b) for b in dep.test_batch_size.dropna()})
        # accuracy by seed, for pairing with the baseline (a run without a seed never pairs)
        row["by_seed"] = {(int(x.seed) if _has(x.seed) else x.run_id): float(x.acc)
                          for x in done.itertuples()}
        heads = pd.DataFrame(list(done.heads)) if len(done) else pd.DataFrame()
        row["heads"] = {h: float(heads[h].mean()) for h in heads.columns}
        rows.append(row)
    out = pd.DataFrame.from_records(rows)
    out = out.sort_values("order", kind="stable").reset_index(drop=True)
    out["display"] = [_display(r, out) for r in out.itertuples()]
    for source, values in (study.get("reference") or {}).items():
        values = values or {}
        # A published number is keyed by the row's label, or by "label (grid values)"
        # when it differs between grid cells (e.g. one per dataset).
        out[f"ref.{source}"] = [values.get(_cell_label(r), values.get(r.label, math.nan))
                                for r in out.itertuples()]
    return out


def _cell_label(row: Any) -> str:
    """Label plus grid values, e.g. "CN-CNN (cub200)"."""
    grid = ", ".join(str(v) for v in (row.grid or {}).values())
    return f"{row.label} ({grid})" if grid else str(row.label)


def _display(row: Any, rows: pd.DataFrame) -> str:
    """Label plus grid values; the group id too when another group has the same text."""
    text = _cell_label(row)
    same = rows[(rows.label == row.label) & (rows.grid.map(lambda g: g == row.grid))]
    if len(same) > 1:
        text += f" [{str(row.group_id)[:8]}]"
    return text + ("" if row.in_plan else " ‡") + (f" {BATCH_MARK}" if row.batch_dependent
                                                    else "")


def _has(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def add_deltas(rows: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """Delta against the baseline row of the same grid cell, its interval and the noise flag.

    Args:
        rows: from ``aggregate``.
        baseline: the baseline label (study.json ``baseline``).
    Returns:
        ``rows`` with delta, se_diff, df, ci_low, ci_high, noise_basis (paired / welch /
        binomial), within_noise (the interval contains 0; None when unknown) and
        is_baseline columns added.
    """
    extra = []
    for _, r in rows.iterrows():
        base = rows[(rows.label == baseline) & rows.grid.map(lambda g, r=r: g == r.grid)]
        base = base.sort_values("in_plan", ascending=False, kind="stable")  # current plan first
        b = base.iloc[0] if len(base) else None
        is_base = b is not None and b.group_id == r.group_id
        rec = {"delta": math.nan, "se_diff": math.nan, "df": math.nan, "ci_low": math.nan,
               "ci_high": math.nan, "noise_basis": None, "within_noise": None,
               "is_baseline": is_base}
        if b is not None and not is_base and r.n > 0 and b.n > 0:
            rec["delta"] = r["mean"] - b["mean"]
            iv = difference_interval(r.by_seed, b.by_seed, r.test_size, b.test_size)
            if iv is not None:
                rec.update(se_diff=iv.se, df=iv.df, ci_low=iv.low,
                           ci_high=iv.high, noise_basis=iv.basis,
                           within_noise=iv.contains_zero)
        extra.append(rec)
    cols = pd.DataFrame.from_records(extra, index=rows.index)
    cols["within_noise"] = cols["within_noise"].astype(object)  # True / False / None
    return rows.join(cols)


def load_results(study_dir: Path, metric: str = "final", cost: bool = False
                 ) -> StudyResults:
    """Load, aggregate and compare one study.

    Args:
        study_dir: results/<study>.
        metric: "final" or "best_val".
        cost: also read cost.json.
    Returns:
        The study's runs, rows (with deltas) and the notes to print under its table.
    """
    if metric not in METRICS:
        raise FusionLabError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    study, runs = load_runs(study_dir, metric)
    name = study.get("name") or study_dir.name
    notes: list[str] = []
    rows = add_deltas(aggregate(study, runs), study.get("baseline")) if len(runs) else (
        pd.DataFrame())
    missing = runs[runs.no_metric] if len(runs) else runs
    if len(missing):
        why = ("no best_val (trained without a validation split, dataset.val_fraction = 0)"
               if metric == "best_val" else "no final accuracy in summary.json")
        notes.append(f"{len(missing)} finished run(s) have {why}; they are not counted"
                     + ("; use --metric final" if metric == "best_val" else ""))
    res = StudyResults(name=name, study=study, runs=runs, rows=rows, metric=metric, notes=notes)
    if cost:
        res.cost = read_json(study_dir / COST_JSON)
    return res


def not_done(runs: pd.DataFrame) -> pd.DataFrame:
    """Failed, running, interrupted and pending runs (folders without a summary included)."""
    if not len(runs):
        return runs
    return runs[runs.status.isin([FAILED, RUNNING, INTERRUPTED, PENDING])]

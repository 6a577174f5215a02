"""Paper-style ablation tables (like CN-CNN's Tables 2 and 3) from the results store.

Loading and statistics live in ``fusion_lab.analysis.aggregate`` and the notes under each table
in ``fusion_lab.analysis.table_notes``; this module turns them into text:
plain or GitHub tables (tabulate), booktabs LaTeX, or CSV / JSON records. No torch.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fusion_lab.analysis.aggregate import (
    BATCH_MARK,
    COST_KEYS,
    StudyResults,
    load_results,
)
from fusion_lab.analysis.stats import CONFIDENCE
from fusion_lab.analysis.table_formats import (
    BASE,
    FEW,
    UNKNOWN,
    WITHIN,
    ips_cell,
    json_default,
    latex_table,
    plain_value,
    tabulate_text,
)
from fusion_lab.analysis.table_notes import plugin_warnings, table_notes
from fusion_lab.analysis.tuning import TUNING_JSON, tuning_table
from fusion_lab.errors import FusionLabError
from fusion_lab.maps.attention_table import attention_columns
from fusion_lab.plan.find import study_dirs, tags_line

FORMATS = ("plain", "github", "latex", "csv", "json")
METRIC_TEXT = {"final": "test accuracy (%) at the last epoch",
               "best_val": "test accuracy (%) at the epoch with the best validation accuracy"}


@dataclass
class Output:
    """What `fusionlab table` prints: ``text`` to stdout, ``warnings`` to stderr."""

    text: str
    warnings: list[str] = field(default_factory=list)


def tables(studies: list[str] | None = None, results: str | Path = "results",
           metric: str = "final", fmt: str = "plain", heads: bool = False,
           pivot: tuple[str, str] | None = None, cost: bool = False,
           ci: bool = False, attention: bool = False, tag: str | None = None) -> Output:
    """Render the tables of some studies (all studies in ``results`` if none are named).

    Args:
        studies: study names, results/<study> folders or studies/*.yaml files.
        results: the results folder.
        metric: "final" or "best_val".
        fmt: plain | github | latex | csv | json.
        heads: add one column per classifier head.
        pivot: (ROW, COL) axes for a 2-D table of mean accuracy.
        cost: join cost.json columns.
        ci: add the 95% interval of each Δ and how it was computed.
        attention: join the attention scores of `fusionlab viz --score`.
        tag: a tag of the studies (`run --tag`, ``plan.tags``) instead of their own
            tables, which end with a line naming their tags.
    Returns:
        The text for stdout and the warnings for stderr.
    """
    if fmt not in FORMATS:
        raise FusionLabError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    dirs = study_dirs(list(studies or []), results, tag)
    loaded = [load_results(d, metric, cost) for d in dirs]
    dropped = [f for f, on in (("--heads", heads), ("--cost", cost), ("--ci", ci),
                               ("--attention", attention)) if on and pivot]
    # a pivot cell is mean ± sd only
    out = Output("", [f"{' and '.join(dropped)} not shown in a --pivot table"] if dropped else [])
    records: list[dict] = []
    blocks: list[str] = []
    tuned: list[str] = []  # tuned studies' tables (analysis.tuning), after the others
    for study_dir, res in zip(dirs, loaded):
        out.warnings += plugin_warnings(res)
        if (study_dir / TUNING_JSON).is_file() and not pivot:  # a tuned study's own table
            tuned.append(tuning_table(study_dir, fmt))
            continue
        if not len(res.rows):
            empty = f"{res.name}: no runs yet: run `fusionlab run` on its study file"
            (out.warnings if fmt in ("csv", "json") else blocks).append(empty)
            continue
        frame = pivot_frame(res, *pivot) if pivot else res.rows
        notes = table_notes(res, cost and not pivot, pivot=bool(pivot))
        att = attention_columns(study_dir, frame, res.runs, metric) if attention else None
        notes += att.notes if att else []
        if fmt in ("csv", "json"):
            recs = _records(res, frame, bool(pivot))
            for rec, extra in zip(recs, att.records if att else []):
                rec.update(extra)
            records += [{"study": res.name, **r} for r in recs]
            out.warnings += [f"{res.name}: {n}" for n in notes]
            continue
        body = (_pivot_cells(frame, *pivot) if pivot
                else _cells(res, heads, cost and res.cost is not None, ci))
        for col, values in (att.cells if att and not pivot else {}).items():
            body[col] = values
        blocks.append(_block(res, body, notes, fmt, metric))
    tags = [] if tag else [t for d, res in zip(dirs, loaded) if (t := tags_line(res.name, d))]
    out.text = _joined(records, blocks, fmt, tuned, tags, out.warnings)
    return out


def _block(res: StudyResults, body: pd.DataFrame, notes: list[str], fmt: str, metric: str) -> str:
    """One study's table as text: a title, the table and the notes under it."""
    title = f"{res.name}: {res.study.get('describe') or ''}".rstrip(": ")
    if fmt == "latex":
        return latex_table(body, f"{title}: {METRIC_TEXT[metric]}", notes)
    # Markdown ends a table at a blank line; without one the notes become table rows
    gap = [""] if fmt == "github" and notes else []
    return "\n".join([f"{title}  [{METRIC_TEXT[metric]}]", tabulate_text(body, fmt), *gap,
                      *notes])


def _joined(records: list[dict], blocks: list[str], fmt: str, tuned: list[str],
            tags: list[str], warnings: list[str]) -> str:
    """The output of every study together: CSV or JSON of ``records``, else the text
    ``blocks``; then the ``tuned`` studies' tables; then the lines naming the studies'
    ``tags`` (in plain and GitHub text, else added to ``warnings``: they would break the
    CSV, JSON or LaTeX)."""
    shown = fmt in ("plain", "github")
    warnings += [] if shown else tags
    first = [_records_text(records, blocks, fmt)] if records or blocks else []
    return "\n\n".join(first + tuned + (["\n".join(tags)] if shown and tags else []))


def _records_text(records: list[dict], blocks: list[str], fmt: str) -> str:
    """CSV or JSON of ``records``, else the text ``blocks``."""
    if fmt == "csv":
        buf = io.StringIO()
        flat = [{k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()}
                for r in records]
        if flat:
            pd.DataFrame.from_records(flat).to_csv(buf, index=False)
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps(records, indent=2, default=json_default)
    return "\n\n".join(blocks)


def pivot_frame(res: StudyResults, row_key: str, col_key: str) -> pd.DataFrame:
    """The study's rows with two columns ``pivot_row`` and ``pivot_col``: the values of the axes.

    Args:
        res: a loaded study.
        row_key, col_key: a grid axis, ``label`` or a dotted config key.
    Returns:
        A copy of ``res.rows``; groups lacking a value are dropped (they have no config).
    """
    rows = res.rows.copy()
    for key, col in ((row_key, "pivot_row"), (col_key, "pivot_col")):
        if key == "seed":
            raise FusionLabError("seed is what rows are aggregated over: pivot on a grid axis, "
                                 "label or a config key such as model.fusion")
        values = [_axis_value(r, key) for r in rows.itertuples()] if len(rows) else []
        if not any(v is not None for v in values):
            axes = ", ".join(res.study.get("grid_axes") or []) or "none"
            raise FusionLabError(f"unknown pivot key {key!r} in study {res.name!r}: use a grid "
                                 f"axis ({axes}), label, or a dotted config key such as "
                                 "model.fusion")
        rows[col] = values
    return rows[rows.pivot_row.notna() & rows.pivot_col.notna()]


def _axis_value(row: Any, key: str) -> Any:
    if key == "label":
        return row.label
    if key in (row.grid or {}):
        return row.grid[key]
    return (row.config or {}).get(key)


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _acc(r: Any) -> str:
    if r.n == 0:
        return "-"
    return _fmt(r.mean) + (f" ± {_fmt(r.std)}" if r.n >= 2 else "")


def _n(r: Any) -> str:
    return f"{r.n}/{r.n_expected} {FEW}" if r.n < r.n_expected else str(r.n)


def _delta(r: Any) -> str:
    if r.is_baseline:
        return BASE
    if isinstance(r.delta, float) and math.isnan(r.delta):
        return "-"
    mark = {True: f" {WITHIN}", False: "", None: f" {UNKNOWN}"}[r.within_noise]
    return _fmt(r.delta, "+.2f") + mark


def _ci(r: Any) -> str:
    if r.is_baseline or r.noise_basis is None:
        return "-"
    return f"[{_fmt(r.ci_low, '+.2f')}, {_fmt(r.ci_high, '+.2f')}] {r.noise_basis}"


def _cells(res: StudyResults, heads: bool, cost: bool, ci: bool = False) -> pd.DataFrame:
    """The display table of one study: one row per group."""
    rows = res.rows
    refs = [c for c in rows.columns if c.startswith("ref.")]
    out = pd.DataFrame({"Row": rows.display, "Backbone": rows.backbone.fillna("-"),
                        "Dataset": rows.dataset.fillna("-"),
                        "Acc": [_acc(r) for r in rows.itertuples()],
                        "n": [_n(r) for r in rows.itertuples()]})
    for c in refs:
        out[c[4:]] = [str(v) if not pd.isna(v) else "-" for v in rows[c]]
    if res.study.get("baseline") is not None:  # no baseline named: no delta column
        out[f"Δ vs {res.study['baseline']}"] = [_delta(r) for r in rows.itertuples()]
        if ci:
            out[f"{CONFIDENCE:.0%} CI of Δ"] = [_ci(r) for r in rows.itertuples()]
    if heads:
        names = list(dict.fromkeys(h for hs in rows.heads for h in hs))
        for h in names:
            out[f"head {h}"] = [_fmt(hs.get(h)) for hs in rows.heads]
    if cost:
        table = (res.cost or {}).get("rows") or {}
        c = [table.get(g) or {} for g in rows.group_id]
        out["Params (M)"] = [_fmt(x.get("params") and x["params"] / 1e6, ".1f") for x in c]
        out["GFLOPs"] = [_fmt(x.get("gflops")) for x in c]
        for kind in ("train", "infer"):  # median [range over rounds] (×ratio [range])
            out[f"{kind} img/s"] = [ips_cell(x, kind, "×") for x in c]
        out["peak MB"] = [_fmt(x.get("peak_mem_mb"), ".0f") for x in c]
    return out


def _pivot_cells(frame: pd.DataFrame, row_key: str, col_key: str) -> pd.DataFrame:
    """mean ± std per (row value, column value); a cell holding two configs shows both."""
    cells: dict[tuple, list[str]] = {}
    shared = frame.groupby(["pivot_row", "pivot_col"]).group_id.transform("size") > 1
    for r, many in zip(frame.itertuples(), shared):
        text = _acc(r) + (f" (n={r.n}/{r.n_expected} {FEW})" if r.n < r.n_expected else "")
        text += f" [{str(r.group_id)[:8]}]" if many else ""
        text += "" if r.in_plan else " ‡"
        text += f" {BATCH_MARK}" if r.batch_dependent else ""
        cells.setdefault((r.pivot_row, r.pivot_col), []).append(text)
    row_vals = list(dict.fromkeys(frame.pivot_row))
    col_vals = list(dict.fromkeys(frame.pivot_col))
    data = {str(c): [" / ".join(cells.get((rv, c), ["-"])) for rv in row_vals]
            for c in col_vals}
    return pd.DataFrame({f"{row_key} \\ {col_key}": [str(v) for v in row_vals], **data})


def _records(res: StudyResults, frame: pd.DataFrame, pivot: bool) -> list[dict]:
    """Machine-readable rows: numbers unformatted, one record per table row."""
    out = []
    cost_rows = (res.cost or {}).get("rows") or {}
    for r in frame.itertuples():
        row = r.display.removesuffix(f" {BATCH_MARK}").removesuffix(" ‡")
        rec = {"label": r.label, "row": row, "group_id": r.group_id,
               "grid": r.grid, "backbone": r.backbone, "dataset": r.dataset,
               "metric": res.metric, "mean": r.mean, "std": r.std, "n": r.n,
               "n_expected": r.n_expected, "in_plan": r.in_plan,
               "delta": r.delta, "se_diff": r.se_diff, "df": r.df, "ci_low": r.ci_low,
               "ci_high": r.ci_high, "noise_basis": r.noise_basis,
               "within_noise": r.within_noise, "is_baseline": r.is_baseline,
               "batch_dependent": r.batch_dependent}
        for c in frame.columns:
            if c.startswith("ref."):
                rec[c] = frame.at[r.Index, c]
        rec.update({f"head.{h}": v for h, v in r.heads.items()})
        if pivot:
            rec["pivot_row"], rec["pivot_col"] = r.pivot_row, r.pivot_col
        if res.cost is not None:
            rec.update({k: (cost_rows.get(r.group_id) or {}).get(k) for k in COST_KEYS})
        out.append({k: plain_value(v) for k, v in rec.items()})
    return out


def display_cells(res: StudyResults, heads: bool = False, cost: bool = False,
                  ci: bool = False) -> pd.DataFrame:
    """The cells of one study's table as `fusionlab table` prints them (one row per group),
    for other renderers of the same table (`fusionlab report`)."""
    return _cells(res, heads, cost and res.cost is not None, ci)

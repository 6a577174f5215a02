"""The per-run part of `fusionlab report`: each run's status, result, provenance and config.

Read from the run folders (docs/results-format.md): ``config.json`` for the resolved config,
``summary.json`` for the status, the result and what ran (the fusion_lab commit, library
versions, plugin files' SHA-256, device). No torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from fusion_lab.analysis import report_html as H
from fusion_lab.store import CONFIG_JSON, SUMMARY_JSON, read_json

VERSION_KEYS = ("fusion_lab", "torch", "torchvision", "timm", "python")


def runs_section(study_dir: Path, runs: pd.DataFrame, metric: str) -> str:
    """One table row per run (study order; runs outside the plan last), with its config
    folded under it."""
    if not len(runs):
        return H.section("Runs", H.para("No runs yet."), ident="runs")
    ordered = runs.sort_values("order", kind="stable")
    body, classes = [], []
    for r in ordered.itertuples():
        run_dir = Path(study_dir) / str(r.run_id)
        summary = read_json(run_dir / SUMMARY_JSON) or {}
        cfg = read_json(run_dir / CONFIG_JSON) or {}
        body.append([H.esc(str(r.run_id)[:12]), H.esc(_row_text(r)), H.esc(_seed(r.seed)),
                     _status(r), H.esc(_acc(r.acc)), H.esc(_value(summary.get("epochs"))),
                     H.esc(_seconds(summary.get("wall_time_s"))), _provenance(summary, r),
                     _config(cfg)])
        classes.append(f"status-{r.status}")
    cols = ["Run", "Row", "Seed", "Status", f"Acc ({metric})", "Epochs", "Wall time",
            "Provenance", "Config"]
    numeric = [False, False, True, False, True, True, True, False, False]
    return H.section("Runs", H.table(cols, body, numeric, classes, raw=[True] * len(cols)),
                     ident="runs")


def _row_text(r: Any) -> str:
    grid = ", ".join(str(v) for v in (r.grid or {}).values())
    return f"{r.label} ({grid})" if grid else str(r.label)


def _seed(seed: Any) -> str:
    return "-" if seed is None or (isinstance(seed, float) and math.isnan(seed)) else str(
        int(seed))


def _acc(acc: Any) -> str:
    return "-" if acc is None or (isinstance(acc, float) and math.isnan(acc)) else f"{acc:.2f}"


def _value(v: Any) -> str:
    return "-" if v is None else str(v)


def _seconds(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _status(r: Any) -> str:
    text = f"<strong>{H.esc(r.status)}</strong>"
    if isinstance(r.error, str) and r.error and r.status != "done":
        text += f"<br>{H.esc(r.error)}"
    return text


def _provenance(summary: dict, r: Any) -> str:
    """What ran: the commit, library versions, plugin files (and whether they changed since),
    the device and precision. Every line escaped."""
    if not summary:
        return H.esc("no summary.json yet")
    lines = []
    commit = summary.get("git_commit")
    dirty = {True: " (dirty: tracked files differed)", False: "", None: ""}.get(
        summary.get("git_dirty"), "")
    lines.append(f"git {commit[:12]}{dirty}" if commit else "git commit: not recorded")
    versions = summary.get("versions") or {}
    shown = [f"{k} {versions[k]}" for k in VERSION_KEYS if versions.get(k)]
    if shown:
        lines.append(" · ".join(shown))
    changed = set(r.plugins_changed or [])
    for path, digest in (summary.get("plugins") or {}).items():
        mark = " (changed on disk since)" if path in changed else ""
        lines.append(f"plugin {Path(path).name} sha256:{str(digest)[:12]}{mark}")
    device = " ".join(str(summary[k]) for k in ("device", "precision") if summary.get(k))
    if device:
        lines.append(device)
    if summary.get("finished"):
        lines.append(f"finished {summary['finished']}")
    return "<br>".join(H.esc(line) for line in lines)


def _config(cfg: dict) -> str:
    if not cfg.get("config"):
        return H.esc("-")
    return H.details("config", json.dumps(cfg["config"], indent=2, sort_keys=True))

"""A tuned study's table and curves (no torch): per row, the test accuracy under the
shared recipe and under its own tuned point, each Δ vs the baseline, the chosen values,
the trials and epochs consumed (``tuning_table``); and the expected best validation
accuracy against the number of trials (Dodge et al., EMNLP 2019: ``expected_max``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion_lab.analysis.stats import Interval, difference_interval
from fusion_lab.analysis.table_formats import latex_table, tabulate_text
from fusion_lab.store import DONE, SUMMARY_JSON, read_json, run_status

TUNING_JSON = "tuning.json"


def expected_max(values: list[float], k: int) -> float:
    """E[max of k draws, with replacement, from the n values]: with v_(1) <= .. <= v_(n),
    P(max = v_(i)) = (i/n)^k - ((i-1)/n)^k (Dodge et al. 2019, eq. 1)."""
    v = np.sort(np.asarray(values, dtype=float))
    n = len(v)
    i = np.arange(1, n + 1)
    return float(np.sum(v * ((i / n) ** k - ((i - 1) / n) ** k)))


def curve(values: list[float]) -> list[float]:
    """``expected_max`` for k = 1..n."""
    return [expected_max(values, k) for k in range(1, len(values) + 1)]


def read_tuning(study_dir: Path) -> dict | None:
    doc = read_json(study_dir / TUNING_JSON)
    return doc if isinstance(doc, dict) else None


def _by_seed(folder: Path, run_ids: list[str]) -> tuple[dict[int, float], float]:
    """The finished runs' test accuracy by seed, and their test set's size."""
    out, size = {}, math.nan
    for rid in run_ids:
        d = folder / rid
        s = read_json(d / SUMMARY_JSON) or {}
        if run_status(d) == DONE and (s.get("final") or {}).get("acc") is not None:
            out[int(s.get("seed", len(out)))] = float(s["final"]["acc"])
            size = float(s.get("test_size") or math.nan)
    return out, size


def _interval(r: dict, b: dict | None, key: str) -> Interval | None:
    """The Δ's 95% interval against the baseline row (``stats.difference_interval``:
    paired t over the seeds both ran, else Welch, else binomial)."""
    if b is None or not r[key] or not b[key]:
        return None
    return difference_interval(r[key], b[key], r[f"{key}_size"], b[f"{key}_size"])


def _mean_sd(accs: list[float]) -> str:
    if not accs:
        return "-"
    sd = f" ± {np.std(accs, ddof=1):.2f}" if len(accs) > 1 else ""
    return f"{np.mean(accs):.2f}{sd} (n={len(accs)})"


def tuning_records(study_dir: Path) -> list[dict[str, Any]]:
    """One record per row: accuracies (mean over seeds) under the shared recipe and at the
    tuned point, their Δ vs the baseline row (same grid cell), choice and budget."""
    doc = read_tuning(study_dir) or {}
    recs = []
    for row in doc.get("rows") or []:
        shared, shared_size = _by_seed(study_dir / "shared", row.get("shared_run_ids") or [])
        tuned, tuned_size = _by_seed(study_dir, row.get("final_run_ids") or [])
        trials = row.get("trials") or []
        recs.append({"label": row["label"], "grid": row.get("grid") or {},
                     "shared": shared, "tuned": tuned, "shared_size": shared_size,
                     "tuned_size": tuned_size,
                     "shared_acc": float(np.mean(list(shared.values()))) if shared else None,
                     "tuned_acc": float(np.mean(list(tuned.values()))) if tuned else None,
                     "chosen": row.get("chosen_params"), "trial": row.get("chosen"),
                     "trials_done": sum(t.get("status") == DONE for t in trials),
                     "trials": len(trials), "epochs": sum(t.get("epochs") or 0 for t in trials),
                     "trials_pruned": sum(bool(t.get("pruned")) for t in trials),
                     "val_accs": [t["val_acc"] for t in trials if t.get("val_acc") is not None]})
    base = doc.get("baseline")
    for r in recs:
        b = next((x for x in recs if x["label"] == base and x["grid"] == r["grid"]), None)
        for key in ("shared", "tuned"):
            ok = b is not None and r[f"{key}_acc"] is not None and b[f"{key}_acc"] is not None
            r[f"delta_{key}"] = r[f"{key}_acc"] - b[f"{key}_acc"] if ok else None
            iv = _interval(r, b, key) if ok and b is not r else None
            r[f"delta_{key}_ci"] = [iv.low, iv.high, iv.basis] if iv else None
    return recs


def _fmt_delta(v: float | None, base: bool, ci: list | None = None) -> str:
    """``+4.07 ≈ [-14.5, +22.7]``: ≈ when the 95% interval contains 0."""
    if base or v is None:
        return "(base)" if base else "-"
    if not ci:
        return f"{v:+.2f}"
    near = " ≈" if ci[0] <= 0.0 <= ci[1] else ""
    return f"{v:+.2f}{near} [{ci[0]:+.1f}, {ci[1]:+.1f}]"


def tuning_table(study_dir: Path, fmt: str = "plain") -> str:
    """The tuning table in one format: plain | github | latex | csv | json."""

    doc = read_tuning(study_dir) or {}
    recs = tuning_records(study_dir)
    if fmt == "json":
        drop = ("shared", "tuned", "shared_size", "tuned_size")
        return json.dumps([{k: v for k, v in r.items() if k not in drop} for r in recs],
                          indent=2)
    pruner = (doc.get("tune") or {}).get("pruner", "none") != "none"
    rows = []
    for r in recs:
        base = r["label"] == doc.get("baseline")
        cell = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["grid"].items())
        chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in (r["chosen"] or {}).items()) or "-"
        rows.append({"Row": f"{r['label']} [{cell}]" if cell else r["label"],
                     "Shared recipe": _mean_sd(list(r["shared"].values())),
                     "Δ shared": _fmt_delta(r["delta_shared"], base, r["delta_shared_ci"]),
                     "Tuned": _mean_sd(list(r["tuned"].values())),
                     "Δ tuned": _fmt_delta(r["delta_tuned"], base, r["delta_tuned_ci"]),
                     "Chosen": chosen, "Trials": f"{r['trials_done']}/{r['trials']}",
                     **({"Pruned": str(r["trials_pruned"])} if pruner else {}),
                     "Epochs": str(r["epochs"])})
    body = pd.DataFrame(rows)
    if fmt == "csv":
        return body.to_csv(index=False)
    tune = doc.get("tune") or {}
    pruning = (f", {tune.get('pruner')} pruning (first rung at epoch "
               f"{tune.get('min_epochs')}, reduction {tune.get('reduction')}; Epochs: those "
               "trained)" if pruner else "")
    heading = (f"{doc.get('name')}: test accuracy (%), last epoch, mean ± sd over seeds; "
               f"{tune.get('trials')} {tune.get('sampler')} trials per row on val_acc"
               f"{pruning}; choice: {tune.get('tie_rule')}")
    if fmt == "latex":
        return latex_table(body, heading, [])
    note = ("Δ: against the baseline row, with its 95% interval (paired t over the seeds "
            "both rows ran, else Welch, else binomial); ≈ within noise: it contains 0.")
    return heading + "\n" + tabulate_text(body, fmt) + "\n" + note if len(body) else heading

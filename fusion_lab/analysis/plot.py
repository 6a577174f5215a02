"""`fusionlab plot`: a study's learning curves and final comparison as one PNG (no torch).

One panel row per grid cell (one for a study without a grid), three panels each:
test accuracy per epoch, train loss per head per epoch (the sum of the heads'
cross-entropies over the number of heads, so a one-head baseline and a four-head CN-CNN
compare), one line per table row with a band of mean ± 1 sd over seeds (a spread, not an
interval: each legend says so), and the final table as bars: Δ against the cell's
baseline with its 95% interval (fusion_lab.analysis.stats), or the mean accuracy ± sd when
the study names no baseline. Drawn with matplotlib's object API (no pyplot state, no
display needed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from fusion_lab.analysis.aggregate import StudyResults, load_results
from fusion_lab.analysis.curves import PER_HEAD, bands, cell_key, load_curves
from fusion_lab.analysis.table_formats import BASE
from fusion_lab.errors import FusionLabError

# (metric, y label, title); train loss per head: a baseline's one cross-entropy beside
# CN-CNN's mean of four
CURVE_PANELS = (("test_acc", "test accuracy (%)", "test accuracy (%)"),
                (PER_HEAD, "train loss per head", "train loss per head (sum of CEs / heads)"))
BAND_TEXT = "mean over seeds; band: ±1 sd (spread, not an interval)"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")  # matplotlib's tab10


def plot_study(study_dir: Path, out: str | Path, metric: str = "final") -> tuple[Path, list[str]]:
    """Draw a study's figure and write it as a PNG.

    Args:
        study_dir: results/<study>.
        out: the PNG file to write.
        metric: "final" or "best_val" (the bars; curves show every epoch).
    Returns:
        (the file written, notes for stderr).
    """
    res = load_results(study_dir, metric)
    fig, notes = draw(res, load_curves(study_dir, res.runs))
    out = Path(out)
    if out.parent and not out.parent.is_dir():
        raise FusionLabError(f"cannot write {out}: folder {out.parent}/ does not exist")
    fig.savefig(out, dpi=110)
    return out, notes


def draw(res: StudyResults, curves: pd.DataFrame) -> tuple[Any, list[str]]:
    """The figure of one loaded study (a matplotlib Figure) and notes about what it leaves out.

    Args:
        res: from ``fusion_lab.analysis.aggregate.load_results``.
        curves: from ``fusion_lab.analysis.curves.load_curves``.
    Returns:
        (figure, notes).
    """
    # here, not at the top: matplotlib (a slow import) only when a figure is drawn
    from matplotlib.figure import Figure

    rows = res.rows[res.rows.in_plan] if len(res.rows) else res.rows
    if not len(rows) or not len(curves):
        raise FusionLabError(f"study {res.name!r} has no finished epochs yet: "
                             "run `fusionlab run` on its study file first")
    if res.metric == "best_val" and not (rows.n > 0).any() and res.runs.no_metric.any():
        raise FusionLabError(f"study {res.name!r} has no best_val accuracy: its finished runs "
                             "trained without a validation split (dataset.val_fraction = 0); "
                             "use --metric final")
    cells = list(dict.fromkeys(cell_key(g) for g in rows.grid))
    colours = {lab: PALETTE[i % len(PALETTE)]
               for i, lab in enumerate(dict.fromkeys(rows.label))}
    fig = Figure(figsize=(15, 3.6 * len(cells)), layout="constrained")
    axes = fig.subplots(len(cells), 3, squeeze=False)
    notes: list[str] = list(res.notes)
    for i, cell in enumerate(cells):
        cell_rows = rows[rows.grid.map(cell_key) == cell]
        title = ", ".join(str(v) for v in (cell_rows.iloc[0].grid or {}).values())
        for j, (metric, ylabel, name) in enumerate(CURVE_PANELS):
            ax = axes[i][j]
            _curves(ax, cell_rows, bands(curves, metric), colours)
            ax.set(xlabel="epoch", ylabel=ylabel, title=f"{title}: {name}" if title else name)
            _epoch_axis(ax)
        _bars(axes[i][2], cell_rows, res, colours, title)
    fig.suptitle(f"{res.name}: {res.study.get('describe') or ''}".rstrip(": "))
    missing = rows[rows.n == 0]
    if len(missing):
        notes.append(f"{len(missing)} row(s) have no finished run with a {res.metric} "
                     "accuracy and no bar: "
                     + ", ".join(missing.display))
    return fig, notes


def _curves(ax: Any, rows: pd.DataFrame, band: pd.DataFrame, colours: dict) -> None:
    """One line per row (mean over seeds), a mean ± sd band where 2 or more seeds ran."""
    for r in rows.itertuples():
        b = band[band.group_id == r.group_id]
        if not len(b):
            continue
        seeds = int(b.n.max())
        colour = colours[r.label]
        ax.plot(b.epoch, b["mean"], color=colour, marker="o", markersize=3,
                label=f"{r.label} (n={seeds})")
        spread = b[b.n >= 2]
        low, high = spread["mean"] - spread["std"], spread["mean"] + spread["std"]
        if len(spread) == 1:  # one epoch: a band of zero width would not show
            ax.vlines(spread.epoch, low, high, color=colour, alpha=0.3, linewidth=8)
        elif len(spread):
            ax.fill_between(spread.epoch, low, high, color=colour, alpha=0.2, linewidth=0)


def _epoch_axis(ax: Any) -> None:
    """Whole-epoch ticks, and a legend whose title says what the line and the band are."""
    # here, not at the top: matplotlib only when a figure is drawn
    from matplotlib.ticker import MaxNLocator

    # min_n_ticks=1: one epoch gets the tick "1", not 0.945 ... 1.050
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if ax.lines:  # the band is a spread, not an interval: said on the figure
        ax.legend(fontsize="small", title_fontsize="small",
                  title=BAND_TEXT if ax.collections else "mean over seeds")


def _bars(ax: Any, rows: pd.DataFrame, res: StudyResults, colours: dict, title: str) -> None:
    """The final table: Δ with its 95% interval, or mean ± sd without a baseline."""
    # the table's marks on the row's name: (base) on the baseline, ≈ within noise
    labels = [r.label + (f" {BASE}" if r.is_baseline else "")
              + (" ≈" if r.within_noise is True else "") for r in rows.itertuples()]
    y = list(range(len(labels)))
    colour = [colours[lab] for lab in rows.label]
    baseline = res.study.get("baseline")
    if baseline is None:
        means = [r.mean if r.n else math.nan for r in rows.itertuples()]
        err = [r.std if r.n >= 2 else 0.0 for r in rows.itertuples()]
        ax.barh(y, means, xerr=err, color=colour, capsize=4)
        ax.set(xlabel=f"test accuracy (%), {res.metric} (mean ± sd)")
    else:
        delta = [0.0 if r.is_baseline else r.delta for r in rows.itertuples()]
        # a difference of accuracies lies in [-100, 100]: whiskers are cut there (a t
        # interval over 2 seeds can reach far beyond)
        low = [r.delta if math.isnan(r.ci_low) else max(r.ci_low, -100.0)
               for r in rows.itertuples()]
        high = [r.delta if math.isnan(r.ci_high) else min(r.ci_high, 100.0)
                for r in rows.itertuples()]
        cut = any(r.ci_low < -100 or r.ci_high > 100 for r in rows.itertuples())
        lo = [0.0 if math.isnan(d) else d - v for d, v in zip(delta, low)]
        hi = [0.0 if math.isnan(d) else v - d for d, v in zip(delta, high)]
        ax.barh(y, delta, xerr=[lo, hi], color=colour, capsize=4)
        ax.axvline(0.0, color="black", linewidth=0.8)
        # two lines: on one, the label outgrew the panel and was cut at the figure's edge
        ax.set(xlabel=f"Δ vs {baseline} (points, {res.metric})\nwhisker: 95% interval"
                      + (" (cut at ±100)" if cut else "") + "; ≈ contains 0")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()  # table order, top to bottom
    ax.set_title(f"{title}: final table" if title else "final table")

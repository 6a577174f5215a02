"""`fusionlab report STUDY`: one self-contained HTML page to share a study.

Built from what the other commands compute, never recomputed here: the table's cells and
notes (``fusion_lab.analysis.table``, with the Δ intervals), the learning curves and Δ bars
(``fusion_lab.analysis.plot``, inlined as a PNG), the attention scores and Figure 3
(``fusion_lab.maps``) where the study has scored runs, the cost profile (cost.json) and, per
run, its status, provenance and config (``fusion_lab.analysis.report_runs``). A study with
runs not done, or rows with fewer finished seeds than asked, says so in a banner at the top.

No torch unless Figure 3 is drawn (or the attention table must look up whether an unscored
run draws masks): pass ``figure3_png`` to inline a PNG that `fusionlab viz` wrote instead.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fusion_lab import __version__, store
from fusion_lab.analysis import report_html as H
from fusion_lab.analysis.aggregate import StudyResults, load_results, not_done
from fusion_lab.analysis.report_runs import runs_section
from fusion_lab.analysis.table import METRIC_TEXT, display_cells, plugin_warnings
from fusion_lab.analysis.table_notes import table_notes
from fusion_lab.errors import FusionLabError
from fusion_lab.maps.attention_table import WEIGHTS_OF_METRIC, attention_columns
from fusion_lab.maps.scoring import KEYS, read_scores
from fusion_lab.registries import load_plugins

FIGURE3_IMAGES = 3  # test images drawn in the report's Figure 3 (one row each)
COST_COLUMNS = ("Params (M)", "GFLOPs", "train img/s", "infer img/s", "peak MB")


@dataclass
class Report:
    """The page and what to say on stderr about what it leaves out."""

    html: str
    warnings: list[str] = field(default_factory=list)


def write_report(study_dir: Path, out: str | Path | None = None, **kw) -> tuple[Path, list[str]]:
    """Build the report of ``study_dir`` (``build_report``'s keywords) and write it to
    ``out`` (default ``<study_dir>/report.html``). Returns the file and the warnings."""
    out = Path(out) if out else Path(study_dir) / "report.html"
    if not out.parent.is_dir():
        raise FusionLabError(f"cannot write {out}: folder {out.parent}/ does not exist")
    report = build_report(study_dir, **kw)
    store.write_text(out, report.html)
    return out, report.warnings


def build_report(study_dir: Path, metric: str = "final", figures: bool = True,
                 figure3_png: str | Path | None = None) -> Report:
    """The HTML page of one study.

    Args:
        study_dir: results/<study>.
        metric: "final" or "best_val" (the table, the bars and which attention scores).
        figures: draw the learning curves and Figure 3 (False: tables only).
        figure3_png: a Figure 3 PNG (from `fusionlab viz`) to inline instead of drawing one.
    """
    study_dir = Path(study_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = load_results(study_dir, metric, cost=True)
    report = Report("", [str(w.message) for w in caught])
    report.warnings += plugin_warnings(res)
    scored = _scored_runs(study_dir, res, metric)
    title = f"{res.name}: {res.study.get('describe') or ''}".rstrip(": ")
    body = [f"<h1>{H.esc(title)}</h1>",
            H.para(f"fusionlab report · {METRIC_TEXT[metric]} · generated {store.now()} "
                   f"by fusion_lab {__version__} · results {study_dir}", "meta"),
            _banner(res), _warnings_banner(report.warnings),
            _table_section(study_dir, res, metric, bool(scored)), _cost_section(res)]
    if figures:
        body.append(_plot_section(study_dir, res, report.warnings))
    body.append(_figure3_section(scored, metric, figures, figure3_png, report.warnings))
    body.append(runs_section(study_dir, res.runs, metric))
    report.html = H.page(f"{res.name}: fusionlab report", [b for b in body if b])
    return report


def _banner(res: StudyResults) -> str:
    """Runs not done and rows with fewer finished seeds than asked, or nothing."""
    bad = not_done(res.runs)
    rows = res.rows
    partial = rows[rows.in_plan & (rows.n < rows.n_expected)] if len(rows) else rows
    if not len(bad) and not len(partial):
        return ""
    counts = Counter(bad.status) if len(bad) else Counter()
    parts = []
    if len(bad):
        kinds = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        parts.append(f"{len(bad)} of {len(res.runs)} run(s) not done ({kinds})")
    if len(partial):
        parts.append(f"{len(partial)} of {int(rows.in_plan.sum())} row(s) with fewer finished "
                     "seeds than the study asks for: their numbers count only finished runs")
    items = []
    for r in bad.itertuples() if len(bad) else []:
        grid = ", ".join(str(v) for v in (r.grid or {}).values())
        seed = "-" if r.seed is None or r.seed != r.seed else int(r.seed)
        err = f": {r.error}" if isinstance(r.error, str) and r.error else ""
        items.append(f"{r.status}: {r.label}{f' ({grid})' if grid else ''}, seed {seed}, "
                     f"run {str(r.run_id)[:12]}{err}")
    items += [f"partial row: {r.display}: {r.n}/{r.n_expected} seeds finished"
              for r in partial.itertuples()]
    return H.banner("Incomplete study: " + "; ".join(parts) + ".", items, ident="not-done")


def _warnings_banner(lines: list[str]) -> str:
    return H.banner("Warnings", lines, kind="warn", ident="warnings") if lines else ""


def _table_section(study_dir: Path, res: StudyResults, metric: str, attention: bool) -> str:
    if not len(res.rows):
        return H.section("Table", H.para("No runs yet: run `fusionlab run` on the study file."),
                         ident="table")
    body = display_cells(res, ci=True)
    notes = table_notes(res, cost=False)
    if attention:
        att = attention_columns(study_dir, res.rows, res.runs, metric)
        for col, values in att.cells.items():
            body[col] = values
        notes += att.notes
    return H.section(f"Table: {METRIC_TEXT[metric]}", H.frame_table(body), H.notes(notes),
                     ident="table")


def _cost_section(res: StudyResults) -> str:
    if res.cost is None or not len(res.rows):
        return ""
    cells = display_cells(res, cost=True)
    body = cells[["Row", *[c for c in COST_COLUMNS if c in cells.columns]]]
    cost = res.cost
    meta = (f"Measured on {cost.get('device', '?')} ({cost.get('measured', '?')}), images "
            f"{cost.get('image_size', '?')} px, batch {cost.get('batch_size', '?')}; "
            "(×r): throughput over the baseline row's, measured in the same process.")
    notes = table_notes(res, cost=True)
    missing = [n for n in notes if "cost.json" in n]
    return H.section("Cost (fusionlab bench)", H.para(meta, "meta"), H.frame_table(body, 1),
                     H.notes(missing), ident="cost")


def _plot_section(study_dir: Path, res: StudyResults, notes: list[str]) -> str:
    """`fusionlab plot`'s figure, inlined; a line saying why when there is nothing to draw."""
    # here, not at the top: matplotlib only when the page has figures (--no-figures skips it)
    from fusion_lab.analysis.curves import load_curves
    from fusion_lab.analysis.plot import draw

    try:
        fig, plot_notes = draw(res, load_curves(study_dir, res.runs))
    except FusionLabError as e:
        return H.section("Learning curves and Δs", H.para(str(e)), ident="plot")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    notes += plot_notes
    return H.section("Learning curves and Δs",
                     H.image(buf.getvalue(), f"{res.name}: learning curves and deltas"),
                     H.notes(plot_notes), ident="plot")


def _scored_runs(study_dir: Path, res: StudyResults, metric: str) -> list[tuple[Path, str, dict]]:
    """(run folder, row, scores) of the finished runs with `viz --score` scores, study order."""
    runs = res.runs
    if not len(runs):
        return []
    weights = WEIGHTS_OF_METRIC[metric]
    out = []
    for r in runs[runs.status == store.DONE].sort_values("order", kind="stable").itertuples():
        scores = read_scores(study_dir / str(r.run_id), weights)
        if scores and scores.get("levels"):
            out.append((study_dir / str(r.run_id), str(r.label), scores))
    return out


def _figure3_section(scored: list[tuple[Path, str, dict]], metric: str, figures: bool,
                     figure3_png: str | Path | None, notes: list[str]) -> str:
    """Figure 3 of the last scored run (the CN-CNN-like one) and its scores per level."""
    if not scored and figure3_png is None:
        return ""
    parts = []
    if figure3_png is not None:
        png = Path(figure3_png).read_bytes() if Path(figure3_png).is_file() else b""
        if not png.startswith(H.PNG_MAGIC):
            raise FusionLabError(f"--figure3 {figure3_png}: not a PNG file (give the file "
                                 "`fusionlab viz` wrote)")
        parts += [H.para(f"Figure 3 from {Path(figure3_png).name}.", "meta"),
                  H.image(png, "Figure 3")]
    elif figures:
        parts.append(_draw_figure3(scored[-1], metric, notes))
    if scored:
        run_dir, label, scores = scored[-1]
        parts.append(H.para(f"Scores of run {run_dir.name[:12]} ({label}), "
                            f"{scores.get('weights', WEIGHTS_OF_METRIC[metric])} weights, "
                            f"{scores.get('images', '?')} test images:"))
        rows = [[lv, *[_score(s.get(k), k) for k in KEYS]] for lv, s in scores["levels"].items()]
        parts.append(H.table(["level", *KEYS], rows, [False] + [True] * len(KEYS)))
    return H.section("Figure 3: LH maps and SA masks", *parts, ident="figure3")


def _draw_figure3(picked: tuple[Path, str, dict], metric: str, notes: list[str]) -> str:
    """Draw Figure 3 of ``picked`` with `fusionlab viz` (imports torch); on a user-side
    problem (no checkpoint, dataset not on this machine) a line saying why instead."""
    # here, not at the top: Figure 3 needs torch; the rest of the report does not
    from fusion_lab.maps.viz import figure3

    run_dir, label, _ = picked
    summary = store.read_json(run_dir / store.SUMMARY_JSON) or {}
    plugins = [p for p in summary.get("plugins") or {} if Path(p).is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            load_plugins(plugins)  # the recorded plugin files still on this machine
            path, fig_notes = figure3(run_dir, Path(tmp) / "figure3.png", FIGURE3_IMAGES,
                                      weights=WEIGHTS_OF_METRIC[metric])
        except FusionLabError as e:
            why = f"Figure 3 not drawn: {e}"
            notes.append(why)
            return H.para(why)
        notes += fig_notes
        png = path.read_bytes()
    return (H.para(f"Run {run_dir.name[:12]} ({label}).", "meta")
            + H.image(png, f"Figure 3 of {label}") + H.notes(fig_notes))


def _score(v: object, key: str) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:.1f}" if key.startswith("point") else f"{v:.3f}"

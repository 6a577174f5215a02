"""`fusionlab table --attention`: the attention scores of `fusionlab viz --score` as columns.

Per table row, the mean over its scored seeds of each level's pointing game (mask maximum
inside the bird box, percent) and energy share inside the box, beside the box's area
share (what a uniform mask scores). Scores of the last epoch's weights go with
``--metric final``, those of ``best.pt`` with ``--metric best_val``.

Whether a run's attention draws spatial masks is a fact of its class (``masks``, the
ATTENTIONS contract), read by ``has_spatial_masks`` here and by ``fusionlab viz`` alike. A
run with scores has them (``viz --score`` scores no other), so no torch is imported unless
a finished run has no scores: then its attention class is looked up in the registry, which
imports the catalogue (and torch). An attention of a plugin that is not loaded counts as
drawing none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fusion_lab.maps.scoring import read_scores

WEIGHTS_OF_METRIC = {"final": "last", "best_val": "best"}


@dataclass
class AttentionColumns:
    """Per table row: the raw means (``records``) and their display text (``cells``)."""

    records: list[dict[str, float | None]]
    cells: dict[str, list[str]]
    notes: list[str]


def attention_columns(study_dir: Path, rows: pd.DataFrame, runs: pd.DataFrame,
                      metric: str) -> AttentionColumns:
    """The attention columns of one study's table.

    Args:
        study_dir: results/<study>.
        rows: the aggregated table rows (group_id per row).
        runs: the run records (status, group_id, run_id).
        metric: the table's metric; it picks the weights whose scores are shown.
    """
    weights = WEIGHTS_OF_METRIC[metric]
    done = runs[runs.status == "done"] if len(runs) else runs
    by_group: dict[str, list[dict]] = {}
    unscored = 0  # finished runs with spatial masks and no scores
    for r in done.itertuples():
        s = read_scores(Path(study_dir) / str(r.run_id), weights)
        if s is not None and s.get("levels"):
            by_group.setdefault(r.group_id, []).append(s)
        elif has_spatial_masks(_attention(r.config)):
            unscored += 1
    shown = _shown(by_group)
    trained = done.groupby("group_id").size().to_dict() if len(done) else {}
    records, cells = [], {col: [] for _, _, col, _ in shown}
    for g in rows.group_id:
        rec = {}
        for lv, key, col, spec in shown:
            mean, n = _mean(by_group.get(g) or [], lv, key)
            rec[f"attention.{lv}.{key}"] = mean
            text = "-" if mean is None else format(mean, spec)
            if mean is not None and n < trained.get(g, 0):  # fewer seeds than finished
                text += f" (n={n})"
            cells[col].append(text)
        records.append(rec)
    scored = sum(len(v) for v in by_group.values())
    parts = any(key == "point_part" for _, key, _, _ in shown)
    notes = [f"attention ({weights} weights): point = % of test images whose SA mask peaks "
             "inside the bird box; energy = the mask's share inside the box; box area = what "
             "a uniform mask scores"
             + ("; part point / part energy / part area: the same for the parts" if parts
                else "")
             + f"; means over {scored} scored run(s), (n=k): k of the row's finished seeds "
             "(docs/attention.md)."]
    if unscored > 0:
        notes.append(f"{unscored} finished run(s) with SA masks have no attention scores "
                     f"({'of best.pt' if weights == 'best' else 'of the last weights'}): "
                     f"fusionlab viz RUN --score{' --weights best' if weights == 'best' else ''}")
    images = sorted({s["images"] for ss in by_group.values() for s in ss})
    if len(images) > 1:
        notes.append(f"attention scores over different numbers of test images ({images[0]} "
                     f"to {images[-1]}; --limit): compare rows with care.")
    return AttentionColumns(records, cells, notes)


def _shown(by_group: dict[str, list[dict]]) -> list[tuple[str, str, str, str]]:
    """(level, score key, column, format) of each column: box scores, then part scores
    where any scored run has them (datasets with part annotations)."""
    scores = [s for ss in by_group.values() for s in ss]
    levels = list(dict.fromkeys(lv for s in scores for lv in s["levels"]))
    shown = [(lv, "point_box", f"point {lv} %", ".1f") for lv in levels]
    shown += [(lv, "energy_box", f"energy {lv}", ".3f") for lv in levels]
    shown += [(levels[0], "area_box", "box area", ".3f")] if levels else []
    if any(v.get("point_part") is not None for s in scores for v in s["levels"].values()):
        shown += [(lv, "point_part", f"part point {lv} %", ".1f") for lv in levels]
        shown += [(lv, "energy_part", f"part energy {lv}", ".3f") for lv in levels]
        shown += [(levels[0], "area_part", "part area", ".3f")]
    return shown


def has_spatial_masks(attention: str) -> bool:
    """Whether the attention registered as ``attention`` returns spatial masks: its class
    lists "sa" in its ``masks`` attribute (the ATTENTIONS contract); False if unknown."""
    # here, not at the top: the catalogue (torch) only for a run whose attention has no recorded scores
    from fusion_lab.registries import ATTENTIONS, load_builtin

    load_builtin()  # the catalogue's attention classes (this imports torch)
    return attention in ATTENTIONS and "sa" in getattr(ATTENTIONS.get(attention), "masks", ())


def _attention(config: dict) -> str:
    """The attention of a run's recorded (flattened, resolved) config."""
    return str((config or {}).get("model.attention") or "none")


def _mean(scores: list[dict], level: str, key: str) -> tuple[float | None, int]:
    values = [s["levels"].get(level, {}).get(key) for s in scores]
    values = [v for v in values if v is not None and not math.isnan(v)]
    return (sum(values) / len(values) if values else None), len(values)

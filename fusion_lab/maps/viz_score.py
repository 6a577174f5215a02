"""`fusionlab viz RUN --score`: Figure 3 with a score (pointing game and energy share).

Runs a trained model over the test split (all of it unless a limit is given), takes each
level's spatial-attention mask resized to the input, and scores it against the dataset's
object box and part locations (``fusion_lab.maps.scoring``). Needs a dataset with a
``regions(item)`` method (``synthetic_fgvc``, ``cub200``) and a model with SA masks.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusion_lab import store
from fusion_lab.data import open_source
from fusion_lab.data.source import IMAGE_ERRORS
from fusion_lab.data.transforms import FGVCTransform, normalise
from fusion_lab.errors import FusionLabError
from fusion_lab.maps.regions import through_test_transform
from fusion_lab.maps.scoring import format_levels, score_file, score_mask, summarise
from fusion_lab.maps.viz import extract_maps, has_sa, load_trained
from fusion_lab.models.assemble import resolve_parts

PART_RADIUS = 1 / 16  # "on a part point": within this fraction of the input side (28 px at 448)


def trained_epoch(run_dir: Path, weights: str) -> int | None:
    """The epoch the weights come from, read from summary.json (None while running)."""
    summary = store.read_json(run_dir / store.SUMMARY_JSON) or {}
    if weights == "best":
        return (summary.get("best_val") or {}).get("epoch")
    return summary.get("epochs")


def score_run(run_dir: str | Path, weights: str = "last", limit: int | None = None,
              radius: float = PART_RADIUS) -> tuple[dict, list[str]]:
    """Score every level's SA mask of a run on its dataset's test split; write the scores.

    Args:
        run_dir: the run folder.
        weights: "last" (checkpoint.pt, the reported epoch) or "best" (best.pt).
        limit: score this many test images, evenly spaced over the split; None: all.
        radius: part-point radius as a fraction of the input side.
    Returns:
        (the scores as written to ``attention_<weights>.json``, lines to print).
    """
    run_dir = Path(run_dir)
    if limit is not None and limit < 1:
        raise FusionLabError(f"--limit must be at least 1, got {limit}")
    model, cfg, source = _scoreable(run_dir, weights)
    t = cfg.train
    size, resize = t.image_size, t.resize or t.image_size
    tf = FGVCTransform(size, resize, train=False)
    items = [item for item, _ in source.test]
    if limit is not None and limit < len(items):
        items = [items[int(i)] for i in np.linspace(0, len(items) - 1, limit).round()]
    per_level, skipped = _score_levels(model, source, items, tf, t.batch_size, radius * size)
    scores = {"weights": weights, "epoch": trained_epoch(run_dir, weights),
              "dataset": cfg.dataset.name, "split": "test", "images": len(items) - skipped,
              "test_size": len(source.test), "limit": limit, "skipped_images": skipped,
              "part_radius_px": radius * size, "image_size": size,
              "levels": {lv: summarise(s) for lv, s in per_level.items()},
              "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    store.write_json(run_dir / score_file(weights), scores)
    which = (f"{'last' if weights == 'last' else 'best-validation'} epoch's weights "
             f"(epoch {scores['epoch'] or '?'})")
    lines = [f"run {run_dir.name[:12]}: SA masks scored on {scores['images']} of "
             f"{scores['test_size']} test images with the {which}; part radius "
             f"{radius * size:.0f} px; pointing in %, energy and area as fractions "
             "(area = what a uniform mask scores)", *format_levels(scores),
             f"written to {run_dir / score_file(weights)}"]
    return scores, lines


def _scoreable(run_dir: Path, weights: str) -> tuple[torch.nn.Module, Any, Any]:
    """(model, config, dataset source) of a run that has SA masks and a dataset with regions."""
    model, cfg, _ = load_trained(run_dir, weights)
    if not has_sa(cfg):
        raise FusionLabError(
            f"run {run_dir.name[:12]} has no spatial attention masks (attention: "
            f"{resolve_parts(cfg.model)[1]}): score a run whose attention is sa or sa+ca")
    source, _ = open_source(cfg.dataset.name, cfg.dataset.root, cfg.dataset.options)
    if not hasattr(source, "regions"):
        raise FusionLabError(f"dataset {cfg.dataset.name!r} does not say where the object "
                             "and its parts are: scores need synthetic_fgvc or cub200")
    return model, cfg, source


def _score_levels(model: torch.nn.Module, source: Any, items: list, tf: Any, batch_size: int,
                  radius_px: float) -> tuple[dict[str, list[dict]], int]:
    """Each level's per-image scores over ``items``, and how many images were unreadable."""
    per_level: dict[str, list[dict]] = {}
    skipped = 0
    for start in range(0, len(items), batch_size):
        batch, regions = [], []
        for item in items[start:start + batch_size]:
            try:
                batch.append(tf(source.load_tensor(item)))  # uint8, as loaders give
            except IMAGE_ERRORS:
                skipped += 1
                continue
            regions.append(through_test_transform(source.regions(item), tf.resize, tf.image_size))
        if not batch:
            continue
        maps = extract_maps(model, normalise(torch.stack(batch)))
        for j, level in enumerate(maps.levels):
            per_level.setdefault(level, []).extend(
                score_mask(maps.sa[i, j], reg, radius_px) for i, reg in enumerate(regions))
    return per_level, skipped

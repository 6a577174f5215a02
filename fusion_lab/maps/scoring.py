"""Scores of spatial attention masks against where the object and its parts are (no torch).

Figure 3 of the paper shows attention maps and asks the reader to believe they find the
discriminative parts. These numbers check it, per level, over many test images:

- **pointing game**: the mask's maximum falls inside the bird's box (``point_box``) or on
  a part (``point_part``; see ``fusion_lab.maps.regions.part_pixels``), percent of images;
- **energy share**: the mask's mass inside the box (or on the parts) over its total mass
  (``energy_box``, ``energy_part``), beside the box's (parts') share of the image area
  (``area_box``, ``area_part``), which is what a uniform mask scores.

``fusion_lab.maps.viz_score`` computes masks and writes them to ``attention_<weights>.json`` in
the run folder; ``fusionlab table --attention`` reads those files through ``read_scores``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from fusion_lab.maps.regions import Regions, box_pixels, part_pixels

WEIGHTS = ("last", "best")  # last epoch's weights (checkpoint.pt) or best validation (best.pt)
KEYS = ("point_box", "point_part", "energy_box", "area_box", "energy_part", "area_part")


def score_file(weights: str) -> str:
    """The file name, inside the run folder, of the scores computed with ``weights``."""
    return f"attention_{weights}.json"


def score_mask(mask: np.ndarray, reg: Regions, radius: float) -> dict[str, float | None]:
    """Pointing and energy of one (H, W) non-negative mask; part scores None without parts.

    The maximum is the first pixel holding the largest value (row-major), as numpy's argmax.
    """
    if mask.shape != (reg.size[1], reg.size[0]):
        raise ValueError(f"mask of shape {mask.shape} for an image of size {reg.size}")
    mask = np.asarray(mask, np.float64)
    total = float(mask.sum())
    peak = np.unravel_index(int(np.argmax(mask)), mask.shape)
    out: dict[str, float | None] = {}
    for name, where in (("box", box_pixels(reg)), ("part", part_pixels(reg, radius))):
        if not where.any():
            out.update({f"point_{name}": None, f"energy_{name}": None, f"area_{name}": None})
            continue
        out[f"point_{name}"] = float(where[peak])
        out[f"energy_{name}"] = float(mask[where].sum() / total) if total > 0 else None
        out[f"area_{name}"] = float(where.mean())
    return out


def summarise(per_image: list[dict[str, float | None]]) -> dict[str, float | int | None]:
    """Means over images (pointing in percent, shares as fractions) and the images counted.

    An image without a value (no visible part, an all-zero mask) is left out of that mean.
    """
    out: dict[str, float | int | None] = {"images": len(per_image)}
    for key in KEYS:
        values = [s[key] for s in per_image if s.get(key) is not None]
        mean = float(np.mean(values)) if values else None
        out[key] = 100.0 * mean if mean is not None and key.startswith("point") else mean
        if key == "point_part":
            out["images_with_parts"] = len(values)
    return out


def read_scores(run_dir: str | Path, weights: str = "last") -> dict | None:
    """The scores written for a run by ``fusionlab viz --score``, or None."""
    path = Path(run_dir) / score_file(weights)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def format_levels(scores: dict) -> list[str]:
    """The per-level lines `fusionlab viz --score` prints."""
    head = (f"{'level':<6} {'point box %':>11} {'energy box':>10} {'area box':>8} "
            f"{'point part %':>12} {'energy part':>11} {'area part':>9}")
    lines = [head]
    for level, s in scores["levels"].items():
        cells = [_f(s.get(k), ".1f" if k.startswith("point") else ".3f") for k in KEYS]
        lines.append(f"{level:<6} {cells[0]:>11} {cells[2]:>10} {cells[3]:>8} "
                     f"{cells[1]:>12} {cells[4]:>11} {cells[5]:>9}")
    return lines


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

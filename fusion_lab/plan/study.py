"""Study files: parse, validate and expand into runs (no torch import here).

A study names a base config, named variants (patches on the base, each with the label the
table shows), optional grid axes crossed with the variants, seeds, the baseline row and
published reference numbers. ``load_study`` reads the YAML; ``expand`` turns it into one
``PlannedRun`` per (variant, grid cell, seed), each with its full-length id.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fusion_lab.config import RunConfig, from_dict, resolve, result_dict
from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.plan.dotted import deep_merge, drop_dotted, get_dotted, parse_override, set_dotted
from fusion_lab.plan.tune_space import TuneSpec, parse_tune, study_problems
from fusion_lab.store import canonical_json, run_ids

STUDY_KEYS = ("name", "describe", "plugins", "base", "variants", "grid", "seeds",
              "baseline", "reference", "launcher", "tune")


@dataclass
class Study:
    name: str
    describe: str = ""
    plugins: list[str] = field(default_factory=list)
    base: dict = field(default_factory=dict)
    variants: list[dict] = field(default_factory=list)
    grid: dict[str, list] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: str | None = None
    reference: dict[str, dict[str, float]] = field(default_factory=dict)
    launcher: dict[str, Any] = field(default_factory=dict)  # {name: slurm, OPTION: value, ..}
    tune: TuneSpec | None = None  # the tune: block (plan.tune_space), None: no tuning
    path: Path | None = None


@dataclass
class PlannedRun:
    run_id: str
    group_id: str
    label: str
    grid: dict[str, Any]
    seed: int
    config: RunConfig

    @property
    def display(self) -> str:
        cell = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in self.grid.items())
        return f"{self.label} [{cell}]" if cell else self.label


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read and structurally validate a study file (components are checked by ``validate``).

    Every problem is reported at once; ``--set`` overrides of config keys win over the
    base and every variant's patch.
    """
    path = Path(path)
    raw = _read_yaml(path)
    problems: list[str] = []
    config_overrides = _split_overrides(raw, overrides or [], problems)
    for key in raw:
        if key not in STUDY_KEYS:
            close = difflib.get_close_matches(str(key), STUDY_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown study key {key!r}{hint}; valid: {', '.join(STUDY_KEYS)}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[\w.+-]+", name):
        problems.append(f"name must be a simple word (letters, digits, . _ + -), got {name!r}")
        name = path.stem
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        problems.append("base must be a mapping of dataset/model/train")
        base = {}
    variants, labels = _variants(raw, problems)
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        problems.append("grid must map dotted keys to non-empty lists, e.g. "
                        "{model.backbone: [resnet18, resnet50]}")
        grid = {}
    seeds, baseline = _seeds(raw, problems), raw.get("baseline")
    if baseline is not None and baseline not in labels:
        problems.append(f"baseline {baseline!r} is not a variant label; labels: {labels}")
    reference = _reference(raw, labels, grid, problems)
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        problems.append("plugins must be a list of module names or .py paths")
        plugins = []
    _override(base, variants, config_overrides)
    launcher = raw.get("launcher") or {}
    if not isinstance(launcher, dict) or not isinstance(launcher.get("name", ""), str):
        problems.append("launcher must be a mapping with a `name` and its options, e.g. "
                        "{name: slurm, partition: gpu}")
        launcher = {}
    tune = parse_tune(raw.get("tune"), problems)
    if tune is not None:
        problems += study_problems(tune, base, variants, grid, seeds)
    if problems:
        raise ConfigError(problems, source=str(path))
    return Study(name=name, describe=str(raw.get("describe", "")), plugins=plugins, base=base,
                 variants=variants, grid=grid, seeds=seeds, baseline=baseline,
                 reference=reference, launcher=launcher, tune=tune, path=path)


def _read_yaml(path: Path) -> dict:
    """The study file's mapping, or one error (no file: the studies beside it)."""
    if not path.is_file():
        near = sorted(p.name for p in path.parent.glob("*.y*ml")) if path.parent.is_dir() else []
        hint = f"; studies there: {', '.join(near)}" if near else ""
        raise FusionLabError(f"study file {str(path)!r} not found{hint}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"invalid YAML{where}: {problem}", source=str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError("a study must be a mapping with at least `name` and `base`",
                          source=str(path))
    return raw


def _split_overrides(raw: dict, overrides: list[str], problems: list[str]
                     ) -> list[tuple[str, Any]]:
    """Study-level overrides set into ``raw``; the config overrides, returned in order."""
    config_overrides = []
    for text in overrides:
        key, value = parse_override(text)
        if key in ("seeds", "baseline", "describe"):  # study-level keys
            raw[key] = value
        elif key.split(".")[0] in ("dataset", "model", "train", "seed"):
            config_overrides.append((key, value))
        else:
            problems.append(f"override {text!r}: the key must start with dataset., model., "
                            "train. or be seeds, baseline or describe")
    return config_overrides


def _variants(raw: dict, problems: list[str]) -> tuple[list[dict], list]:
    """The variants (default: one labelled ``default``) and their labels."""
    variants = raw.get("variants") or [{"label": "default"}]
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        problems.append("variants must be a list of mappings, each with a `label`")
        variants = []
    labels = []
    for i, v in enumerate(variants):
        label = v.get("label")
        if not isinstance(label, str) or not label:
            problems.append(f"variant {i + 1} has no `label` (the row name the table shows)")
        elif label in labels:
            problems.append(f"two variants are labelled {label!r}; labels must be unique")
        labels.append(label)
    return variants, labels


def _seeds(raw: dict, problems: list[str]) -> list[int]:
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds
    ) or len(set(seeds)) != len(seeds):
        problems.append(f"seeds must be a list of distinct integers, got {seeds!r}")
        seeds = [0]
    return seeds


def _reference(raw: dict, labels: list, grid: dict, problems: list[str]) -> dict:
    """Published numbers by source, each row a variant label (or 'label (grid values)')."""
    reference = raw.get("reference") or {}
    if not isinstance(reference, dict) or not all(
        isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values())
        for v in reference.values()
    ):
        problems.append("reference must map a source to {row label: accuracy}, e.g. "
                        "{paper: {Baseline: 84.1}}")
        return {}
    cells = [", ".join(_grid_text(v) for v in values)
             for values in itertools.product(*grid.values())] if grid else []
    rows_known = set(labels) | {f"{lab} ({c})" for lab in labels for c in cells}
    for src, rows in reference.items():
        for label in rows:
            if label not in rows_known:
                problems.append(f"reference.{src} names {label!r}, which is no variant "
                                "label (or 'label (grid values)')")
    return reference


def _override(base: dict, variants: list[dict], config_overrides: list[tuple[str, Any]]
              ) -> None:
    """Set each config override in the base and drop it from every variant's patch."""
    for key, value in config_overrides:
        set_dotted(base, key, value)
        for v in variants:  # an override wins over every variant's patch too
            section = key.split(".")[0]
            if isinstance(v.get(section), dict):
                sub = key.split(".", 1)[1] if "." in key else None
                if sub is not None:
                    drop_dotted(v[section], sub)


def _merge_common(problems: list[tuple[str, str]], n_rows: int) -> list[str]:
    """(where, problem) pairs as lines; a problem every row has (from base or --set) once."""
    rows_with: dict[str, int] = {}
    for _, text in problems:
        rows_with[text] = rows_with.get(text, 0) + 1
    out: list[str] = []
    for where, text in problems:
        line = (f"every variant: {text}" if n_rows > 1 and rows_with[text] == n_rows
                else f"{where}: {text}")
        if line not in out:
            out.append(line)
    return out


def _grid_text(value: Any) -> str:
    """How a grid value is shown: a mapping (e.g. a whole dataset section) by its
    `label` or `name` key, anything else as itself."""
    if isinstance(value, dict):
        return str(value.get("label") or value.get("name") or canonical_json(value))
    return str(value)


def expand(study: Study, presets: dict[str, dict] | None = None) -> list[PlannedRun]:
    """Every run of a study: variants x grid cells x seeds, in that order.

    Reports every invalid run config at once (unknown keys, wrong types).
    """
    axes = list(study.grid)
    cells = [dict(zip(axes, values)) for values in itertools.product(*study.grid.values())]
    runs, problems, seen = [], [], set()
    for variant in study.variants:
        label = variant["label"]
        patch = {k: v for k, v in variant.items() if k != "label"}
        for cell in cells or [{}]:
            merged = deep_merge(study.base, patch)
            for key, value in cell.items():
                if isinstance(value, dict):
                    value = {k: v for k, v in value.items() if k != "label"}
                    existing = get_dotted(merged, key)
                    if isinstance(existing, dict):
                        value = deep_merge(existing, value)
                set_dotted(merged, key, value)
            for seed in study.seeds:
                merged["seed"] = seed
                try:
                    cfg = resolve(from_dict(merged), presets)
                except ConfigError as e:
                    where = f"variant {label!r}" + (f" {cell}" if cell else "")
                    for p in e.problems:
                        if (where, p) not in seen:
                            seen.add((where, p))
                            problems.append((where, p))
                    break
                run_id, group_id = run_ids(result_dict(cfg))
                shown = {k: (_grid_text(v) if isinstance(v, dict) else v)
                         for k, v in cell.items()}
                runs.append(PlannedRun(run_id, group_id, label, shown, seed, cfg))
    if problems:
        raise ConfigError(_merge_common(problems, len(study.variants) * max(1, len(cells))),
                          source=str(study.path or study.name))
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        dup = {r.display for r in runs if ids.count(r.run_id) > 1}
        raise ConfigError(f"variants {sorted(dup)} resolve to the same config; "
                          "two rows would be one run", source=str(study.path or study.name))
    return runs


def study_plan(study: Study, runs: list[PlannedRun]) -> dict[str, Any]:
    """The study.json document (see docs/results-format.md)."""
    from fusion_lab.store import now

    rows: dict[str, dict] = {}
    for r in runs:
        row = rows.setdefault(r.group_id, {"label": r.label, "grid": r.grid,
                                           "group_id": r.group_id, "run_ids": []})
        row["run_ids"].append(r.run_id)
    return {"name": study.name, "describe": study.describe, "baseline": study.baseline,
            "seeds": study.seeds, "grid_axes": list(study.grid),
            "reference": study.reference, "rows": list(rows.values()), "updated": now()}

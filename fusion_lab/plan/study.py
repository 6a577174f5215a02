"""Study files: parse, validate and expand into runs (no torch import here).

A study names a base config, named variants (patches on the base, each with the label the
table shows), optional grid axes crossed with the variants, seeds, the baseline row and
published reference numbers. ``load_study`` reads the YAML; ``expand`` turns it into one
``PlannedRun`` per (variant, grid cell, seed), each with its full-length id.
``parse_study`` and ``expand_checked`` do the same and return every problem instead of
raising, so that planning reports all of them in one round.
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion_lab.config import RunConfig, reset_out_of_range, resolve_dict, result_dict
from fusion_lab.errors import ConfigError
from fusion_lab.plan.dotted import deep_merge, get_dotted, parse_override, set_dotted  # noqa: F401 (launchers)
from fusion_lab.plan.study_parts import (
    apply_overrides,
    check_reference,
    check_seeds,
    check_variants,
    grid_text,
    merge_common,
    override_tag,
    read_yaml,
    split_overrides,
    study_paths,
    where,
)
from fusion_lab.plan.tune_space import TuneSpec, parse_tune, study_problems
from fusion_lab.store import now, run_ids, tagged_name

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
    overrides: list[tuple[str, Any]] = field(default_factory=list)  # --set config keys, in order
    tag: str | None = None  # run --tag (--set tag=NAME): ``name`` is then <study>/tags/<tag>


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
    study, problems = parse_study(path, overrides)
    if problems:
        raise ConfigError(problems, source=str(path))
    return study


def parse_study(path: str | Path, overrides: list[str] | None = None
                ) -> tuple[Study, list[str]]:
    """``load_study``'s study and its structural problems (each key left out or defaulted
    where it is wrong); an unreadable file is still an error."""
    path = Path(path)
    raw = read_yaml(path)
    problems: list[str] = []
    config_overrides = split_overrides(raw, overrides or [], problems)
    for key in raw:
        if key not in STUDY_KEYS:
            close = difflib.get_close_matches(str(key), STUDY_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown study key {key!r}{hint}; valid: {', '.join(STUDY_KEYS)}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[\w.+-]+", name):
        problems.append(f"name must be a simple word (letters, digits, . _ + -), got {name!r}")
        name = path.stem
    tag = override_tag(overrides or [], problems)
    name = tagged_name(name, tag)  # a tag's runs are a study of their own, under the study's
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        problems.append("base must be a mapping of dataset/model/train")
        base = {}
    variants, labels = check_variants(raw, problems)
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        problems.append("grid must map dotted keys to non-empty lists, e.g. "
                        "{model.backbone: [resnet18, resnet50]}")
        grid = {}
    seeds, baseline = check_seeds(raw, problems), raw.get("baseline")
    if baseline is not None and baseline not in labels:
        problems.append(f"baseline {baseline!r} is not a variant label; labels: {labels}")
    reference = check_reference(raw, labels, grid, problems)
    for key, _ in config_overrides:  # a --set wins over the grid: on an axis, no rows left
        for axis in grid:
            if axis == key or axis.startswith(key + "."):
                problems.append(f"--set {key} replaces the grid axis {axis}: its cells would "
                                "be one run; drop the --set or the axis")
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        problems.append("plugins must be a list of module names or .py paths")
        plugins = []
    apply_overrides(base, variants, config_overrides)
    launcher = raw.get("launcher") or {}
    if not isinstance(launcher, dict) or not isinstance(launcher.get("name", ""), str):
        problems.append("launcher must be a mapping with a `name` and its options, e.g. "
                        "{name: slurm, partition: gpu}")
        launcher = {}
    tune = parse_tune(raw.get("tune"), problems)
    if tune is not None:
        problems += study_problems(tune, base, variants, grid, seeds)
    return Study(name=name, describe=str(raw.get("describe", "")), plugins=plugins, base=base,
                 variants=variants, grid=grid, seeds=seeds, baseline=baseline,
                 reference=reference, launcher=launcher, tune=tune, path=path,
                 overrides=config_overrides, tag=tag), problems


def cells(study: Study) -> list[dict[str, Any]]:
    """The grid's cells (one empty cell without a grid)."""
    axes = list(study.grid)
    return [dict(zip(axes, values)) for values in itertools.product(*study.grid.values())]


def _merged(study: Study, patch: dict, cell: dict[str, Any]) -> dict:
    """The nested config dict of one (variant, grid cell): base, the variant's patch, the
    cell's values (a mapping value, e.g. a dataset section, merged into the section), its
    relative paths found beside the study file (``study_paths``), then every ``--set``
    override: the user's last word wins over the base, the variants and the grid."""
    merged = deep_merge(study.base, patch)
    for key, value in cell.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "label"}
            existing = get_dotted(merged, key)
            if isinstance(existing, dict):
                value = deep_merge(existing, value)
        set_dotted(merged, key, value)
    study_paths(merged, study.path.parent if study.path else None)
    for key, value in study.overrides:
        set_dotted(merged, key, value)
    return merged


def expand(study: Study, presets: dict[str, dict] | None = None) -> list[PlannedRun]:
    """Every run of a study: variants x grid cells x seeds, in that order.

    Reports every invalid run config at once (unknown keys, wrong types, values out of range).
    """
    runs, problems, _ = expand_checked(study, presets)
    source = str(study.path or study.name)
    if problems:
        raise ConfigError(merge_common(problems, rows(study)), source=source)
    duplicate = duplicate_problem(runs)
    if duplicate:
        raise ConfigError(duplicate, source=source)
    return runs


def rows(study: Study) -> int:
    """How many (variant, grid cell) rows the study has."""
    return len(study.variants) * len(cells(study))


def expand_checked(study: Study, presets: dict[str, dict] | None = None
                   ) -> tuple[list[PlannedRun], list[tuple[str, str]], list[tuple[str, RunConfig]]]:
    """``expand`` without raising: the runs of the rows whose config resolves, every
    problem as (row, problem), and one config per row for the checks of ``validate`` (a
    row with problems: built without its faulty keys, its out-of-range values reset)."""
    runs: list[PlannedRun] = []
    problems: list[tuple[str, str]] = []
    configs: list[tuple[str, RunConfig]] = []
    for variant in study.variants:
        label = variant.get("label")
        patch = {k: v for k, v in variant.items() if k != "label"}
        for cell in cells(study):
            at, merged = where(label, cell), _merged(study, patch, cell)
            shown = {k: (grid_text(v) if isinstance(v, dict) else v) for k, v in cell.items()}
            for i, seed in enumerate(study.seeds):
                cfg, found = resolve_dict({**merged, "seed": seed}, presets)
                if i == 0 and cfg is not None:
                    configs.append((at, cfg))
                if found:
                    problems += [(at, p) for p in found]
                    if cfg is not None:
                        reset_out_of_range(cfg)
                    break
                run_id, group_id = run_ids(result_dict(cfg))
                runs.append(PlannedRun(run_id, group_id, label, shown, seed, cfg))
    return runs, problems, configs


def duplicate_problem(runs: list[PlannedRun]) -> str | None:
    """Two rows that resolve to the same config (one run), if any."""
    ids = [r.run_id for r in runs]
    if len(set(ids)) == len(ids):
        return None
    dup = {r.display for r in runs if ids.count(r.run_id) > 1}
    return f"variants {sorted(dup)} resolve to the same config; two rows would be one run"


def study_plan(study: Study, runs: list[PlannedRun]) -> dict[str, Any]:
    """The study.json document (see docs/results-format.md)."""
    rows: dict[str, dict] = {}
    for r in runs:
        row = rows.setdefault(r.group_id, {"label": r.label, "grid": r.grid,
                                           "group_id": r.group_id, "run_ids": []})
        row["run_ids"].append(r.run_id)
    return {"name": study.name, "describe": study.describe, "baseline": study.baseline,
            "seeds": study.seeds, "grid_axes": list(study.grid),
            "reference": study.reference, "rows": list(rows.values()), "updated": now()}

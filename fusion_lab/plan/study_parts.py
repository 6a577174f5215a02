"""The parts of a study file: its keys checked one by one, overrides, paths, messages.

``fusion_lab.plan.study`` puts them together. Each check appends its problems to a list
and returns a usable value, so that one pass reports every problem of a study at once.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from fusion_lab.config.weights import is_path
from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.plan.dotted import drop_dotted, parse_override, set_dotted
from fusion_lab.store import canonical_json, tag_problem


def read_yaml(path: Path) -> dict:
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


TAG_KEY = "tag"  # `tag=NAME`: the tag `run --tag NAME` plans under (and passes on as --set)


def override_tag(overrides: list[str], problems: list[str]) -> str | None:
    """The tag the overrides name (``tag=NAME``, the last one wins; its text as given, not
    parsed as YAML), or None; a name that is no tag name is a problem."""
    tag = None
    for text in overrides:
        key, _, value = text.partition("=")
        if key.strip() == TAG_KEY:
            tag = value.strip()
    problem = tag_problem(tag) if tag is not None else None
    if problem:
        problems.append(problem)
        return None
    return tag


def split_overrides(raw: dict, overrides: list[str], problems: list[str]
                    ) -> list[tuple[str, Any]]:
    """Study-level overrides set into ``raw``; the config overrides, returned in order
    (``tag=NAME``: ``override_tag``'s)."""
    config_overrides = []
    for text in overrides:
        key, value = parse_override(text)
        if key == TAG_KEY:
            continue
        if key in ("seeds", "baseline", "describe"):  # study-level keys
            raw[key] = value
        elif key.split(".")[0] in ("dataset", "model", "train", "seed"):
            config_overrides.append((key, value))
        else:
            problems.append(f"override {text!r}: the key must start with dataset., model., "
                            "train. or be seeds, baseline or describe")
    return config_overrides


DEFAULT_LABEL = "default"  # the one row of a study without variants


def check_variants(raw: dict, problems: list[str]) -> tuple[list[dict], list]:
    """The variants (default: one labelled ``default``) and their labels."""
    variants = raw.get("variants") or [{"label": DEFAULT_LABEL}]
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


def check_seeds(raw: dict, problems: list[str]) -> list[int]:
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in seeds
    ) or len(set(seeds)) != len(seeds):
        problems.append(f"seeds must be a list of distinct integers, got {seeds!r}")
        seeds = [0]
    return seeds


def check_reference(raw: dict, labels: list, grid: dict, problems: list[str]) -> dict:
    """Published numbers by source, each row a variant label (or 'label (grid values)')."""
    reference = raw.get("reference") or {}
    if not isinstance(reference, dict) or not all(
        isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values())
        for v in reference.values()
    ):
        problems.append("reference must map a source to {row label: accuracy}, e.g. "
                        "{paper: {Baseline: 84.1}}")
        return {}
    cells = [", ".join(grid_text(v) for v in values)
             for values in itertools.product(*grid.values())] if grid else []
    rows_known = set(labels) | {f"{lab} ({c})" for lab in labels for c in cells}
    for src, rows in reference.items():
        for label in rows:
            if label not in rows_known:
                problems.append(f"reference.{src} names {label!r}, which is no variant "
                                "label (or 'label (grid values)')")
    return reference


def apply_overrides(base: dict, variants: list[dict], config_overrides: list[tuple[str, Any]]
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


def merge_common(problems: list[tuple[str, str]], n_rows: int) -> list[str]:
    """(where, problem) pairs as lines, each prefixed with its row (``where``); a problem
    every one of the ``n_rows`` rows has (from the base or --set) once, as every variant's."""
    rows_with: dict[str, set[str]] = {}
    for where, text in problems:
        rows_with.setdefault(text, set()).add(where)
    out: list[str] = []
    for where, text in problems:
        line = (f"every variant: {text}" if n_rows > 1 and len(rows_with[text]) == n_rows
                else f"{where}: {text}" if where else text)
        if line not in out:
            out.append(line)
    return out


def grid_text(value: Any) -> str:
    """How a grid value is shown: a mapping (e.g. a whole dataset section) by its
    `label` or `name` key, anything else as itself."""
    if isinstance(value, dict):
        return str(value.get("label") or value.get("name") or canonical_json(value))
    return str(value)




def where(label: Any, cell: dict[str, Any]) -> str:
    """How a problem names its row: the variant's label and its grid cell (nothing for the
    one row of a study without variants or grid)."""
    shown = ", ".join(f"{k.split('.')[-1]}={grid_text(v)}" for k, v in cell.items())
    if label == DEFAULT_LABEL and not shown:
        return ""
    return f"variant {label!r}" + (f" [{shown}]" if shown else "")


def study_paths(merged: dict, study_dir: Path | None) -> None:
    """Point a relative ``dataset.root`` or ``model.pretrained`` file written in a study
    file at the study file's folder where it is there, in place; otherwise it stays as
    written: the working directory's (the rule of ``plugins:`` too; a ``--set`` value is
    always the working directory's). A weights file counts in the run id by its content;
    ``dataset.root`` by the path as it ends up here."""
    if study_dir is None:
        return
    for section, key, is_file in (("dataset", "root", False), ("model", "pretrained", True)):
        value = (merged.get(section) or {}).get(key) if isinstance(merged.get(section), dict) \
            else None
        if not isinstance(value, str) or value.startswith("~") or Path(value).is_absolute():
            continue
        if is_file and not is_path(value):
            continue  # a name of shipped weights
        beside = study_dir / value
        if beside.is_file() if is_file else beside.is_dir():
            merged[section][key] = str(beside)

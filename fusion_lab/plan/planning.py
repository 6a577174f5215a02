"""What runs: from a study file to validated runs.

(From a command-line argument to a study or a run: ``fusion_lab.plan.find``.)
``prepare`` loads a study file, imports its plugins, expands it into runs and validates
every run (components, their arguments, datasets) before anything trains, reporting every
problem at once. Importing this module imports no torch: only ``prepare`` and ``validate``
build on the registries and the model code, and they import them when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusion_lab.config import logger_problems
from fusion_lab.errors import ConfigError, DatasetError, FusionLabError
from fusion_lab.plan.study import (
    PlannedRun,
    Study,
    duplicate_problem,
    expand_checked,
    parse_study,
    rows,
)
from fusion_lab.plan.study_parts import merge_common
from fusion_lab.registries import DATASETS, PRESETS, load_plugins


def presets() -> dict[str, dict]:
    """Every registered preset by name (built-ins and loaded plugins)."""
    return {name: PRESETS.get(name) for name in PRESETS.list()}


def prepare(study_path: str | Path, overrides: list[str] | None = None
            ) -> tuple[Study, list[PlannedRun]]:
    """Load a study, import its plugins, expand and validate every run: every problem in
    one round (the study's keys, each run's keys, values and components), each naming the
    variant and grid cell it comes from, or said once for every variant.

    ``expand`` resolves each run's config once (``config.resolve``: presets, recipe, and
    every field's own values checked); ``validate`` checks what needs the registries. What
    comes back is trusted downstream: building the model and training check nothing again.
    """
    study, problems = parse_study(study_path, overrides)
    source = str(study.path)
    try:
        load_plugins(study.plugins, base_dir=study.path.parent if study.path else None)
    except FusionLabError as e:  # what follows needs the plugins' components
        raise ConfigError([*problems, str(e)], source=source) from None
    runs, found, configs = expand_checked(study, presets())
    found += validate(configs)
    problems += merge_common(found, rows(study))
    duplicate = duplicate_problem(runs) if not problems else None
    if problems or duplicate:
        raise ConfigError(problems or [duplicate], source=source)
    return study, runs


def validate(configs: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    """Component, argument, dataset and logger problems of each row's config, as
    (row, problem): ``configs`` is ``expand_checked``'s, one (row, RunConfig) per row."""
    # here, not at the top: assembling on the meta device needs torch; the plan itself stays torch-free
    from fusion_lab.models.assemble import check_model_config

    problems: list[tuple[str, str]] = []
    for at, cfg in configs:
        found = [f"model: {p}" for p in check_model_config(cfg.model)]
        found += [f"dataset: {p}" for p in dataset_problems(cfg.dataset, cfg.train.resize)]
        found += logger_problems(cfg.train.loggers)
        problems += [(at, p) for p in found if (at, p) not in problems]
    return problems


def dataset_problems(cfg: Any, resize: int | None = None) -> list[str]:
    """A dataset name that is not registered, options the dataset class rejects (its
    ``check_options`` hook), a root folder that is not there, or a pre-resized cache whose
    size is not the run's ``resize`` (``dataset.decode`` is its field's: ``config.check``)."""
    # here, not at the top: the dataset index reader imports torch; the plan itself stays torch-free
    from fusion_lab.data.source import option_problems

    if cfg.name not in DATASETS:
        return [DATASETS.unknown_message(cfg.name)]
    cls = DATASETS.get(cfg.name)
    check = getattr(cls, "check_options", None)
    problems = check(cfg.options) if check is not None else option_problems(cls, cfg.options)
    if problems or not getattr(cls, "needs_root", True):  # e.g. made in memory
        return problems
    if cfg.root is None or not Path(cfg.root).expanduser().is_dir():
        url = getattr(cls, "url", None)
        where = f" (published at {url})" if url else ""
        return [f"{cfg.name}: root folder {cfg.root!r} not found; download the dataset{where} "
                f"and set dataset.root (e.g. --set dataset.root=/data/...); "
                f"`fusionlab data check {cfg.name} ROOT` checks a folder"]
    from fusion_lab.data import open_source  # reads the index files only, no image

    try:
        source, _ = open_source(cfg.name, str(Path(cfg.root).expanduser()), cfg.options)
    except DatasetError as e:
        return [str(e)]
    if resize is not None and source.square_size not in (None, resize):
        return [f"{cfg.name} at {cfg.root} holds {source.square_size}x{source.square_size} "
                f"images but train.resize is {resize}; set train.resize={source.square_size} "
                f"or write a cache with --size {resize}"]
    return []

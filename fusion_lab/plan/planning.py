"""What runs: from a user's argument to a study, and from a study file to validated runs.

``find_study`` is the one place that turns a command-line argument (a study file, a
results folder or a study name) into a study; ``table``, ``viz`` and ``bench`` all use it.
``prepare`` loads a study file, imports its plugins, expands it into runs and validates
every run (components, their arguments, datasets) before anything trains, reporting every
problem at once. Importing this module imports no torch: only ``prepare`` and ``validate``
build on the registries and the model code, and they import them when called.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusion_lab import store
from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.plan.study import PlannedRun, Study, expand, load_study

STUDY_SUFFIXES = (".yaml", ".yml")
STUDIES_FOLDER = Path("studies")  # where a bare study name's file is looked for


@dataclass
class StudyRef:
    """A study named on the command line: its name, its file and its results folder."""

    name: str
    kind: str  # "file" (a study file was given), "folder" (a results folder) or "name"
    file: Path | None  # the study file: as given, or studies/<name>.yaml when it exists
    results: Path  # results/<name>, or the results folder given; may not exist yet

    @property
    def has_results(self) -> bool:
        return (self.results / store.STUDY_JSON).is_file()

    def require_file(self) -> Path:
        """The study file, or one clear error saying where it was looked for."""
        if self.file is None:
            near = sorted(p.name for p in STUDIES_FOLDER.glob("*.y*ml"))
            hint = f"; studies there: {', '.join(near)}" if near else ""
            raise FusionLabError(
                f"no study file for {self.name!r}: pass the path of its .yaml file "
                f"(looked for {STUDIES_FOLDER / (self.name + '.yaml')}{hint})")
        return self.file

    def require_results(self) -> Path:
        """The results folder, or one clear error listing the studies that have results."""
        if self.has_results:
            return self.results
        parent = self.results.parent
        known = sorted(p.parent.name for p in parent.glob(f"*/{store.STUDY_JSON}"))
        listing = f" (studies there: {', '.join(known)})" if known else ""
        raise FusionLabError(
            f"no results for study {self.name!r} in {parent}/{listing}: "
            f"run `fusionlab run` on its study file first, or pass --results DIR")


def find_study(arg: str, results: str | Path) -> StudyRef:
    """Turn a user's argument into a study, by these rules, in order:

    1. a path ending in .yaml/.yml, or any existing file: a study file (it must exist);
       its results are ``results/<its name>`` (``name:`` in the file, else the file stem);
    2. a folder holding a study.json: that results folder, no study file needed;
    3. anything else: a study name, with results ``results/<name>`` and the study file
       ``studies/<name>.yaml`` when there is one.

    Only the study file's ``name`` is read here (no validation, no torch).
    """
    results, path = Path(results), Path(arg)
    if path.suffix in STUDY_SUFFIXES or path.is_file():
        if not path.is_file():
            near = (sorted(p.name for p in path.parent.glob("*.y*ml"))
                    if path.parent.is_dir() else [])
            hint = f"; studies there: {', '.join(near)}" if near else ""
            raise FusionLabError(f"study file {arg!r} not found{hint}")
        name = _name_in_file(path)
        return StudyRef(name, "file", path, store.study_dir(results, name))
    if path.is_dir() and (path / store.STUDY_JSON).is_file():
        return StudyRef(path.name, "folder", None, path)
    file = STUDIES_FOLDER / f"{arg}.yaml"
    return StudyRef(arg, "name", file if file.is_file() else None,
                    store.study_dir(results, arg))


def _name_in_file(path: Path) -> str:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise FusionLabError(f"{path} is not valid YAML: {e}") from None
    name = data.get("name") if isinstance(data, dict) else None
    return str(name or path.stem)


def presets() -> dict[str, dict]:
    """Every registered preset by name (built-ins and loaded plugins)."""
    from fusion_lab.registries import PRESETS

    return {name: PRESETS.get(name) for name in PRESETS.list()}


def prepare(study_path: str | Path, overrides: list[str] | None = None
            ) -> tuple[Study, list[PlannedRun]]:
    """Load a study, import its plugins, expand and validate every run (all problems at once).

    ``expand`` resolves each run's config once (``config.resolve``: presets, recipe, and
    every field's own values checked); ``validate`` checks what needs the registries. What
    comes back is trusted downstream: building the model and training check nothing again.
    """
    from fusion_lab.registries import load_plugins

    study = load_study(study_path, overrides)
    load_plugins(study.plugins, base_dir=study.path.parent if study.path else None)
    runs = expand(study, presets())
    problems = validate(runs)
    if problems:
        raise ConfigError(problems, source=str(study.path))
    return study, runs


def validate(runs: list[PlannedRun]) -> list[str]:
    """Component, argument and dataset problems of the planned runs, each reported once."""
    from fusion_lab.config import logger_problems
    from fusion_lab.models.assemble import check_model_config

    problems: list[str] = []
    seen: set[str] = set()
    for r in runs:
        found = [f"model: {p}" for p in check_model_config(r.config.model)]
        found += [f"dataset: {p}" for p in dataset_problems(r.config.dataset,
                                                            r.config.train.resize)]
        found += logger_problems(r.config.train.loggers)
        for p in found:
            if p not in seen:
                seen.add(p)
                problems.append(p)
    return problems


def dataset_problems(cfg: Any, resize: int | None = None) -> list[str]:
    """A dataset name that is not registered, options the dataset class rejects (its
    ``check_options`` hook), a root folder that is not there, or a pre-resized cache whose
    size is not the run's ``resize`` (``dataset.decode`` is its field's: ``config.check``)."""
    from fusion_lab.data.source import option_problems
    from fusion_lab.registries import DATASETS

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
    from fusion_lab.errors import DatasetError

    try:
        source, _ = open_source(cfg.name, str(Path(cfg.root).expanduser()), cfg.options)
    except DatasetError as e:
        return [str(e)]
    if resize is not None and source.square_size not in (None, resize):
        return [f"{cfg.name} at {cfg.root} holds {source.square_size}x{source.square_size} "
                f"images but train.resize is {resize}; set train.resize={source.square_size} "
                f"or write a cache with --size {resize}"]
    return []

"""From a user's command-line argument to a study or a run: the one place with these rules.

``find_study`` turns an argument (a study file, a results folder or a study name) into a
study; ``table``, ``plot``, ``viz``, ``bench`` and ``export`` all use it. ``find_run`` turns
an argument (a run folder, a study, a run id or a unique prefix of one) into a run folder;
``viz`` and ``export`` use it, each with its own rule for which run of a study it means
(``viz``: the CN-CNN-like run, ``export``: the one finished run). No torch: only a study
file's ``name`` is read here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from fusion_lab import store
from fusion_lab.errors import FusionLabError

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
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise FusionLabError(f"{path} is not valid YAML: {e}") from None
    name = data.get("name") if isinstance(data, dict) else None
    return str(name or path.stem)


# a command's choice of one run in a study: (the study, the results folder) -> (the run
# folder, a note saying which run was picked and why, or None)
StudyRun = Callable[[StudyRef, Path], "tuple[Path, str | None]"]


def find_run(arg: str, results: str | Path, in_study: StudyRun) -> tuple[Path, str | None]:
    """Turn a user's argument into a run folder, by these rules, in order:

    1. a folder holding config.json or checkpoint.pt: that run folder;
    2. a study (``find_study``) given by its file, or with results: the run ``in_study``
       picks (the command's own rule; it raises when the study has none to give);
    3. anything else: a run id or a unique prefix of one, among ``results/*/``.

    Returns the folder and, for a study, ``in_study``'s note on which run was picked.
    """
    path = Path(arg)
    if path.is_dir() and ((path / store.CONFIG_JSON).is_file()
                          or (path / store.CHECKPOINT).is_file()):
        return path, None
    ref = find_study(arg, results)
    if ref.kind == "file" or ref.has_results:
        return in_study(ref, Path(results))
    results = Path(results)
    found = sorted(p for p in results.glob(f"*/{arg}*") if (p / store.CONFIG_JSON).is_file())
    if len(found) == 1:
        return found[0], None
    if len(found) > 1:
        raise FusionLabError(f"run id prefix {arg!r} matches {len(found)} runs in {results}/; "
                             "give more digits")
    raise FusionLabError(f"{arg!r} is no run folder, run id, study name or study file in "
                         f"{results}/ (pass --results DIR if the results are elsewhere)")


def recorded_plugins(arg: str, results: str | Path) -> tuple[list[str], list[str]]:
    """The plugin files the runs an argument names were trained with (each run's summary
    records them), so that ``viz`` and ``export`` load them without ``--plugin``; and a
    warning per recorded file that is no longer there.

    The argument is read as ``find_run`` reads it, without picking a run of a study: a run
    folder, a study (its results folder: every run's plugins) or a run id prefix. A study
    file's own ``plugins:`` are loaded by planning, not here.
    """
    path, results = Path(arg), Path(results)
    if path.is_dir() and (path / store.CONFIG_JSON).is_file():
        folders = [path]
    else:
        ref = find_study(arg, results) if not path.is_dir() else None
        if ref is not None and ref.has_results:
            folders = [p.parent for p in ref.results.glob(f"*/{store.SUMMARY_JSON}")]
        elif path.is_dir() and (path / store.STUDY_JSON).is_file():
            folders = [p.parent for p in path.glob(f"*/{store.SUMMARY_JSON}")]
        else:
            folders = [p for p in results.glob(f"*/{arg}*") if (p / store.CONFIG_JSON).is_file()]
    found: dict[str, None] = {}
    for folder in sorted(folders):
        summary = store.read_json(folder / store.SUMMARY_JSON)
        plugins = summary.get("plugins") if isinstance(summary, dict) else None
        found.update(dict.fromkeys(plugins or {}))
    files = [p for p in found if Path(p).is_file()]
    missing = [f"warning: the plugin file {p} its runs were trained with is gone; pass "
               "--plugin with its new place" for p in found if not Path(p).is_file()]
    return files, missing

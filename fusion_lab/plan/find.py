"""From a user's command-line argument to a study or a run: the one place with these rules.

``find_study`` turns an argument (a study file, a results folder or a study name) into a
study, or with ``tag`` into one of its tags (``results/<study>/tags/<tag>/``, see
``fusion_lab.plan.tags``); ``table``, ``plot``, ``report``, ``viz``, ``bench`` and
``export`` all use it, ``table`` through ``study_dirs``. ``find_run`` turns
an argument (a run folder, a study, a run id or a unique prefix of one) into a run folder;
``viz`` and ``export`` use it, each with its own rule for which run of a study it means
(``viz``: the CN-CNN-like run, ``export``: the one finished run). No torch: only a study
file's ``name`` is read here.
"""

from __future__ import annotations

import dataclasses
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
    tag: str | None = None  # a tag of the study: ``results`` is then <its folder>/tags/<tag>

    @property
    def has_results(self) -> bool:
        return (self.results / store.STUDY_JSON).is_file()

    def tagged(self, tag: str) -> StudyRef:
        """The study's tag ``tag`` (a name that is no tag name is one clear error)."""
        _check_tag(tag)
        return dataclasses.replace(self, tag=tag, results=self.results / store.TAGS / tag)

    def tags_hint(self) -> str:
        """The study's tags and the command that shows the first, or "" without tags."""
        return tags_line(self.name, self.results.parent.parent if self.tag else self.results)

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
        hint = self.tags_hint()
        if self.tag is not None:
            raise FusionLabError(
                f"study {self.name!r} has no tag {self.tag!r} in {self.results.parent}/ "
                f"({hint or 'it has no tags'}): `fusionlab run STUDY.yaml --tag {self.tag}` "
                "makes it")
        if hint:
            raise FusionLabError(f"study {self.name!r} has no results of its own in "
                                 f"{self.results.parent}/, only {hint}")
        parent = self.results.parent
        known = sorted(p.parent.name for p in parent.glob(f"*/{store.STUDY_JSON}"))
        listing = f" (studies there: {', '.join(known)})" if known else ""
        raise FusionLabError(
            f"no results for study {self.name!r} in {parent}/{listing}: "
            f"run `fusionlab run` on its study file first, or pass --results DIR")


def _check_tag(tag: str) -> None:
    problem = store.tag_problem(tag)
    if problem:
        raise FusionLabError(problem)


def tags_line(name: str, folder: Path) -> str:
    """The tags of the study ``name`` whose results are ``folder``, with their run folders,
    and the command that shows the first; "" when it has none."""
    tags = store.study_tags(folder)
    if not tags:
        return ""
    names = ", ".join(f"{t} ({n} run{'' if n == 1 else 's'})" for t, n in tags)
    return f"tags: {names}; fusionlab table {study_arg(name, folder)} --tag {tags[0][0]}"


def study_arg(name: str, folder: Path) -> str:
    """What to type for the study ``name`` whose results are ``folder``: its name, with
    ``--results`` when they are not in ./results."""
    if folder == store.study_dir("results", name):
        return name
    if folder.name == name:
        return f"{name} --results {folder.parent}"
    return str(folder)


def find_study(arg: str, results: str | Path, tag: str | None = None) -> StudyRef:
    """Turn a user's argument into a study (with ``tag``: that tag of it), by these rules,
    in order:

    1. a path ending in .yaml/.yml, or any existing file: a study file (it must exist);
       its results are ``results/<its name>`` (``name:`` in the file, else the file stem);
    2. a folder holding a study.json: that results folder, no study file needed;
    3. anything else: a study name, with results ``results/<name>`` and the study file
       ``studies/<name>.yaml`` when there is one.

    Only the study file's ``name`` is read here (no validation, no torch).
    """
    ref = _find_study(arg, results)
    return ref.tagged(tag) if tag is not None else ref


def _find_study(arg: str, results: str | Path) -> StudyRef:
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


def study_dirs(studies: list[str], results: str | Path, tag: str | None = None) -> list[Path]:
    """The results folders of the studies named on the command line (``find_study`` reads
    each; with ``tag``, that tag of each), or with none named every study in ``results``
    (with ``tag``: every study that has it). Each folder holds a study.json."""
    results = Path(results)
    if studies:
        return [find_study(arg, results, tag).require_results() for arg in studies]
    if not results.is_dir():
        raise FusionLabError(f"no results folder {results}/: run `fusionlab run "
                             "studies/STUDY.yaml` first, or point --results at one")
    if tag is not None:
        _check_tag(tag)
        found = sorted(p.parent for p in results.glob(f"*/{store.TAGS}/{tag}/{store.STUDY_JSON}"))
        if not found:
            raise FusionLabError(f"no study in {results}/ has the tag {tag!r}: run "
                                 f"`fusionlab run studies/STUDY.yaml --tag {tag}` first")
        return found
    found = sorted(p.parent for p in results.glob(f"*/{store.STUDY_JSON}"))
    if not found:
        raise FusionLabError(f"no studies in {results}/: run `fusionlab run studies/STUDY.yaml` "
                             "first, or point --results at a results folder")
    return found


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


def find_run(arg: str, results: str | Path, in_study: StudyRun, tag: str | None = None
             ) -> tuple[Path, str | None]:
    """Turn a user's argument into a run folder, by these rules, in order:

    1. a folder holding config.json or checkpoint.pt: that run folder;
    2. a study (``find_study``) given by its file, or with results: the run ``in_study``
       picks (the command's own rule; it raises when the study has none to give);
    3. anything else: a run id or a unique prefix of one, among ``results/*/`` (with
       ``tag``: among ``results/*/tags/<tag>/``).

    With ``tag``, a study means that tag of it (``find_study``). Returns the folder and,
    for a study, ``in_study``'s note on which run was picked.
    """
    path = Path(arg)
    if path.is_dir() and ((path / store.CONFIG_JSON).is_file()
                          or (path / store.CHECKPOINT).is_file()):
        return path, None
    ref = find_study(arg, results, tag)
    if ref.kind == "file" or ref.has_results:
        if ref.tag is not None:  # a tag's runs are those it recorded
            ref.require_results()
        return in_study(ref, Path(results))
    found = _run_folders(Path(results), arg, tag)
    where = f"{results}/*/{store.TAGS}/{tag}" if tag else str(results)
    if len(found) == 1:
        return found[0], None
    if len(found) > 1:
        raise FusionLabError(f"run id prefix {arg!r} matches {len(found)} runs in {where}/; "
                             "give more digits")
    raise FusionLabError(f"{arg!r} is no run folder, run id, study name or study file in "
                         f"{where}/ (pass --results DIR if the results are elsewhere)")


def _run_folders(results: Path, prefix: str, tag: str | None) -> list[Path]:
    """The run folders whose id starts with ``prefix``, in every study (or in every study's
    tag ``tag``)."""
    under = f"*/{store.TAGS}/{tag}" if tag else "*"
    return sorted(p for p in results.glob(f"{under}/{prefix}*")
                  if (p / store.CONFIG_JSON).is_file())


def recorded_plugins(arg: str, results: str | Path, tag: str | None = None
                     ) -> tuple[list[str], list[str]]:
    """The plugin files the runs an argument names were trained with (each run's summary
    records them), so that ``viz`` and ``export`` load them without ``--plugin``; and a
    warning per recorded file that is no longer there.

    The argument is read as ``find_run`` reads it, without picking a run of a study: a run
    folder, a study (its results folder: every run's plugins) or a run id prefix (with
    ``tag``: of that tag). A study file's own ``plugins:`` are loaded by planning, not here.
    """
    path, results = Path(arg), Path(results)
    if path.is_dir() and (path / store.CONFIG_JSON).is_file():
        folders = [path]
    else:
        ref = find_study(arg, results, tag) if not path.is_dir() or tag else None
        if ref is not None and ref.has_results:
            folders = [p.parent for p in ref.results.glob(f"*/{store.SUMMARY_JSON}")]
        elif tag is None and path.is_dir() and (path / store.STUDY_JSON).is_file():
            folders = [p.parent for p in path.glob(f"*/{store.SUMMARY_JSON}")]
        else:
            folders = _run_folders(results, arg, tag)
    found: dict[str, None] = {}
    for folder in sorted(folders):
        summary = store.read_json(folder / store.SUMMARY_JSON)
        plugins = summary.get("plugins") if isinstance(summary, dict) else None
        found.update(dict.fromkeys(plugins or {}))
    files = [p for p in found if Path(p).is_file()]
    missing = [f"warning: the plugin file {p} its runs were trained with is gone; pass "
               "--plugin with its new place" for p in found if not Path(p).is_file()]
    return files, missing

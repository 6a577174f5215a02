"""Where a ``fusionlab run`` puts its runs: the study's own folder, or one of its tags.

A tag (``run --tag NAME``) is a namespace of a study, ``results/<study>/tags/<NAME>/``,
laid out as a study's own folder (its study.json, its run folders; a tuned study's
trials/ and shared/ too): what runs there never changes what the study's own table shows.
``run --tag NAME`` plans the study under the name ``<study>/tags/<NAME>`` and passes the
tag on to the processes and cluster tasks it starts as ``--set tag=NAME``, which they plan
with as every ``--set``.

``--set`` without a tag writes to the study's own folder only when the plan it writes
there (study.json: its rows, run ids, seeds, baseline, description) is the one the study
file gives as written (``changes_plan``); otherwise its runs go to the tag ``scratch``.
So ``--set train.workers=8`` (out of the run id) runs the study itself, while
``--set train.epochs=1`` (other run ids) or ``--set 'seeds=[0]'`` (fewer runs: study.json
would be rewritten) makes scratch runs. Two kinds of ``--set`` say where things are on
this machine rather than what runs (``is_location``): ``dataset.root`` and a weights file
for ``model.pretrained``; they count as part of the study as written (the real-data
studies are run with them), though a run's id follows its data path and weights. No torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fusion_lab import store
from fusion_lab.config.weights import is_path
from fusion_lab.errors import FusionLabError
from fusion_lab.plan.dotted import parse_override
from fusion_lab.plan.planning import presets
from fusion_lab.plan.study import (
    PlannedRun,
    Study,
    duplicate_problem,
    expand_checked,
    parse_study,
    study_plan,
)
from fusion_lab.plan.study_parts import TAG_KEY

SCRATCH = store.SCRATCH_TAG


def check_tag(tag: str | None) -> None:
    """One clear error (the CLI's one line, exit 2) unless ``tag`` is None or a tag name."""
    problem = store.tag_problem(tag) if tag is not None else None
    if problem:
        raise FusionLabError(problem)


def tag_override(tag: str) -> str:
    """The ``--set`` that plans a study under ``tag`` (``study.parse_study`` reads it)."""
    return f"{TAG_KEY}={tag}"


def names_tag(overrides: list[str]) -> bool:
    """Whether the overrides name a tag themselves (``tag=NAME``)."""
    return any(text.partition("=")[0].strip() == TAG_KEY for text in overrides)


def tagged(study: Study, tag: str) -> Study:
    """``study`` planned under ``tag`` (its runs keep their ids: a name is not in them)."""
    return dataclasses.replace(study, name=store.tagged_name(study.name, tag), tag=tag)


def is_location(override: str) -> bool:
    """Whether a ``--set`` says where something is on this machine: ``dataset.root``, or a
    weights file (a path) for ``model.pretrained``."""
    key, value = parse_override(override)
    return key == "dataset.root" or (key == "model.pretrained" and isinstance(value, str)
                                     and is_path(value))


def changes_plan(study_path: str | Path, study: Study, runs: list[PlannedRun],
                 overrides: list[str], fixed: list[str] | None = None) -> bool:
    """Whether ``study`` and its ``runs``, planned with a user's ``overrides`` (and the
    ``fixed`` ones, e.g. a DDP run's ``train.world_size``), would write another study.json
    than the study file as written (planned with ``fixed`` and the ``is_location``
    overrides alone): other run ids, more or fewer runs, other seeds, another baseline or
    description. A study file that cannot be planned so counts as changed. Its plugins
    must be loaded (``prepare`` did)."""
    where = [o for o in overrides if is_location(o)]
    written, problems = parse_study(study_path, [*where, *(fixed or [])])
    if problems:
        return True
    try:
        as_written, found, _ = expand_checked(written, presets())
    except FusionLabError:  # e.g. a weights file only a --set names correctly
        return True
    if found or duplicate_problem(as_written):
        return True
    return _plan(written, as_written) != _plan(study, runs)


def _plan(study: Study, runs: list[PlannedRun]) -> dict:
    """study.json as ``runner.write_plan`` writes it, but for its time."""
    plan = study_plan(study, runs)
    plan.pop("updated", None)
    return plan


def scratch_note(study: Study, results: str | Path) -> str:
    """The line saying that a run's ``--set``s sent its runs to the tag ``scratch``."""
    base = study.name.rsplit(f"/{store.TAGS}/", 1)[0]
    where = store.study_dir(results, study.name)
    elsewhere = "" if Path(results) == Path("results") else f" --results {results}"
    return (f"note: --set changes the study's runs (their ids, seeds or plan), so they are "
            f"kept apart from its own table, in {where}/: `fusionlab table {base}{elsewhere} "
            f"--tag {SCRATCH}` shows them; --tag NAME names them")

"""Training recipes: the values a run's ``train`` section takes when the study leaves them unset.

This module is the mechanism only; the recipes themselves are facts of the dataset classes.
``train.recipe: reference`` (the default) is the authors' released training script, which
differs per dataset (docs/model.md, "Training recipes"): a registered dataset class states
its own with the class attribute ``reference_recipe``, a dict of the keys of ``KEYS``
(``resize``: the recipe's ``(resize, crop)``; a key it leaves out is ``generic``'s), or the
name of another recipe. The built-in ones (``fusion_lab.registry.datasets``):

| recipe | batch | resize / crop | lr backbone | lr new modules (+ last k stages) | epochs |
|---|---|---|---|---|---|
| ``cub200`` | 16 | 600 / 448 | 1e-4 | 1e-3, with ResNet50's layer4 (k = 1) | 100 |
| ``stanford_cars`` | 8 | 448 / 448 (no crop) | 1e-3 | 1e-3 (k = 0) | 100 |
| ``fgvc_aircraft`` | 16 | 512 / 448 | 1e-3 | 1e-3 (k = 0) | 100 |
| ``generic`` | 16 | 600 / 448 | 1e-4 | 1e-3 (k = 0) | 100 |

A dataset that states none (imagefolder, synthetic_fgvc, plugins) gets ``generic``: the CUB
recipe's shape as every dataset had it before recipes were per dataset (the whole backbone
at the backbone's rate), so the run ids of such studies did not change. ``paper`` is the
paper's text (lr 0.001 backbone / 0.1 new modules, 300 epochs; its batch and input are not
stated and follow ``generic``). A study may name any of them directly (``recipe: cub200``:
the recipe the dataset ``cub200`` states). The resize scales with ``train.image_size``
(600 / 448 of the crop for CUB). Every value a study sets wins. No torch import here: the
dataset classes are read through the DATASETS registry as loaded (callers load the catalogue
and the study's plugins before expanding a study, as they do for presets).
"""

from __future__ import annotations

from typing import Any

from fusion_lab.errors import ConfigError
from fusion_lab.registries import load_builtin

# the keys of a recipe; resize: (resize, crop), a run's resize is image_size * resize / crop
KEYS = ("epochs", "batch_size", "resize", "lr_backbone", "lr_new", "backbone_high_lr_stages")
GENERIC: dict[str, Any] = {"epochs": 100, "batch_size": 16, "resize": (600, 448),
                           "lr_backbone": 1e-4, "lr_new": 1e-3, "backbone_high_lr_stages": 0}
PAPER: dict[str, Any] = {**GENERIC, "epochs": 300, "lr_backbone": 1e-3, "lr_new": 0.1}


def _datasets() -> Any:
    from fusion_lab.registries import DATASETS  # the registry only: no torch

    return DATASETS


def dataset_recipes() -> list[str]:
    """The registered datasets whose class states a recipe of its own (a dict), sorted."""
    datasets = _datasets()
    return [n for n in datasets.list()
            if isinstance(getattr(datasets.get(n), "reference_recipe", None), dict)]


def names() -> list[str]:
    """Every value ``train.recipe`` may take."""
    return ["reference", "paper", "generic", *dataset_recipes()]


def _named(name: str) -> dict[str, Any] | None:
    """The recipe called ``name`` (generic or a dataset's own), None if there is none."""
    if name == "generic":
        return GENERIC
    datasets = _datasets()
    if name not in datasets:
        load_builtin()  # a caller that did not load the catalogue (the recipe's values need it)
    own = getattr(datasets.get(name), "reference_recipe", None) if name in datasets else None
    return _checked(name, own) if isinstance(own, dict) else None


def _checked(dataset: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """A dataset's own recipe, its unstated keys filled from ``generic``."""
    unknown = sorted(set(recipe) - set(KEYS))
    if unknown:
        raise ConfigError(f"dataset {dataset!r} states a reference recipe with unknown keys "
                          f"{unknown}; valid keys: {', '.join(KEYS)}")
    return {**GENERIC, **recipe}


def dataset_recipe(dataset: str, root: str | None = None) -> dict[str, Any]:
    """The reference recipe of a registered dataset: the one its class states (a dict, or
    the name of another recipe), ``generic`` if it states none or is not registered. A copy
    of another dataset (its class's ``recipe_source(root)`` names the source, e.g. the
    ``cache``) has its source's recipe: training on it is the source's experiment."""
    datasets = _datasets()
    source = getattr(datasets.get(dataset), "recipe_source", None) if dataset in datasets \
        else None
    original = source(root) if source is not None and root is not None else None
    if original is not None and original != dataset:
        return dataset_recipe(original)
    own = getattr(datasets.get(dataset), "reference_recipe", None) if dataset in datasets else None
    if own is None:
        return GENERIC
    if isinstance(own, dict):
        return _checked(dataset, own)
    values = _named(str(own))
    if values is None:
        raise ConfigError(f"dataset {dataset!r} names reference recipe {own!r}, which is "
                          f"not one of {', '.join(names()[2:])}")
    return values


def recipe_values(recipe: str, dataset: str, root: str | None = None) -> dict[str, Any]:
    """The defaults of ``train.recipe`` for a run on ``dataset`` (at ``root``)."""
    if recipe == "reference":
        return dataset_recipe(dataset, root)
    if recipe == "paper":
        return PAPER
    values = _named(recipe)
    if values is None:
        raise ConfigError(f"unknown recipe {recipe!r}; valid: {', '.join(names())} "
                          "(reference: the released script's recipe for the run's dataset)")
    return values


def fill(t: Any, dataset: str, root: str | None = None) -> None:
    """Set every field of the TrainConfig ``t`` left None from its recipe, in place."""
    values = recipe_values(t.recipe, dataset, root)
    for key, value in values.items():
        if key != "resize" and getattr(t, key) is None:
            setattr(t, key, value)
    if t.resize is None:
        size, crop = values["resize"]
        t.resize = int(round(t.image_size * size / crop))

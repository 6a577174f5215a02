"""Training recipes: the values a run's ``train`` section takes when the study leaves them unset.

``train.recipe: reference`` (the default) is the authors' released training script, which
differs per dataset (docs/model.md, "Training recipes"); a dataset class names its own
with the class attribute ``reference_recipe``:

| recipe | batch | resize / crop | lr backbone | lr new modules (+ last k stages) | epochs |
|---|---|---|---|---|---|
| ``cub200`` | 16 | 600 / 448 | 1e-4 | 1e-3, with ResNet50's layer4 (k = 1) | 100 |
| ``stanford_cars`` | 8 | 448 / 448 (no crop) | 1e-3 | 1e-3 (k = 0) | 100 |
| ``fgvc_aircraft`` | 16 | 512 / 448 | 1e-3 | 1e-3 (k = 0) | 100 |
| ``generic`` | 16 | 600 / 448 | 1e-4 | 1e-3 (k = 0) | 100 |

A dataset that names none (imagefolder, synthetic_fgvc, plugins) gets ``generic``: the CUB
recipe's shape as every dataset had it before recipes were per dataset (the whole backbone
at the backbone's rate), so the run ids of such studies did not change. ``paper`` is the
paper's text (lr 0.001 backbone / 0.1 new modules, 300 epochs; its batch and input are not
stated and follow ``generic``). A study may name any of them directly (``recipe: cub200``).
The resize scales with ``train.image_size`` (600 / 448 of the crop for CUB). Every value a
study sets wins. No torch import here.
"""

from __future__ import annotations

from typing import Any

from fusion_lab.errors import ConfigError

# resize: (resize, crop) of the recipe; a run's resize is image_size * resize / crop
REFERENCE: dict[str, dict[str, Any]] = {
    "cub200": {"epochs": 100, "batch_size": 16, "resize": (600, 448), "lr_backbone": 1e-4,
               "lr_new": 1e-3, "backbone_high_lr_stages": 1},
    "stanford_cars": {"epochs": 100, "batch_size": 8, "resize": (448, 448), "lr_backbone": 1e-3,
                      "lr_new": 1e-3, "backbone_high_lr_stages": 0},
    "fgvc_aircraft": {"epochs": 100, "batch_size": 16, "resize": (512, 448), "lr_backbone": 1e-3,
                      "lr_new": 1e-3, "backbone_high_lr_stages": 0},
    "generic": {"epochs": 100, "batch_size": 16, "resize": (600, 448), "lr_backbone": 1e-4,
                "lr_new": 1e-3, "backbone_high_lr_stages": 0},
}
PAPER = {**REFERENCE["generic"], "epochs": 300, "lr_backbone": 1e-3, "lr_new": 0.1}
RECIPES = ("reference", "paper", *REFERENCE)


def dataset_recipe(dataset: str) -> str:
    """The reference recipe a registered dataset class names (``generic`` if none).

    Reads the DATASETS registry as loaded: callers load the catalogue and the study's
    plugins before expanding a study, as they do for presets.
    """
    from fusion_lab.registries import DATASETS  # the registry only: no torch

    cls = DATASETS.get(dataset) if dataset in DATASETS else None
    name = getattr(cls, "reference_recipe", None) or "generic"
    if name not in REFERENCE:
        raise ConfigError(f"dataset {dataset!r} names reference recipe {name!r}, which is "
                          f"not one of {', '.join(REFERENCE)}")
    return name


def recipe_values(recipe: str, dataset: str) -> dict[str, Any]:
    """The defaults of ``train.recipe`` for a run on ``dataset``."""
    if recipe == "reference":
        return REFERENCE[dataset_recipe(dataset)]
    if recipe == "paper":
        return PAPER
    if recipe in REFERENCE:
        return REFERENCE[recipe]
    raise ConfigError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)} (reference: "
                      "the released script's recipe for the run's dataset)")


def fill(t: Any, dataset: str) -> None:
    """Set every field of the TrainConfig ``t`` left None from its recipe, in place."""
    values = recipe_values(t.recipe, dataset)
    for key, value in values.items():
        if key != "resize" and getattr(t, key) is None:
            setattr(t, key, value)
    if t.resize is None:
        size, crop = values["resize"]
        t.resize = int(round(t.image_size * size / crop))

"""Per-dataset reference recipes (the released training script's), and who gets which.

CUB: batch 16, resize 600, crop 448, lr 1e-4 for conv1..layer3 and 1e-3 for layer4 and the
new modules; Stanford Cars: batch 8, resize 448 (no crop), lr 1e-3 everywhere;
FGVC-Aircraft: batch 16, resize 512, crop 448, lr 1e-3 everywhere (docs/model.md).
"""

from __future__ import annotations

import pytest

from fusion_lab.config import from_dict, resolve, result_dict
from fusion_lab.errors import ConfigError
from fusion_lab.registries import DATASETS, PRESETS, load_builtin
from fusion_lab.store import run_ids

load_builtin()
PRESET_DICTS = {n: PRESETS.get(n) for n in PRESETS.list()}


def _train(dataset: str, **train):
    cfg = resolve(from_dict({"dataset": {"name": dataset}, "train": train}), PRESET_DICTS)
    t = cfg.train
    return (t.batch_size, t.image_size, t.resize, t.lr_backbone, t.lr_new,
            t.backbone_high_lr_stages, t.epochs)


@pytest.mark.parametrize("dataset,expected", [
    ("cub200", (16, 448, 600, 1e-4, 1e-3, 1, 100)),
    ("stanford_cars", (8, 448, 448, 1e-3, 1e-3, 0, 100)),
    ("fgvc_aircraft", (16, 448, 512, 1e-3, 1e-3, 0, 100)),
    # datasets that name no recipe: the CUB recipe's shape, whole backbone at lr_backbone
    ("imagefolder", (16, 448, 600, 1e-4, 1e-3, 0, 100)),
    ("synthetic_fgvc", (16, 448, 600, 1e-4, 1e-3, 0, 100)),
])
def test_reference_recipe_per_dataset(dataset, expected):
    assert _train(dataset) == expected


def test_the_paper_recipe_is_the_papers_text():
    assert _train("cub200", recipe="paper") == (16, 448, 600, 1e-3, 0.1, 0, 300)


def test_a_study_value_wins_and_resize_scales_with_the_crop():
    assert _train("stanford_cars", batch_size=4)[0] == 4
    assert _train("cub200", backbone_high_lr_stages=0)[5] == 0
    assert _train("cub200", image_size=224)[2] == 300  # 224 * 600 / 448
    assert _train("fgvc_aircraft", image_size=224)[2] == 256
    assert _train("cub200", resize=512)[2] == 512


def test_a_named_recipe_for_another_dataset():
    assert _train("imagefolder", recipe="cub200") == _train("cub200")
    assert _train("imagefolder", recipe="stanford_cars") == _train("stanford_cars")


def test_unknown_recipe_is_one_line_listing_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        _train("cub200", recipe="cub")
    msg = str(err.value)
    assert "unknown recipe 'cub'" in msg and "cub200" in msg and "paper" in msg
    assert "\n" not in msg


def test_a_plugin_dataset_names_its_recipe(isolated_registries):
    @DATASETS.register("fl_test_cars_like")
    class CarsLike:
        """A plugin dataset that follows the Cars recipe."""

        reference_recipe = "stanford_cars"

    assert _train("fl_test_cars_like") == _train("stanford_cars")

    @DATASETS.register("fl_test_bad_recipe")
    class Bad:
        """Names a recipe that does not exist."""

        reference_recipe = "cars"

    with pytest.raises(ConfigError, match="names reference recipe 'cars'"):
        _train("fl_test_bad_recipe")


def test_synthetic_ids_do_not_change_with_the_recipes():
    # the generic recipe resolves to what every dataset got before (k = 0 is id-neutral)
    cfg = resolve(from_dict({"dataset": {"name": "synthetic_fgvc"}}), PRESET_DICTS)
    assert "backbone_high_lr_stages" not in result_dict(cfg)["train"]
    cub = resolve(from_dict({"dataset": {"name": "cub200"}}), PRESET_DICTS)
    assert result_dict(cub)["train"]["backbone_high_lr_stages"] == 1
    assert run_ids(result_dict(cub)) != run_ids(result_dict(
        resolve(from_dict({"dataset": {"name": "cub200"},
                           "train": {"backbone_high_lr_stages": 0}}), PRESET_DICTS)))


def test_cub_recipe_trains_layer4_with_the_new_modules():
    from fusion_lab.models.assemble import build_model
    from fusion_lab.training.train import make_optimizer

    cfg = resolve(from_dict({"dataset": {"name": "cub200"},
                             "model": {"preset": "hl", "backbone": "resnet18", "width": 8}}),
                  PRESET_DICTS)
    model = build_model(cfg.model, 3)
    opt, _ = make_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    low, high = ({names[id(p)] for p in g["params"]} for g in opt.param_groups)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-3]
    stages = {n.split(".")[2] for n in low if n.startswith("backbone.")}
    assert stages == {"conv1", "bn1", "layer1", "layer2", "layer3"}
    assert {n.split(".")[2] for n in high if n.startswith("backbone.")} == {"layer4"}


def test_a_plugin_dataset_states_its_own_recipe(isolated_registries):
    @DATASETS.register("fl_test_own_recipe")
    class OwnRecipe:
        """A plugin dataset whose released script trains otherwise (batch 12, resize 520)."""

        reference_recipe = {"epochs": 40, "batch_size": 12, "resize": (520, 448),
                            "lr_backbone": 5e-4, "lr_new": 5e-3}

    # unstated keys are generic's (k = 0); another dataset may name it as a recipe
    assert _train("fl_test_own_recipe") == (12, 448, 520, 5e-4, 5e-3, 0, 40)
    assert _train("fl_test_own_recipe", recipe="reference") == _train("fl_test_own_recipe")
    assert _train("imagefolder", recipe="fl_test_own_recipe") == _train("fl_test_own_recipe")
    assert _train("fl_test_own_recipe", recipe="paper") == _train("cub200", recipe="paper")
    OwnRecipe.reference_recipe = {"batch": 12}
    with pytest.raises(ConfigError, match=r"unknown keys \['batch'\]"):
        _train("fl_test_own_recipe")


def test_the_recipes_are_facts_of_the_dataset_classes():
    from fusion_lab.config import recipes

    assert DATASETS.get("cub200").reference_recipe["backbone_high_lr_stages"] == 1
    assert recipes.names() == ["reference", "paper", "generic", "cub200", "fgvc_aircraft",
                               "stanford_cars"]

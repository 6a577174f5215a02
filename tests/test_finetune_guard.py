"""Regression guard: fine-tuning the shipped backbone learns, in the baseline and in CN-CNN.

A few epochs of the quickstart's recipe on a small split of synthetic_fgvc take both the
baseline and the multi-level CN-CNN to at least twice chance, so a change that breaks
learning in the multi-level path (fusion, attention, heads, loss, learning-rate groups)
fails here in well under a minute instead of in a ten-minute quickstart.
"""

from __future__ import annotations

import pytest

from fusion_lab.config import from_dict, resolve
from fusion_lab.registries import PRESETS, load_builtin
from fusion_lab.training.train import train_run

CLASSES = 10


def _config(preset: str):
    load_builtin()
    raw = {
        "dataset": {"name": "synthetic_fgvc",
                    "options": {"num_classes": CLASSES, "train_per_class": 20,
                                "test_per_class": 10, "image_size": 64,
                                "max_rotation": 15.0, "clutter": 3, "noise": 3.0}},
        "model": {"preset": preset, "backbone": "small_cnn", "pretrained": "synthetic",
                  "width": 16, "hidden": 32},
        "train": {"epochs": 4, "batch_size": 32, "image_size": 56, "resize": 64,
                  "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4,
                  "lr_backbone": 0.003, "lr_new": 0.03, "backbone_high_lr_stages": 1,
                  "workers": 0},
        "seed": 0,
    }
    return resolve(from_dict(raw), {n: PRESETS.get(n) for n in PRESETS.list()})


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["baseline", "cn_cnn"])
def test_fine_tuning_the_shipped_backbone_reaches_twice_chance(preset, tmp_path):
    result = train_run(tmp_path, _config(preset), "guard", device="cpu")
    chance = 100 / CLASSES
    assert result["final"]["acc"] >= 2 * chance, result["final"]

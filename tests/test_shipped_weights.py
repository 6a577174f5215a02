"""The shipped `synthetic` weights: the file, its card, and its recorded source accuracy.

The card (small_cnn_synthetic.json) records the accuracy the pretraining run measured on
synthetic_shapes' test split; this test measures it again from the shipped file alone, on
that same fixed held-out set, which is large enough that its binomial standard error is
well under the 2 points a reproduction is allowed to miss by.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import math
from pathlib import Path

import torch

from fusion_lab.analysis.export import load_head
from fusion_lab.config import ModelConfig, RunConfig, from_dict
from fusion_lab.config.weights import WEIGHTS_DIR, file_sha256, weights_path
from fusion_lab.data import build_data
from fusion_lab.models.assemble import build_model
from fusion_lab.training.train import evaluate, precision

ROOT = Path(__file__).resolve().parent.parent
FILE = weights_path("synthetic")
CARD = json.loads(FILE.with_suffix(".json").read_text())


def test_the_file_is_small_and_its_card_names_it():
    assert FILE.stat().st_size <= 5 * 2**20
    assert CARD["sha256"] == file_sha256(FILE)
    assert CARD["backbone"] == "small_cnn" and CARD["file"] == FILE.name
    assert CARD["source_dataset"]["name"] == "synthetic_shapes"


def test_the_file_is_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = cfg["options.package_data"]["fusion_lab"].replace(",", " ").split()
    rel = str(FILE.relative_to(WEIGHTS_DIR.parent))
    assert any(fnmatch.fnmatch(rel, p) for p in patterns)
    assert any(fnmatch.fnmatch(rel.replace(".pt", ".json"), p) for p in patterns)


def test_the_recorded_source_accuracy_holds_on_the_held_out_set():
    recipe = from_dict(CARD["recipe"])
    n = CARD["source_test_size"]
    acc = CARD["source_accuracy"]
    se = 100 * math.sqrt(acc / 100 * (1 - acc / 100) / n)
    assert se < 2.0 / 1.5  # 2 points is more than 1.5 standard errors of this set
    options = {**recipe.dataset.options, "train_per_class": 1}  # the test split only
    data = build_data(recipe.dataset.__class__(name=recipe.dataset.name, options=options),
                      image_size=recipe.train.image_size, resize=recipe.train.resize,
                      batch_size=256, workers=0, seed=0)
    assert data.test_size == n
    cfg = RunConfig(model=ModelConfig(preset="baseline", backbone="small_cnn",
                                      pretrained="synthetic")).model
    model = build_model(cfg, data.num_classes)
    model.head.load_state_dict(load_head(FILE))
    got = evaluate(model, data.test, torch.device("cpu"), precision("off", torch.device("cpu")),
                   channels_last=False)
    # Same images, same weights: only float summation order may differ.
    assert abs(got["acc"] - acc) <= 0.2, (got["acc"], acc)

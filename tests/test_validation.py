"""Every bad input a new user tried is one line before anything trains (issue 11, part 2).

Each case goes through the command line as a user types it: `fusionlab run` exits 2 with
one `error:` line naming the key and the valid values, and writes nothing to results.
"""

from __future__ import annotations

import textwrap

import pytest
import torch

from fusion_lab.cli import main

STUDY = """
name: bad
base:
  dataset:
    name: synthetic_fgvc
    options: {num_classes: 3, train_per_class: 2, test_per_class: 2, image_size: 32}
  model: {backbone: small_cnn, preset: cn_cnn, width: 8, hidden: 8}
  train: {epochs: 1, batch_size: 4, image_size: 28, resize: 32, workers: 0}
variants:
  - {label: CN-CNN}
"""

# (--set overrides, text the error line must contain)
CASES = {
    "attention_args typo": (["model.attention_args={reduktion: 8}"],
                            "attention 'sa+ca' takes no argument 'reduktion'; it takes: "
                            "reduction, link"),
    "head_args typo, linear head": (["model.preset=baseline", "model.head_args={hiden: 3}"],
                                    "head 'linear' takes no argument 'hiden'; it takes: names"),
    "optimizer": (["train.optimizer=adam"],
                  "train.optimizer must be one of sgd, adamw, got 'adam'"),
    "schedule": (["train.schedule=linear"],
                 "train.schedule must be one of cosine, constant, got 'linear'"),
    "amp": (["train.amp=fp8"], "train.amp must be one of auto, bf16, fp16, off, got 'fp8'"),
    "resize below image_size": (["train.resize=20"],
                                "train.resize (20) must be >= train.image_size (28)"),
    "negative epochs": (["train.epochs=-1"], "train.epochs must be >= 1, got -1"),
    "zero image_size": (["train.image_size=0"],
                        "train.image_size must be >= 1, got 0"),
    "zero batch_size": (["train.batch_size=0"], "train.batch_size must be >= 2, got 0"),
    # a batch of one image cannot train BatchNorm (it is skipped): a whole run would train nothing
    "batch_size of one": (["train.batch_size=1"], "train.batch_size must be >= 2, got 1"),
    "negative lr_new": (["train.lr_new=-1"], "train.lr_new must be >= 0, got -1.0"),
    # SGD with momentum >= 1 accumulates without decay: the loss ran to 1e22, recorded done
    "momentum of 5": (["train.momentum=5"], "train.momentum must be in [0, 1), got 5.0"),
    "momentum of 1": (["train.momentum=1"], "train.momentum must be in [0, 1), got 1.0"),
    "zero width": (["model.width=0"], "model.width must be >= 1, got 0"),
    "dataset option out of range": (["dataset.options={num_classes: 500}"],
                                     "synthetic_fgvc': num_classes must be 2..30, got 500"),
    "dataset option typo": (["dataset.options={num_clases: 5}"],
                            "does not take options ['num_clases']; valid options: "
                            "num_classes"),
    "stages small_cnn does not have": (["model.out_indices=[7, 8, 9]"],
                                       "small_cnn has 3 stages: model.out_indices must be "
                                       "distinct stage indices in -3..2"),
    "stages a timm backbone does not have": (["model.backbone=resnet18",
                                              "model.out_indices=[2, 3, 7]"],
                                             "backbone 'resnet18' cannot tap stages [2, 3, 7]: "
                                             "it has 5 feature levels (model.out_indices from "
                                             "0..4, or -5..-1)"),
    "hidden set twice": (["model.head_args={hidden: 32}"],
                         "model.hidden (8) and model.head_args.hidden (32) are the same "
                         "setting"),
    "concat_head set twice": (["model.concat_head=false", "model.head_args={concat: true}"],
                              "model.concat_head (False) and model.head_args.concat (True)"),
}


@pytest.fixture
def study(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_input_is_one_line_before_anything_trains(case, study, tmp_path, capsys):
    overrides, expected = CASES[case]
    results = tmp_path / "results"
    args = ["run", str(study), "--results", str(results), "--device", "cpu"]
    for o in overrides:
        args += ["--set", o]
    code, err = _run(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], err
    assert not results.exists()  # nothing written, nothing trained


def test_the_same_mistakes_stop_a_dry_run(study, tmp_path, capsys):
    code, err = _run(["run", str(study), "--results", str(tmp_path / "r"), "--dry-run",
                      "--set", "train.epochs=0", "--set", "model.width=0"], capsys)
    assert code == 2
    assert "train.epochs must be >= 1, got 0" in err and "model.width must be >= 1" in err
    assert "pending" not in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", [[1, 2], {"layer.weight": 1}, torch.zeros(2)],
                         ids=["list", "dict of numbers", "tensor"])
def test_a_weights_file_without_a_state_dict_is_one_error_before_training(
        content, study, tmp_path, capsys):
    weights = tmp_path / "weights.pt"
    torch.save(content, weights)
    results = tmp_path / "results"
    code, err = _run(["run", str(study), "--results", str(results), "--device", "cpu",
                      "--set", "model.backbone=resnet18", "--set", f"model.pretrained={weights}"],
                     capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {study}: variant 'CN-CNN': model: weights file {str(weights)!r} holds no state dict (a mapping "
        "of parameter names to tensors, as torch.save(model.state_dict(), path) writes)"]
    assert not results.exists()


@pytest.mark.parametrize("argv,says", [
    (["frob"], "No such command 'frob'"),
    (["run", "--bogus"], "No such option '--bogus'"),
    (["run"], "Missing argument"),
])
def test_command_line_usage_mistakes_are_one_message_not_a_traceback(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


PLUGIN_FUSION = '''
from torch import nn

from fusion_lab.registries import FUSIONS


@FUSIONS.register("keep_levels")
class KeepLevels(nn.Module):
    """Passes the backbone's levels on unchanged: their channels stay unequal."""

    def __init__(self, in_channels, out_channels=256):
        super().__init__()
        self.out_channels = list(in_channels)

    def forward(self, feats):
        return list(feats)
'''


def test_parts_that_do_not_fit_together_are_one_error_before_training(
        study, tmp_path, capsys, isolated_registries):
    # small_cnn's levels have unequal channels; CA's low-to-high link needs equal ones,
    # which only assembling fusion and attention together can tell
    plugin = tmp_path / "keep_levels.py"
    plugin.write_text(PLUGIN_FUSION)
    study.write_text(f"plugins: [{plugin}]\n" + study.read_text())
    results = tmp_path / "results"
    code, err = _run(["run", str(study), "--results", str(results), "--device", "cpu",
                      "--set", "model.fusion=keep_levels", "--set", "model.attention=ca"],
                     capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert ("model: the parts do not fit together: the CA low-to-high link needs equal "
            "channels on every "
            "level, got [48, 96, 160]; set attention_args: {link: false}") in lines[0]
    assert not results.exists()
    # the way out the message names works, and trains
    main(["run", str(study), "--results", str(results), "--device", "cpu",
          "--set", "model.fusion=keep_levels", "--set", "model.attention=ca",
          "--set", "model.attention_args={link: false}", "--progress", "off", "--no-table"])
    # --set changes the study's runs: they train in its tag scratch (plan.tags)
    summaries = list(results.glob("bad/tags/scratch/*/summary.json"))
    assert len(summaries) == 1 and '"status": "done"' in summaries[0].read_text()


RANDOM_PLUGIN = '''
import random

import numpy as np
import torch
from torch import nn

from fusion_lab.registries import HEADS


@HEADS.register("draws_at_init")
class DrawsAtInit(nn.Module):
    """A head whose constructor draws from every generator (as some plugins do)."""

    def __init__(self, channels, num_classes):
        super().__init__()
        random.random(), np.random.rand(), torch.rand(3, device="cpu")
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, maps):
        return {"combined": self.fc(maps[-1].mean((2, 3)))}
'''


def test_checking_a_model_leaves_every_random_generator_where_it_was(
        tmp_path, isolated_registries):
    import random

    import numpy as np

    from fusion_lab.config import ModelConfig
    from fusion_lab.models.assemble import check_model_config
    from fusion_lab.registries import load_plugins

    plugin = tmp_path / "draws_at_init.py"
    plugin.write_text(RANDOM_PLUGIN)
    load_plugins([str(plugin)])
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    assert check_model_config(ModelConfig(backbone="small_cnn", head="draws_at_init")) == []
    assert torch.equal(before[0], torch.get_rng_state())
    assert before[1] == random.getstate()
    assert (before[2] == np.random.get_state()[1]).all()


FOUR_MISTAKES = """
name: four
base:
  dataset:
    name: synthetic_fgvc
    options: {num_classes: 3, train_per_class: 2, test_per_class: 2, image_size: 32}
  model: {backbone: small_cnn, width: 8, hidden: 8}
  train: {epochs: 0, batch_size: 4, image_size: 28, resize: 32, workers: 0}
variants:
  - {label: Baseline, model: {preset: baseline}}
  - {label: Typo, model: {preset: hl, widht: 4}}
  - {label: Wrong, model: {preset: cn_cnn, fusion: convlsmt, width: 0}}
grid:
  model.attention_args: [{}, {reduktion: 2}]
baseline: baseline
"""


def test_every_kind_of_mistake_is_reported_in_one_round_naming_its_variant(tmp_path, capsys):
    # Before: four rounds (baseline label, then unknown keys, then ranges, then components),
    # and component problems did not say which variant they came from.
    study = tmp_path / "four.yaml"
    study.write_text(textwrap.dedent(FOUR_MISTAKES))
    results = tmp_path / "results"
    code, err = _run(["run", str(study), "--results", str(results), "--device", "cpu"], capsys)
    assert code == 2 and err.startswith("error: "), err
    lines = [line.strip() for line in err.splitlines()]
    assert "- baseline 'baseline' is not a variant label; labels: " \
           "['Baseline', 'Typo', 'Wrong']" in lines
    assert any(line.startswith("- variant 'Typo' [attention_args={}]: unknown key model.widht")
               for line in lines), err
    # a problem of every row (the base's epochs) once; one of a row with its variant and cell
    assert "- every variant: train.epochs must be >= 1, got 0" in lines
    assert any(line.startswith("- variant 'Wrong' [attention_args={}]: model.width must be")
               for line in lines), err
    assert any(line.startswith("- variant 'Wrong' [attention_args={}]: model: unknown fusion "
                               "'convlsmt'") for line in lines), err
    assert any(line.startswith("- variant 'Typo' [attention_args={\"reduktion\":2}]: model: ")
               and "'reduktion'" in line for line in lines), err
    assert not any(line.startswith("- variant 'Baseline' [attention_args={}]") for line in lines)
    assert not results.exists()

"""Presets carry component arguments into the run's config; the released-code preset.

``cn_cnn_released`` is CN-CNN as the authors' code runs it (docs/model.md): the ConvLSTM
over the minibatch, BN momentum 0.01 in the S5 projection and the global branch, and their
initialisation of the new modules' convs. It must be its own run (own id) beside cn_cnn.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fusion_lab.config import ModelConfig, from_dict, resolve, result_dict
from fusion_lab.models.assemble import build_model, count_parameters
from fusion_lab.plan.study import expand, load_study
from fusion_lab.registries import PRESETS, load_builtin
from fusion_lab.store import run_ids


def _presets() -> dict[str, dict]:
    load_builtin()
    return {n: PRESETS.get(n) for n in PRESETS.list()}


def _resolved(**model):
    return resolve(from_dict({"model": {"backbone": "small_cnn", **model}}), _presets())


def test_released_preset_resolves_into_the_config():
    m = _resolved(preset="cn_cnn_released").model
    assert (m.fusion, m.attention, m.head) == ("convlstm", "sa+ca", "multi_level")
    assert m.fusion_args == {"sequence": "batch", "bn_momentum": 0.01}
    assert m.init == "released"
    paper = _resolved(preset="cn_cnn").model
    assert paper.fusion_args == {} and paper.init == "pytorch"


def test_released_preset_has_its_own_id_and_explicit_fields_give_the_same_run():
    ids = {p: run_ids(result_dict(_resolved(preset=p)))[0] for p in ("cn_cnn", "cn_cnn_released")}
    assert ids["cn_cnn"] != ids["cn_cnn_released"]
    explicit = _resolved(fusion="convlstm", attention="sa+ca", head="multi_level",
                         fusion_args={"sequence": "batch", "bn_momentum": 0.01},
                         init="released")
    assert run_ids(result_dict(explicit))[0] == ids["cn_cnn_released"]


def test_study_keys_win_over_the_presets_arguments():
    m = _resolved(preset="cn_cnn_released", fusion_args={"impl": "plain"}).model
    assert m.fusion_args == {"sequence": "batch", "bn_momentum": 0.01, "impl": "plain"}
    m = _resolved(preset="cn_cnn_released", fusion_args={"sequence": "levels"},
                  init="pytorch").model
    assert m.fusion_args == {"sequence": "levels", "bn_momentum": 0.01}
    assert m.init == "pytorch"


def test_presets_arguments_stay_with_the_presets_component():
    # another fusion than the preset's gets none of the convlstm's arguments
    m = _resolved(preset="cn_cnn_released", fusion="fpn_add").model
    assert m.fusion == "fpn_add" and m.fusion_args == {} and m.init == "released"
    build_model(m, 3)  # fpn_add would reject `sequence`


def test_a_study_holds_both_presets(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nbase: {model: {backbone: small_cnn}}\n"
        "variants:\n  - {label: paper, model: {preset: cn_cnn}}\n"
        "  - {label: code, model: {preset: cn_cnn_released}}\n")
    runs = expand(load_study(path), _presets())
    assert len({r.run_id for r in runs}) == 2
    assert len({r.group_id for r in runs}) == 2


def test_unknown_init_is_one_line():
    from fusion_lab.errors import ConfigError

    with pytest.raises(ConfigError, match="model.init must be one of pytorch, released"):
        _resolved(init="xavier")


def test_released_model_modules():
    torch.manual_seed(3)
    paper = build_model(ModelConfig(preset="cn_cnn", backbone="small_cnn", width=32), 5)
    torch.manual_seed(3)
    code = build_model(ModelConfig(preset="cn_cnn_released", backbone="small_cnn", width=32), 5)
    assert count_parameters(code) == count_parameters(paper)
    assert code.batch_dependent and not paper.batch_dependent
    assert code.fusion.sequence == "batch" and paper.fusion.sequence == "levels"
    assert code.fusion.top_bn.momentum == 0.01 and paper.fusion.top_bn.momentum == 0.1
    assert code.fusion.global_branch[2].momentum == 0.01
    assert code.attention.state_dict().keys() == paper.attention.state_dict().keys()
    p_params = dict(paper.named_parameters())
    modules = dict(code.named_modules())
    for name, param in code.named_parameters():
        owner, kind = name.rsplit(".", 1)
        module = modules[owner]
        same = torch.equal(param, p_params[name])
        if name.startswith("backbone."):  # the backbone is not the released init's
            assert same, name
        elif type(module) is nn.Conv2d and kind == "weight":
            assert not same, name
            n = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            if param.numel() >= 2000:  # enough draws to check the spread within 10%
                assert param.std().item() == pytest.approx(math.sqrt(2 / n), rel=0.1), name
        elif type(module) is nn.BatchNorm2d:
            assert torch.all(param == (1.0 if kind == "weight" else 0.0)), name
        else:  # conv biases, Linear, ConvTranspose2d (SA), BatchNorm1d: PyTorch's defaults
            assert same, name
    assert any(isinstance(m, nn.ConvTranspose2d) for m in code.attention.modules())
    assert any(type(m) is nn.Conv2d for m in code.attention.modules())  # CA's convs


def test_released_preset_resnet50_parameters_equal_cn_cnn():
    with torch.device("meta"):
        model = build_model(ModelConfig(preset="cn_cnn_released", backbone="resnet50"), 200)
    assert count_parameters(model) == 30_909_331


def test_describe_lists_the_released_preset():
    from click.testing import CliRunner

    from fusion_lab.cli import cli

    res = CliRunner().invoke(cli, ["describe", "--backbone", "small_cnn", "--classes", "5",
                                    "--image-size", "64"])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.output.splitlines()[1:6]}
    assert list(rows) == ["baseline", "hl", "hl+lh", "cn_cnn", "cn_cnn_released"]
    assert rows["cn_cnn_released"][4] == rows["cn_cnn"][4]  # same parameters
    assert rows["cn_cnn_released"][5].endswith("*") and "depend on the batch" in res.output


def test_convlstm_study_rows_isolate_the_sequence_axis():
    from pathlib import Path

    from fusion_lab.config import flatten

    study = load_study(Path(__file__).resolve().parent.parent / "studies" / "convlstm.yaml")
    rows: dict[str, list] = {}
    for r in expand(study, _presets()):
        rows.setdefault(r.label, []).append(r)
    assert list(rows) == ["w/o ConvLSTM", "w/ ConvLSTM", "w/ ConvLSTM over batch",
                          "released code"]
    flat = {label: {k: v for k, v in flatten(result_dict(runs[0].config)).items()
                    if v != "{}"}  # an empty fusion_args flattens to one "{}" key
            for label, runs in rows.items()}

    def diff(a, b):
        return {k for k in flat[a].keys() | flat[b].keys() if flat[a].get(k) != flat[b].get(k)}

    assert diff("w/ ConvLSTM", "w/ ConvLSTM over batch") == {"model.fusion_args.sequence"}
    assert diff("w/ ConvLSTM", "released code") == {
        "model.fusion_args.sequence", "model.fusion_args.bn_momentum", "model.init"}
    assert {tuple(r.seed for r in runs) for runs in rows.values()} == {(0, 1, 2)}
    assert study.reference["paper"]["released code"] == 88.9

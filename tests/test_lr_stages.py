"""Per-stage learning rates: which backbone parameters train at lr_new.

``train.backbone_high_lr_stages: k`` puts the backbone's last k stages in the new modules'
group (the released CUB script trains ResNet50's layer4 at 0.001 with the new modules and
conv1..layer3 at 0.0001). The stage rule is the BACKBONES contract's.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fusion_lab.config import ModelConfig, RunConfig, from_dict, resolve, result_dict
from fusion_lab.errors import ConfigError
from fusion_lab.models.assemble import FusionModel, backbone_stages, build_model
from fusion_lab.models.backbones import TimmBackbone
from fusion_lab.training.train import make_optimizer


def _names(module: nn.Module, params: list[nn.Parameter]) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in module.named_parameters() if id(p) in ids}


def _stage_prefixes(backbone: nn.Module) -> list[set[str]]:
    """Per stage, the top-level module names (first two name parts) it holds."""
    return [{".".join(n.split(".")[:2]) for n in _names(backbone, s)}
            for s in backbone_stages(backbone)]


def test_resnet_stages_follow_feature_info():
    stages = _stage_prefixes(TimmBackbone("resnet18"))
    assert stages == [{"body.conv1", "body.bn1"}, {"body.layer1"}, {"body.layer2"},
                      {"body.layer3"}, {"body.layer4"}]


def test_resnet_stages_stop_where_the_body_stops():
    # tapping layer1..layer3: timm builds no layer4, so layer3 is the last stage
    stages = _stage_prefixes(TimmBackbone("resnet18", out_indices=(1, 2, 3)))
    assert stages[-1] == {"body.layer3"} and len(stages) == 4


def test_efficientnet_untapped_blocks_join_the_next_level():
    # feature_info reports blocks 0, 1, 2, 4, 6: blocks.3 belongs to level 4's stage,
    # blocks.5 to level 6's, the stem (conv_stem, bn1) to blocks.0's
    stages = [{".".join(n.split(".")[:3]) for n in _names(bb, s)}
              for bb in [TimmBackbone("efficientnet_b0")] for s in backbone_stages(bb)]
    assert stages[0] == {"body.conv_stem.weight", "body.bn1.weight", "body.bn1.bias",
                         "body.blocks.0"}
    assert stages[-1] == {"body.blocks.5", "body.blocks.6"}
    assert stages[-2] == {"body.blocks.3", "body.blocks.4"}


def test_convnext_flattened_names():
    stages = _stage_prefixes(TimmBackbone("convnext_atto"))
    assert stages[-1] == {"body.stages_3"} and {"body.stem_0", "body.stem_1"} <= stages[0]


def test_small_cnn_stages():
    bb = build_model(ModelConfig(preset="baseline", backbone="small_cnn"), 3).backbone
    stages = _stage_prefixes(bb)
    assert stages == [{"stem.0", "stem.1", "stages.0"}, {"stages.1"}, {"stages.2"}]


class _TwoChildren(nn.Module):
    """A user's backbone without param_stages(): each child with parameters is a stage."""

    def __init__(self):
        super().__init__()
        self.a, self.act, self.b = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3)


def test_backbone_without_param_stages_uses_its_children():
    bb = _TwoChildren()
    assert [_names(bb, s) for s in backbone_stages(bb)] == [{"a.weight", "a.bias"},
                                                            {"b.weight", "b.bias"}]


def _groups(backbone: str, k: int, **train):
    cfg = resolve(from_dict({"model": {"preset": "hl", "backbone": backbone, "width": 8},
                             "train": {"backbone_high_lr_stages": k, "lr_backbone": 0.0001,
                                       "lr_new": 0.001, **train}}),
                  {"hl": {"fusion": "fpn_add", "attention": "none", "head": "multi_level"}})
    model: FusionModel = build_model(cfg.model, 3)
    opt, _ = make_optimizer(model, cfg)
    low, high = (_names(model, g["params"]) for g in opt.param_groups)
    assert [g["lr"] for g in opt.param_groups] == [0.0001, 0.001]
    assert not low & high and low | high == {n for n, _ in model.named_parameters()}
    return low, high


@pytest.mark.parametrize("k, high_stages", [(0, []), (1, ["layer4"]),
                                            (2, ["layer3", "layer4"])])
def test_resnet_groups(k, high_stages):
    low, high = _groups("resnet18", k)
    backbone_high = {n.split(".")[2] for n in high if n.startswith("backbone.")}
    assert sorted(backbone_high) == high_stages
    assert {n.split(".")[0] for n in high} == {"fusion", "head"} | (
        {"backbone"} if k else set())
    assert "backbone.body.conv1.weight" in low


def test_small_cnn_groups():
    low, high = _groups("small_cnn", 1)
    assert {n for n in high if n.startswith("backbone.")} == {
        n for n in high | low if n.startswith("backbone.stages.2.")}
    low, high = _groups("small_cnn", 3)  # every stage: the whole backbone at lr_new
    assert not low


def test_too_many_stages_is_one_clear_error():
    with pytest.raises(ConfigError, match="has 3 stages; use 0 to 3"):
        _groups("small_cnn", 4)
    with pytest.raises(ConfigError, match="backbone_high_lr_stages must be >= 0"):
        resolve(from_dict({"train": {"backbone_high_lr_stages": -1}}))


def test_neutral_value_keeps_ids_and_others_change_them():
    base = result_dict(resolve(RunConfig()))
    assert "backbone_high_lr_stages" not in base["train"]
    one = resolve(from_dict({"train": {"backbone_high_lr_stages": 1}}))
    assert result_dict(one)["train"]["backbone_high_lr_stages"] == 1
    assert resolve(RunConfig()).train.backbone_high_lr_stages == 0  # synthetic: generic


def test_high_stage_trains_at_lr_new():
    # one SGD step without momentum or decay: layer-4-like params move 10x as far
    cfg = resolve(from_dict({"model": {"preset": "baseline", "backbone": "small_cnn"},
                             "train": {"backbone_high_lr_stages": 1, "lr_backbone": 0.001,
                                       "lr_new": 0.01, "momentum": 0.0,
                                       "weight_decay": 0.0}}),
                  {"baseline": {"fusion": "none", "attention": "none", "head": "linear"}})
    model = build_model(cfg.model, 3)
    opt, _ = make_optimizer(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(torch.randn(4, 3, 32, 32))
    loss = out["combined"].square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():
        lr = 0.01 if n.startswith(("backbone.stages.2.", "head.")) else 0.001
        torch.testing.assert_close(before[n] - p.detach(), lr * grads[n])

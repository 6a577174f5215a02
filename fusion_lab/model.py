"""The assembler: a ModelConfig becomes backbone -> fusion -> attention -> heads.

This is the one place where config turns into component arguments; components only see
shapes (channels per level) and their own explicit arguments.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fusion_lab.config import ModelConfig
from fusion_lab.errors import ConfigError
from fusion_lab.registries import ATTENTIONS, FUSIONS, HEADS, PRESETS, load_builtin


class FusionModel(nn.Module):
    """A backbone, a fusion, an attention and heads, wired by shape.

    ``forward(x)`` returns a dict: ``logits`` (head name -> (B, K)), ``combined`` (their
    mean, the model's prediction) and, with ``return_maps=True``, ``features`` (backbone
    maps), ``fused`` (HL pathway output), ``attended`` and ``masks`` (name -> per level).
    """

    def __init__(self, backbone: nn.Module, fusion: nn.Module, attention: nn.Module,
                 head: nn.Module, level_names: list[str]):
        super().__init__()
        self.backbone, self.fusion, self.attention, self.head = backbone, fusion, attention, head
        self.level_names = level_names

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> dict[str, Any]:
        feats = self.backbone(x)  # low level first, e.g. S3, S4, S5
        fused = self.fusion(feats)  # HL pathway
        attended, masks = self.attention(fused)  # LH pathway
        logits = self.head(fused, attended)
        out: dict[str, Any] = {
            "logits": logits,
            "combined": torch.stack(list(logits.values())).mean(0),
        }
        if return_maps:
            out.update(features=feats, fused=fused, attended=attended, masks=masks)
        return out

    def new_modules(self) -> list[nn.Module]:
        """Everything but the (pretrained) backbone: trained with the higher learning rate."""
        return [self.fusion, self.attention, self.head]


def model_loss(out: dict[str, Any], target: torch.Tensor,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """The sum of the heads' cross-entropies (the reference code's loss)."""
    return sum(F.cross_entropy(lg.float(), target, label_smoothing=label_smoothing)
               for lg in out["logits"].values())


def _accepts(cls: Any, name: str) -> bool:
    params = inspect.signature(cls).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_args(kind: str, name: str, cls: Any, args: dict, fixed: int) -> list[str]:
    """Problems with the keyword arguments a study passes to a component."""
    params = list(inspect.signature(cls).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    allowed = [p.name for p in params[fixed:]]
    return [f"{kind} {name!r} takes no argument {k!r}; it takes: {', '.join(allowed) or 'none'}"
            for k in args if k not in allowed]


# Component arguments promoted to top-level model keys: (model key, args section, argument).
# The top-level key is passed when the component takes the argument; set in both places
# to different values, it is an error (one setting, one place).
PROMOTED = (("hidden", "head_args", "hidden"), ("concat_head", "head_args", "concat"),
            ("resize_back", "fusion_args", "resize_back"))


def promotion_conflicts(cfg: ModelConfig) -> list[str]:
    """A promoted key set both at the top level and in its component's arguments."""
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    problems = []
    for key, section, arg in PROMOTED:
        top, args = getattr(cfg, key), getattr(cfg, section)
        if top != defaults[key] and arg in args and args[arg] != top:
            problems.append(f"model.{key} ({top!r}) and model.{section}.{arg} "
                            f"({args[arg]!r}) are the same setting: set only model.{key}")
    return problems


def resolve_parts(cfg: ModelConfig) -> tuple[str, str, str]:
    """(fusion, attention, head) names, filled from the preset where unset."""
    load_builtin()
    preset = PRESETS.get(cfg.preset or "cn_cnn")
    return (cfg.fusion or preset["fusion"], cfg.attention or preset["attention"],
            cfg.head or preset["head"])


def check_model_config(cfg: ModelConfig) -> list[str]:
    """Every problem with a model config that can be found without building it."""
    load_builtin()
    problems = []
    if cfg.preset is not None and cfg.preset not in PRESETS:
        problems.append(PRESETS.unknown_message(cfg.preset))
        return problems
    problems += promotion_conflicts(cfg)
    fusion, attention, head = resolve_parts(cfg)
    for reg, name, args, fixed in ((FUSIONS, fusion, cfg.fusion_args, 2),
                                   (ATTENTIONS, attention, cfg.attention_args, 1),
                                   (HEADS, head, cfg.head_args, 2)):
        if name not in reg:
            problems.append(reg.unknown_message(name))
        else:
            problems += _check_args(reg.kind, name, reg.get(name), args, fixed)
    if cfg.resize_back and fusion in FUSIONS and not _accepts(FUSIONS.get(fusion), "resize_back"):
        problems.append(f"model.resize_back is not supported by fusion {fusion!r}")
    from fusion_lab.registry.backbones import backbone_problems

    return problems + backbone_problems(cfg.backbone, cfg.pretrained, cfg.out_indices)


def build_model(cfg: ModelConfig, num_classes: int) -> FusionModel:
    """Assemble the model a config describes (weights: random or ``cfg.pretrained``)."""
    problems = check_model_config(cfg)
    if problems:
        raise ConfigError(problems)
    from fusion_lab.registry._common import level_names
    from fusion_lab.registry.backbones import build_backbone

    fusion_name, attention_name, head_name = resolve_parts(cfg)
    backbone = build_backbone(cfg.backbone, cfg.pretrained, cfg.out_indices)
    fusion_cls = FUSIONS.get(fusion_name)
    fusion_kw = dict(cfg.fusion_args)
    if cfg.resize_back:
        fusion_kw["resize_back"] = True
    fusion = fusion_cls(list(backbone.out_channels), cfg.width, **fusion_kw)
    channels = list(fusion.out_channels)
    attention = ATTENTIONS.get(attention_name)(channels, **cfg.attention_args)
    names = level_names(list(backbone.reductions))[-len(channels):]
    head_cls = HEADS.get(head_name)
    head_kw: dict[str, Any] = dict(cfg.head_args)
    for key, value in (("names", names), ("hidden", cfg.hidden), ("concat", cfg.concat_head)):
        if _accepts(head_cls, key):
            head_kw.setdefault(key, value)
    head = head_cls(channels, num_classes, **head_kw)
    return FusionModel(backbone, fusion, attention, head, names)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

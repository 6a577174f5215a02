"""The assembler: a ModelConfig becomes backbone -> fusion -> attention -> heads.

This is the one place where config turns into component arguments; components only see
shapes (channels per level) and their own explicit arguments. A run's model config comes
resolved and its values checked (``fusion_lab.config.resolve``, once, when the study is
planned): it is used as it is, without consulting the presets again. Only a ModelConfig
built by hand and never resolved (a script, a test) has its preset filled here.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fusion_lab.config import ModelConfig, complete_model, is_resolved
from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.models.backbones import backbone_problems, build_backbone, level_names
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

    @property
    def batch_dependent(self) -> bool:
        """Whether an image's prediction depends on the other images of its batch in eval
        mode (a component with ``batch_dependent = True``, e.g. convlstm over the batch)."""
        return any(getattr(m, "batch_dependent", False) for m in self.modules() if m is not self)

    def new_modules(self) -> list[nn.Module]:
        """Everything but the (pretrained) backbone: trained with the higher learning rate."""
        return [self.fusion, self.attention, self.head]


def backbone_stages(backbone: nn.Module) -> list[list[nn.Parameter]]:
    """A backbone's parameters by stage, low first (the BACKBONES contract's rule).

    ``backbone.param_stages()`` where the backbone defines it (timm backbones, small_cnn);
    otherwise each direct child module that holds parameters is one stage.
    """
    if hasattr(backbone, "param_stages"):
        stages = [list(s) for s in backbone.param_stages()]
    else:
        stages = [list(m.parameters()) for m in backbone.children()]
        stages = [s for s in stages if s]
    seen = {id(p) for s in stages for p in s}
    if len(seen) != sum(len(s) for s in stages) or seen != {id(p) for p in backbone.parameters()}:
        raise FusionLabError(f"{type(backbone).__name__}'s stages must hold each of its "
                             "parameters exactly once")
    return stages


def split_backbone(backbone: nn.Module, high_stages: int
                   ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(earlier stages, last ``high_stages`` stages) of a backbone's parameters."""
    if high_stages == 0:
        return list(backbone.parameters()), []
    stages = backbone_stages(backbone)
    if not 0 <= high_stages <= len(stages):
        raise ConfigError(f"train.backbone_high_lr_stages is {high_stages}, but the backbone "
                          f"has {len(stages)} stages; use 0 to {len(stages)}")
    cut = len(stages) - high_stages
    return [p for s in stages[:cut] for p in s], [p for s in stages[cut:] for p in s]


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


def resolve_model(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` itself when resolved (every run's config is), else a copy with its preset and
    defaults filled from the registered presets (``config.complete_model``)."""
    if is_resolved(cfg):
        return cfg
    load_builtin()
    cfg = copy.deepcopy(cfg)
    complete_model(cfg, {name: PRESETS.get(name) for name in PRESETS.list()})
    return cfg


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
    r = resolve_model(cfg)
    return r.fusion, r.attention, r.head


@torch.no_grad()
def released_init(modules: list[nn.Module]) -> None:
    """The authors' code's initialisation of its new modules (docs/model.md).

    Every ``nn.Conv2d`` weight ~ N(0, sqrt(2/n)), n = kernel height * width * out channels;
    every ``BatchNorm2d`` weight 1, bias 0. Conv biases, Linear, ConvTranspose2d and
    BatchNorm1d keep PyTorch's defaults.
    """
    for root in modules:
        for m in root.modules():
            if type(m) is nn.Conv2d:
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.normal_(0.0, math.sqrt(2.0 / n))
            elif type(m) is nn.BatchNorm2d:
                m.weight.fill_(1.0)
                m.bias.zero_()


def check_model_config(cfg: ModelConfig) -> list[str]:
    """Every problem with a model config that can be found without building it: its parts,
    their arguments and how they fit (a field's own values are ``config.check``'s)."""
    load_builtin()
    try:
        cfg = resolve_model(cfg)
    except ConfigError as e:  # a hand-built config naming an unknown preset
        return list(e.problems)
    problems = promotion_conflicts(cfg)
    fusion, attention, head = cfg.fusion, cfg.attention, cfg.head
    for reg, name, args, fixed in ((FUSIONS, fusion, cfg.fusion_args, 2),
                                   (ATTENTIONS, attention, cfg.attention_args, 1),
                                   (HEADS, head, cfg.head_args, 2)):
        if name not in reg:
            problems.append(reg.unknown_message(name))
        else:
            bad_names = _check_args(reg.kind, name, reg.get(name), args, fixed)
            check = getattr(reg.get(name), "check_args", None)
            problems += bad_names or (list(check(**args)) if check is not None else [])
    if cfg.resize_back and fusion in FUSIONS and not _accepts(FUSIONS.get(fusion), "resize_back"):
        problems.append(f"model.resize_back is not supported by fusion {fusion!r}")

    problems += backbone_problems(cfg.backbone, cfg.pretrained, cfg.out_indices)
    return problems or _assembly_problems(cfg)


def _assembly_problems(cfg: ModelConfig) -> list[str]:
    """What only assembling the parts finds (e.g. the CA link on levels of unequal channels).

    The model is assembled on the meta device (no memory, no weights), once per config and
    set of registered classes. A component that refuses its arguments with a ValueError or
    a FusionLabError is reported; any other exception (a plugin that cannot be built on the
    meta device) is left to the real build.
    """
    key = (repr(cfg), *(id(r.get(n)) for r, n in ((FUSIONS, cfg.fusion),
                                                   (ATTENTIONS, cfg.attention),
                                                   (HEADS, cfg.head))))
    if key not in _ASSEMBLED:

        py_state, np_state = random.getstate(), np.random.get_state()
        try:  # a check must not move any random state a run is seeded with
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                _assemble(dataclasses.replace(cfg, pretrained=False), 2)
            _ASSEMBLED[key] = []
        except (ValueError, FusionLabError) as e:
            _ASSEMBLED[key] = [f"the parts do not fit together: {e}"]
        except Exception:
            _ASSEMBLED[key] = []
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
    return list(_ASSEMBLED[key])


_ASSEMBLED: dict[tuple, list[str]] = {}


def build_model(cfg: ModelConfig, num_classes: int) -> FusionModel:
    """Assemble the model a config describes (weights: random or ``cfg.pretrained``).

    ``cfg`` is a run's resolved model config (or a hand-built one, resolved here once)."""
    cfg = resolve_model(cfg)
    problems = check_model_config(cfg)
    if problems:
        raise ConfigError(problems)
    return _assemble(cfg, num_classes)


def _assemble(cfg: ModelConfig, num_classes: int) -> FusionModel:
    """The model of a checked, resolved config."""
    fusion_name, attention_name, head_name = cfg.fusion, cfg.attention, cfg.head
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
    model = FusionModel(backbone, fusion, attention, head, names)
    if cfg.init == "released":
        released_init(model.new_modules())
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

"""Typed configuration of one run: dataset, model and training (no torch import here).

A study file's ``base``, ``variants`` and ``grid`` are merged into one nested dict per run,
then turned into a ``RunConfig`` by ``from_dict``, which rejects unknown keys and wrong types.
The YAML itself is parsed in ``fusion_lab.study`` only.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from fusion_lab.errors import ConfigError
from fusion_lab.weights import identity


@dataclass
class DatasetConfig:
    name: str = "synthetic_fgvc"  # a registered dataset (fusionlab list datasets)
    root: str | None = None  # the dataset's folder; not needed by synthetic_fgvc
    options: dict = field(default_factory=dict)  # keyword arguments of the dataset class
    val_fraction: float = 0.0  # part of train held out to choose a best epoch (0: none)
    val_seed: int = 0  # seed of that split, independent of the run's seed


@dataclass
class ModelConfig:
    preset: str | None = None  # baseline | hl | hl+lh | cn_cnn: fills fusion/attention/head
    backbone: str = "resnet50"  # any timm model supporting features_only
    pretrained: bool | str = False  # false, true (timm hub), a weights name or a file path
    out_indices: list[int] = field(default_factory=lambda: [-3, -2, -1])  # stages tapped
    fusion: str | None = None  # none | fpn_add | convlstm (None: from the preset)
    attention: str | None = None  # none | sa | ca | sa+ca (None: from the preset)
    head: str | None = None  # multi_level | linear (None: from the preset)
    width: int = 256  # channels of the fused maps
    hidden: int | None = None  # classifier hidden width; None: 512 if 200 classes else 256
    concat_head: bool = True  # the reference code's 4th classifier on the fused maps
    resize_back: bool = False  # paper: resize fused maps to their own level's size
    fusion_args: dict = field(default_factory=dict)
    attention_args: dict = field(default_factory=dict)
    head_args: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    recipe: str = "reference"  # reference | paper: the defaults below come from it
    epochs: int | None = None  # None: the recipe's (reference 100, paper 300)
    batch_size: int = 16
    image_size: int = 448  # crop size
    resize: int | None = None  # resize before cropping; None: image_size * 600 / 448
    lr_backbone: float | None = None  # None: the recipe's (reference 1e-4, paper 1e-3)
    lr_new: float | None = None  # None: the recipe's (reference 1e-3, paper 0.1)
    # The backbone's last k stages train at lr_new with the new modules, the rest at
    # lr_backbone (0: the whole backbone at lr_backbone). Stages: BACKBONES contract.
    backbone_high_lr_stages: int = 0
    optimizer: str = "sgd"  # sgd (the paper's) | adamw (faster from scratch, e.g. quickstart)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine (per epoch) | constant
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max grad norm, None: no clipping
    amp: str = "auto"  # auto (bf16 on CUDA if supported, else fp16) | bf16 | fp16 | off
    channels_last: bool = True  # on CUDA only
    compile: bool = False  # torch.compile the fusion and attention modules (CUDA)
    # Fields below cannot change the result; they are left out of the run id.
    workers: int = 4
    log_every: int = 0  # batches between log lines (0: progress bar only)
    keep_checkpoint: bool = True  # keep the last checkpoint after the run finished


@dataclass
class RunConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0


RECIPES: dict[str, dict[str, Any]] = {
    # From the authors' code (design/model.md): SGD, cosine per epoch, 100 epochs.
    "reference": {"epochs": 100, "lr_backbone": 1e-4, "lr_new": 1e-3},
    # From the paper's text: 300 epochs, lr 0.001 backbone / 0.1 new modules.
    "paper": {"epochs": 300, "lr_backbone": 1e-3, "lr_new": 0.1},
}

# Keys that cannot change a run's result: excluded from its id.
NON_RESULT_KEYS = {"train.workers", "train.log_every", "train.keep_checkpoint"}

# Fields added after results existed, with the value that reproduces the behaviour from
# before they existed (dotted key -> neutral value). At that value such a field is left
# out of the run id, so adding it changes no existing id; any other value is in the id.
ID_NEUTRAL: dict[str, Any] = {
    "train.backbone_high_lr_stages": 0,
}

SECTIONS = {"dataset": DatasetConfig, "model": ModelConfig, "train": TrainConfig}


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a nested dict, reporting every problem at once."""
    problems: list[str] = []
    if not isinstance(d, dict):
        raise ConfigError(f"a run config must be a mapping, got {type(d).__name__}")
    for key in d:
        if key not in SECTIONS and key != "seed":
            close = difflib.get_close_matches(str(key), [*SECTIONS, "seed"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {key!r}{hint}; valid: dataset, model, train, seed")
    sections = {}
    for name, cls in SECTIONS.items():
        raw = d.get(name) or {}
        if not isinstance(raw, dict):
            problems.append(f"{name} must be a mapping, got {raw!r}")
            raw = {}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in raw.items():
            if key not in hints:
                close = difflib.get_close_matches(str(key), list(hints), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(
                    f"unknown key {name}.{key}{hint}; valid: {', '.join(hints)}"
                )
                continue
            if not _type_ok(value, hints[key]):
                problems.append(
                    f"{name}.{key} must be {_type_name(hints[key])}, got {value!r}"
                )
                continue
            if hints[key] is float or (isinstance(value, int) and float in typing.get_args(
                hints[key]
            )):
                value = float(value) if value is not None else None
            kwargs[key] = value
        sections[name] = cls(**kwargs)
    seed = d.get("seed", 0)
    if not _type_ok(seed, int):
        problems.append(f"seed must be an integer, got {seed!r}")
        seed = 0
    if problems:
        raise ConfigError(problems)
    return RunConfig(seed=seed, **sections)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def resolve(cfg: RunConfig, presets: dict[str, dict] | None = None) -> RunConfig:
    """Fill the fields left to the preset and the recipe (returns a new config)."""
    cfg = from_dict(to_dict(cfg))
    m, t = cfg.model, cfg.train
    if presets is not None:
        base = presets.get(m.preset or "cn_cnn")
        if base is None:
            raise ConfigError(
                f"unknown preset {m.preset!r}; valid: {', '.join(sorted(presets))}"
            )
        for key in ("fusion", "attention", "head"):
            if getattr(m, key) is None:
                setattr(m, key, base[key])
    recipe = RECIPES.get(t.recipe)
    if recipe is None:
        raise ConfigError(f"unknown recipe {t.recipe!r}; valid: {', '.join(RECIPES)}")
    for key, value in recipe.items():
        if getattr(t, key) is None:
            setattr(t, key, value)
    if t.resize is None:
        t.resize = int(round(t.image_size * 600 / 448))
    if t.backbone_high_lr_stages < 0:
        raise ConfigError("train.backbone_high_lr_stages must be 0 or more (the number of "
                          f"last backbone stages trained at lr_new), got {t.backbone_high_lr_stages}")
    return cfg


def result_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config with the keys that cannot change the result removed."""
    d = to_dict(cfg)
    for dotted in NON_RESULT_KEYS:
        section, key = dotted.split(".")
        d[section].pop(key, None)
    for dotted, neutral in ID_NEUTRAL.items():
        section, key = dotted.split(".")
        if key in d[section] and d[section][key] == neutral:
            del d[section][key]
    d["model"].pop("preset", None)  # the resolved fields say everything the preset said
    # A weights file counts by its content, not by its name or path (fusion_lab.weights).
    d["model"]["pretrained"] = identity(d["model"]["pretrained"])
    return d

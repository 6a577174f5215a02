"""Typed configuration of one run: dataset, model and training; the vocabulary every layer
above speaks. This package imports only ``registries``, ``errors`` and its own modules
(``recipes``: the training recipes; ``weights``: named and file weights and their identity;
``fields``: a field's valid values and types; ``defaults``: presets and ``model.init``'s
default; ``sinks``: the loggers a run may name), never torch.

A study file's ``base``, ``variants`` and ``grid`` are merged into one nested dict per run,
then turned into a ``RunConfig`` by ``from_dict``, which rejects unknown keys and wrong types;
``resolve`` fills the preset's and recipe's defaults (``defaults``: the presets and
``model.init``'s default) and ``check`` rejects values out of range. A field's valid values
live with the field (``_f(default, min=..., choices=...)``), so the check and the field's
definition cannot drift apart, and nothing downstream checks them again: planning resolves
and checks every run once. The YAML itself is parsed in ``fusion_lab.plan.study`` only.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from fusion_lab.config import recipes
from fusion_lab.config.defaults import apply_preset, complete_model, is_resolved  # noqa: F401
from fusion_lab.config.fields import range_problem, type_name, type_ok
from fusion_lab.config.fields import valid as _f
from fusion_lab.config.sinks import LOGGER_NEEDS, logger_problems  # noqa: F401 (re-exported)
from fusion_lab.config.weights import identity
from fusion_lab.errors import ConfigError

AMP_MODES = ("auto", "bf16", "fp16", "off")  # fusion_lab.training.device.precision's modes
DECODERS = ("cpu", "gpu")  # dataset.decode: where JPEG files are decoded
INITS = ("pytorch", "released")  # model.init
OPTIMIZERS = ("sgd", "adamw")  # train.optimizer: fusion_lab.training.train.make_optimizer's
SCHEDULES = ("cosine", "constant")  # train.schedule


@dataclass
class DatasetConfig:
    name: str = "synthetic_fgvc"  # a registered dataset (fusionlab list datasets)
    root: str | None = None  # the dataset's folder; not needed by synthetic_fgvc
    options: dict = field(default_factory=dict)  # keyword arguments of the dataset class
    val_fraction: float = _f(0.0, min=0, below=1)  # part of train held out to choose a best epoch (0: none)
    val_seed: int = 0  # seed of that split, independent of the run's seed
    decode: str = _f("cpu", choices=DECODERS)  # cpu (libjpeg-turbo in the loader workers) | gpu (nvJPEG, CUDA only)


@dataclass
class ModelConfig:
    # baseline | hl | hl+lh | cn_cnn | cn_cnn_released: fills the fields left None and
    # gives its component arguments (fusion_args, ...) under the study's own
    preset: str | None = None
    backbone: str = "resnet50"  # any timm model supporting features_only
    pretrained: bool | str = False  # false, true (timm hub), a weights name or a file path
    out_indices: list[int] = field(default_factory=lambda: [-3, -2, -1])  # stages tapped
    fusion: str | None = None  # none | fpn_add | convlstm (None: from the preset)
    attention: str | None = None  # none | sa | ca | sa+ca (None: from the preset)
    head: str | None = None  # multi_level | linear (None: from the preset)
    width: int = _f(256, min=1)  # channels of the fused maps
    hidden: int | None = _f(None, min=1)  # classifier hidden width; None: 512 if 200 classes else 256
    concat_head: bool = True  # the reference code's 4th classifier on the fused maps
    resize_back: bool = False  # paper: resize fused maps to their own level's size
    fusion_args: dict = field(default_factory=dict)
    attention_args: dict = field(default_factory=dict)
    head_args: dict = field(default_factory=dict)
    # pytorch (each layer's default) | released (the authors' code: N(0, sqrt(2/n)) convs
    # and BN 1/0 in the new modules); None: the preset's, else pytorch (defaults.INIT_DEFAULT)
    init: str | None = _f(None, choices=INITS)


@dataclass
class TrainConfig:
    # reference (the released script's recipe for the run's dataset) | paper | a named
    # recipe (cub200, stanford_cars, fgvc_aircraft, generic): fusion_lab/recipes.py.
    # Every None below means "the recipe's".
    recipe: str = "reference"
    epochs: int | None = _f(None, min=1)  # reference 100, paper 300
    # train and test; CUB 16, Cars 8, Aircraft 16. At least 2: BatchNorm cannot train on a
    # batch of one image (such a batch is skipped), so batches of 1 would train nothing
    batch_size: int | None = _f(None, min=2)
    image_size: int = _f(448, min=1)  # crop size
    # square resize before cropping (>= image_size); CUB's recipe: image_size * 600 / 448
    resize: int | None = _f(None, min=1)
    lr_backbone: float | None = _f(None, min=0)  # CUB 1e-4, Cars and Aircraft 1e-3, paper 1e-3
    lr_new: float | None = _f(None, min=0)  # new modules: 1e-3 (reference), 0.1 (paper)
    # The backbone's last k stages train at lr_new with the new modules, the rest at
    # lr_backbone (0: the whole backbone at lr_backbone; CUB's recipe: 1, i.e. ResNet50's
    # layer4). Stages: the BACKBONES contract in fusion_lab/registries.py.
    backbone_high_lr_stages: int | None = _f(None, min=0)
    optimizer: str = _f("sgd", choices=OPTIMIZERS)  # sgd (the paper's) | adamw (faster from scratch, e.g. quickstart)
    momentum: float = _f(0.9, min=0, below=1)  # sgd only; >= 1 diverges
    weight_decay: float = _f(5e-4, min=0)
    schedule: str = _f("cosine", choices=SCHEDULES)  # cosine (per epoch) | constant
    warmup_epochs: int = _f(0, min=0)
    label_smoothing: float = _f(0.0, min=0, below=1)
    grad_clip: float | None = _f(None, min=0)  # max grad norm, None: no clipping
    amp: str = _f("auto", choices=AMP_MODES)  # auto (bf16 on CUDA if supported, else fp16) | bf16 | fp16 | off
    channels_last: bool = True  # on CUDA only
    compile: bool = False  # torch.compile the fusion and attention modules (CUDA)
    world_size: int = 1  # processes training one run with DDP (set by fusionlab run --nproc)
    sync_bn: bool = False  # SyncBatchNorm across those processes (CUDA only)
    # set by a tune: block's pruner on its trials (e.g. "asha:min_epochs=1,reduction=3"):
    # a trial that may be stopped early is its own run; none: trained to the end
    pruner: str = "none"
    # torch's CPU threads in the run's process (None: torch's default, the machine's cores).
    # On the CPU the result depends on it (bit-identical only at one count), so it is part
    # of the id; fusionlab run --jobs N (N runs at once on the CPU) needs it set.
    threads: int | None = _f(None, min=1)
    # Fields below cannot change the result; they are left out of the run id.
    workers: int = _f(4, min=0)
    log_every: int = _f(0, min=0)  # batches between log lines (0: progress bar only)
    keep_checkpoint: bool = True  # keep the last checkpoint after the run finished
    # tracking sinks beside metrics.jsonl: tensorboard, mlflow (fusion_lab/loggers.py)
    loggers: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0


# Keys that cannot change a run's result: excluded from its id.
NON_RESULT_KEYS = {"train.workers", "train.log_every", "train.keep_checkpoint",
                   "train.loggers"}

# Fields added after results existed, with the value that reproduces the behaviour from
# before they existed (dotted key -> neutral value). At that value such a field is left
# out of the run id, so adding it changes no existing id; any other value is in the id.
ID_NEUTRAL: dict[str, Any] = {
    "train.backbone_high_lr_stages": 0,
    "model.init": "pytorch",
    "dataset.decode": "cpu",  # where JPEGs are decoded; cpu is the pipeline every run used
    "train.world_size": 1,  # DDP processes of one run (1: an ordinary run)
    "train.sync_bn": False,
    "train.pruner": "none",  # a trial of a tune: block's pruner (none: not stopped early)
    "train.threads": None,  # torch's default thread count, what every run used before
}

SECTIONS = {"dataset": DatasetConfig, "model": ModelConfig, "train": TrainConfig}


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a nested dict, reporting every problem at once."""
    cfg, problems = build(d)
    if problems:
        raise ConfigError(problems)
    return cfg


def build(d: dict[str, Any]) -> tuple[RunConfig, list[str]]:
    """A RunConfig from a nested dict and its problems (unknown keys, wrong types); a key
    with a problem is left at its default, so the rest can still be checked."""
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
        sections[name] = cls(**_section(name, raw, typing.get_type_hints(cls), problems))
    seed = d.get("seed", 0)
    if not type_ok(seed, int):
        problems.append(f"seed must be an integer, got {seed!r}")
        seed = 0
    return RunConfig(seed=seed, **sections), problems


def _section(name: str, raw: dict, hints: dict, problems: list[str]) -> dict[str, Any]:
    kwargs = {}
    for key, value in raw.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {name}.{key}{hint}; valid: {', '.join(hints)}")
            continue
        if not type_ok(value, hints[key]):
            problems.append(f"{name}.{key} must be {type_name(hints[key])}, got {value!r}")
            continue
        if hints[key] is float or (isinstance(value, int) and float in typing.get_args(
            hints[key]
        )):
            value = float(value) if value is not None else None
        kwargs[key] = value
    return kwargs


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def resolve(cfg: RunConfig, presets: dict[str, dict] | None = None) -> RunConfig:
    """Fill the fields left to the preset and the recipe (returns a new config).

    The recipe depends on the dataset (``fusion_lab.config.recipes``): the registered dataset
    class names its reference recipe, so load the catalogue (and plugins) first.
    """
    resolved, problems = resolve_dict(to_dict(cfg), presets)
    if problems:
        raise ConfigError(problems)
    return resolved


def resolve_dict(d: dict[str, Any], presets: dict[str, dict] | None = None
                 ) -> tuple[RunConfig | None, list[str]]:
    """``resolve`` of a nested dict (copied), with every problem instead of an error: the
    config is built without its faulty keys (None when its preset or recipe is unknown)."""
    cfg, problems = build(copy.deepcopy(d))
    try:
        complete_model(cfg.model, presets)
        recipes.fill(cfg.train, cfg.dataset.name, cfg.dataset.root)
    except ConfigError as e:
        return None, problems + e.problems
    return cfg, problems + check(cfg)


def _out_of_range(cfg: RunConfig) -> list[tuple[Any, dataclasses.Field, str]]:
    """(section values, field, problem) for every value out of its field's range."""
    out = []
    for section, cls in SECTIONS.items():
        values = getattr(cfg, section)
        for f in dataclasses.fields(cls):
            problem = range_problem(f"{section}.{f.name}", getattr(values, f.name), f.metadata)
            if problem:
                out.append((values, f, problem))
    return out


def check(cfg: RunConfig) -> list[str]:
    """Values out of their field's range, one line each with the valid values."""
    problems = [problem for _, _, problem in _out_of_range(cfg)]
    t = cfg.train
    if t.resize is not None and t.image_size is not None and t.resize < t.image_size:
        problems.append(f"train.resize ({t.resize}) must be >= train.image_size "
                        f"({t.image_size}): the image is resized, then cropped to image_size")
    return problems


def reset_out_of_range(cfg: RunConfig) -> None:
    """Set every value out of its field's range back to the field's default, in place: a
    config with problems can then still be checked for others (it never trains)."""
    for values, f, _ in _out_of_range(cfg):
        setattr(values, f.name, f.default)


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
    # A weights file counts by its content, not by its name or path (fusion_lab.config.weights).
    d["model"]["pretrained"] = identity(d["model"]["pretrained"])
    return d


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"a.b.c": value}; lists become JSON text so they compare."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out

"""Each run's config is resolved and checked once, when the study is planned (issue 17).

A field's valid values live with the field; ``plan.planning.prepare`` resolves (preset,
recipe, defaults) and checks every run, and building the model and training use that
config as it is. The preset a config gets when it names none is the catalogue's.
"""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from fusion_lab import config
from fusion_lab.cli import main
from fusion_lab.config import defaults
from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.models.assemble import build_model
from fusion_lab.plan.planning import prepare
from fusion_lab.registries import PRESETS, load_builtin

STUDY = """
name: once
base:
  dataset:
    name: synthetic_fgvc
    options: {num_classes: 3, train_per_class: 2, test_per_class: 2, image_size: 32}
  model: {backbone: small_cnn, width: 8, hidden: 8}
  train: {epochs: 1, batch_size: 6, image_size: 28, resize: 32, workers: 0}
variants:
  - {label: Baseline, model: {preset: baseline}}
  - {label: Released, model: {preset: cn_cnn_released}}
  - {label: Default}
"""


@pytest.fixture
def study(tmp_path):
    p = tmp_path / "once.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


@pytest.fixture
def registry_restored(monkeypatch):
    """Whatever a test registers or declares in PRESETS is undone after it."""
    load_builtin()
    monkeypatch.setattr(PRESETS, "_items", dict(PRESETS._items))
    monkeypatch.setattr(PRESETS, "_docs", dict(PRESETS._docs))
    monkeypatch.setattr(PRESETS, "default", PRESETS.default)


def test_the_preset_is_applied_once_per_run_from_file_to_trained_model(
        study, tmp_path, monkeypatch):
    from fusion_lab.training.train import train_run

    applied = []
    real = defaults.apply_preset

    def counting(m, presets):
        applied.append(m.preset)
        return real(m, presets)

    monkeypatch.setattr(defaults, "apply_preset", counting)
    _, runs = prepare(study)
    assert sorted(applied, key=str) == sorted(["baseline", "cn_cnn_released", None], key=str)
    for r in runs:
        run_dir = tmp_path / r.run_id
        run_dir.mkdir()
        assert train_run(run_dir, r.config, r.run_id, device="cpu")["epochs"] == 1
    assert len(applied) == len(runs) == 3  # training applied none again


def test_build_model_does_not_consult_the_presets_for_a_resolved_config(study, monkeypatch):
    _, runs = prepare(study)

    def no_presets(*_):
        raise AssertionError("PRESETS consulted again")

    monkeypatch.setattr(PRESETS, "get", no_presets)
    monkeypatch.setattr(PRESETS, "list", no_presets)
    for r in runs:
        model = build_model(r.config.model, 3)
        if r.label == "Released":
            assert model.fusion.sequence == "batch"  # the preset's arguments, resolved once


@pytest.mark.parametrize("key,bad,line", [
    ("dataset.decode", "nvjpeg", "dataset.decode must be one of cpu, gpu, got 'nvjpeg'"),
    ("train.optimizer", "adam", "train.optimizer must be one of sgd, adamw, got 'adam'"),
    ("train.schedule", "linear", "train.schedule must be one of cosine, constant, got 'linear'"),
    ("model.init", "xavier", "model.init must be one of pytorch, released, got 'xavier'"),
])
def test_a_bad_value_is_one_line_from_the_field_check_before_anything_trains(
        key, bad, line, study, tmp_path, capsys, monkeypatch):
    section, name = key.split(".")
    cls = config.SECTIONS[section]
    declared = {f.name: f.metadata for f in dataclasses.fields(cls)}[name]["choices"]
    assert f"one of {', '.join(declared)}" in line  # the valid values are the field's own
    raw = {section: {name: bad}}
    assert config.check(config.from_dict(raw)) == [line]  # the generic field check says it

    import fusion_lab.training.train as train

    monkeypatch.setattr(train, "train_run", lambda *a, **k: pytest.fail("trained"))
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        main(["run", str(study), "--results", str(results), "--device", "cpu",
              "--set", f"{key}={bad}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert line in err[0] and not results.exists()


def test_every_declared_optimizer_and_schedule_is_one_training_runs():
    import torch

    from fusion_lab.training import optim

    assert tuple(optim.OPTIMIZERS) == config.OPTIMIZERS
    model = build_model(config.ModelConfig(preset="baseline", backbone="small_cnn"), 3)
    for name in config.OPTIMIZERS:
        for schedule in config.SCHEDULES:
            cfg = config.resolve(config.from_dict(
                {"train": {"optimizer": name, "schedule": schedule, "epochs": 4}}))
            opt, sched = optim.make_optimizer(model, cfg)
            assert isinstance(opt, torch.optim.Optimizer) and sched.get_last_lr()


def test_the_default_preset_is_read_from_the_catalogue(registry_restored):
    assert PRESETS.default == "cn_cnn"  # declared in registry/presets.py
    presets = {n: PRESETS.get(n) for n in PRESETS.list()}
    m = config.resolve(config.RunConfig(), presets).model
    assert (m.fusion, m.attention, m.head) == ("convlstm", "sa+ca", "multi_level")
    PRESETS.default = "baseline"
    m = config.resolve(config.RunConfig(), presets).model
    assert (m.fusion, m.attention, m.head) == ("none", "none", "linear")
    PRESETS.default = None
    with pytest.raises(ConfigError, match="no default preset is declared"):
        config.resolve(config.RunConfig(), presets)
    with pytest.raises(FusionLabError, match="unknown preset 'cn-cnn'"):
        PRESETS.set_default("cn-cnn")


PLUGIN = '''
from fusion_lab.registries import PRESETS

PRESETS.add("plain_fpn", {"fusion": "fpn_add", "attention": "none", "head": "linear"},
            "A plugin's preset, declared the default")
PRESETS.set_default("plain_fpn")
'''


def test_a_plugin_declares_its_preset_the_default(study, tmp_path, registry_restored):
    (tmp_path / "default_plugin.py").write_text(PLUGIN)
    study.write_text(study.read_text().replace("name: once\n",
                                               "name: once\nplugins: [default_plugin.py]\n"))
    _, runs = prepare(study)
    parts = {r.label: (r.config.model.fusion, r.config.model.head) for r in runs}
    assert parts == {"Baseline": ("none", "linear"), "Released": ("convlstm", "multi_level"),
                     "Default": ("fpn_add", "linear")}

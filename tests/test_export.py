"""`fusionlab export`: a finished run's backbone becomes a file `model.pretrained` can name."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from fusion_lab.cli import main
from fusion_lab.config import ModelConfig
from fusion_lab.config.weights import file_sha256
from fusion_lab.maps.viz import load_trained
from fusion_lab.models.assemble import build_model
from fusion_lab.orchestrate.runner import run_dir, train_study
from fusion_lab.plan.planning import prepare

STUDY = """
name: pre
base:
  dataset:
    name: synthetic_shapes
    options: {num_classes: 4, train_per_class: 4, test_per_class: 3, image_size: 32}
  model: {preset: baseline, backbone: small_cnn}
  train: {epochs: 1, batch_size: 8, image_size: 32, resize: 32, workers: 0,
          optimizer: adamw, lr_backbone: 0.003, lr_new: 0.003}
variants:
  - {label: small_cnn}
seeds: [0]
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    path = tmp / "pre.yaml"
    path.write_text(textwrap.dedent(STUDY))
    results = tmp / "results"
    study, runs = prepare(path)
    train_study(study, runs, results, device="cpu")
    return path, results, run_dir(results, study, runs[0])


def test_export_writes_a_file_that_a_study_can_start_from(trained, tmp_path, capsys):
    study_file, results, d = trained
    out = tmp_path / "w" / "pre.pt"
    main(["export", str(study_file), "--out", str(out), "--results", str(results)])
    assert "source synthetic_shapes accuracy" in capsys.readouterr().out
    model, _, _ = load_trained(d)
    started = build_model(ModelConfig(preset="hl", backbone="small_cnn", width=8,
                                      pretrained=str(out)), 5)
    for key, want in model.backbone.state_dict().items():
        assert torch.equal(started.backbone.state_dict()[key], want), key
    card = json.loads(out.with_suffix(".json").read_text())
    summary = json.loads((d / "summary.json").read_text())
    assert card["sha256"] == file_sha256(out)
    assert card["source_accuracy"] == summary["final"]["acc"]
    assert card["source_test_size"] == 12 and card["run_id"] == d.name
    assert card["recipe"]["dataset"]["name"] == "synthetic_shapes"
    head = torch.load(out, weights_only=True)["head"]
    assert torch.equal(head["fc.weight"], model.head.fc.weight)


def test_export_by_run_id_prefix(trained, tmp_path):
    _, results, d = trained
    out = tmp_path / "by_id.pth"
    main(["export", d.name[:10], "--out", str(out), "--results", str(results)])
    assert out.is_file() and out.with_suffix(".json").is_file()


def test_export_of_a_study_with_two_finished_runs_asks_for_one(trained, tmp_path, capsys):
    study_file, results, _ = trained
    study, runs = prepare(study_file, ["seeds=[0, 1]"])
    train_study(study, runs, results, device="cpu")
    with pytest.raises(SystemExit) as e:
        main(["export", "pre", "--out", str(tmp_path / "x.pt"), "--results", str(results)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: study 'pre' has 2 finished runs; name one by its id")
    assert not (tmp_path / "x.pt").exists()


def test_one_run_exported_under_two_names_is_one_set_of_weights(trained, tmp_path):
    # Before: the file name is inside torch's zip, so a.pt and b.pt had different SHA-256s
    # and a study starting from either gave different run ids for the same weights.
    _, results, d = trained
    a, b = tmp_path / "a.pt", tmp_path / "elsewhere" / "b.pt"
    for out in (a, b):
        main(["export", str(d), "--out", str(out), "--results", str(results)])
    assert file_sha256(a) != file_sha256(b)  # the bytes differ ...
    cards = [json.loads(p.with_suffix(".json").read_text()) for p in (a, b)]
    assert cards[0]["content_sha256"] == cards[1]["content_sha256"]  # ... the weights do not
    finetune = tmp_path / "ft.yaml"
    finetune.write_text(textwrap.dedent(STUDY).replace("name: pre", "name: ft").replace(
        "backbone: small_cnn}", "backbone: small_cnn, pretrained: WEIGHTS}"))
    ids = [[r.run_id for r in prepare(finetune, [f"model.pretrained={p}"])[1]] for p in (a, b)]
    assert ids[0] == ids[1]
    assert ids[0] != [r.run_id for r in prepare(finetune, ["model.pretrained=false"])[1]]

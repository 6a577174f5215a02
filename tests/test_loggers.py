"""Tracking sinks (TensorBoard, MLflow) and best-validation weights (best.pt).

The sinks are read back with their own readers (TensorBoard's event accumulator, MLflow's
client on the local store) and compared with metrics.jsonl, the source of truth. Tests of
a sink whose package is not installed are skipped (extras fusion_lab[tensorboard],
fusion_lab[mlflow]).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from fusion_lab import store as S
from fusion_lab.errors import ConfigError
from fusion_lab.maps.viz import load_trained
from fusion_lab.orchestrate.runner import train_study
from fusion_lab.plan.planning import prepare
from fusion_lab.training.train import train_run

TINY = Path(__file__).parent / "plugins" / "tiny_backbone.py"
STUDY = f"""
name: sinks
plugins: [{TINY}]
base:
  dataset:
    name: synthetic_fgvc
    val_fraction: 0.34
    options: {{num_classes: 3, train_per_class: 6, test_per_class: 3, image_size: 32}}
  model: {{backbone: tiny_cnn, width: 8, hidden: 8, preset: cn_cnn}}
  train: {{epochs: 3, batch_size: 6, image_size: 32, resize: 36, workers: 0,
           lr_backbone: 0.01, lr_new: 0.01}}
variants:
  - {{label: CN-CNN}}
seeds: [0]
"""


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "sinks.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


def trained(study_file: Path, results: Path, loggers: str) -> Path:
    study, runs = prepare(study_file, [f"train.loggers={loggers}"])
    out = train_study(study, runs, results, device="cpu")
    assert not out.failed
    return S.run_dir(results, study.name, runs[0].run_id)


def test_unknown_logger_is_one_line_with_the_valid_names(study_file):
    with pytest.raises(ConfigError) as e:
        prepare(study_file, ["train.loggers=[tensorbord]"])
    assert "unknown logger 'tensorbord'; valid: tensorboard, mlflow" in str(e.value)


def test_loggers_stay_out_of_the_run_id(study_file):
    _, plain = prepare(study_file)
    _, logged = prepare(study_file, ["train.loggers=[]"])
    ids = [r.run_id for r in plain]
    assert ids == [r.run_id for r in logged]
    pytest.importorskip("tensorboard")
    _, tb = prepare(study_file, ["train.loggers=[tensorboard]"])
    assert ids == [r.run_id for r in tb] and tb[0].config.train.loggers == ["tensorboard"]


def test_tensorboard_events_hold_every_epoch(study_file, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = trained(study_file, tmp_path / "results", "[tensorboard]")
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    rows = S.read_jsonl(run / S.METRICS_JSONL)
    for key in ("test_acc", "train_loss", "val_acc"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [1, 2, 3]
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert "test_heads/concat" in acc.Tags()["scalars"]


@pytest.mark.slow
def test_mlflow_run_in_a_local_store(study_file, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    run = trained(study_file, results, "[mlflow]")
    assert (results / "mlflow.db").is_file()  # the local store by default
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sinks")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.status == "FINISHED"
    assert found.data.tags["fusion_lab.run_id"] == run.name
    assert found.data.params["train.epochs"] == "3"
    rows = S.read_jsonl(run / S.METRICS_JSONL)
    history = client.get_metric_history(found.info.run_id, "test_acc")
    assert sorted((m.step, m.value) for m in history) == [
        (r["epoch"], pytest.approx(r["test_acc"])) for r in rows]
    # a killed and resumed run continues its MLflow run
    d = tmp_path / "again" / "sinks" / run.name
    d.mkdir(parents=True)
    (d / "config.json").write_text((run / "config.json").read_text())
    planned = prepare(study_file, ["train.loggers=[mlflow]"])[1][0]
    train_run(d, planned.config, planned.run_id, device="cpu", stop_after_epochs=1)
    train_run(d, planned.config, planned.run_id, device="cpu")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'again' / 'mlflow.db'}")
    (resumed,) = client.search_runs([client.get_experiment_by_name("sinks").experiment_id])
    assert resumed.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(resumed.info.run_id, "test_acc"))
    assert steps == [1, 2, 3]


def test_best_pt_holds_the_best_validation_epoch(study_file, tmp_path):
    run = trained(study_file, tmp_path / "results", "[]")
    rows = S.read_jsonl(run / S.METRICS_JSONL)
    vals = [r["val_acc"] for r in rows]
    epoch = vals.index(max(vals)) + 1  # chosen on validation accuracy, first best
    best = torch.load(run / "best.pt", weights_only=False)
    summary = json.loads((run / "summary.json").read_text())
    assert best["epoch"] == epoch == summary["best_val"]["epoch"]
    assert best["val_acc"] == max(vals)
    # the weights are that epoch's: a run of the same config stopped after it has them
    cfg = prepare(study_file)[1][0]
    again = tmp_path / "again"
    again.mkdir()
    train_run(again, cfg.config, cfg.run_id, device="cpu", stop_after_epochs=epoch)
    there = torch.load(again / "checkpoint.pt", weights_only=False)["model"]
    for k, v in best["model"].items():
        assert torch.equal(v, there[k]), k
    model, _, _ = load_trained(run, "best")
    assert all(torch.equal(p, best["model"][k]) for k, p in model.state_dict().items())
    from fusion_lab.maps.viz_score import score_run

    scores, lines = score_run(run, "best", limit=2)
    assert scores["weights"] == "best" and scores["epoch"] == epoch
    assert f"best-validation epoch's weights (epoch {epoch})" in lines[0]
    assert (run / "attention_best.json").is_file()


def test_no_validation_split_keeps_no_best_pt(study_file, tmp_path):
    study, runs = prepare(study_file, ["dataset.val_fraction=0.0", "train.epochs=1"])
    train_study(study, runs, tmp_path / "r", device="cpu")
    run = S.run_dir(tmp_path / "r", study.name, runs[0].run_id)
    assert (run / "checkpoint.pt").is_file() and not (run / "best.pt").exists()

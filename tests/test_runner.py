"""The study runner: idempotent reruns, resume, failures, claims and atomic results."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fusion_lab import store
from fusion_lab.cli import main
from fusion_lab.orchestrate.runner import train_study
from fusion_lab.plan.planning import prepare
from fusion_lab.training.train import train_run

TINY = Path(__file__).parent / "plugins" / "tiny_backbone.py"
STUDY = f"""
name: tiny
plugins: [{TINY}]
base:
  dataset:
    name: synthetic_fgvc
    options: {{num_classes: 3, train_per_class: 6, test_per_class: 3, image_size: 32}}
  model: {{backbone: tiny_cnn, width: 8, hidden: 8}}
  train: {{epochs: 2, batch_size: 6, image_size: 32, resize: 36, workers: 0,
           lr_backbone: 0.01, lr_new: 0.01}}
variants:
  - {{label: Baseline, model: {{preset: baseline}}}}
  - {{label: CN-CNN, model: {{preset: cn_cnn}}}}
seeds: [0]
baseline: Baseline
"""


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


def summaries(results):
    return {p.parent.name: json.loads(p.read_text())
            for p in Path(results).glob("tiny/*/summary.json")}


def test_run_stores_results_and_a_rerun_trains_nothing(study_file, tmp_path):
    results = tmp_path / "results"
    study, runs = prepare(study_file)
    out = train_study(study, runs, results, device="cpu")
    assert len(out.trained) == 2 and not out.failed
    done = summaries(results)
    assert set(done) == {r.run_id for r in runs}
    for r in runs:
        d = store.run_dir(results, study.name, r.run_id)
        s = done[r.run_id]
        assert s["status"] == "done" and s["epochs"] == 2 and s["test_size"] == 9
        assert 0 <= s["final"]["acc"] <= 100 and s["versions"]["torch"] == torch.__version__
        assert len(store.read_jsonl(d / "metrics.jsonl")) == 2
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["run_id"] == r.run_id and cfg["config"]["seed"] == 0
        assert not (d / "claim").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in results.glob("tiny/*/summary.json")}
    again = train_study(study, runs, results, device="cpu")
    assert again.trained == [] and len(again.skipped) == 2
    assert mtimes == {p: p.stat().st_mtime_ns for p in results.glob("tiny/*/summary.json")}
    # growing the study (one more seed) trains only the new runs
    study2, runs2 = prepare(study_file, ["seeds=[0, 1]"])
    grown = train_study(study2, runs2, results, device="cpu")
    assert sorted(r.seed for r in grown.trained) == [1, 1]
    plan = json.loads((results / "tiny" / "study.json").read_text())
    assert [len(row["run_ids"]) for row in plan["rows"]] == [2, 2]


def test_dry_run_prints_ids_and_statuses_and_trains_nothing(study_file, tmp_path, capsys):
    results = tmp_path / "results"
    study, runs = prepare(study_file)
    store.write_json(store.run_dir(results, study.name, runs[0].run_id) / "summary.json", {"status": "failed"})
    main(["run", str(study_file), "--results", str(results), "--dry-run"])  # returns: exit 0
    out = capsys.readouterr().out
    assert f"{runs[0].run_id}  failed" in out and f"{runs[1].run_id}  pending" in out
    assert not list(results.glob("tiny/*/metrics.jsonl"))


def test_resumed_run_equals_an_uninterrupted_one(study_file, tmp_path):
    study, runs = prepare(study_file)
    r = runs[1]  # cn_cnn: BN, ConvLSTM, attention, momentum all in the state
    whole, split = tmp_path / "whole", tmp_path / "split"
    for d in (whole, split):
        d.mkdir()
    a = train_run(whole, r.config, r.run_id, device="cpu")
    stopped = train_run(split, r.config, r.run_id, device="cpu", stop_after_epochs=1)
    assert stopped == {"stopped": True}
    assert len(store.read_jsonl(split / "metrics.jsonl")) == 1
    b = train_run(split, r.config, r.run_id, device="cpu")  # resumes at epoch 2
    assert len(store.read_jsonl(split / "metrics.jsonl")) == 2
    wa = torch.load(whole / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(split / "checkpoint.pt", weights_only=False)["model"]
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert a["final"] == b["final"]
    la, lb = store.read_jsonl(whole / "metrics.jsonl"), store.read_jsonl(split / "metrics.jsonl")
    assert [x["train_loss"] for x in la] == [x["train_loss"] for x in lb]


def test_a_run_killed_between_its_checkpoint_and_metrics_line_gets_the_line_back(
        study_file, tmp_path):
    study, runs = prepare(study_file)
    r, d = runs[0], tmp_path / "run"
    d.mkdir()
    train_run(d, r.config, r.run_id, device="cpu", stop_after_epochs=1)
    line = store.read_jsonl(d / "metrics.jsonl")
    (d / "metrics.jsonl").write_text("")  # SIGKILL after the checkpoint, before the line
    train_run(d, r.config, r.run_id, device="cpu")  # resumes at epoch 2
    rows = store.read_jsonl(d / "metrics.jsonl")
    assert [x["epoch"] for x in rows] == [1, 2]
    assert rows[0] == line[0]


def test_a_killed_run_with_a_stale_claim_resumes(study_file, tmp_path):
    results = tmp_path / "results"
    study, runs = prepare(study_file)
    d = store.run_dir(results, study.name, runs[0].run_id)
    d.mkdir(parents=True)
    train_run(d, runs[0].config, runs[0].run_id, device="cpu", stop_after_epochs=1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (d / "claim").write_text(json.dumps({"pid": int(dead), "host": os.uname().nodename}))
    assert store.run_status(d) == "pending"
    out = train_study(study, runs[:1], results, device="cpu")
    assert len(out.trained) == 1
    rows = store.read_jsonl(d / "metrics.jsonl")
    assert [x["epoch"] for x in rows] == [1, 2]


def test_a_failing_run_is_recorded_and_the_study_goes_on(study_file, tmp_path, capsys):
    results = tmp_path / "results"
    text = study_file.read_text().replace(
        "{label: Baseline, model: {preset: baseline}}",
        "{label: Baseline, model: {preset: baseline}, train: {lr_new: 1.0e+30, lr_backbone: 1.0e+30}}")
    study_file.write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["run", str(study_file), "--results", str(results), "--device", "cpu",
              "--progress", "off", "--no-table"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "1 run(s) failed" in err and "Baseline" in err and "DivergedError" in err
    by_label = {s["label"]: s for s in summaries(results).values()}
    assert by_label["Baseline"]["status"] == "failed"
    assert "lower the learning rates" in by_label["Baseline"]["error"]
    assert by_label["CN-CNN"]["status"] == "done"  # the study went on
    # a rerun does not retry it; --retry-failed does (and it fails again, honestly)
    study, runs = prepare(study_file)
    assert train_study(study, runs, results, device="cpu").trained == []
    retried = train_study(study, runs, results, device="cpu", retry_failed=True)
    assert len(retried.failed) == 1


def test_fail_fast_stops_at_the_first_failure(study_file, tmp_path):
    results = tmp_path / "results"
    text = study_file.read_text().replace(
        "{label: Baseline, model: {preset: baseline}}",
        "{label: Baseline, model: {preset: baseline}, train: {lr_new: 1.0e+30, lr_backbone: 1.0e+30}}")
    study_file.write_text(text)
    study, runs = prepare(study_file)
    out = train_study(study, runs, results, device="cpu", fail_fast=True)
    assert len(out.failed) == 1 and out.trained == []
    assert store.run_status(store.run_dir(results, study.name, runs[1].run_id)) == "pending"


def test_two_processes_never_train_the_same_run(study_file, tmp_path):
    results = tmp_path / "results"
    text = study_file.read_text().replace("seeds: [0]", "seeds: [0, 1]")
    study_file.write_text(text)
    cmd = [sys.executable, "-m", "fusion_lab", "run", str(study_file), "--results",
           str(results), "--device", "cpu", "--progress", "off", "--no-table"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    done = summaries(results)
    assert len(done) == 4 and all(s["status"] == "done" for s in done.values())
    for run_id in done:  # each run trained exactly once: one line per epoch, no repeats
        rows = store.read_jsonl(results / "tiny" / run_id / "metrics.jsonl")
        assert [x["epoch"] for x in rows] == [1, 2]


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    d = tmp_path / "run"
    live = {"pid": os.getppid(), "host": os.uname().nodename, "time": "x"}
    d.mkdir()
    (d / "claim").write_text(json.dumps(live))
    assert not store.try_claim(d)
    assert store.run_status(d) == "running"
    (d / "claim").write_text(json.dumps({**live, "pid": 2**22 + 12345}))  # no such process
    assert store.try_claim(d)
    assert json.loads((d / "claim").read_text())["pid"] == os.getpid()


def test_a_crash_while_writing_never_leaves_half_a_summary(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    store.write_json(path, {"status": "done", "final": {"acc": 50.0}})

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        store.write_json(path, {"status": "done", "final": {"acc": 99.0}, "pad": "x" * 100000})
    assert json.loads(path.read_text())["final"]["acc"] == 50.0
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_gpus_starts_one_worker_per_gpu_with_its_own_visible_device(study_file, tmp_path,
                                                                      monkeypatch):
    from fusion_lab.orchestrate import spawn

    started = []

    class FakeProc:
        def __init__(self, cmd, env):
            started.append((cmd, env["CUDA_VISIBLE_DEVICES"]))

        def wait(self):
            return 0

    monkeypatch.setattr(spawn.subprocess, "Popen", FakeProc)
    code = spawn.launch_workers(str(study_file), ["train.epochs=1"], tmp_path / "r",
                                 ["0", "3"], fail_fast=True, retry_failed=False)
    assert code == 0
    assert [gpu for _, gpu in started] == ["0", "3"]
    for cmd, _ in started:
        assert cmd[1:4] == ["-m", "fusion_lab", "run"] and "--device" in cmd
        assert cmd[cmd.index("--device") + 1] == "cuda"
        assert "--fail-fast" in cmd and cmd[cmd.index("--set") + 1] == "train.epochs=1"


def test_a_last_training_batch_of_one_image_does_not_crash(study_file, tmp_path):
    # 3 classes x 6 images = 18 training images; batch 17 leaves a last batch of one.
    study, runs = prepare(study_file, ["train.batch_size=17", "train.epochs=1"])
    out = train_study(study, runs, tmp_path / "results", device="cpu")
    assert len(out.trained) == 2 and not out.failed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_device_cuda_without_cuda_is_one_error_before_training(study_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(study_file), "--results", str(tmp_path / "r"), "--device", "cuda"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "Traceback" not in err
    assert not list((tmp_path / "r").glob("tiny/*/summary.json"))

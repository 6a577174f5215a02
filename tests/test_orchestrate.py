"""The orchestrator as a library call (run_study), launchers judged by their attributes,
the one "needs training" rule and the one device rule where runs train."""

import json
import textwrap

import pytest
from test_runner import STUDY

from fusion_lab import store
from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.orchestrate.launchers import Launcher, train_task
from fusion_lab.orchestrate.runner import run_dir
from fusion_lab.orchestrate.study_run import RunOptions, run_study, world_size
from fusion_lab.plan.planning import prepare

DIVERGES = ("{label: Baseline, model: {preset: baseline}}",
            "{label: Baseline, model: {preset: baseline}, "
            "train: {lr_new: 1.0e+30, lr_backbone: 1.0e+30}}")


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


def options(study_file, tmp_path, **kw):
    return RunOptions(study_file=study_file, results=tmp_path / "results", device="cpu",
                      progress="off", **kw)


def test_run_study_trains_and_reports_the_failed_runs_without_printing_a_table(
        study_file, tmp_path, capsys):
    study_file.write_text(study_file.read_text().replace(*DIVERGES))
    report = run_study(options(study_file, tmp_path))
    assert report.finished and not report.dry_run and report.main
    assert report.code == 1
    assert [(r.label, err.split(":")[0]) for r, err in report.failed] == [
        ("Baseline", "DivergedError")]
    assert {r.run_id for r in report.selected} == {r.run_id for r in report.runs}
    assert capsys.readouterr().out == ""  # the table is the CLI's
    statuses = {r.label: store.run_status(run_dir(tmp_path / "results", report.study, r))
                for r in report.runs}
    assert statuses == {"Baseline": "failed", "CN-CNN": "done"}
    again = run_study(options(study_file, tmp_path))  # a rerun trains nothing, still failed
    assert again.code == 1 and len(again.failed) == 1


def test_a_dry_run_plans_and_checks_but_writes_nothing(study_file, tmp_path):
    report = run_study(options(study_file, tmp_path, dry_run=True))
    assert report.dry_run and not report.finished and len(report.runs) == 2
    assert not (tmp_path / "results").exists()


def counting_study_json(monkeypatch):
    writes = []
    real = store.write_json

    def write_json(path, data):
        if str(path).endswith(store.STUDY_JSON):
            writes.append(path)
        return real(path, data)

    monkeypatch.setattr(store, "write_json", write_json)
    return writes


def test_study_json_is_written_once_per_run_of_a_study(study_file, tmp_path, monkeypatch):
    writes = counting_study_json(monkeypatch)
    run_study(options(study_file, tmp_path))
    assert writes == [tmp_path / "results" / "tiny" / store.STUDY_JSON]
    run_study(options(study_file, tmp_path))  # nothing to train: the plan is still written
    assert len(writes) == 2
    plan = json.loads(writes[0].read_text())
    assert sum(len(row["run_ids"]) for row in plan["rows"]) == 2


@pytest.fixture
def register():
    """Register a launcher for one test (the study's plugins stay loaded, unlike with
    isolated_registries, which would import tiny_backbone.py again)."""
    from fusion_lab.registries import LAUNCHERS

    names = []

    def add(name, cls):
        LAUNCHERS.register(name)(cls)
        names.append(name)

    yield add
    for name in names:
        LAUNCHERS._items.pop(name, None)
        LAUNCHERS._docs.pop(name, None)


def test_a_plugin_launcher_is_handled_by_its_attributes_not_its_name(
        study_file, tmp_path, register, monkeypatch):
    jobs = []

    class Queue(Launcher):
        """Submits and returns; each run's task trains on 2 processes."""

        waits = False
        processes_per_run = 2

        def launch(self, job):
            jobs.append(job)
            return 0

    register("fl_test_queue", Queue)
    writes = counting_study_json(monkeypatch)
    report = run_study(options(study_file, tmp_path, launcher="fl_test_queue"))
    assert not report.finished and report.code == 0 and report.failed == []
    assert writes == [tmp_path / "results" / "tiny" / store.STUDY_JSON]  # written for it too
    (job,) = jobs
    assert "train.world_size=2" in job.overrides  # the DDP runs' ids, from processes_per_run
    assert [r.config.train.world_size for r in job.pending] == [2, 2]
    assert {r.run_id for r in job.runs} == {r.run_id for r in
                                            prepare(study_file, ["train.world_size=2"])[1]}
    waited = run_study(options(study_file, tmp_path, launcher="fl_test_queue", wait=True))
    assert waited.finished and waited.code == 0  # asked to wait: its runs can be read
    with pytest.raises(FusionLabError, match="with the fl_test_queue launcher use "
                                             "--launcher-opt nproc=N"):
        run_study(options(study_file, tmp_path, launcher="fl_test_queue", nproc=2))
    with pytest.raises(FusionLabError, match="--gpus is the local launcher's option"):
        run_study(options(study_file, tmp_path, launcher="fl_test_queue", gpus="0"))


def test_a_plugin_launcher_that_waits_gets_its_failed_runs_reported(
        study_file, tmp_path, register):
    class Sync(Launcher):
        """Trains every pending run as a cluster task would, one after the other."""

        def launch(self, job):  # waits (the default): the runs have finished on return
            for r in job.pending:
                try:
                    train_task(str(job.study_file), job.overrides, str(job.results), r.run_id,
                               device=job.device)
                except FusionLabError:
                    pass  # recorded in the run's folder
            return 0

    register("fl_test_sync", Sync)
    # dataset.decode: gpu from a machine without CUDA (device cpu): refused in each task
    report = run_study(options(study_file, tmp_path, launcher="fl_test_sync",
                               overrides=["dataset.decode=gpu"]))
    assert report.finished and report.code == 1 and len(report.failed) == 2
    assert all("dataset.decode: gpu needs a CUDA device" in err for _, err in report.failed)


@pytest.mark.parametrize("status, retry_failed, train", [
    ("done", False, False), ("done", True, False),
    ("failed", False, False), ("failed", True, True),
    ("pending", False, True), ("pending", True, True),
    ("interrupted", False, True), ("interrupted", True, True),
    ("running", False, True), ("running", True, True),
])
def test_needs_training(status, retry_failed, train):
    assert store.needs_training(status, retry_failed) is train


def test_decode_gpu_without_cuda_is_refused_before_training_on_the_local_path(
        study_file, tmp_path):
    with pytest.raises(ConfigError) as e:
        run_study(options(study_file, tmp_path, overrides=["dataset.decode=gpu"]))
    assert str(e.value).count("\n") == 0
    assert "dataset.decode: gpu needs a CUDA device, and this run is on cpu" in str(e.value)
    assert not list((tmp_path / "results").rglob("summary.json"))
    assert not list((tmp_path / "results").rglob("metrics.jsonl"))


def test_decode_gpu_without_cuda_is_refused_and_recorded_by_a_cluster_task(
        study_file, tmp_path):
    results = tmp_path / "results"
    study, runs = prepare(study_file, ["dataset.decode=gpu"])
    with pytest.raises(ConfigError) as e:
        train_task(str(study_file), ["dataset.decode=gpu"], str(results), runs[0].run_id,
                   device="cpu")
    message = str(e.value)
    assert message.count("\n") == 0
    assert message == ("dataset.decode: gpu needs a CUDA device, and this run is on cpu; "
                       "use --device cuda or dataset.decode: cpu")
    d = run_dir(results, study, runs[0])
    summary = json.loads((d / "summary.json").read_text())  # recorded like any failure
    assert summary["status"] == "failed" and summary["error"] == f"ConfigError: {message}"
    assert summary["run_id"] == runs[0].run_id and summary["trained_by"]["pid"]
    assert (d / "error.log").read_text().strip() == f"ConfigError: {message}"
    assert not (d / "metrics.jsonl").exists() and not (d / "claim").exists()
    assert store.run_status(run_dir(results, study, runs[1])) == "pending"  # untouched


class _Here(Launcher):
    trains_here = True


class _Away(Launcher):
    processes_per_run = 3


@pytest.mark.parametrize("env, nproc, gpus, launcher, world", [
    (1, None, None, _Here(), 1),
    (1, 2, None, _Here(), 2),  # --nproc 2
    (4, None, None, _Here(), 4),  # one of torchrun's 4 processes
    (1, None, "0,1", _Here(), 1),
    (1, None, None, _Away(), 3),  # each task starts 3 processes per run
])
def test_world_size_is_decided_in_one_place(env, nproc, gpus, launcher, world):
    assert world_size(env, nproc, gpus, "x", launcher) == world


@pytest.mark.parametrize("env, nproc, gpus, launcher, says", [
    (2, 2, None, _Here(), "--nproc starts torchrun itself; inside torchrun leave it out"),
    (1, 2, None, _Away(), "--nproc and torchrun train on this machine, with the local "
                          "launcher; with the x launcher use --launcher-opt nproc=N"),
    (2, None, None, _Away(), "--nproc and torchrun train on this machine"),
    (1, 2, "0,1", _Here(), "--nproc trains on this machine: use it with the local launcher "
                           "and without --gpus"),
])
def test_world_size_refuses_what_cannot_be(env, nproc, gpus, launcher, says):
    with pytest.raises(FusionLabError) as e:
        world_size(env, nproc, gpus, "x", launcher)
    assert says in str(e.value)

"""Launchers: the registry kind, options and errors, and SLURM through submitit's local executor."""

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_run import run_cli
from test_runner import STUDY

from fusion_lab import store
from fusion_lab.cli import main
from fusion_lab.orchestrate.launchers import LaunchJob, make_launcher
from fusion_lab.orchestrate.runner import run_dir
from fusion_lab.plan.planning import prepare


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


def test_launchers_are_a_registry_kind(capsys):
    main(["list", "launchers"])
    out = capsys.readouterr().out
    for name in ("local", "slurm", "ray"):
        assert f"  {name} " in out


def test_bad_launcher_input_is_one_clear_line(study_file, tmp_path, capsys, monkeypatch):
    base = ["run", str(study_file), "--results", str(tmp_path / "r")]
    code, _, err = run_cli(base + ["--launcher", "slrum"], capsys)
    assert code == 2 and err.count("\n") == 1 and "did you mean 'slurm'" in err
    code, _, err = run_cli(base + ["--launcher", "slurm", "--launcher-opt", "partion=gpu"],
                           capsys)
    assert code == 2 and err.count("\n") == 1
    assert "unknown option(s) 'partion' for launcher 'slurm'" in err and "partition" in err
    code, _, err = run_cli(base + ["--launcher-opt", "gpu=0"], capsys)  # local: only gpus
    assert code == 2 and "valid options: gpus" in err
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    code, _, err = run_cli(base + ["--launcher", "slurm"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "needs submitit" in err and "pip install 'fusion_lab[slurm]'" in err
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, err = run_cli(base + ["--launcher", "ray"], capsys)
    assert code == 2 and err.count("\n") == 1 and "pip install 'fusion_lab[ray]'" in err
    assert not (tmp_path / "r").exists()  # nothing trained or submitted


def test_the_study_launcher_section_applies_unless_the_command_line_says_otherwise(
        study_file, tmp_path, capsys):
    from fusion_lab.orchestrate.launchers import choose
    from fusion_lab.plan.study import load_study

    study_file.write_text(study_file.read_text() + "launcher: {name: slurm, partition: a100}\n")
    study = load_study(study_file)
    name, launcher = choose(study, None, ["time=30"])
    assert name == "slurm" and launcher.partition == "a100" and launcher.time == 30
    name, launcher = choose(study, "local", [])  # the section's options are slurm's
    assert name == "local" and launcher.gpus is None


def local_slurm_job(study_file, results, overrides=(), **kw):
    study, runs = prepare(study_file, list(overrides))
    return LaunchJob(study_file=study_file.resolve(), overrides=list(overrides),
                     results=results.resolve(), study=study, runs=runs, pending=runs,
                     device="cpu", **kw)


def one_longer_run(study_file):
    """The study cut to one run of 4 epochs on 120 images: long enough to stop mid-run."""
    study_file.write_text(study_file.read_text().replace("epochs: 2", "epochs: 4").replace(
        "train_per_class: 6", "train_per_class: 40").replace(
        "  - {label: CN-CNN, model: {preset: cn_cnn}}\n", ""))


def test_slurm_job_array_on_the_local_executor_trains_every_run(study_file, tmp_path, capsys):
    results = tmp_path / "results"
    code, out, err = run_cli(["run", str(study_file), "--results", str(results), "--device",
                              "cpu", "--launcher", "slurm", "--launcher-opt", "cluster=local",
                              "--launcher-opt", "gpus=0", "--wait"], capsys)
    assert code == 0, err
    assert "submitted 2 task(s) of study tiny" in err
    assert "Baseline" in out and "CN-CNN" in out  # the table, after waiting
    study, runs = prepare(study_file)
    for r in runs:
        d = run_dir(results, study, r)
        assert json.loads((d / "summary.json").read_text())["status"] == "done"
        assert [x["epoch"] for x in store.read_jsonl(d / "metrics.jsonl")] == [1, 2]
        assert not (d / "queued.json").exists() and not (d / "claim").exists()


def test_a_slurm_task_stopped_by_the_time_limit_signal_is_requeued_and_resumes(
        study_file, tmp_path):
    results = tmp_path / "results"
    one_longer_run(study_file)
    job = local_slurm_job(study_file, results)
    assert len(job.pending) == 1
    d = run_dir(results, job.study, job.pending[0])
    launcher = make_launcher("slurm", {"cluster": "local", "gpus": 0, "time": 10})
    launcher.launch(job)
    deadline = time.time() + 120
    while not store.read_jsonl(d / "metrics.jsonl") and time.time() < deadline:
        time.sleep(0.05)
    first = json.loads((d / "claim").read_text())["pid"]
    os.kill(first, signal.SIGUSR2)  # what SLURM sends before the time limit (--signal)
    launcher.wait()
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "done", summary.get("error")
    assert summary["trained_by"]["pid"] != first  # a new process (the requeued task) finished
    assert [x["epoch"] for x in store.read_jsonl(d / "metrics.jsonl")] == [1, 2, 3, 4]


@pytest.mark.slow  # starting a local Ray instance: 7 s on an idle 2-core machine, 45 s on a busy one
def test_ray_on_a_local_instance_trains_each_run_once(study_file, tmp_path, capsys):
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    results = tmp_path / "results"
    before = signal.getsignal(signal.SIGTERM)
    code, out, err = run_cli(["run", str(study_file), "--results", str(results), "--device",
                              "cpu", "--launcher", "ray", "--launcher-opt", "gpus=0",
                              "--launcher-opt", "cpus=1", "--progress", "off"], capsys)
    assert code == 0, err
    # ray.init leaves its own SIGTERM handler behind; the launcher puts the earlier one back
    assert signal.getsignal(signal.SIGTERM) is before
    assert "started 2 Ray task(s)" in err and "CN-CNN" in out
    study, runs = prepare(study_file)
    for r in runs:
        d = run_dir(results, study, r)
        assert json.loads((d / "summary.json").read_text())["status"] == "done"
        assert [x["epoch"] for x in store.read_jsonl(d / "metrics.jsonl")] == [1, 2]


def test_slurm_options_pass_through_to_the_sbatch_script(study_file, tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")  # submitit looks for srun
    launcher = make_launcher("slurm", {
        "partition": "gpu", "account": "proj", "gpus": 2, "cpus": 12, "mem_gb": 48,
        "time": 90, "sbatch": {"qos": "high", "constraint": "a100"},
        "setup": ["module load cuda"], "signal_delay_s": 100})
    text = launcher.executor(local_slurm_job(study_file, tmp_path / "r")
                             )._make_submission_file_text("python -m task", "uid")
    for line in ("--partition=gpu", "--account=proj", "--gpus-per-node=2",
                 "--cpus-per-task=12", "--mem=48GB", "--time=90", "--signal=USR2@100",
                 "--qos=high", "--constraint=a100", "module load cuda"):
        assert line in text, line


def fake_slurm(tmp_path, monkeypatch, **scripts):
    """SLURM commands on PATH that print what a test says (mock: no scheduler runs)."""
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    for name, body in {"srun": "", **scripts}.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")


def test_dry_run_shows_stale_claims_and_queued_tasks(study_file, tmp_path, capsys,
                                                     monkeypatch):
    fake_slurm(tmp_path, monkeypatch, squeue="echo '4242_1|PENDING'")
    results = tmp_path / "results"
    study, runs = prepare(study_file)
    stale, queued = (run_dir(results, study, r) for r in runs)
    stale.mkdir(parents=True)
    (stale / "claim").write_text(json.dumps({"pid": 1, "host": "node-7", "token": "t",
                                             "ts": time.time() - 3600, "lease_s": 300.0}))
    store.write_json(queued / "queued.json", {"launcher": "slurm", "job_id": "4242_1",
                                          "submitted": store.now()})
    main(["run", str(study_file), "--results", str(results), "--dry-run"])
    out = capsys.readouterr().out
    assert f"{runs[0].run_id}  stale" in out and "(stale claim: node-7 pid 1" in out
    assert f"{runs[1].run_id}  queued" in out and "slurm job 4242_1" in out


def test_dry_run_shows_a_job_cancelled_while_pending_as_not_queued_mock_squeue(
        study_file, tmp_path, capsys, monkeypatch):
    fake_slurm(tmp_path, monkeypatch, squeue="true",
               sacct="echo '4242_[0-1]|CANCELLED by 0'")
    results = tmp_path / "results"
    study, runs = prepare(study_file)
    for i, r in enumerate(runs):
        store.write_json(run_dir(results, study, r) / "queued.json",
                         {"launcher": "slurm", "job_id": f"4242_{i}", "submitted": store.now()})
    main(["run", str(study_file), "--results", str(results), "--dry-run"])
    out = capsys.readouterr().out
    assert "queued" not in out and "2 pending" in out
    assert "(slurm job 4242_1 ended CANCELLED before the run started)" in out


def test_a_request_sbatch_refuses_is_one_error_line_mock_sbatch(study_file, tmp_path, capsys,
                                                                monkeypatch):
    fake_slurm(tmp_path, monkeypatch, sbatch="echo 'sbatch: error: Batch job submission "
               "failed: More processors requested than permitted' >&2; exit 1")
    code, out, err = run_cli(["run", str(study_file), "--results", str(tmp_path / "r"),
                              "--launcher", "slurm", "--launcher-opt", "cpus=999"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("error: SLURM refused the job array of study tiny: Batch job "
                          "submission failed: More processors requested than permitted")


def test_submissions_have_folders_of_their_own(study_file, tmp_path):
    """submitit names its files by job id alone: two submissions never share a folder."""
    launcher = make_launcher("slurm", {"cluster": "local", "gpus": 0})
    job = local_slurm_job(study_file, tmp_path / "r")
    launcher.executor(job)
    first = launcher.submission
    launcher.executor(job)
    assert first != launcher.submission and first.parent == launcher.submission.parent
    assert first.parent == (tmp_path / "r" / "tiny" / ".submitit").resolve()


@pytest.mark.slow  # starting a local Ray instance
def test_ray_refuses_a_request_no_node_can_meet(study_file, tmp_path, capsys):
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    code, out, err = run_cli(["run", str(study_file), "--results", str(tmp_path / "r"),
                              "--device", "cpu", "--launcher", "ray", "--launcher-opt",
                              "gpus=0", "--launcher-opt", "cpus=4096"], capsys)
    assert code == 2 and out == ""
    assert err.splitlines()[-1].startswith("error: no node of the local Ray instance can run "
                                           "a task asking for 4096 CPUs and 0 GPUs")


def _parent(pid: int) -> int:
    """The parent of process ``pid`` (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.slow  # about 30 s here: two torchrun starts of two processes, inside submitit jobs
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="finds the task through /proc")
def test_a_ddp_slurm_task_stopped_by_the_time_limit_signal_is_requeued_and_resumes(
        study_file, tmp_path):
    results = tmp_path / "results"
    one_longer_run(study_file)
    # slow batches (0.3 s each): the signal must find the run mid-way however fast the
    # machine (a tiny run could finish while the task handles the signal)
    slow = Path(__file__).parent / "plugins" / "slow_backbone.py"
    study_file.write_text(study_file.read_text().replace(
        "backbone: tiny_cnn", "backbone: slow_tiny_cnn").replace("plugins: [", f"plugins: [{slow}, "))
    job = local_slurm_job(study_file, results, ["train.world_size=2"])
    d = run_dir(results, job.study, job.pending[0])
    launcher = make_launcher("slurm", {"cluster": "local", "gpus": 0, "time": 10, "nproc": 2})
    launcher.launch(job)
    deadline = time.time() + 180
    while not store.read_jsonl(d / "metrics.jsonl") and time.time() < deadline:
        time.sleep(0.05)
    rank0 = json.loads((d / "claim").read_text())["pid"]
    task = _parent(_parent(rank0))  # process 0 <- torchrun <- the submitit task
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before the time limit (--signal)
    launcher.wait()
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "done", summary.get("error")
    assert summary["world_size"] == 2 and summary["batch_per_process"] == 3
    assert summary["trained_by"]["pid"] != rank0  # the requeued task's processes finished
    assert [x["epoch"] for x in store.read_jsonl(d / "metrics.jsonl")] == [1, 2, 3, 4]
    assert not (d / "claim").exists()


@pytest.mark.slow  # about 20 s here: a local Ray instance whose task starts torchrun
def test_ray_nproc_2_trains_the_run_with_ddp_in_its_task(study_file, tmp_path, capsys):
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    study_file.write_text(study_file.read_text().replace(
        "  - {label: CN-CNN, model: {preset: cn_cnn}}\n", ""))
    results = tmp_path / "results"
    code, out, err = run_cli(["run", str(study_file), "--results", str(results), "--device",
                              "cpu", "--launcher", "ray", "--launcher-opt", "gpus=0",
                              "--launcher-opt", "cpus=1", "--launcher-opt", "nproc=2",
                              "--progress", "off", "--no-table"], capsys)
    assert code == 0, err
    study, runs = prepare(study_file, ["train.world_size=2"])
    d = run_dir(results, study, runs[0])
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "done" and summary["world_size"] == 2, summary.get("error")
    assert [x["epoch"] for x in store.read_jsonl(d / "metrics.jsonl")] == [1, 2]

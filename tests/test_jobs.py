"""The job pool (issue 22, item 5): ``fusionlab run --jobs N`` trains N runs at once, on the
CPU each with its own fixed ``train.threads`` (part of the run's id only when set), or N per
GPU with ``--gpus``; the placement is tested here on the CPU."""

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
from cli_run import run_cli
from test_runner import STUDY

from fusion_lab import config, store
from fusion_lab.orchestrate import spawn
from fusion_lab.orchestrate.launchers import choose, make_launcher
from fusion_lab.orchestrate.launchers.local import NEEDS_THREADS
from fusion_lab.orchestrate.runner import train_study
from fusion_lab.orchestrate.study_run import RunOptions, run_study
from fusion_lab.plan.planning import prepare
from fusion_lab.plan.study import load_study

SLOW = Path(__file__).parent / "plugins" / "slow_backbone.py"


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


@pytest.fixture
def forwarded(monkeypatch):
    """spawn.run_forwarding replaced: the (command, environment) of every worker it was
    asked to start, none started."""
    started = []

    def fake(cmds):
        started.extend(cmds)
        return 0

    monkeypatch.setattr(spawn, "run_forwarding", fake)
    return started


def test_placement_is_jobs_workers_on_the_cpu_or_jobs_per_gpu_spread_over_the_gpus():
    assert spawn.placement(None, 3) == [(None, 0), (None, 1), (None, 2)]
    assert spawn.placement(["0", "1"], 2) == [("0", 0), ("1", 0), ("0", 1), ("1", 1)]
    assert spawn.placement(["0"], 4) == [("0", 0), ("0", 1), ("0", 2), ("0", 3)]
    assert spawn.placement(["0", "1", "2"]) == [("0", 0), ("1", 0), ("2", 0)]  # --gpus alone
    four = spawn.placement(["3", "5"], 2)
    assert sorted(g for g, _ in four) == ["3", "3", "5", "5"]  # two per GPU


def test_workers_get_their_gpu_and_never_start_workers_of_their_own(forwarded, tmp_path):
    spawn.launch_workers("s.yaml", ["train.threads=1"], tmp_path, ["0", "1"], False, False,
                         jobs=2)
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in forwarded] == ["0", "1", "0", "1"]
    for cmd, env in forwarded:
        assert env[spawn.WORKER_ENV] == "1" and "--jobs" not in cmd and "--gpus" not in cmd
        assert cmd[cmd.index("--device") + 1] == "cuda" and "train.threads=1" in cmd
    forwarded.clear()
    spawn.launch_workers("s.yaml", [], tmp_path, None, False, False, device="cpu", jobs=3)
    assert len(forwarded) == 3
    for cmd, env in forwarded:  # the CPU pool leaves the GPUs as they were
        assert env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
        assert cmd[cmd.index("--device") + 1] == "cpu"


def test_gpus_and_jobs_through_the_command_line_pack_two_workers_on_each_gpu(
        study_file, tmp_path, capsys, forwarded):
    study_file.write_text(study_file.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    code, _, err = run_cli(["run", str(study_file), "--results", str(tmp_path / "r"),
                            "--gpus", "0,1", "--jobs", "2", "--no-table"], capsys)
    assert code == 0, err
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in forwarded] == ["0", "1", "0", "1"]
    assert "worker on GPU 1 (slot 2 of 2): started" in err  # no train.threads needed on GPUs
    forwarded.clear()  # more slots than runs to train: one worker per run
    code, _, err = run_cli(["run", str(study_file), "--results", str(tmp_path / "r"),
                            "--jobs", "8", "--set", "train.threads=1", "--no-table",
                            "--only", "Baseline"], capsys)
    assert code == 0 and len(forwarded) == 2 and "worker 2 of 2 (device auto)" in err


def test_threads_enter_the_run_id_only_when_set(study_file):
    _, plain = prepare(study_file)
    _, unset = prepare(study_file, ["train.threads=null"])
    _, one = prepare(study_file, ["train.threads=1"])
    _, two = prepare(study_file, ["train.threads=2"])
    assert [r.run_id for r in plain] == [r.run_id for r in unset]
    assert len({r.run_id for r in plain + one + two}) == 3 * len(plain)
    assert "threads" not in config.result_dict(plain[0].config)["train"]
    assert config.result_dict(one[0].config)["train"]["threads"] == 1
    with pytest.raises(Exception, match="train.threads must be >= 1"):
        prepare(study_file, ["train.threads=0"])


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_run_trains_with_its_threads_and_records_them(study_file, tmp_path, restore_threads):
    default = torch.get_num_threads()  # conftest's 1
    devices = {}
    for n in (2, 1, None):
        study, runs = prepare(study_file, ["train.epochs=1", f"train.threads={n or 'null'}"])
        train_study(study, runs[:1], tmp_path / str(n), device="cpu")
        summary = json.loads((tmp_path / str(n) / "tiny" / runs[0].run_id /
                              "summary.json").read_text())
        devices[n] = summary["device"]
    assert devices == {2: "cpu (2 threads)", 1: "cpu (1 threads)",
                       None: f"cpu ({default} threads)"}  # None: the count from before


def test_jobs_on_the_cpu_without_threads_is_refused_in_one_line(study_file, tmp_path, capsys):
    results = tmp_path / "r"
    code, _, err = run_cli(["run", str(study_file), "--results", str(results), "--device",
                            "cpu", "--jobs", "2"], capsys)
    assert code == 2 and err == f"error: {NEEDS_THREADS}\n"
    assert not results.exists()
    code, _, err = run_cli(["run", str(study_file), "--results", str(results), "--jobs", "2",
                            "--set", "train.threads=1", "--nproc", "2"], capsys)
    assert code == 2 and err.count("\n") == 1 and "leave out --nproc" in err
    code, _, err = run_cli(["run", str(study_file), "--results", str(results),
                            "--launcher-opt", "jobs=0"], capsys)
    assert code == 2 and err == "error: launcher option jobs must be a whole number >= 1, got 0\n"
    assert not results.exists()


@pytest.mark.parametrize("launcher", ["slurm", "ray"])
def test_jobs_with_a_launcher_that_trains_elsewhere_is_one_line(study_file, tmp_path, capsys,
                                                                launcher):
    code, _, err = run_cli(["run", str(study_file), "--results", str(tmp_path / "r"),
                            "--launcher", launcher, "--jobs", "2"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --jobs is the local launcher's option")
    assert not (tmp_path / "r").exists()


def test_more_threads_than_cores_is_one_warning(study_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    code, _, err = run_cli(["run", str(study_file), "--results", str(tmp_path / "r"),
                            "--jobs", "2", "--set", "train.threads=2", "--dry-run"], capsys)
    assert code == 0
    assert "warning: 2 workers x train.threads 2 = 4 threads on 2 cores" in err
    code, _, err = run_cli(["run", str(study_file), "--results", str(tmp_path / "r"),
                            "--jobs", "2", "--set", "train.threads=1", "--dry-run"], capsys)
    assert code == 0 and "warning" not in err


def test_the_study_can_ask_for_jobs_and_a_worker_never_starts_a_pool(study_file, monkeypatch):
    study_file.write_text(study_file.read_text() + "launcher: {name: local, jobs: 2}\n")
    _, launcher = choose(load_study(study_file), None, [])
    assert launcher.jobs == 2
    monkeypatch.setenv(spawn.WORKER_ENV, "1")  # in a worker: trains in its own process
    launcher = make_launcher("local", {"jobs": 2, "gpus": "0,1"})
    assert launcher.jobs == 1 and launcher.gpus is None


def test_a_tuned_study_launches_each_phase_on_the_pool(tmp_path, forwarded, capsys):
    from test_tuning import write_study

    study = write_study(tmp_path, trials=2)
    results = tmp_path / "results"
    with pytest.raises(Exception, match="--jobs needs a fixed thread count"):
        run_study(RunOptions(study, results=results, device="cpu", jobs=2, dry_run=True))
    report = run_study(RunOptions(study, results=results, device="cpu", jobs=2,
                                  overrides=["train.threads=1"], progress="off"))
    assert report.code == 0 and forwarded  # the trials' phase went to the pool
    assert len(forwarded) % 2 == 0 and all("train.threads=1" in c for c, _ in forwarded)
    assert all(c[c.index("--device") + 1] == "cpu" for c, _ in forwarded)


RUNS = "tiny/tags/scratch"  # --set train.threads=1 changes the study's runs: a scratch tag


def summaries(results):
    return {p.parent.name: json.loads(p.read_text())
            for p in Path(results).glob(f"{RUNS}/*/summary.json")}


def metrics(results, run_id):
    drop = {"epoch_s", "images_per_s"}  # times, not results
    return [{k: v for k, v in row.items() if k not in drop}
            for row in store.read_jsonl(Path(results) / RUNS / run_id / "metrics.jsonl")]


@pytest.mark.slow  # about 30 s here: two worker processes, then the same runs in one
def test_two_jobs_train_every_run_once_in_two_workers_bit_identical_to_one_job(
        study_file, tmp_path, capsys, restore_threads):
    study_file.write_text(study_file.read_text().replace(
        "backbone: tiny_cnn", "backbone: slow_tiny_cnn").replace(
        "plugins: [", f"plugins: [{SLOW}, ").replace("seeds: [0]", "seeds: [0, 1]"))
    pool, one = tmp_path / "pool", tmp_path / "one"
    args = ["run", str(study_file), "--device", "cpu", "--set", "train.threads=1",
            "--no-table", "--progress", "off"]
    code, _, err = run_cli(args + ["--results", str(pool), "--jobs", "2"], capsys)
    assert code == 0, err
    assert "worker 2 of 2 (device cpu): started" in err
    code, _, err = run_cli(args + ["--results", str(one)], capsys)
    assert code == 0, err
    a, b = summaries(pool), summaries(one)
    assert len(a) == 4 and set(a) == set(b)
    assert all(s["status"] == "done" and s["device"] == "cpu (1 threads)" for s in a.values())
    workers = {s["trained_by"]["pid"] for s in a.values()}
    assert len(workers) == 2 and os.getpid() not in workers  # two worker processes
    for run_id in a:  # each run's epochs once, and the same numbers to the bit
        assert [row["epoch"] for row in metrics(pool, run_id)] == [1, 2]
        assert metrics(pool, run_id) == metrics(one, run_id)
        assert a[run_id]["final"] == b[run_id]["final"]

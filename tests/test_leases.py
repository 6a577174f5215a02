"""Leases: claims from other hosts, heartbeats, lost claims, SIGTERM -> interrupted -> resume."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_runner import STUDY

from fusion_lab import store
from fusion_lab.cli import main
from fusion_lab.orchestrate.runner import run_dir, train_study
from fusion_lab.plan.planning import prepare
from fusion_lab.store.lease import Lease, RunInterrupted, deferred, interrupts


def foreign_claim(d: Path, age_s: float, lease_s: float, beat_age_s: float | None = None):
    """A claim made on another host ``age_s`` ago, optionally with a heartbeat file."""
    d.mkdir(parents=True, exist_ok=True)
    claim = {"pid": 1, "host": "node-b-" + socket.gethostname(), "ts": time.time() - age_s,
             "token": "b" * 32, "lease_s": lease_s}
    (d / "claim").write_text(json.dumps(claim))
    if beat_age_s is not None:
        store.write_json(store.beat_path(d, "b" * 32), {"ts": time.time() - beat_age_s})


def test_claim_from_another_host_is_respected_while_its_heartbeat_is_fresh(tmp_path):
    d = tmp_path / "run"
    foreign_claim(d, age_s=5, lease_s=2)  # 5 s old, lease 2 s, skew allowance 60 s
    assert store.run_status(d) == store.RUNNING and store.try_claim(d) is None
    foreign_claim(d, age_s=3600, lease_s=2, beat_age_s=1)  # old claim, fresh heartbeat
    assert store.run_status(d) == store.RUNNING and store.try_claim(d) is None
    assert not store.claim_is_live(store.read_claim(d), skew_s=0, now=time.time() + 5)


def test_claim_from_another_host_with_an_old_heartbeat_is_taken_over(tmp_path):
    d = tmp_path / "run"
    foreign_claim(d, age_s=3600, lease_s=2, beat_age_s=120)  # beat older than 2 s + 60 s
    assert store.run_status(d) == store.PENDING
    token = store.try_claim(d)
    assert token and store.owns_claim(d, token)
    assert not store.beat_path(d, "b" * 32).exists()  # the old owner's heartbeat is cleared
    # a claim written before leases existed, on another host: judged by its start time
    (d / "claim").write_text(json.dumps({"pid": 1, "host": "old-node", "time": store.now()}))
    assert store.run_status(d) == store.RUNNING
    (d / "claim").write_text(json.dumps({"pid": 1, "host": "old-node",
                                         "time": "2020-01-01T00:00:00+00:00"}))
    assert store.run_status(d) == store.PENDING  # was "running" forever before leases


def test_the_heartbeat_keeps_a_short_lease_alive_and_stops_when_the_claim_is_lost(tmp_path):
    d = tmp_path / "run"
    token = store.try_claim(d, lease_s=1.0)
    with Lease(d, token, interval_s=0.1) as lease:
        time.sleep(2.0)  # well past the lease: only the heartbeat keeps it
        assert store.claim_is_live(store.read_claim(d), skew_s=0)
        # another process takes the claim over (as if this one had been paused)
        (d / "claim").write_text(json.dumps({"pid": 1, "host": "other", "token": "x" * 32,
                                             "ts": time.time(), "lease_s": 300.0}))
        deadline = time.time() + 10  # the next heartbeat notices (0.1 s; more on a busy box)
        while not lease.lost and time.time() < deadline:
            time.sleep(0.05)
        assert lease.lost
        with pytest.raises(store.ClaimLost, match="taken over by other"):
            lease.check()
    store.release_claim(d, token)  # never removes the new owner's claim
    assert json.loads((d / "claim").read_text())["token"] == "x" * 32


class Quiet:
    def __init__(self, on_epoch=None):
        self.on_epoch = on_epoch

    def start_study(self, *a): ...
    def start_run(self, *a): ...
    def start_epoch(self, *a): ...
    def batch(self, *a): ...
    def end_run(self, *a): ...

    def end_epoch(self, record):
        if self.on_epoch:
            self.on_epoch(record)


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


def test_a_process_that_lost_its_claim_stops_without_writing(study_file, tmp_path):
    results = tmp_path / "results"
    study, runs = prepare(study_file)
    d = run_dir(results, study, runs[0])
    new_owner = {"pid": 1, "host": "node-b", "token": "n" * 32, "ts": time.time(),
                 "lease_s": 300.0}

    def taken_over(record):  # after epoch 1, another node takes the run over
        (d / "claim").write_text(json.dumps(new_owner))

    out = train_study(study, runs[:1], results, device="cpu", progress=Quiet(taken_over))
    assert out.trained == [] and out.skipped == [(runs[0], "lost")]
    assert [r["epoch"] for r in store.read_jsonl(d / "metrics.jsonl")] == [1]
    assert not (d / "summary.json").exists()
    assert json.loads((d / "claim").read_text()) == new_owner


def test_a_signal_inside_a_deferred_block_waits_for_its_end():
    before = signal.getsignal(signal.SIGTERM)
    done = []
    with pytest.raises(RunInterrupted, match="SIGTERM"):
        with interrupts():
            with deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                done.append("write finished")
    assert done == ["write finished"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler from before is back


def test_sigterm_mid_epoch_records_interrupted_and_a_rerun_resumes(study_file, tmp_path,
                                                                    capsys):
    results = tmp_path / "results"
    text = study_file.read_text().replace("epochs: 2", "epochs: 4").replace(
        "train_per_class: 6", "train_per_class: 40")
    study_file.write_text(text.replace("seeds: [0]", "seeds: [0]\n").replace(
        "  - {label: CN-CNN, model: {preset: cn_cnn}}\n", ""))
    study, runs = prepare(study_file)
    assert len(runs) == 1
    d = run_dir(results, study, runs[0])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fusion_lab", "run", str(study_file),
                             "--results", str(results), "--device", "cpu", "--progress",
                             "off", "--no-table"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not store.read_jsonl(d / "metrics.jsonl") and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # during epoch 2
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in err
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["error"] == "interrupted by SIGTERM"
    done = [r["epoch"] for r in store.read_jsonl(d / "metrics.jsonl")]
    assert 1 <= len(done) < 4 and not (d / "claim").exists()
    assert store.run_status(d) == store.INTERRUPTED
    main(["run", str(study_file), "--results", str(results), "--dry-run"])
    assert f"{runs[0].run_id}  interrupted" in capsys.readouterr().out
    out = train_study(study, runs, results, device="cpu")
    assert len(out.trained) == 1
    assert [r["epoch"] for r in store.read_jsonl(d / "metrics.jsonl")] == [1, 2, 3, 4]
    assert json.loads((d / "summary.json").read_text())["status"] == "done"


def test_sigterm_to_the_gpus_parent_reaches_its_workers(study_file, tmp_path):
    import threading

    from fusion_lab.orchestrate.spawn import launch_workers

    results = tmp_path / "results"
    study_file.write_text(study_file.read_text().replace("epochs: 2", "epochs: 4").replace(
        "train_per_class: 6", "train_per_class: 40").replace(
        "  - {label: CN-CNN, model: {preset: cn_cnn}}\n", ""))
    study, runs = prepare(study_file)
    d = run_dir(results, study, runs[0])

    def stop_after_epoch_1():
        deadline = time.time() + 120
        while not store.read_jsonl(d / "metrics.jsonl") and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # to the parent (this process)

    threading.Thread(target=stop_after_epoch_1, daemon=True).start()
    code = launch_workers(str(study_file), [], results, ["0"], False, False, device="cpu")
    assert code == 143
    assert json.loads((d / "summary.json").read_text())["status"] == "interrupted"
    assert not (d / "claim").exists()

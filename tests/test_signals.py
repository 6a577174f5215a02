"""A terminal's Ctrl-C (SIGINT to the whole process group) while loader workers run."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from test_runner import STUDY

from fusion_lab import store
from fusion_lab.orchestrate.runner import run_dir
from fusion_lab.plan.planning import prepare


def test_ctrl_c_with_loader_workers_records_interrupted_and_stops_the_study(tmp_path):
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(textwrap.dedent(STUDY).replace("epochs: 2", "epochs: 6").replace(
        "train_per_class: 6", "train_per_class: 40").replace("workers: 0", "workers: 2"))
    results = tmp_path / "results"
    study, runs = prepare(study_file)
    first = run_dir(results, study, runs[0])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # its own process group, as a shell gives a foreground job: Ctrl-C reaches every process
    proc = subprocess.Popen([sys.executable, "-m", "fusion_lab", "run", str(study_file),
                             "--results", str(results), "--device", "cpu", "--progress",
                             "off", "--no-table"], env=env, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while not store.read_jsonl(first / "metrics.jsonl") and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)  # the parent and its loader workers alike
    _, err = proc.communicate(timeout=60)
    summary = json.loads((first / "summary.json").read_text())
    assert summary["status"] == "interrupted", summary
    assert proc.returncode == 130, err
    # one line, no worker tracebacks; the study stopped: the second run never started
    assert "Traceback" not in err and "DataLoader worker" not in err, err[-3000:]
    assert len([line for line in err.splitlines() if line.strip()]) <= 3, err[-3000:]
    assert not run_dir(results, study, runs[1]).exists()


def test_an_fd_sharer_connection_error_prints_nothing_other_errors_still_do(
        monkeypatch, capsys):
    """Ctrl-C while a loader worker receives a batch's file descriptor: multiprocessing's
    resource_sharer thread reported the dropped connection through sys.excepthook (1 in 8
    runs of the Ctrl-C test above printed that traceback). Connection errors raised inside
    that module are left out; anything else still reaches the earlier hook."""
    from fusion_lab.data.loading import quiet_fd_sharer

    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    quiet_fd_sharer()
    quiet_fd_sharer()  # idempotent: one wrapper
    assert sys.excepthook.quiet_fd_sharer

    def raised(code: str, filename: str) -> tuple:
        try:
            exec(compile(code, filename, "exec"), {})
        except BaseException:
            return sys.exc_info()
        raise AssertionError("nothing raised")

    sharer = "/usr/lib/python3/multiprocessing/resource_sharer.py"
    sys.excepthook(*raised("raise ConnectionResetError(104, 'reset')", sharer))
    sys.excepthook(*raised("raise EOFError()", sharer))
    assert capsys.readouterr().err == ""
    sys.excepthook(*raised("raise ValueError('a real bug')", sharer))
    sys.excepthook(*raised("raise ConnectionResetError(104, 'elsewhere')", "/x/mine.py"))
    err = capsys.readouterr().err
    assert "ValueError: a real bug" in err and "ConnectionResetError" in err

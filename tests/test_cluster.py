"""The slurm and ray launchers against real engines (marker ``cluster``).

SLURM: the cluster that answers ``sinfo``, else a one-node cluster started (and at the end
stopped, exactly what was started) by ``scripts/slurm_local.sh`` (root and apt-get);
without either these tests skip with one line. Ray: a ``ray start --head`` process of our
own, stopped by its process group (never ``ray stop``, which ends every Ray process here).

SLURM holds a requeued job for 2 minutes (BeginTime); ``released`` lets our requeued jobs
start at once, as an administrator may (``scontrol update StartTime=now``). The time-limit
job is submitted by the first test and checked by the last, so its minutes overlap the rest.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from cli_run import run_cli
from test_launchers import one_longer_run
from test_runner import STUDY

from fusion_lab import store
from fusion_lab.orchestrate.launchers import LaunchJob, make_launcher
from fusion_lab.orchestrate.runner import run_dir
from fusion_lab.plan.planning import prepare

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[1]
SLURM_LOCAL = ROOT / "scripts" / "slurm_local.sh"
CPU = ["--device", "cpu", "--launcher-opt", "gpus=0", "--launcher-opt", "cpus=1"]


def _sh(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _sinfo_answers() -> bool:
    try:
        return shutil.which("sinfo") is not None and _sh("sinfo", "-h", timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def slurm():
    """A SLURM cluster: the one that answers, else one that slurm_local.sh starts."""
    if _sinfo_answers():
        yield
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no SLURM cluster answers and one cannot be installed here "
                    "(scripts/slurm_local.sh needs root and apt-get)")
    res = subprocess.run([str(SLURM_LOCAL), "start"], capture_output=True, text=True,
                         timeout=1200)
    if res.returncode != 0:
        said = (res.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"could not start a SLURM cluster with scripts/slurm_local.sh: {said}")
    # the clients (sbatch, squeue, sacct; submitit's calls) read the started cluster's
    # configuration even where /etc/slurm/slurm.conf is a system installation's
    base = Path(os.environ.get("FUSIONLAB_SLURM_BASE", "/tmp/fusionlab-slurm"))
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(base / "etc" / "slurm.conf")
    try:
        yield
    finally:
        subprocess.run([str(SLURM_LOCAL), "stop"], capture_output=True, timeout=300)
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


class Releaser:
    """Lets our requeued jobs start at once instead of after SLURM's 2-minute hold."""

    def __init__(self):
        self.ids: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            out = _sh("squeue", "-h", "-r", "-o", "%i|%T|%r").stdout
            for line in out.splitlines():
                jid, state, reason = (line.split("|") + ["", ""])[:3]
                if jid in self.ids and state == "PENDING" and reason == "BeginTime":
                    _sh("scontrol", "update", f"JobId={jid}", "StartTime=now")


@pytest.fixture(scope="module")
def released(slurm):
    r = Releaser()
    yield r
    r.stop.set()
    r.thread.join(5)


def study(path: Path, text: str = STUDY) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def submit(study_file: Path, results: Path, released: Releaser, release: bool = True, **opts):
    """The slurm launcher's job array for the study's runs (not waiting); ``release``: its
    tasks start at once when requeued."""
    st, runs = prepare(study_file)
    job = LaunchJob(study_file=study_file.resolve(), overrides=[], results=results.resolve(),
                    study=st, runs=runs, pending=runs, device="cpu")
    launcher = make_launcher("slurm", {"gpus": 0, "cpus": 1, **opts})
    launcher.launch(job)
    if release:
        released.ids.update(str(j.job_id) for j in launcher.jobs)
    return launcher, [run_dir(results, st, r) for r in runs]


def wait_for(what: str, check, timeout_s: float = 180.0, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def epochs(d: Path) -> list[int]:
    return [x["epoch"] for x in store.read_jsonl(d / store.METRICS_JSONL)]


def claim_pid(d: Path) -> int | None:
    """The pid holding the run's claim once an epoch is recorded (None before or after)."""
    try:
        return json.loads((d / "claim").read_text())["pid"] if epochs(d) else None
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def assert_done_once(d: Path, n: int) -> dict:
    summary = json.loads((d / store.SUMMARY_JSON).read_text())
    assert summary["status"] == "done", summary.get("error")
    assert epochs(d) == list(range(1, n + 1))  # each epoch once
    assert not (d / "claim").exists() and not (d / store.QUEUED_JSON).exists()
    return summary


SLOW = Path(__file__).parent / "plugins" / "slow_backbone.py"
# one run of 28 epochs of 8 batches, each batch sleeping 0.3 s: over 60 s of training
# however fast the machine, more than one attempt under a 1-minute limit
TIME_LIMITED = STUDY.replace("epochs: 2", "epochs: 28").replace(
    "train_per_class: 6", "train_per_class: 15").replace(
    "  - {label: CN-CNN, model: {preset: cn_cnn}}\n", "").replace(
    "backbone: tiny_cnn", "backbone: slow_tiny_cnn").replace(
    "plugins: [", f"plugins: [{SLOW}, ")


@pytest.fixture(scope="module")
def time_limited(tmp_path_factory, released):
    """One run of more than a minute under a 1-minute limit (USR2 5 s before it),
    submitted early: the last test checks that it was requeued and resumed."""
    base = tmp_path_factory.mktemp("time_limit")
    return submit(study(base / "t.yaml", TIME_LIMITED), base / "results", released,
                  time=1, signal_delay_s=5, max_requeues=6)


def next_job_id() -> int:
    """The id SLURM gives the next job (a held job submitted and cancelled)."""
    jid = _sh("sbatch", "--parsable", "--hold", "-t", "1", "--wrap", "true").stdout.strip()
    _sh("scancel", jid)
    return int(jid.split(";")[0]) + 1


def test_a_study_trains_through_slurm_and_old_result_files_of_repeated_job_ids_are_ignored(
        time_limited, tmp_path, capsys):
    st = study(tmp_path / "tiny.yaml")
    results = tmp_path / "results"
    # a cluster whose job ids restarted: an earlier job with the ids to come left results
    first = next_job_id()
    for jid in range(first, first + 20):
        for task in (f"{jid}_0", f"{jid}_1", str(jid)):
            old = results / "tiny" / ".submitit" / task
            old.mkdir(parents=True)
            (old / f"{task}_0_result.pkl").write_bytes(pickle.dumps(("success", "done")))
    code, out, err = run_cli(["run", str(st), "--results", str(results), *CPU, "--launcher",
                              "slurm", "--wait", "--progress", "off"], capsys)
    assert code == 0, err
    study_, runs = prepare(st)
    for r in runs:
        assert_done_once(run_dir(results, study_, r), 2)
    ids, table = out.split("tiny  [", 1)
    assert len(ids.split()) == 2 and all("_" in i for i in ids.split())  # job ids
    assert "Baseline" in table and "submitit" not in out  # stdout: ids and the table only
    folders = sorted((results / "tiny" / ".submitit").iterdir())
    code, out, err = run_cli(["run", str(st), "--results", str(results), *CPU, "--launcher",
                              "slurm"], capsys)
    assert code == 0 and out == "" and "nothing to submit" in err  # a rerun submits nothing
    assert sorted((results / "tiny" / ".submitit").iterdir()) == folders


@pytest.mark.parametrize("how", ["scancel --signal=USR2", "scontrol requeue"])
def test_a_slurm_task_stopped_mid_run_is_requeued_and_resumes(how, released, tmp_path):
    st = study(tmp_path / "tiny.yaml")
    one_longer_run(st)
    # slow batches (0.3 s each, about 6 s an epoch): the signal must find the run mid-way
    # on a fast machine too (a tiny run could finish between two polls)
    st.write_text(st.read_text().replace("backbone: tiny_cnn", "backbone: slow_tiny_cnn")
                  .replace("plugins: [", f"plugins: [{SLOW}, "))
    launcher, (d,) = submit(st, tmp_path / "results", released)
    first = wait_for("the first epoch, under the task's claim", lambda: claim_pid(d))
    jid = str(launcher.jobs[0].job_id)
    cmd = how.split() + [jid]
    assert _sh(*cmd).returncode == 0
    assert launcher.wait() == 0
    summary = assert_done_once(d, 4)
    assert summary["trained_by"]["pid"] != first  # the requeued task finished the run


def test_a_request_the_cluster_refuses_is_one_error_line(slurm, tmp_path, capsys):
    st = study(tmp_path / "tiny.yaml")
    base = ["run", str(st), "--results", str(tmp_path / "r"), "--device", "cpu",
            "--launcher", "slurm"]
    gres = _sh("sinfo", "-h", "-o", "%G").stdout
    asks = {"More processors requested than permitted": ["cpus=100000", "gpus=0"]}
    if "gpu" not in gres:  # a node without GPUs
        asks["Invalid generic resource (gres) specification"] = ["gpus=1", "cpus=1"]
    for reason, ask in asks.items():
        code, out, err = run_cli(base + [x for a in ask for x in ("--launcher-opt", a)], capsys)
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith("error: SLURM refused the job array of study tiny: ")
        assert reason in err


def test_failed_and_cancelled_tasks_make_wait_fail_and_leave_the_queue(
        released, tmp_path, capsys):
    st = study(tmp_path / "tiny.yaml")
    results = tmp_path / "results"
    code, out, err = run_cli(["run", str(st), "--results", str(results), *CPU, "--launcher",
                              "slurm", "--launcher-opt",
                              "setup=['echo module cuda/12.1 not found >&2', 'exit 3']",
                              "--wait", "--no-table"], capsys)
    assert code == 1, err
    assert err.count("ended FAILED") == 2 and "| module cuda/12.1 not found" in err
    # cancelled while pending: --wait fails, and the dry run no longer says queued
    launcher, dirs = submit(st, tmp_path / "r2", released, release=False,
                            sbatch={"begin": "now+1hour"})
    assert _sh("scancel", str(launcher.jobs[0].job_id).split("_")[0]).returncode == 0
    assert launcher.wait() == 1
    assert capsys.readouterr().err.count("ended CANCELLED") == 2
    code, out, _ = run_cli(["run", str(st), "--results", str(tmp_path / "r2"), "--dry-run"],
                           capsys)
    assert code == 0 and "queued" not in out and "2 pending" in out
    assert "ended CANCELLED before the run started" in out


def test_a_task_at_its_time_limit_is_requeued_and_resumes(time_limited):
    launcher, (d,) = time_limited
    assert launcher.wait() == 0
    assert_done_once(d, 28)
    paths = launcher.jobs[0].paths
    logs = "".join(Path(p).read_text() for p in (paths.stdout, paths.stderr) if Path(p).exists())
    assert "Requeued job" in logs  # submitit's handler of the time-limit signal requeued it


# ---- Ray: a head of our own ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head`` (2 CPUs, no GPU) as our own process group; its address."""
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    ray_bin = Path(sys.executable).parent / "ray"
    port = _free_port()
    log = tmp_path_factory.mktemp("ray") / "head.log"
    # its own temp dir: the address file there is not found by other drivers on the
    # machine (a ray.init() elsewhere would otherwise join this head)
    temp = tempfile.mkdtemp(prefix="fl-ray-")
    cmd = [str(ray_bin), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
           "--port", str(port), "--include-dashboard", "false", "--disable-usage-stats",
           "--ray-client-server-port", str(_free_port()),
           "--dashboard-agent-listen-port", str(_free_port()), "--temp-dir", temp]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    with open(log, "w") as f:
        head = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        wait_for("ray start --head", lambda: "--block" in log.read_text()
                 or head.poll() is not None, timeout_s=120, every_s=0.5)
        assert head.poll() is None, log.read_text()[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(grace)
                time.sleep(1)  # its children leave after it
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_trains_a_study_on_a_running_cluster(ray_head, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    st = study(tmp_path / "tiny.yaml")
    results = tmp_path / "results"
    code, out, err = run_cli(["run", str(st), "--results", str(results), *CPU, "--launcher",
                              "ray", "--launcher-opt", f"address={ray_head}", "--progress",
                              "off"], capsys)
    assert code == 0, err
    study_, runs = prepare(st)
    for r in runs:
        assert_done_once(run_dir(results, study_, r), 2)
    # a request no node can meet is refused at once instead of waiting forever
    t0 = time.monotonic()
    code, out, err = run_cli(["run", str(st), "--results", str(tmp_path / "r2"), "--device",
                              "cpu", "--launcher", "ray", "--launcher-opt", f"address={ray_head}",
                              "--launcher-opt", "cpus=4", "--launcher-opt", "gpus=1"], capsys)
    assert code == 2 and out == "", err
    assert err.splitlines()[-1].startswith("error: no node of the Ray cluster at ")
    assert "2 CPUs and 0 GPUs" in err and time.monotonic() - t0 < 60


def test_a_sigterm_to_a_ray_driver_stops_its_tasks_without_a_dump(ray_head, tmp_path):
    st = study(tmp_path / "tiny.yaml", TIME_LIMITED)  # a run of a minute or more
    results = tmp_path / "results"
    (d,) = [run_dir(results, *_one(st))]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "fusion_lab", "run", str(st), "--results", str(results), *CPU,
         "--launcher", "ray", "--launcher-opt", f"address={ray_head}", "--progress", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for("the first epoch", lambda: epochs(d) or driver.poll() is not None)
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received" not in err and "PC: @" not in err  # no native stack dump
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted by SIGTERM")
    summary = wait_for("the run recorded", lambda: store.read_json(d / store.SUMMARY_JSON),
                       timeout_s=60)
    assert summary["status"] == store.INTERRUPTED and not (d / "claim").exists()
    assert len(epochs(d)) < 28


def _one(st: Path):
    study_, runs = prepare(st)
    return study_, runs[0]


def _tuned(tmp_path: Path) -> tuple[Path, Path]:
    from test_tuning import write_study

    return write_study(tmp_path, trials=2, epochs=1, extra="  shared: false\n"), tmp_path / "r"


def _assert_tuned_done(results: Path) -> None:
    trials = list(results.glob("tuned/trials/*/summary.json"))
    finals = list(results.glob("tuned/*/summary.json"))
    assert len(trials) == 4 and len(finals) == 4  # 2 rows x (2 trials | 2 seeds)
    assert all(json.loads(p.read_text())["status"] == "done" for p in trials + finals)


def test_a_tuned_study_trains_its_trials_then_final_runs_as_slurm_tasks(
        slurm, tmp_path, capsys):
    st, results = _tuned(tmp_path)
    code, out, err = run_cli(["run", str(st), "--results", str(results), *CPU, "--launcher",
                              "slurm", "--wait", "--progress", "off"], capsys)
    assert code == 0, err
    _assert_tuned_done(results)


def test_a_tuned_study_trains_its_trials_then_final_runs_as_ray_tasks(
        ray_head, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    st, results = _tuned(tmp_path)
    code, out, err = run_cli(["run", str(st), "--results", str(results), *CPU, "--launcher",
                              "ray", "--launcher-opt", f"address={ray_head}", "--progress",
                              "off"], capsys)
    assert code == 0, err
    _assert_tuned_done(results)

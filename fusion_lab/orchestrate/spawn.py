"""The one place that starts processes: ``fusionlab run`` in worker processes (``--gpus``:
one per GPU; ``--jobs N``: N at once on the CPU, or N per GPU; ``placement``) or on N DDP
processes under torchrun (``--nproc``, a cluster task's ``nproc=N``). Every such command
line is built by ``fusionlab_command``; ``run_forwarding`` starts the commands, passes a
SIGTERM on to them while they run and returns their worst exit status (a child killed by
signal N counts as 128 + N, a failure).

Children die with their parent: each is told its parent's pid (``FUSIONLAB_PARENT_PID``)
and calls ``die_with_parent`` as it starts (torchrun's entry point, and ``fusionlab run``
itself), which asks Linux for a SIGTERM when the parent dies (``PR_SET_PDEATHSIG``; elsewhere
a thread watches the parent pid). A SIGTERM is what records a run as interrupted, so a
``kill -9`` of ``fusionlab run`` stops torchrun, which stops its workers, which record it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fusion_lab import store
from fusion_lab.errors import FusionLabError


def fusionlab_command(study_file: Any, overrides: list[str], results: Any, device: str,
                      progress: str, lease_s: float, fail_fast: bool = False,
                      retry_failed: bool = False, only: list[str] | None = None) -> list[str]:
    """The arguments of ``fusionlab run`` for a child process (no table: the parent prints
    it; ``only``: just these run ids, as a cluster task that trains one run asks)."""
    cmd = ["run", str(study_file), "--results", str(results), "--device", device,
           "--no-table", "--progress", progress, "--lease", str(lease_s)]
    for o in overrides:
        cmd += ["--set", o]
    for run_id in only or []:
        cmd += ["--only", run_id]
    cmd += ["--fail-fast"] if fail_fast else []
    cmd += ["--retry-failed"] if retry_failed else []
    return cmd


@dataclass(frozen=True)
class Nodes:
    """The nodes one run trains on: ``count`` of them, this one ``rank``; node 0 serves the
    rendezvous at ``endpoint`` (HOST:PORT, reachable from every node)."""

    count: int = 1
    rank: int = 0
    endpoint: str | None = None

    def check(self) -> None:
        """A refusal (one line) unless the nodes make sense."""
        if self.count < 1 or not 0 <= self.rank < self.count:
            raise FusionLabError(f"--node-rank must be in 0..{self.count - 1} (--nnodes "
                                 f"{self.count}), got {self.rank}")
        host, _, port = (self.endpoint or "").rpartition(":")
        if self.count > 1 and not (host and port.isdigit()):
            raise FusionLabError(f"--nnodes {self.count} needs --rdzv HOST:PORT, node 0's "
                                 f"address and a free port there, got {self.endpoint!r}")

    def torchrun_args(self) -> list[str]:
        """torchrun's rendezvous: this machine alone, or ``count`` nodes meeting at node
        0 (static: node R's processes get ranks R*nproc.., so rank 0 is on node 0)."""
        if self.count == 1:
            return ["--standalone"]
        host, _, port = str(self.endpoint).rpartition(":")
        return [f"--nnodes={self.count}", f"--node_rank={self.rank}",
                f"--master_addr={host}", f"--master_port={port}"]


ONE_NODE = Nodes()


def torchrun_command(nproc: int, study_file: Any, overrides: list[str], results: Any,
                     device: str, progress: str, lease_s: float, fail_fast: bool = False,
                     retry_failed: bool = False, only: list[str] | None = None,
                     nodes: Nodes = ONE_NODE) -> list[str]:
    """``fusionlab run`` on ``nproc`` processes of this machine (and as many on each of the
    other ``nodes``) under torchrun."""
    return [sys.executable, "-m", "fusion_lab.orchestrate.torchrun", *nodes.torchrun_args(),
            f"--nproc_per_node={nproc}", "-m", "fusion_lab",
            *fusionlab_command(study_file, overrides, results, device, progress, lease_s,
                               fail_fast, retry_failed, only)]


def torchrun_env() -> dict[str, str]:
    """The environment of torchrun's processes: one thread each unless told otherwise."""
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def start_torchrun(nproc: int, study_file: str, overrides: list[str], results: Any,
                   device: str, fail_fast: bool, retry_failed: bool, progress: str,
                   lease_s: float, only: list[str] | None = None,
                   nodes: Nodes = ONE_NODE) -> int:
    """Run ``fusionlab run`` in ``nproc`` processes under torchrun (with as many on each
    of the other ``nodes``); its exit status.

    On CUDA each process takes one GPU, so ``nproc`` may not exceed the GPUs present.
    """
    import torch  # here, not at the top: the CLI's start stays torch-free

    if device != "cpu" and torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise FusionLabError(f"--nproc {nproc} asks for more processes than the "
                             f"{torch.cuda.device_count()} GPU(s) present (one GPU each)")
    if device == "cuda" and not torch.cuda.is_available():
        raise FusionLabError("--device cuda was asked for, but torch sees no CUDA device; "
                             "use --device cpu (gloo) or auto")
    cmd = torchrun_command(nproc, study_file, overrides, results, device, progress, lease_s,
                           fail_fast=fail_fast, retry_failed=retry_failed, only=only,
                           nodes=nodes)
    return run_forwarding([(cmd, torchrun_env())])  # a SIGTERM reaches torchrun and the run


def placement(gpus: list[str] | None, jobs: int = 1) -> list[tuple[str | None, int]]:
    """Where the workers of a pool train: one (GPU, slot) pair per worker, ``jobs`` slots
    on each GPU, or ``jobs`` workers on the CPU (GPU None) without GPUs. Slot by slot, so
    that the first runs (the workers start in this order) spread over the GPUs."""
    return [(gpu, slot) for slot in range(jobs) for gpu in (gpus or [None])]


def launch_workers(study_path: str, overrides: list[str], results: Path,
                   gpus: list[str] | None, fail_fast: bool, retry_failed: bool,
                   lease_s: float = store.LEASE_S, device: str = "cuda",
                   only: list[str] | None = None, jobs: int = 1,
                   limit: int | None = None) -> int:
    """Worker processes training a study's runs at once (``only``: just these run ids, as
    ``--only`` selected them): ``jobs`` per GPU, each with its own CUDA_VISIBLE_DEVICES, or
    ``jobs`` on ``device`` without ``gpus`` (``placement``); at most ``limit`` of them (the
    runs left to train).

    The workers share the results folder; claims keep them off each other's runs. A
    SIGTERM to this process is passed on to the workers, which record their runs as
    interrupted. A worker trains in its own process whatever the study's ``launcher:``
    section says (``WORKER_ENV``).
    """
    cmds = []
    where = placement(gpus, jobs)[:limit]
    for gpu, slot in where:
        cmd = [sys.executable, "-m", "fusion_lab",
               *fusionlab_command(study_path, overrides, results, device, "plain", lease_s,
                                  fail_fast, retry_failed, only=only)]
        env = {**os.environ, WORKER_ENV: "1"}
        if gpu is None:
            click.echo(f"worker {slot + 1} of {len(where)} (device {device}): started",
                       err=True)
        else:
            env["CUDA_VISIBLE_DEVICES"] = gpu
            click.echo(f"worker on GPU {gpu}{f' (slot {slot + 1} of {jobs})' if jobs > 1 else ''}"
                       ": started", err=True)
        cmds.append((cmd, env))
    return run_forwarding(cmds)


WORKER_ENV = "FUSIONLAB_POOL_WORKER"  # set in a worker of launch_workers: it trains itself


def in_worker() -> bool:
    """This process is a worker of ``launch_workers`` (it starts no workers of its own)."""
    return os.environ.get(WORKER_ENV) == "1"


def run_forwarding(cmds: list[tuple[list[str], dict]]) -> int:
    """Start the commands (each with its environment), wait for all; their worst exit
    status (``exit_status``), after one line for each child a signal killed.

    A SIGTERM to this process is passed on to them while they run (also to one started
    just after it came); none is started after it.
    """
    procs: list[subprocess.Popen] = []
    received: list[int] = []
    signalled: set[int] = set()  # pids the handler reached

    def forward(signum: int, frame) -> None:
        received.append(signum)
        signalled.update(signal_children(signum))

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, forward) if main_thread else None
    try:
        for cmd, env in cmds:
            if received:
                break
            p = subprocess.Popen(cmd, env={**env, PARENT_ENV: str(os.getpid())})
            procs.append(p)
            _CHILDREN.append(p)
            if received and p.pid not in signalled:  # came between Popen and the list
                p.send_signal(received[0])
        codes = [p.wait() for p in procs]
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        for p in procs:
            if p in _CHILDREN:
                _CHILDREN.remove(p)
    for p, code in zip(procs, codes):
        if code < 0:
            what = "torchrun" if "fusion_lab.orchestrate.torchrun" in p.args else "worker"
            click.echo(f"error: {what} (pid {p.pid}) was killed by {_signame(-code)}; "
                       "rerun the study to resume its run", err=True)
    if received and not procs:
        return 128 + received[0]
    return exit_status(codes)


def exit_status(codes: list[int]) -> int:
    """The worst of the children's exit statuses: killed by signal N (``-N``) is 128 + N,
    as a shell says it; any failure beats success."""
    return max((128 - c if c < 0 else c for c in codes), default=0)


def _signame(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


_CHILDREN: list[subprocess.Popen] = []  # what run_forwarding started and waits for
PARENT_ENV = "FUSIONLAB_PARENT_PID"  # the pid a child started here must not outlive


def signal_children(signum: int) -> list[int]:
    """Send ``signum`` to the commands ``run_forwarding`` is running (safe in a handler);
    the pids it was sent to."""
    sent = []
    for p in list(_CHILDREN):
        if p.poll() is None:
            p.send_signal(signum)
            sent.append(p.pid)
    return sent


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child that ``run_forwarding`` (or our torchrun) started: get ``signum`` when
    the parent dies, as if the parent had passed a SIGTERM on. Nothing elsewhere."""
    try:
        parent = int(os.environ.get(PARENT_ENV, ""))
    except ValueError:
        return
    if not _parent_death_signal(signum):
        threading.Thread(target=_watch_parent, args=(parent, signum), daemon=True,
                         name="fusionlab-parent-watch").start()
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signum)


def _parent_death_signal(signum: int) -> bool:
    """Linux's prctl(PR_SET_PDEATHSIG, signum); whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(1, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int, signum: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signum)
